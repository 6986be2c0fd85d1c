"""`Module`, the base class of objects that own states (BrainState's `Node`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from statejax._errors import TraceContextError
from statejax._new_states import NewStateCatcher, catch_new_states
from statejax._state import State
from statejax._tracing import is_leaked
from statejax.filters import Filter, FilterLike, Path, PredicateFn, PredicateLike
from statejax.graph._containers import StateMapping
from statejax.graph._node_types import _add_module_type
from statejax.graph._walk import iter_states_only, nodes, states

if TYPE_CHECKING:
    from statejax.filters import A, B, C, D, EachFilter, OneFilter

S = TypeVar("S", bound=State[Any])


class Module:
    """Base class for objects that own states.

    Subclass it and assign states, sub-modules, or lists/tuples/dicts of them as
    attributes. A module passes through transforms by reference (it is a pytree
    node without leaves), so a method decorated with `statejax.jit` works.
    BrainState's name for this base class, `statejax.graph.Node`, is the same class.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> sj.graph.Node is sj.Module
        True
        >>> class Counter(sj.Module):
        ...     def __init__(self):
        ...         self.n = sj.ShortTermState(jnp.array(0))
        ...     @sj.jit
        ...     def tick(self):
        ...         self.n.value += 1
        >>> c = Counter(); c.tick(); c.tick(); int(c.n.value)
        2
    """

    graph_invisible_attrs: tuple[str, ...] = ()
    """Attribute names the graph functions skip (BrainState's `Node.graph_invisible_attrs`).

    Such attributes are not walked (their states are not the module's states), not
    in the `GraphDef`, and not copied by `clone` or rebuilt by `treefy_merge`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     graph_invisible_attrs = ("cache",)
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.cache = sj.ShortTermState(jnp.zeros(2))
        >>> list(Net().states()), hasattr(sj.graph.clone(Net()), "cache")
        ([('w',)], False)
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _add_module_type(cls, by_reference=True)

    def __setattr__(self, name: str, value: Any) -> None:
        # Remember where a state was first stored, so errors can name it ("Linear.w").
        if isinstance(value, State) and value._where is None:
            value._where = f"{type(self).__name__}.{name}"
        object.__setattr__(self, name, value)

    @overload
    def states(self) -> StateMapping[State[Any]]: ...
    @overload
    def states(self, filter: type[S], /) -> StateMapping[S]: ...
    @overload
    def states(self, filter: Filter[S], /) -> StateMapping[S]: ...
    @overload
    def states(
        self, filter: PredicateFn | EllipsisType | bool | None | tuple[FilterLike, ...], /
    ) -> StateMapping[State[Any]]: ...
    # Filters and State types first: a filter is also a predicate, which would make the
    # element type ambiguous in the `EachFilter` overloads that also take predicates and `...`.
    @overload
    def states(
        self, a: OneFilter[A], b: OneFilter[B], /
    ) -> tuple[StateMapping[A], StateMapping[B]]: ...
    @overload
    def states(
        self, a: OneFilter[A], b: OneFilter[B], c: OneFilter[C], /
    ) -> tuple[StateMapping[A], StateMapping[B], StateMapping[C]]: ...
    @overload
    def states(
        self, a: OneFilter[A], b: OneFilter[B], c: OneFilter[C], d: OneFilter[D], /
    ) -> tuple[StateMapping[A], StateMapping[B], StateMapping[C], StateMapping[D]]: ...
    @overload
    def states(
        self, a: EachFilter[A], b: EachFilter[B], /
    ) -> tuple[StateMapping[A], StateMapping[B]]: ...
    @overload
    def states(
        self, a: EachFilter[A], b: EachFilter[B], c: EachFilter[C], /
    ) -> tuple[StateMapping[A], StateMapping[B], StateMapping[C]]: ...
    @overload
    def states(
        self, first: FilterLike, second: FilterLike, /, *more: FilterLike
    ) -> tuple[StateMapping[State[Any]], ...]: ...
    def states(self, *filters: FilterLike) -> StateMapping[Any] | tuple[StateMapping[Any], ...]:
        """The states of this module selected by `filters`, as path -> State mappings.

        The same as `statejax.graph.states(self, *filters)`: with no filter, every
        state; with one, one mapping; with several, a tuple of mappings, one per
        filter, where each state goes to the first filter that matches it.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> class Net(sj.Module):
            ...     def __init__(self):
            ...         self.w = sj.ParamState(jnp.ones(2))
            ...         self.h = sj.HiddenState(jnp.zeros(2))
            >>> params, hidden = Net().states(sj.ParamState, sj.HiddenState)
            >>> list(params), list(hidden)
            ([('w',)], [('h',)])
        """
        return states(self, *filters)

    def nodes(self, *filters: PredicateLike) -> dict[Path, Any] | tuple[dict[Path, Any], ...]:
        """The modules inside this one (itself at path `()`); see `statejax.graph.nodes`.

        Examples:
            >>> import statejax as sj
            >>> class Net(sj.Module):
            ...     def __init__(self):
            ...         self.inner = sj.Module()
            >>> list(Net().nodes())
            [('inner',), ()]
        """
        return nodes(self, *filters)

    def check_valid_context(self, error_msg: Callable[[], str]) -> None:
        """Raise `TraceContextError` (`error_msg()`) if a state of this module is unusable here.

        A state created inside a transform that has returned cannot be used; this
        checks every state reachable from the module at once.

        Raises:
            TraceContextError: a state's value died with the trace that created it.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> class Net(sj.Module):
            ...     def __init__(self):
            ...         self.w = sj.ParamState(jnp.ones(2))
            >>> Net().check_valid_context(lambda: "unreachable")
        """
        for state in iter_states_only(self):
            if is_leaked(state):
                raise TraceContextError(error_msg())

    def init_all_states(
        self, *args: Any, state_tag: str | None = None, **kwargs: Any
    ) -> NewStateCatcher:
        """Call `init_state(*args, **kwargs)` on every module in this one that defines it.

        Modules are visited in `nodes()` order (sub-modules before their owner), each
        once, however often it is shared. The states created are caught, as by
        `catch_new_states(state_tag)`, and the catcher is returned. This is the
        method `vmap2_new_states` and `pmap2_new_states` call.

        Args:
            *args: positional arguments for every `init_state`.
            state_tag: a tag for every state created.
            **kwargs: keyword arguments for every `init_state`.

        Returns:
            The `NewStateCatcher` holding the states created.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> class Cell(sj.Module):
            ...     def init_state(self, batch):
            ...         self.h = sj.HiddenState(jnp.zeros((batch, 3)))
            >>> class Net(sj.Module):
            ...     def __init__(self):
            ...         self.a, self.b = Cell(), Cell()
            >>> net = Net()
            >>> caught = net.init_all_states(2, state_tag="hidden")
            >>> len(caught.get_states()), net.a.h.value.shape
            (2, (2, 3))
        """
        with catch_new_states(state_tag=state_tag) as catcher:
            for node in self.nodes().values():  # type: ignore[union-attr]
                init = getattr(node, "init_state", None)
                if callable(init):
                    init(*args, **kwargs)
        return catcher

    def __pretty_repr_item__(self, name: str, value: Any) -> tuple[str, Any] | None:
        """`(name, value)` to show `name` in the repr, or `None` to hide it (BrainState's hook).

        `None` values and `graph_invisible_attrs` are hidden; override to change that.

        Examples:
            >>> import statejax as sj
            >>> m = sj.Module()
            >>> m.__pretty_repr_item__("size", 3), m.__pretty_repr_item__("size", None)
            (('size', 3), None)
        """
        if value is None or name in self.graph_invisible_attrs:
            return None
        return name, value

    def __repr__(self) -> str:
        # Attributes as BrainState shows them; a module already being shown (a cycle)
        # is shown by its class name only.
        active: set[int] = _REPR_ACTIVE.__dict__.setdefault("ids", set())
        if id(self) in active:
            return f"{type(self).__name__}(...)"
        active.add(id(self))
        try:
            items = (self.__pretty_repr_item__(k, v) for k, v in vars(self).items())
            inner = ", ".join(f"{k}={v!r}" for k, v in filter(None, items))
        finally:
            active.discard(id(self))
        return f"{type(self).__name__}({inner})"


_REPR_ACTIVE = threading.local()  # per thread: the ids of the modules being shown

# `Module()` itself is a graph node too (its subclasses enter in `__init_subclass__`),
# but, as before, not a by-reference pytree.
_add_module_type(Module, by_reference=False)


Node = Module
"""BrainState's base class of graph nodes: in statejax the same class as `Module`.

Subclassing either is the same thing, so `isinstance(x, Module)` holds for every
node, and code written against `brainstate.graph.Node` ports unchanged.

Examples:
    >>> import jax.numpy as jnp
    >>> import statejax as sj
    >>> class Cell(sj.graph.Node):
    ...     def __init__(self):
    ...         self.h = sj.HiddenState(jnp.zeros(2))
    >>> isinstance(Cell(), sj.Module), list(Cell().states())
    (True, [('h',)])
"""

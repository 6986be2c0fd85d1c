"""Modules, state paths, and the split/merge of a module into plain arrays.

A `Module` is an ordinary Python object; its states are found by walking
its attributes and the lists, tuples and dicts they hold. A state's *path* is the
sequence of attribute names and container keys that leads to it, for example
`('layers', 0, 'w')`. A state reachable along two paths is reported once, at
the first path in attribute order.

Examples:
    >>> import jax.numpy as jnp
    >>> import statejax as sj
    >>> class MLP(sj.Module):
    ...     def __init__(self):
    ...         self.layers = [sj.ParamState(jnp.ones(2)), sj.ParamState(jnp.ones(3))]
    ...         self.steps = sj.ShortTermState(jnp.array(0))
    >>> list(MLP().states(sj.ParamState))
    [('layers', 0), ('layers', 1)]
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import jax

from statejax._errors import TraceContextError
from statejax._graph_util import (
    GraphDef,
    NodeEdge,
    NodeSpec,
    PytreeEdge,
    PytreeType,
    RefMap,
    StateEdge,
    StateLeafEdge,
    Static,
    StaticEdge,
    iter_edges,
)
from statejax._new_states import NewStateCatcher, catch_new_states
from statejax._state import State, TreefyState
from statejax._tracing import is_leaked, register_by_reference
from statejax.filters import (
    Everything,
    Filter,
    FilterLike,
    Path,
    PredicateFn,
    PredicateLike,
    to_filter,
    to_predicate,
)

if TYPE_CHECKING:
    from statejax.filters import A, B, C, D, _Each, _One

__all__ = [
    "MAX_INT",
    "FlattedDict",
    "GraphDef",
    "MergeContext",
    "Module",
    "NestedDict",
    "Node",
    "NodeEdge",
    "NodeSpec",
    "NodeStates",
    "PytreeEdge",
    "PytreeType",
    "RefMap",
    "SplitContext",
    "StateEdge",
    "StateLeafEdge",
    "StateMapping",
    "StateTree",
    "Static",
    "StaticEdge",
    "clone",
    "flatten",
    "graph_to_tree",
    "graphdef",
    "iter_leaf",
    "iter_node",
    "iter_states",
    "merge_context",
    "nodes",
    "pop_states",
    "register_graph_node_type",
    "split_context",
    "states",
    "tree_to_graph",
    "treefy_merge",
    "treefy_split",
    "treefy_states",
    "unflatten",
    "update_states",
]

S = TypeVar("S", bound=State[Any])
V = TypeVar("V")
N = TypeVar("N")


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
        register_by_reference(cls)

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
    # element type ambiguous in the `_Each` overloads that also take predicates and `...`.
    @overload
    def states(self, a: _One[A], b: _One[B], /) -> tuple[StateMapping[A], StateMapping[B]]: ...
    @overload
    def states(
        self, a: _One[A], b: _One[B], c: _One[C], /
    ) -> tuple[StateMapping[A], StateMapping[B], StateMapping[C]]: ...
    @overload
    def states(
        self, a: _One[A], b: _One[B], c: _One[C], d: _One[D], /
    ) -> tuple[StateMapping[A], StateMapping[B], StateMapping[C], StateMapping[D]]: ...
    @overload
    def states(self, a: _Each[A], b: _Each[B], /) -> tuple[StateMapping[A], StateMapping[B]]: ...
    @overload
    def states(
        self, a: _Each[A], b: _Each[B], c: _Each[C], /
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


class _NodeType:
    """How to take apart and rebuild a custom graph node type (see `register_graph_node_type`)."""

    __slots__ = ("clear", "create_empty", "flatten", "pop_key", "set_key")

    def __init__(
        self,
        flatten: Callable[[Any], tuple[Sequence[tuple[Hashable, Any]], Hashable]],
        set_key: Callable[[Any, Hashable, Any], None],
        pop_key: Callable[[Any, Hashable], Any],
        create_empty: Callable[[Any], Any],
        clear: Callable[[Any], None],
    ) -> None:
        self.flatten = flatten
        self.set_key = set_key
        self.pop_key = pop_key
        self.create_empty = create_empty
        self.clear = clear


_NODE_TYPES: dict[type, _NodeType] = {}


def register_graph_node_type(
    type: type,
    flatten: Callable[[Any], tuple[Sequence[tuple[Hashable, Any]], Hashable]],
    set_key: Callable[[Any, Hashable, Any], None],
    pop_key: Callable[[Any, Hashable], Any],
    create_empty: Callable[[Any], Any],
    clear: Callable[[Any], None],
) -> None:
    """Make instances of `type` graph nodes, walked and rebuilt like a `Module`.

    The graph functions (`states`, `treefy_split`, `clone`, `pop_states`, ...)
    find the states held inside such objects, and `treefy_merge` rebuilds them:
    `create_empty(aux)` makes an empty node from the static data `flatten` returned,
    then `set_key` fills in each child. Instances also pass through transforms by
    reference, as modules do.

    Args:
        type: the class to register.
        flatten: `node -> (children, aux)`, where `children` is a sequence of
            `(key, value)` pairs and `aux` is hashable static data.
        set_key: `(node, key, value) -> None`, setting one child.
        pop_key: `(node, key) -> value`, removing one child (for `pop_states`).
        create_empty: `aux -> node`, an empty node.
        clear: `node -> None`, removing every child.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Bag:
        ...     def __init__(self): self.items = {}
        >>> sj.graph.register_graph_node_type(
        ...     Bag,
        ...     flatten=lambda b: (tuple(b.items.items()), None),
        ...     set_key=lambda b, k, v: b.items.__setitem__(k, v),
        ...     pop_key=lambda b, k: b.items.pop(k),
        ...     create_empty=lambda aux: Bag(),
        ...     clear=lambda b: b.items.clear(),
        ... )
        >>> bag = Bag(); bag.items["w"] = sj.ParamState(jnp.ones(2))
        >>> list(sj.graph.states(bag)), sj.graph.clone(bag).items["w"].value.tolist()
        ([('w',)], [1.0, 1.0])
    """
    _NODE_TYPES[type] = _NodeType(flatten, set_key, pop_key, create_empty, clear)
    register_by_reference(type)


def _is_graph_node(obj: object) -> bool:
    """A `Module` or an instance of a registered graph node type."""
    return isinstance(obj, Module) or type(obj) in _NODE_TYPES


def _module_items(node: Module) -> list[tuple[str, Any]]:
    """A module's attributes in order, less those named in `graph_invisible_attrs`."""
    hidden = node.graph_invisible_attrs
    return [(k, v) for k, v in vars(node).items() if k not in hidden]


def _children(node: object) -> Iterator[tuple[Hashable, object]]:
    if isinstance(node, Module):
        yield from _module_items(node)
    elif type(node) in _NODE_TYPES:
        yield from _NODE_TYPES[type(node)].flatten(node)[0]
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)
    elif isinstance(node, dict):
        yield from node.items()


def iter_states_only(node: object) -> Iterator[State[Any]]:
    """Every state reachable from `node`, each once."""
    return (s for _, s in iter_states(node))


def iter_states(node: object) -> Iterator[tuple[Path, State[Any]]]:
    """Yield `(path, state)` for every state reachable from `node`, each state once."""
    seen: set[int] = set()

    def walk(obj: object, path: Path) -> Iterator[tuple[Path, State[Any]]]:
        if isinstance(obj, State):
            if id(obj) not in seen:
                seen.add(id(obj))
                yield path, obj
            return
        if _is_graph_node(obj) or isinstance(obj, (list, tuple, dict)):
            # Each container once: shared ones are walked at their first path,
            # and a cycle ends.
            if id(obj) in seen:
                return
            seen.add(id(obj))
        for key, child in _children(obj):
            yield from walk(child, (*path, key))

    yield from walk(node, ())


class StateMapping(Mapping[Path, S]):
    """A read-only, ordered mapping from paths to states; hashable by state identity.

    Returned by `Module.states`; usable wherever a transform takes states.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Any = ()) -> None:
        self._items: dict[Path, S] = dict(items)

    def __getitem__(self, path: Path) -> S:
        return self._items[path]

    def __iter__(self) -> Iterator[Path]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple((p, id(s)) for p, s in self._items.items()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateMapping):
            return NotImplemented
        return list(self._items) == list(other._items) and all(
            a is b for a, b in zip(self._items.values(), other._items.values(), strict=True)
        )

    def to_flat(self) -> dict[Path, S]:
        """A plain `dict` from path tuples to the states (BrainState's `FlattedDict` view)."""
        return dict(self._items)

    def values_tree(self) -> StateTree[Any]:
        """The current values, as a `StateTree` with the same paths."""
        return StateTree((p, s.value) for p, s in self._items.items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{p!r}: {s!r}" for p, s in self._items.items())
        return f"StateMapping({{{inner}}})"


FlattedDict = StateMapping
"""BrainState's `brainstate.util.FlattedDict` (what `states` returns): here `StateMapping`.

Examples:
    >>> import statejax as sj
    >>> class Net(sj.Module):
    ...     pass
    >>> isinstance(sj.graph.states(Net()), sj.graph.FlattedDict)
    True
"""


class StateTree(Mapping[Path, V]):
    """An ordered mapping from paths to values; a pytree whose leaves are the values.

    Returned by `treefy_split` and `treefy_states`, and taken by `treefy_merge` and
    `update_states`. Unlike a dict pytree its keys are never sorted, so mixed
    `str`/`int` path components are fine and the order is the module's attribute
    order. It is keyed by whole paths (`tree[("enc", "w")]`), and also reads like
    BrainState's nested `NestedDict`: `tree["enc"]` or `tree.enc` is the subtree of
    the paths under `"enc"` (or the value, if `("enc",)` is itself a path), so
    `tree.enc.w` works. `to_flat()` gives a plain `dict` keyed by path tuples, as
    BrainState's does, `to_nest()` nested dicts, and `StateTree.from_flat` builds
    one back. Iterating yields whole paths.

    As a pytree it passes through `jax.jit`, `jax.grad` and `jax.tree.map`, and two
    trees with the same paths in the same order combine leaf by leaf, for example in
    `optax.apply_updates(params, updates)`.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> tree = sj.StateTree.from_flat({("w",): jnp.ones(2), ("b",): jnp.zeros(2)})
        >>> grads = jax.grad(lambda t: jnp.sum(t[("w",)] * 3 + t[("b",)]))(tree)
        >>> type(grads).__name__, grads.to_flat()[("w",)].tolist()
        ('StateTree', [3.0, 3.0])
        >>> jax.tree.map(lambda a, b: a - 0.5 * b, tree, grads)[("w",)].tolist()
        [-0.5, -0.5]
        >>> nested = sj.StateTree({("enc", "w"): 1.0, ("enc", "b"): 0.0})
        >>> nested.enc.w, list(nested["enc"]), "enc" in nested
        (1.0, [('w',), ('b',)], True)
    """

    __slots__ = ("_items",)

    def __init__(self, items: Any = ()) -> None:
        flat = dict(items)
        if any(not isinstance(p, tuple) for p in flat):
            # BrainState's `NestedDict({"enc": {"w": ...}})`: nested dicts of values.
            flat = dict(_flatten_nested(flat, ()))
        self._items: dict[Path, V] = flat

    def __getitem__(self, path: Any) -> Any:
        """The value at `path` (a tuple), or the subtree under a key (BrainState's nesting).

        `tree["layers"]` (or `tree.layers`) is the value at `("layers",)` if that is a
        path, else a `StateTree` of the paths starting with `"layers"`, that key removed.
        """
        if isinstance(path, tuple):
            return self._items[path]
        return self._nested(path, KeyError)

    def _nested(self, key: Any, error: type[Exception]) -> Any:
        single = (key,)
        if single in self._items:
            return self._items[single]
        sub: StateTree[Any] = StateTree(
            (p[1:], v) for p, v in self._items.items() if p[:1] == single
        )
        if not sub:
            raise error(
                f"StateTree: no path starts with {key!r}; the paths are {list(self._items)}"
            )
        return sub

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._nested(name, AttributeError)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, tuple):
            return key in self._items
        return any(p[:1] == (key,) for p in self._items)

    def to_nest(self) -> dict[Any, Any]:
        """The tree as nested plain `dict`s, one level per path component.

        Examples:
            >>> import statejax as sj
            >>> sj.StateTree({("enc", "w"): 1.0, ("b",): 0.0}).to_nest()
            {'enc': {'w': 1.0}, 'b': 0.0}
        """
        out: dict[Any, Any] = {}
        for path, value in self._items.items():
            level = out
            for key in path[:-1]:
                level = level.setdefault(key, {})
            level[path[-1]] = value
        return out

    def __iter__(self) -> Iterator[Path]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def to_flat(self) -> dict[Path, V]:
        """A plain `dict` from path tuples to values: a copy, in the same order.

        Returns:
            A new `dict`; changing it leaves the tree untouched.

        Examples:
            >>> import statejax as sj
            >>> sj.StateTree({("layers", 0, "w"): 1.0}).to_flat()
            {('layers', 0, 'w'): 1.0}
        """
        return dict(self._items)

    @classmethod
    def from_flat(cls, flat: Mapping[Path, V] | Iterable[tuple[Path, V]]) -> StateTree[V]:
        """Build a tree from a flat mapping (or pairs) of path tuples to values.

        Args:
            flat: a mapping such as `to_flat()` returns, or an iterable of
                `(path, value)` pairs; the order is kept.

        Returns:
            A new `StateTree`.

        Raises:
            TypeError: a key is not a tuple; the message names it.

        Examples:
            >>> import statejax as sj
            >>> sj.StateTree.from_flat([(("w",), 1.0), (("b",), 0.0)])
            StateTree({('w',): 1.0, ('b',): 0.0})
        """
        items = dict(flat)
        bad = [p for p in items if not isinstance(p, tuple)]
        if bad:
            raise TypeError(
                f"StateTree.from_flat: the keys {bad} are not paths; a path is a tuple of "
                "attribute names and container keys, such as ('layers', 0, 'w')."
            )
        return cls(items)

    def __repr__(self) -> str:
        return f"StateTree({self._items!r})"


def _flatten_nested(nested: Mapping[Any, Any], prefix: Path) -> Iterator[tuple[Path, Any]]:
    for key, value in nested.items():
        if isinstance(value, StateTree):
            yield from (((*prefix, key, *p), v) for p, v in value.items())
        elif isinstance(value, dict) and value:
            yield from _flatten_nested(value, (*prefix, key))
        else:
            yield (*prefix, key), value


NestedDict = StateTree
"""BrainState's `brainstate.util.NestedDict`: in statejax the same class as `StateTree`.

`NestedDict({"enc": {"w": 1.0}})` (nested dicts) and `NestedDict.from_flat(...)`
(paths) both build one.

Examples:
    >>> import statejax as sj
    >>> tree = sj.graph.NestedDict({"enc": {"w": 1.0}})
    >>> tree.enc.w, tree.to_flat()
    (1.0, {('enc', 'w'): 1.0})
"""


def _flatten_tree(tree: StateTree[Any]) -> tuple[list[Any], tuple[Path, ...]]:
    return list(tree._items.values()), tuple(tree._items)


def _unflatten_tree(paths: tuple[Path, ...], values: Any) -> StateTree[Any]:
    return StateTree(zip(paths, values, strict=True))


jax.tree_util.register_pytree_node(StateTree, _flatten_tree, _unflatten_tree)


# --- The encoder and decoder (BrainState's `flatten` / `unflatten`) -------------------


def _is_container(obj: object) -> bool:
    """A list, tuple or dict: held inline in a `GraphDef` (a `PytreeEdge`)."""
    return isinstance(obj, (list, tuple, dict))


def _is_node(obj: object) -> bool:
    """What `flatten` takes as a root: a graph node or a container."""
    return _is_graph_node(obj) or _is_container(obj)


def _state_ref(state: State[Any]) -> TreefyState[Any]:
    """`state.to_state_ref()`, with the sharding too when the state has one."""
    ref = state.to_state_ref()
    if state.sharding is not None:
        ref._metadata["sharding"] = state.sharding
    return ref


def _node_items(node: object) -> tuple[Sequence[tuple[Hashable, Any]], Any]:
    """The children and the static metadata of a graph node."""
    if type(node) in _NODE_TYPES:
        return _NODE_TYPES[type(node)].flatten(node)
    assert isinstance(node, Module)
    return tuple(_module_items(node)), (type(node),)


def _format_path(path: Path) -> str:
    return ".".join(map(str, path)) if path else "<root>"


class _Encoder:
    """One pre-order pass: graph nodes and states get indices, containers go inline."""

    def __init__(self, ref_index: RefMap[Any, int], treefy_state: bool) -> None:
        self.ref_index = ref_index
        self.treefy_state = treefy_state
        self.specs: list[NodeSpec[Any]] = []
        self.mapping: dict[Path, Any] = {}

    def edge(self, path: Path, value: Any) -> Any:
        if isinstance(value, State):
            if value in self.ref_index:
                return StateEdge(self.ref_index[value], None, type(value))
            index = len(self.ref_index)
            self.ref_index[value] = index
            self.mapping[path] = _state_ref(value) if self.treefy_state else value
            return StateEdge(index, path, type(value))
        if _is_graph_node(value):
            if value in self.ref_index:
                return NodeEdge(self.ref_index[value])
            index = len(self.ref_index)
            self.ref_index[value] = index
            items, metadata = _node_items(value)
            fields = tuple((k, self.edge((*path, k), v)) for k, v in items)
            self.specs.append(NodeSpec(type(value), index, metadata, fields))
            return NodeEdge(index)
        if _is_container(value) or isinstance(value, TreefyState):
            children: Iterable[tuple[Hashable, Any]]
            if isinstance(value, TreefyState):
                # As in BrainState, a bare TreefyState attribute is a pytree: its value
                # is held in the structure.
                children = [("value", value.value)]
                meta: Any = (TreefyState, value.type, tuple(value._metadata.items()))
            elif isinstance(value, dict):
                children, meta = value.items(), type(value)
            else:
                children, meta = enumerate(value), type(value)
            fields = tuple((k, self.edge((*path, k), v)) for k, v in children)
            # A container of plain hashable values is itself one plain value.
            hashable = getattr(type(value), "__hash__", None) not in (None, object.__hash__)
            if all(type(e) is StaticEdge for _, e in fields) and hashable:
                try:
                    hash(value)
                except TypeError:
                    pass
                else:
                    return StaticEdge(value)
            return PytreeEdge(_Hashed(meta), fields)
        return StaticEdge(value)


class _Hashed:
    """Container metadata inside a `PytreeEdge`: equal by `==`, hashable even if its parts are not."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Hashed):
            return False
        try:
            return self.value is other.value or bool(self.value == other.value)
        except Exception:
            return False

    def __hash__(self) -> int:
        try:
            return hash(self.value)
        except TypeError:
            return hash(type(self.value))

    def __repr__(self) -> str:
        return repr(self.value)


def _rebuild_container(metadata: Any, items: Sequence[tuple[Hashable, Any]]) -> Any:
    meta = metadata.value if isinstance(metadata, _Hashed) else metadata
    if isinstance(meta, tuple) and meta and meta[0] is TreefyState:
        return TreefyState(meta[1], dict(items)["value"], **dict(meta[2]))
    kind: Any = meta
    values = [v for _, v in items]
    if issubclass(kind, dict):
        return dict(items) if kind is dict else kind(items)
    if issubclass(kind, tuple):
        if kind is tuple:
            return tuple(values)
        return kind(*values) if hasattr(kind, "_fields") else kind(values)
    return list(values) if kind is list else kind(values)


def flatten(
    node: Any, /, ref_index: RefMap[Any, int] | None = None, treefy_state: bool = True
) -> tuple[GraphDef[Any], StateTree[Any]]:
    """Split `node` into its `GraphDef` and a `StateTree` (BrainState's `NestedDict`) of states.

    One pre-order pass: each module (graph node) and each state gets an index, the
    same object met again becomes a reference to its index (so sharing and cycles
    are kept), and lists, tuples and dicts are held inline. The tree holds, at the
    first path of each state, a `TreefyState` (type, value, name, tags), or the
    `State` itself with `treefy_state=False`. `unflatten` is the inverse.

    Args:
        node: a module, a registered graph node, or a list, tuple or dict of them.
        ref_index: an identity map `object -> index` to add to; pass the same one
            to several calls (as `split_context` does) so that objects shared
            between them get one index.
        treefy_state: `True`: the tree holds `TreefyState`s; `False`: the states.

    Returns:
        `(graphdef, tree)`.

    Raises:
        TypeError: `ref_index` is not a `RefMap`.
        ValueError: `node` is not a graph node or container (a bare `State`, say).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> graph, tree = sj.graph.flatten(Net())
        >>> type(tree[("w",)]).__name__, tree.w.value.tolist()
        ('TreefyState', [1.0, 1.0])
        >>> sj.graph.unflatten(graph, tree).w.value.tolist()
        [1.0, 1.0]
    """
    if ref_index is None:
        ref_index = RefMap()
    elif not isinstance(ref_index, RefMap):
        raise TypeError(
            f"flatten: ref_index must be a statejax.graph.RefMap, got {type(ref_index).__name__}"
        )
    if not _is_node(node):
        raise ValueError(
            f"flatten: the root must be a module (graph node) or a list, tuple or dict of "
            f"them, got a {type(node).__name__}"
        )
    encoder = _Encoder(ref_index, treefy_state)
    root = encoder.edge((), node)
    specs = tuple(sorted(encoder.specs, key=lambda s: s.index))
    return GraphDef(root, specs), StateTree(encoder.mapping)


_MISSING_VALUE: Any = object()


def _materialize(value: Any, edge: StateEdge, cache: Mapping[int, Any]) -> State[Any]:
    """The state a defining `StateEdge` stands for, given its mapping entry `value`
    (a cached state, checked by `unflatten`, is updated in place)."""
    if edge.index in cache:
        state: State[Any] = cache[edge.index]
        if isinstance(value, TreefyState):
            state.update_from_ref(value)
        else:
            state.value = value.value if isinstance(value, State) else value
        return state
    if isinstance(value, TreefyState):
        return value.to_state()
    if isinstance(value, State):
        return value
    # A plain value (statejax also takes trees of values): a state of the recorded type.
    cls: Any = edge.type
    made: State[Any] = cls.__new__(cls)
    State.__init__(made, value)
    return made


def unflatten(
    graphdef: GraphDef[Any],
    state_mapping: Mapping[Path, Any],
    /,
    *,
    index_ref: dict[int, Any] | None = None,
    index_ref_cache: Mapping[int, Any] | None = None,
) -> Any:
    """Build the node `graphdef` describes, holding the states of `state_mapping`.

    The inverse of `flatten`. A `TreefyState` entry becomes a new state (type, name,
    tags and sharding kept), a `State` entry is used as it is, and a plain value
    becomes a new state of the recorded type. Objects shared in the original are
    shared in the result, cycles included.

    Args:
        graphdef: the structure, from `flatten` or `treefy_split`.
        state_mapping: a tree (or mapping) from paths to `TreefyState`s, states or
            values, with a value for every state path of `graphdef`.
        index_ref: an `index -> object` table to fill; pass the same one to
            several calls (as `merge_context` does) so that objects shared between
            them are built once.
        index_ref_cache: `index -> object` of existing objects to reuse: a module
            there is emptied and refilled, a state there gets the new value (and
            may then be missing from `state_mapping`).

    Returns:
        The rebuilt root.

    Raises:
        TypeError: `graphdef` is not a `GraphDef`.
        ValueError: a state path of `graphdef` has no value; `state_mapping` has a
            path that is no state path of `graphdef`; or `index_ref_cache` holds an
            object of the wrong type.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> net = Net()
        >>> graph, tree = sj.graph.flatten(net)
        >>> cache = {}
        >>> copy = sj.graph.unflatten(graph, tree, index_ref=cache)
        >>> copy is net, copy.w is net.w
        (False, False)
        >>> again = sj.graph.unflatten(graph, tree, index_ref_cache=cache)
        >>> again is copy
        True
    """
    if not isinstance(graphdef, GraphDef):
        raise TypeError(f"unflatten: graphdef must be a GraphDef, got {type(graphdef).__name__}")
    if index_ref is None:
        index_ref = {}
    flat: dict[Path, Any] = (
        state_mapping.to_flat()
        if hasattr(state_mapping, "to_flat")
        else StateTree(state_mapping).to_flat()  # path-keyed or nested dicts
    )
    edges = list(iter_edges(graphdef))
    wanted = {e.path for e in edges if type(e) in (StateEdge, StateLeafEdge) and e.path is not None}
    extra = [p for p in flat if p not in wanted]
    if extra:
        raise ValueError(
            f"unflatten: {extra} are not state paths of this graphdef; its state paths are "
            f"{sorted(wanted, key=repr)}"
        )
    # Check everything before changing anything: a cached module or state is live, and
    # a failed unflatten must leave it as it was.
    cache: Mapping[int, Any] = index_ref_cache if index_ref_cache is not None else {}
    missing: list[Path] = []
    defined = set(index_ref) | {spec.index for spec in graphdef.node_specs}
    for e in edges:
        if type(e) is StateEdge and e.path is not None and e.index not in index_ref:
            cached = cache.get(e.index, _MISSING_VALUE)
            if cached is not _MISSING_VALUE and not isinstance(cached, State):
                raise ValueError(
                    f"unflatten: index_ref_cache holds a {type(cached).__name__} at index "
                    f"{e.index}, where the graphdef has a state ({_format_path(e.path)})"
                )
            if e.path in flat or cached is not _MISSING_VALUE:
                defined.add(e.index)
            else:
                missing.append(e.path)
        elif type(e) is StateLeafEdge and e.path not in flat:
            missing.append(e.path)
    if missing:
        raise ValueError(
            f"unflatten: no value for the states at {missing}: Expected key "
            f"{', '.join(map(_format_path, missing))} in the state mapping; pass the trees "
            "treefy_split returned."
        )
    for e in edges:
        if type(e) in (NodeEdge, StateEdge) and e.index not in defined:
            raise ValueError(
                f"unflatten: the graphdef refers to object {e.index}, which it never "
                "defines; pass the index_ref of the call that built it (merge_context)."
            )
    for spec in graphdef.node_specs:
        shell = cache.get(spec.index, spec)
        if shell is not spec and type(shell) is not spec.type:
            raise ValueError(
                f"unflatten: index_ref_cache holds a {type(shell).__name__} at index "
                f"{spec.index}, where the graphdef has a {spec.type.__name__}"
            )
    # Pass 0: the states (each once, at its defining edge).
    for e in edges:
        if type(e) is StateEdge and e.path is not None and e.index not in index_ref:
            value = flat.get(e.path, _MISSING_VALUE)
            if value is not _MISSING_VALUE:
                index_ref[e.index] = _materialize(value, e, cache)
            else:  # checked above: the cache holds it
                index_ref[e.index] = cache[e.index]
    # Pass 1: empty graph nodes (reused from the cache where given).
    for spec in graphdef.node_specs:
        if spec.index in cache:
            shell = cache[spec.index]
            if type(shell) in _NODE_TYPES:
                _NODE_TYPES[type(shell)].clear(shell)
            else:
                # The graphdef never recorded the invisible attributes: keep them.
                kept = set(getattr(shell, "graph_invisible_attrs", ()))
                for key in [k for k in vars(shell) if k not in kept]:
                    del vars(shell)[key]
        elif spec.type in _NODE_TYPES:
            shell = _NODE_TYPES[spec.type].create_empty(spec.metadata)
        else:
            node_cls: Any = spec.type
            shell = node_cls.__new__(node_cls)
        index_ref[spec.index] = shell

    def resolve(edge: Any) -> Any:
        kind = type(edge)
        if kind is StaticEdge:
            return edge.value
        if kind is NodeEdge or kind is StateEdge:
            if edge.index not in index_ref:
                raise ValueError(
                    f"unflatten: the graphdef refers to object {edge.index}, which it never "
                    "defines; pass the index_ref of the call that built it (merge_context)."
                )
            return index_ref[edge.index]
        if kind is StateLeafEdge:
            value = flat[edge.path]
            return value.to_state() if isinstance(value, TreefyState) else value
        if kind is PytreeEdge:
            return _rebuild_container(edge.metadata, [(k, resolve(c)) for k, c in edge.fields])
        raise TypeError(f"unflatten: unknown edge {edge!r}")

    # Pass 2: fill the nodes.
    for spec in graphdef.node_specs:
        node = index_ref[spec.index]
        impl = _NODE_TYPES.get(spec.type)
        for key, e in spec.fields:
            if impl is not None:
                impl.set_key(node, key, resolve(e))
            else:
                setattr(node, key, resolve(e))
    return resolve(graphdef.root)


def _compile_filters(filters: tuple[FilterLike, ...], who: str) -> list[Filter[Any]]:
    """Convert `filters`; a catch-all before the last one would starve those after it."""
    compiled = [to_filter(f) for f in filters]
    for i, f in enumerate(compiled):
        rest = compiled[i + 1 :]
        if isinstance(f, Everything) and not all(isinstance(g, Everything) for g in rest):
            raise ValueError(
                f"{who}: filter {i} ({filters[i]!r}) matches every state, so the filters after "
                f"it ({', '.join(map(repr, rest))}) would get none; put `...` last."
            )
    return compiled


def _first_match(
    found: list[tuple[Path, State[Any]]], compiled: list[Filter[Any]]
) -> list[list[tuple[Path, State[Any]]]]:
    """One bucket per filter; each state goes to the first filter matching it, or none."""
    buckets: list[list[tuple[Path, State[Any]]]] = [[] for _ in compiled]
    for path, state in found:
        for bucket, f in zip(buckets, compiled, strict=True):
            if f(path, state):
                bucket.append((path, state))
                break
    return buckets


def _split_tree(
    node: object, tree: StateTree[Any], filters: tuple[FilterLike, ...], who: str
) -> tuple[StateTree[Any], ...]:
    """Split a `flatten` tree by filters applied to the live states of `node`."""
    if not filters:
        return (tree,)
    live = {p: s for p, s in iter_states(node)}
    compiled = _compile_filters(filters, who)
    buckets: list[list[tuple[Path, Any]]] = [[] for _ in compiled]
    unmatched: list[Path] = []
    for path, value in tree.items():
        state = live.get(path, value)
        for bucket, f in zip(buckets, compiled, strict=True):
            if f(path, state):
                bucket.append((path, value))
                break
        else:
            unmatched.append(path)
    if unmatched and who == "treefy_split":
        raise ValueError(
            f"treefy_split: the states at {unmatched} match none of the filters "
            f"{[repr(f) for f in compiled]}; add ... as the last filter to collect the rest."
        )
    return tuple(StateTree(b) for b in buckets)


def treefy_split(node: object, *filters: FilterLike) -> tuple[Any, ...]:
    """Split `node` into a `GraphDef` and `StateTree`s of `TreefyState`s.

    With no filter, returns `(graphdef, tree)` holding every state. With
    filters, returns one tree per filter; a state goes to the first filter that
    matches it, and every state must be matched (end with `...` for "the rest";
    `...` anywhere but last is a `ValueError`, as in BrainState). Each tree maps
    the first path of a state to its `TreefyState` (a pytree whose only leaf is
    the value), reads like BrainState's `NestedDict` (`tree.layers[0].w`), and
    keeps path access (`tree[("layers", 0, "w")]`, `tree.to_flat()`).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.n = sj.ShortTermState(jnp.array(0))
        >>> graphdef, params, rest = sj.treefy_split(Net(), sj.ParamState, ...)
        >>> list(params), list(rest), params.w.value.tolist()
        ([('w',)], [('n',)], [1.0, 1.0])
        >>> new = sj.treefy_merge(graphdef, params, rest)
        >>> new.w.value.tolist()
        [1.0, 1.0]
    """
    graph, tree = flatten(node)
    return (graph, *_split_tree(node, tree, filters, "treefy_split"))


def treefy_merge(graphdef: GraphDef[Any], *trees: Mapping[Path, Any]) -> Any:
    """Build a new node from `graphdef` and state trees: fresh modules, fresh states.

    The inverse of `treefy_split`. Every state path of the graphdef must have a
    value in exactly one tree: a `TreefyState` (as `treefy_split` gives), a
    `State`, or a plain value (a state of the recorded type is made for it).

    Raises:
        ValueError: a state has values in two trees, or none, or a tree has a path
            that is no state path of `graphdef`.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2), name="w")
        >>> graphdef, tree = sj.treefy_split(Net())
        >>> new = sj.treefy_merge(graphdef, jax.tree.map(lambda x: x * 2, tree))
        >>> new.w.value.tolist(), new.w.name
        ([2.0, 2.0], 'w')
    """
    return unflatten(graphdef, _merged_trees(trees, "treefy_merge"))


def _merged_trees(trees: Sequence[Mapping[Any, Any]], who: str) -> StateTree[Any]:
    """One path-keyed tree from several (path-keyed or nested); a path in two is an error."""
    values: dict[Path, Any] = {}
    for tree in trees:
        flat = tree.to_flat() if hasattr(tree, "to_flat") else StateTree(tree).to_flat()
        for path, value in flat.items():
            if path in values:
                raise ValueError(f"{who}: the state at {path} has a value in two trees")
            values[path] = value
    return StateTree(values)


@overload
def treefy_states(node: object, /) -> StateTree[Any]: ...
@overload
def treefy_states(node: object, filter: FilterLike, /) -> StateTree[Any]: ...
@overload
def treefy_states(
    node: object, first: FilterLike, second: FilterLike, /, *more: FilterLike
) -> tuple[StateTree[Any], ...]: ...
def treefy_states(
    node: object, *filters: FilterLike
) -> StateTree[Any] | tuple[StateTree[Any], ...]:
    """The states of `node` as `StateTree`s of `TreefyState`s, without the graphdef.

    The same trees `treefy_split` returns, except that the filters need not cover
    every state: with no filter, one tree of every state; with one filter, one tree;
    with several, a tuple of trees, one per filter, where each state goes to the
    first filter that matches it and a state no filter matches is left out. A state
    reachable along two paths appears once, at its first path in attribute order.
    Write changed values back with `update_states`.

    Args:
        node: a module, or a list, tuple or dict holding states and modules.
        *filters: the filters selecting each tree; `...` may only come last.

    Returns:
        A `StateTree` (no filter or one), or a tuple of them (several filters).

    Raises:
        ValueError: `...` (or another catch-all) comes before the last filter.
        TypeError: a filter is none of the accepted forms.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.h = sj.HiddenState(jnp.zeros(2))
        ...         self.n = sj.ShortTermState(jnp.array(0))
        >>> net = Net()
        >>> list(sj.graph.treefy_states(net))
        [('w',), ('h',), ('n',)]
        >>> params, hidden = sj.graph.treefy_states(net, sj.ParamState, sj.HiddenState)
        >>> params[("w",)].value.tolist(), list(hidden)
        ([1.0, 1.0], [('h',)])
    """
    graph, tree = flatten(node)
    del graph
    if not filters:
        return tree
    trees = _split_tree(node, tree, filters, "treefy_states")
    return trees[0] if len(trees) == 1 else trees


_MISSING: Any = object()


def _lookup(node: object, path: Path) -> Any:
    """The object at `path` under `node` (attribute names and container keys), or `_MISSING`."""
    obj = node
    for key in path:
        if isinstance(obj, Module):
            visible = isinstance(key, str) and key not in obj.graph_invisible_attrs
            obj = vars(obj).get(key, _MISSING) if visible else _MISSING
        elif type(obj) in _NODE_TYPES:
            obj = dict(_children(obj)).get(key, _MISSING)
        elif isinstance(obj, (list, tuple)):
            ok = isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(obj)
            obj = obj[key] if ok else _MISSING
        elif isinstance(obj, dict):
            obj = obj.get(key, _MISSING) if isinstance(key, Hashable) else _MISSING
        else:
            return _MISSING
        if obj is _MISSING:
            return _MISSING
    return obj


def update_states(node: object, tree: Mapping[Path, Any], /, *trees: Mapping[Path, Any]) -> None:
    """Write the values of `tree` (and `trees`) into the states of `node`, in place.

    Each entry `path -> value` sets `.value` of the state at that path; the State
    objects stay the same, so anything holding them (an optimizer, a transform's
    `grad_states`) sees the new values, and a state reachable along two paths is
    written once, under either path. Inside a statejax transform this is an ordinary
    state write. A value may also be a `State` (as `pop_states` and `Module.states`
    return): its value is copied into the state at that path, or, where the path no
    longer holds one (after `pop_states`), the `State` itself is put back as that
    attribute or dict entry, as in BrainState.

    Nothing is written unless every entry is valid.

    Args:
        node: the module (or container) to update.
        tree: a mapping from paths to values, such as a `StateTree`.
        *trees: more such mappings; together they must not set one state twice.

    Raises:
        ValueError: a path holds no state of `node` (and its value is not a `State`
            to put back there), or two entries set the same state; the message
            names the paths.
        TypeError: a tree is not a mapping, or one of its keys is not a path tuple.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.n = sj.ShortTermState(jnp.array(0))
        >>> net = Net()
        >>> w_before = net.w
        >>> params = sj.graph.treefy_states(net, sj.ParamState)
        >>> sj.graph.update_states(net, jax.tree.map(lambda x: x * 3, params))
        >>> net.w.value.tolist(), net.w is w_before
        ([3.0, 3.0], True)
        >>> sj.graph.update_states(net, {("m",): 1})
        Traceback (most recent call last):
        ...
        ValueError: update_states: the paths [('m',)] hold no state of Net ...
    """
    writes: dict[int, tuple[Path, State[Any], Any]] = {}
    grafts: dict[tuple[int, Hashable], tuple[Path, Any, State[Any]]] = {}
    unknown: list[Path] = []
    twice: list[tuple[Path, Path]] = []
    for t in (tree, *trees):
        if not isinstance(t, Mapping):
            raise TypeError(
                f"update_states: expected mappings from paths to values (such as a StateTree), "
                f"got {type(t).__name__}"
            )
        for path, value in t.items():
            if not isinstance(path, tuple):
                raise TypeError(
                    f"update_states: the key {path!r} is not a path; a path is a tuple such as "
                    f"('layers', 0, 'w')"
                )
            target = _lookup(node, path)
            if isinstance(target, State):
                if id(target) in writes:
                    twice.append((writes[id(target)][0], path))
                new = value.value if isinstance(value, (State, TreefyState)) else value
                writes[id(target)] = (path, target, new)
                continue
            parent = _lookup(node, path[:-1]) if path else _MISSING
            if (
                target is _MISSING
                and (
                    isinstance(value, State)
                    or (isinstance(value, TreefyState) and issubclass(value.type, State))
                )
                and (
                    isinstance(parent, dict)
                    or type(parent) in _NODE_TYPES
                    or (isinstance(parent, Module) and isinstance(path[-1], str))
                )
            ):
                if isinstance(value, TreefyState):
                    value = value.to_state()
                slot = (id(parent), path[-1])
                if slot in grafts:
                    twice.append((grafts[slot][0], path))
                grafts[slot] = (path, parent, value)
                continue
            unknown.append(path)
    if unknown:
        known = [p for p, _ in iter_states(node)]
        raise ValueError(
            f"update_states: the paths {unknown} hold no state of {type(node).__name__}; its "
            f"state paths are {known}. Check the spelling, or take the tree from "
            f"treefy_states(node) so the paths match."
        )
    if twice:
        pairs = ", ".join(f"{a} and {b}" for a, b in twice)
        raise ValueError(
            f"update_states: the same state is given two values, at {pairs}; "
            f"give each state one value."
        )
    for _, state, new in writes.values():
        state.value = new
    for path, parent, state in grafts.values():
        if isinstance(parent, Module):
            setattr(parent, path[-1], state)
        elif type(parent) in _NODE_TYPES:
            _NODE_TYPES[type(parent)].set_key(parent, path[-1], state)
        else:
            parent[path[-1]] = state


@overload
def pop_states(node: object, filter: type[S], /) -> StateMapping[S]: ...
@overload
def pop_states(node: object, filter: Filter[S], /) -> StateMapping[S]: ...
@overload
def pop_states(
    node: object, filter: PredicateFn | EllipsisType | bool | None | tuple[FilterLike, ...], /
) -> StateMapping[State[Any]]: ...
@overload
def pop_states(
    node: object, a: _One[A], b: _One[B], /
) -> tuple[StateMapping[A], StateMapping[B]]: ...
@overload
def pop_states(
    node: object, a: _One[A], b: _One[B], c: _One[C], /
) -> tuple[StateMapping[A], StateMapping[B], StateMapping[C]]: ...
@overload
def pop_states(
    node: object, a: _Each[A], b: _Each[B], /
) -> tuple[StateMapping[A], StateMapping[B]]: ...
@overload
def pop_states(
    node: object, first: FilterLike, second: FilterLike, /, *more: FilterLike
) -> tuple[StateMapping[State[Any]], ...]: ...
def pop_states(
    node: object, *filters: FilterLike
) -> StateMapping[Any] | tuple[StateMapping[Any], ...]:
    """Remove the states matching `filters` from `node`, and return them.

    Each matching state is detached from every attribute and dict entry holding
    it (a state reachable along two paths is removed from both), so `node` no
    longer sees it; the `State` objects themselves are returned, as BrainState
    does, keyed by their first path. Their values are `.values_tree()` of the
    result, and `update_states(node, popped)` puts them back. With several
    filters, one mapping per filter; each state goes to the first filter that
    matches it, and states no filter matches stay.

    States held in a list or tuple cannot be popped: removing an entry would
    renumber the paths of the entries after it. Nothing is removed unless every
    matching state can be.

    Args:
        node: the module (or dict) to remove states from.
        *filters: at least one filter; `...` may only come last.

    Returns:
        A `StateMapping` of the removed states (one filter), or a tuple of them.

    Raises:
        ValueError: no filter was given; `...` comes before the last filter; or a
            matching state sits in a list or tuple (the message names its path).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.h = sj.HiddenState(jnp.zeros(2))
        >>> net = Net()
        >>> hidden = sj.graph.pop_states(net, sj.HiddenState)
        >>> list(hidden), hasattr(net, "h"), list(net.states())
        ([('h',)], False, [('w',)])
        >>> sj.graph.update_states(net, hidden)
        >>> list(net.states())
        [('w',), ('h',)]
    """
    if not filters:
        raise ValueError(
            "pop_states: give at least one filter, such as pop_states(node, sj.HiddenState)."
        )
    buckets = _first_match(list(iter_states(node)), _compile_filters(filters, "pop_states"))
    chosen = {id(s) for bucket in buckets for _, s in bucket}
    holders: list[tuple[Any, Hashable]] = []
    stuck: list[Path] = []
    visited: set[int] = set()

    def walk(obj: object, path: Path) -> None:
        if isinstance(obj, State) or id(obj) in visited:
            return
        if _is_graph_node(obj) or isinstance(obj, (list, tuple, dict)):
            visited.add(id(obj))
        for key, child in list(_children(obj)):
            if isinstance(child, State):
                if id(child) in chosen:
                    if isinstance(obj, (list, tuple)):
                        stuck.append((*path, key))
                    else:
                        holders.append((obj, key))
            else:
                walk(child, (*path, key))

    walk(node, ())
    if isinstance(node, State) and id(node) in chosen:
        stuck.append(())
    if stuck:
        raise ValueError(
            f"pop_states: cannot remove the states at {stuck}: they sit in a list or tuple "
            f"(or are the node itself), and removing a list entry would renumber the paths "
            f"after it. Hold states to be popped as module attributes or in a dict."
        )
    for holder, key in holders:
        if isinstance(holder, Module):
            delattr(holder, str(key))
        elif type(holder) in _NODE_TYPES:
            _NODE_TYPES[type(holder)].pop_key(holder, key)
        else:
            del holder[key]
    maps: tuple[StateMapping[State[Any]], ...] = tuple(StateMapping(b) for b in buckets)
    return maps[0] if len(maps) == 1 else maps


MAX_INT = 2**31 - 1
"""The default upper bound of `allowed_hierarchy` (BrainState's: the largest int32)."""


def _walk(
    node: object, allowed_hierarchy: tuple[int, int], want_nodes: bool
) -> Iterator[tuple[Path, Any]]:
    # Depth counts graph nodes only (lists, tuples and dicts add none); each container
    # and each state is visited once, at its first path, so sharing and cycles are fine.
    lo, hi = allowed_hierarchy
    seen: set[int] = set()

    def visit(obj: object, path: Path, level: int) -> Iterator[tuple[Path, Any]]:
        if level > hi:
            return
        container = _is_graph_node(obj) or isinstance(obj, (list, tuple, dict))
        if container or isinstance(obj, State):
            if id(obj) in seen:
                return
            seen.add(id(obj))
        if container:
            for key, child in _children(obj):
                yield from visit(child, (*path, key), level + _is_graph_node(child))
            if want_nodes and _is_graph_node(obj) and level >= lo:
                yield path, obj
        elif not want_nodes and level >= lo:
            yield path, obj

    yield from visit(node, (), 0)


def iter_leaf(
    node: object, allowed_hierarchy: tuple[int, int] = (0, MAX_INT)
) -> Iterator[tuple[Path, Any]]:
    """Yield `(path, leaf)` for every leaf under `node`: states and plain attributes.

    Modules (and registered node types), lists, tuples and dicts are walked, each
    once; everything else is a leaf. A state reachable along two paths is yielded
    once, at its first path.

    Args:
        node: the module or container to walk.
        allowed_hierarchy: `(lo, hi)`: only leaves held at a module depth from `lo`
            to `hi` (the root is depth 0, each nested module adds one).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.size = 2
        >>> [(p, type(v).__name__) for p, v in sj.graph.iter_leaf(Net())]
        [(('w',), 'ParamState'), (('size',), 'int')]
    """
    yield from _walk(node, allowed_hierarchy, want_nodes=False)


def iter_node(
    node: object, allowed_hierarchy: tuple[int, int] = (0, MAX_INT)
) -> Iterator[tuple[Path, Any]]:
    """Yield `(path, module)` for every module (graph node) under `node`, itself included.

    Each module comes once, after the modules inside it (the root last, at path `()`).

    Args:
        node: the module or container to walk.
        allowed_hierarchy: `(lo, hi)`: only modules at a depth from `lo` to `hi`.

    Examples:
        >>> import statejax as sj
        >>> class Leaf(sj.Module): pass
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.a = Leaf()
        ...         self.b = self.a
        >>> [(p, type(n).__name__) for p, n in sj.graph.iter_node(Net())]
        [(('a',), 'Leaf'), ((), 'Net')]
    """
    yield from _walk(node, allowed_hierarchy, want_nodes=True)


def _split_first_match(
    items: Iterable[tuple[Path, Any]],
    filters: tuple[Any, ...],
    who: str,
    convert: Callable[[Any], Callable[[Path, Any], bool]],
) -> list[list[tuple[Path, Any]]]:
    # As in BrainState, a catch-all is appended, so every item lands in some bucket.
    compiled = [convert(f) for f in (*filters, ...)]
    for i, f in enumerate(compiled[:-1]):
        if isinstance(f, Everything) and not all(isinstance(g, Everything) for g in compiled[i:]):
            raise ValueError(
                f"{who}: filter {i} ({filters[i]!r}) matches everything, so the filters after "
                "it would get nothing; put `...` last."
            )
    buckets: list[list[tuple[Path, Any]]] = [[] for _ in compiled]
    for path, value in items:
        for bucket, f in zip(buckets, compiled, strict=True):
            if f(path, value):
                bucket.append((path, value))
                break
    return buckets


@overload
def states(node: object, /, *, allowed_hierarchy: tuple[int, int] = ...) -> StateMapping[Any]: ...
@overload
def states(
    node: object, filter: type[S], /, *, allowed_hierarchy: tuple[int, int] = ...
) -> StateMapping[S]: ...
@overload
def states(
    node: object, filter: Filter[S], /, *, allowed_hierarchy: tuple[int, int] = ...
) -> StateMapping[S]: ...
@overload
def states(
    node: object,
    filter: PredicateFn | EllipsisType | bool | None | tuple[FilterLike, ...],
    /,
    *,
    allowed_hierarchy: tuple[int, int] = ...,
) -> StateMapping[State[Any]]: ...
@overload
def states(
    node: object,
    first: FilterLike,
    second: FilterLike,
    /,
    *more: FilterLike,
    allowed_hierarchy: tuple[int, int] = ...,
) -> tuple[StateMapping[State[Any]], ...]: ...
def states(
    node: object, *filters: FilterLike, allowed_hierarchy: tuple[int, int] = (0, MAX_INT)
) -> StateMapping[Any] | tuple[StateMapping[State[Any]], ...]:
    """The states under `node`, as path -> State mappings (BrainState's `graph.states`).

    With no filter, every state; with one, the states it matches; with several, a
    tuple of mappings, one per filter, where each state goes to the first filter
    that matches it. A state reachable along two paths appears once, at its first.

    Args:
        node: a module, a registered node, or a list, tuple or dict of them.
        *filters: the filters; `...` may only come last.
        allowed_hierarchy: `(lo, hi)`: only states held at a module depth in that range.

    Returns:
        A `StateMapping` (no filter or one), or a tuple of them (several filters).

    Raises:
        ValueError: `...` (or another catch-all) comes before the last filter.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.stats = sj.LongTermState(jnp.zeros(2))
        >>> params, stats = sj.graph.states(Net(), sj.ParamState, sj.LongTermState)
        >>> list(params), list(stats)
        ([('w',)], [('stats',)])
    """
    found = [(p, v) for p, v in iter_leaf(node, allowed_hierarchy) if isinstance(v, State)]
    buckets = _split_first_match(found, filters, "states", to_filter)
    maps: tuple[StateMapping[State[Any]], ...] = tuple(StateMapping(b) for b in buckets)
    return maps[0] if len(filters) < 2 else maps[: len(filters)]


def nodes(
    node: object, *filters: PredicateLike, allowed_hierarchy: tuple[int, int] = (0, MAX_INT)
) -> dict[Path, Any] | tuple[dict[Path, Any], ...]:
    """The modules under `node` (itself included, at path `()`), as path -> module dicts.

    Filters are as `statejax.filters.to_predicate` takes them (a module class selects
    its instances); each module goes to the first filter matching it.

    Args:
        node: a module, a registered node, or a container of them.
        *filters: the filters; `...` may only come last.
        allowed_hierarchy: `(lo, hi)`: only modules at a depth in that range.

    Returns:
        A `dict` (no filter or one), or a tuple of them (several filters).

    Examples:
        >>> import statejax as sj
        >>> class Cell(sj.Module): pass
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.cells = [Cell(), Cell()]
        >>> list(sj.graph.nodes(Net(), Cell))
        [('cells', 0), ('cells', 1)]
    """
    buckets = _split_first_match(iter_node(node, allowed_hierarchy), filters, "nodes", to_predicate)
    maps = tuple(dict(b) for b in buckets)
    return maps[0] if len(filters) < 2 else maps[: len(filters)]


def graphdef(node: object) -> GraphDef[Any]:
    """The `GraphDef` of `node`: what `treefy_split(node)[0]` returns.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> sj.graph.graphdef(Net()) == sj.treefy_split(Net())[0]
        True
    """
    graph, _ = flatten(node)
    return graph


def clone(node: N) -> N:
    """A deep copy of `node` with fresh states holding the same values.

    Sharing and cycles are kept: a state or module reachable along two paths is one
    object in the copy too. Plain attributes are shared, not copied.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.tied = self.w
        >>> net = Net(); copy = sj.graph.clone(net)
        >>> copy.w is not net.w, copy.tied is copy.w
        (True, True)
    """
    graph, tree = treefy_split(node)
    merged: N = treefy_merge(graph, tree)
    return merged


class NodeStates:
    """A graph node packed as a pytree: its `GraphDef` (static) and state trees (leaves).

    `graph_to_tree` puts one in place of each module; `tree_to_graph` builds the
    modules back. JAX transforms map over the state values inside.

    Args:
        _graphdef: the packed node's structure, or `None` (states only).
        states: the state trees (or, from `from_prefixes`, any prefixes).
        metadata: static data carried along (not a pytree leaf).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> packed = sj.graph.NodeStates.from_split(*sj.treefy_split(Net()))
        >>> list(packed.state), packed.graphdef == sj.graph.graphdef(Net())
        ([('w',)], True)
    """

    __slots__ = ("_graphdef", "metadata", "states")

    def __init__(
        self, _graphdef: GraphDef[Any] | None, states: tuple[Any, ...], metadata: Any = None
    ) -> None:
        self._graphdef = _graphdef
        self.states = states
        self.metadata = metadata

    @property
    def graphdef(self) -> GraphDef[Any]:
        """The structure of the packed node.

        Raises:
            ValueError: the `NodeStates` was made from states alone (`from_states`).
        """
        if self._graphdef is None:
            raise ValueError("this NodeStates holds states only (from_states); it has no graphdef")
        return self._graphdef

    @property
    def state(self) -> Any:
        """The one state tree.

        Raises:
            ValueError: it holds several trees (use `states`).
        """
        if len(self.states) != 1:
            raise ValueError(f"this NodeStates holds {len(self.states)} state trees; use .states")
        return self.states[0]

    @classmethod
    def from_split(
        cls,
        graphdef: GraphDef[Any],
        state: StateTree[Any],
        /,
        *states: StateTree[Any],
        metadata: Any = None,
    ) -> NodeStates:
        """Pack what `treefy_split` returned."""
        return cls(graphdef, (state, *states), metadata)

    @classmethod
    def from_states(cls, state: StateTree[Any], /, *states: StateTree[Any]) -> NodeStates:
        """Pack state trees without a graphdef."""
        return cls(None, (state, *states))

    @classmethod
    def from_prefixes(cls, prefixes: Iterable[Any], /, *, metadata: Any = None) -> NodeStates:
        """Pack prefixes (for example the in-axes of a vmap) as the `states`, without a graphdef.

        Examples:
            >>> import statejax as sj
            >>> ns = sj.graph.NodeStates.from_prefixes([0, None], metadata="axes")
            >>> ns.states, ns.metadata
            ((0, None), 'axes')
        """
        return cls(None, tuple(prefixes), metadata)

    def __repr__(self) -> str:
        return f"NodeStates(graphdef={self._graphdef!r}, states={self.states!r})"


class _IdentityKey:
    """Static data holding a `GraphDef`: equal when the graphdefs are equal, hashable."""

    __slots__ = ("graphdef",)
    graphdef: GraphDef[Any] | None

    def __init__(self, graphdef: GraphDef[Any] | None) -> None:
        self.graphdef = graphdef

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _IdentityKey) and (
            other.graphdef is self.graphdef or other.graphdef == self.graphdef
        )

    def __hash__(self) -> int:
        if self.graphdef is None:
            return 0
        try:
            return hash(self.graphdef)
        except TypeError:  # an unhashable plain attribute: fall back on the shape
            return hash((self.graphdef.type, len(self.graphdef.node_specs)))


def _flatten_node_states(n: NodeStates) -> tuple[tuple[Any, ...], tuple[Any, Any]]:
    return n.states, (_IdentityKey(n._graphdef), n.metadata)


def _unflatten_node_states(aux: tuple[_IdentityKey, Any], states: Iterable[Any]) -> NodeStates:
    return NodeStates(aux[0].graphdef, tuple(states), aux[1])


jax.tree_util.register_pytree_node(NodeStates, _flatten_node_states, _unflatten_node_states)


class SplitContext:
    """Splits several objects with one shared index (see `split_context`)."""

    __slots__ = ("ref_index",)

    def __init__(self, ref_index: RefMap[Any, int]) -> None:
        self.ref_index = ref_index

    def treefy_split(self, node: object, *filters: FilterLike) -> tuple[Any, ...]:
        """`treefy_split(node, *filters)`, indexing objects in this context's shared index."""
        graph, tree = flatten(node, self.ref_index)
        return (graph, *_split_tree(node, tree, filters, "treefy_split"))


class MergeContext:
    """Merges several graphdefs with one shared table (see `merge_context`)."""

    __slots__ = ("index_ref",)

    def __init__(self, index_ref: dict[int, Any]) -> None:
        self.index_ref = index_ref

    def treefy_merge(
        self,
        graphdef: GraphDef[Any],
        state_mapping: Mapping[Path, Any],
        /,
        *more: Mapping[Path, Any],
    ) -> Any:
        """`treefy_merge(graphdef, ...)`, building shared objects once across the context."""
        values = _merged_trees((state_mapping, *more), "MergeContext.treefy_merge")
        return unflatten(graphdef, values, index_ref=self.index_ref)


@contextlib.contextmanager
def split_context() -> Iterator[tuple[SplitContext, RefMap[Any, int]]]:
    """Split several objects so that objects shared between them are recorded once.

    Yields `(ctx, ref_index)`: `ctx.treefy_split(node, *filters)` works as
    `treefy_split`, but all calls share `ref_index` (object -> index), so a module
    or state met in an earlier call becomes a reference to it. Merge the results
    with `merge_context` to get the sharing back.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self, w):
        ...         self.w = w
        >>> w = sj.ParamState(jnp.ones(2))
        >>> with sj.graph.split_context() as (ctx, _):
        ...     g1, t1 = ctx.treefy_split(Net(w))
        ...     g2, t2 = ctx.treefy_split(Net(w))
        >>> list(t1), list(t2)
        ([('w',)], [])
        >>> with sj.graph.merge_context() as (ctx, _):
        ...     a, b = ctx.treefy_merge(g1, t1), ctx.treefy_merge(g2, t2)
        >>> a.w is b.w, a.w is w
        (True, False)
    """
    ctx = SplitContext(RefMap())
    try:
        yield ctx, ctx.ref_index
    finally:
        del ctx.ref_index  # the context is single-use, as in BrainState


@contextlib.contextmanager
def merge_context() -> Iterator[tuple[MergeContext, dict[int, Any]]]:
    """Merge several graphdefs made in one `split_context`, rebuilding shared objects once.

    Yields `(ctx, index_ref)`: `ctx.treefy_merge(graphdef, *trees)` works as
    `treefy_merge`, and `index_ref` (index -> rebuilt object) is shared by all
    calls; see `split_context` for an example.

    Examples:
        >>> import statejax as sj
        >>> with sj.graph.merge_context() as (ctx, index_ref):
        ...     node = ctx.treefy_merge(*sj.treefy_split(sj.Module()))
        >>> index_ref[0] is node
        True
    """
    ctx = MergeContext({})
    try:
        yield ctx, ctx.index_ref
    finally:
        del ctx.index_ref


class _NoPrefix:
    """The default `prefix` of `graph_to_tree` / `tree_to_graph`: no prefix."""

    def __repr__(self) -> str:
        return "Missing"


_NO_PREFIX: Any = _NoPrefix()


def _broadcast_prefix(
    prefix: Any,
    full: Any,
    prefix_is_leaf: Callable[[Any], bool],
    tree_is_leaf: Callable[[Any], bool],
) -> list[Any]:
    """One prefix per leaf of `full`: each leaf of `prefix` repeated over its subtree."""
    result: list[Any] = []

    def add(x: Any, subtree: Any) -> None:
        structure: Any = jax.tree_util.tree_structure(subtree, is_leaf=tree_is_leaf)
        result.extend([x] * structure.num_leaves)

    try:
        jax.tree.map(add, prefix, full, is_leaf=prefix_is_leaf)
    except ValueError as e:
        raise ValueError(f"`prefix` is not a prefix tree of the input: {e}") from e
    return result


def _check_consistent_aliasing(
    node: object, prefix: Any, node_prefixes: RefMap[Any, list[tuple[Path, Any]]]
) -> None:
    """Raise if an object reachable from several leaves is given different prefixes."""
    for path, value in iter_leaf(node):
        if isinstance(value, State):
            if is_leaked(value):
                raise TraceContextError(
                    f"graph_to_tree: the state at {_format_path(path)} was created inside a "
                    "transform that has returned"
                )
            node_prefixes.setdefault(value, []).append((path, prefix))
    for path, value in iter_node(node):
        node_prefixes.setdefault(value, []).append((path, prefix))
    messages = []
    for obj, seen in node_prefixes.items():
        unique: list[Any] = []
        for _, p in seen:
            if not any(p is u or p == u for u in unique):
                unique.append(p)
        if len(unique) > 1:
            where = "\n".join(f"  {_format_path(p)}: {pre!r}" for p, pre in seen)
            messages.append(f"{type(obj).__name__} reached with different prefixes:\n{where}")
    if messages:
        raise ValueError(
            "graph_to_tree: inconsistent aliasing: an object shared between leaves gets two "
            "prefixes (for example two in_axes); give every place of a shared object the same "
            "prefix.\n" + "\n".join(messages)
        )


def _default_split_fn(ctx: SplitContext, path: Any, prefix: Any, leaf: Any) -> NodeStates:
    return NodeStates.from_split(*ctx.treefy_split(leaf))


def _is_graph_leaf(x: object) -> bool:
    return _is_graph_node(x) or isinstance(x, State)


def graph_to_tree(
    may_have_graph_nodes: Any,
    /,
    *,
    prefix: Any = _NO_PREFIX,
    split_fn: Callable[[SplitContext, Any, Any, Any], Any] = _default_split_fn,
    map_non_graph_nodes: bool = False,
    check_aliasing: bool = True,
) -> tuple[Any, StateMapping[State[Any]]]:
    """Replace every module in the pytree `tree` with a `NodeStates`: a pure pytree.

    The result can go through any JAX transform or function (its leaves are the
    state values); `tree_to_graph` builds the modules back. Sharing between the
    modules is kept: all are split in one `split_context`, so a state or module
    reachable from two of them is packed once, at its first place in leaf order,
    and comes back as one object.

    Args:
        may_have_graph_nodes: a pytree whose leaves may be modules (graph nodes).
        prefix: a prefix pytree of it (for example in-axes), broadcast to one
            prefix per leaf and handed to `split_fn`; by default none.
        split_fn: `(ctx, keypath, prefix, leaf) -> replacement`, called for each
            module; the default packs `ctx.treefy_split(leaf)` in a `NodeStates`.
        map_non_graph_nodes: also call `split_fn` on the other leaves.
        check_aliasing: raise if a module or state shared between leaves gets
            different prefixes.

    Returns:
        `(pytree, found)`: the packed pytree, and every state packed, as a
        `StateMapping` keyed `(index,)` by the state's index in the shared split.

    Raises:
        ValueError: `prefix` is not a prefix of the tree, or (with
            `check_aliasing`) a shared object gets two prefixes.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> net = Net()
        >>> packed, found = sj.graph.graph_to_tree({"a": net, "b": net, "x": 1.0})
        >>> doubled = jax.tree.map(lambda v: v * 2, packed)
        >>> back = sj.graph.tree_to_graph(doubled)
        >>> back["a"] is back["b"], back["a"].w.value.tolist(), back["x"]
        (True, [2.0, 2.0], 2.0)
        >>> list(found.values()) == [net.w]
        True
    """
    leaf_keys, treedef = jax.tree_util.tree_flatten_with_path(
        may_have_graph_nodes, is_leaf=_is_graph_leaf
    )
    if prefix is _NO_PREFIX:
        prefixes = [_NO_PREFIX] * len(leaf_keys)
    else:
        prefixes = _broadcast_prefix(
            prefix, may_have_graph_nodes, lambda x: x is None, _is_graph_leaf
        )
    if len(leaf_keys) != len(prefixes):
        raise ValueError(
            f"graph_to_tree: Mismatched number of leaves ({len(leaf_keys)}) and broadcast "
            f"prefixes ({len(prefixes)}); `prefix` is not a prefix tree of the input."
        )
    out: list[Any] = []
    node_prefixes: RefMap[Any, list[tuple[Path, Any]]] = RefMap()
    with split_context() as (ctx, ref_index):
        for (keypath, leaf), leaf_prefix in zip(leaf_keys, prefixes, strict=True):
            if _is_graph_node(leaf):
                if check_aliasing:
                    _check_consistent_aliasing(leaf, leaf_prefix, node_prefixes)
                out.append(split_fn(ctx, keypath, leaf_prefix, leaf))
            elif map_non_graph_nodes:
                out.append(split_fn(ctx, keypath, leaf_prefix, leaf))
            else:
                out.append(leaf)
    found: StateMapping[State[Any]] = StateMapping(
        ((i,), obj) for obj, i in ref_index.items() if isinstance(obj, State)
    )
    return jax.tree_util.tree_unflatten(treedef, out), found


def _is_tree_node(x: object) -> bool:
    return isinstance(x, NodeStates)


def _merge_tree_node(ctx: MergeContext, path: Any, prefix: Any, leaf: Any) -> Any:
    if not isinstance(leaf, NodeStates):
        raise ValueError(
            f"tree_to_graph: expected a NodeStates at {jax.tree_util.keystr(path)}, "
            f"got a {type(leaf).__name__}"
        )
    return ctx.treefy_merge(leaf.graphdef, *leaf.states)


def tree_to_graph(
    tree: Any,
    /,
    *,
    prefix: Any = _NO_PREFIX,
    merge_fn: Callable[[MergeContext, Any, Any, Any], Any] = _merge_tree_node,
    is_node_leaf: Callable[[Any], bool] = _is_tree_node,
    is_leaf: Callable[[Any], bool] = _is_tree_node,
    map_non_graph_nodes: bool = False,
) -> Any:
    """Build the modules back from a pytree made by `graph_to_tree` (fresh states).

    Each `NodeStates` becomes a module holding the values of its trees; all are
    merged in one `merge_context`, so objects that were shared between modules are
    shared again.

    Args:
        tree: a pytree whose node leaves are `NodeStates`.
        prefix: a prefix pytree, broadcast and handed to `merge_fn`.
        merge_fn: `(ctx, keypath, prefix, leaf) -> node`, called for each node
            leaf; the default merges `leaf.graphdef` with `leaf.states`.
        is_node_leaf: which leaves are merged (default: `NodeStates`).
        is_leaf: where flattening `tree` stops (default: at `NodeStates`).
        map_non_graph_nodes: also call `merge_fn` on the other leaves.

    Raises:
        ValueError: `prefix` is not a prefix of `tree`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> net = Net()
        >>> back = sj.graph.tree_to_graph(sj.graph.graph_to_tree([net, net])[0])
        >>> back[0] is back[1], back[0] is net
        (True, False)
    """
    leaf_keys, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    if prefix is _NO_PREFIX:
        prefixes = [_NO_PREFIX] * len(leaf_keys)
    else:
        prefixes = _broadcast_prefix(prefix, tree, lambda x: x is None or is_leaf(x), is_leaf)
    if len(leaf_keys) != len(prefixes):
        raise ValueError(
            f"tree_to_graph: Mismatched number of leaves ({len(leaf_keys)}) and broadcast "
            f"prefixes ({len(prefixes)}); `prefix` is not a prefix tree of `tree`."
        )
    out: list[Any] = []
    with merge_context() as (ctx, _):
        for (keypath, leaf), leaf_prefix in zip(leaf_keys, prefixes, strict=True):
            if is_node_leaf(leaf) or map_non_graph_nodes:
                out.append(merge_fn(ctx, keypath, leaf_prefix, leaf))
            else:
                out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)

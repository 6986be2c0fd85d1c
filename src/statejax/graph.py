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

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import jax

from statejax._errors import TraceContextError
from statejax._graph_util import RefMap, Static
from statejax._state import State, TreefyState, is_leaked, register_by_reference
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
    "GraphDef",
    "Module",
    "Node",
    "NodeStates",
    "RefMap",
    "StateMapping",
    "StateTree",
    "Static",
    "clone",
    "flatten",
    "graph_to_tree",
    "graphdef",
    "iter_leaf",
    "iter_node",
    "iter_states",
    "nodes",
    "pop_states",
    "register_graph_node_type",
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

    def __repr__(self) -> str:
        inner = ", ".join(f"{'.'.join(map(str, p))}={s!r}" for p, s in iter_states(self))
        return f"{type(self).__name__}({inner})"


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


def _children(node: object) -> Iterator[tuple[Hashable, object]]:
    if isinstance(node, Module):
        yield from vars(node).items()
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
        self._items: dict[Path, V] = dict(items)

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


def _flatten_tree(tree: StateTree[Any]) -> tuple[list[Any], tuple[Path, ...]]:
    return list(tree._items.values()), tuple(tree._items)


def _unflatten_tree(paths: tuple[Path, ...], values: Any) -> StateTree[Any]:
    return StateTree(zip(paths, values, strict=True))


jax.tree_util.register_pytree_node(StateTree, _flatten_tree, _unflatten_tree)


class GraphDef:
    """The structure of a node with its state values taken out (see `treefy_split`).

    It records module classes, plain attributes (by reference), containers, and
    for each state its path, type and tag. Two graphdefs of identically built
    modules compare equal.
    """

    __slots__ = ("_root", "_state_paths")

    def __init__(self, root: Any, state_paths: tuple[Path, ...]) -> None:
        self._root = root
        self._state_paths = state_paths

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GraphDef) and self._root == other._root

    def __hash__(self) -> int:
        return hash(self._state_paths)

    def __repr__(self) -> str:
        return f"GraphDef(states={list(self._state_paths)})"


# Structural descriptions used inside GraphDef: plain tuples, so equality is structural.
_STATE, _MODULE, _LIST, _TUPLE, _DICT, _LEAF, _REF, _CUSTOM = range(8)


def _describe_graph(
    node: object, index: dict[int, Any] | None = None, base: Any = None
) -> tuple[Any, tuple[Path, ...]]:
    # `index` (id -> (base, path)) may be shared by several descriptions, so that an
    # object met in an earlier one becomes a reference to it (graph_to_tree).
    index = {} if index is None else index
    paths: list[Path] = []

    def describe(obj: object, path: Path) -> Any:
        if (isinstance(obj, State) or _is_graph_node(obj)) and id(obj) in index:
            return (_REF, index[id(obj)])
        if isinstance(obj, State):
            index[id(obj)] = (base, path)
            paths.append(path)
            tag = frozenset(obj.tag) if obj.tag is not None else None
            return (_STATE, type(obj), tag, path, obj.name, obj.sharding)
        if type(obj) in _NODE_TYPES:
            index[id(obj)] = (base, path)
            items, aux = _NODE_TYPES[type(obj)].flatten(obj)
            attrs = tuple((k, describe(v, (*path, k))) for k, v in items)
            return (_CUSTOM, type(obj), _Opaque(aux), attrs)
        if isinstance(obj, Module):
            index[id(obj)] = (base, path)
            attrs = tuple((k, describe(v, (*path, k))) for k, v in vars(obj).items())
            return (_MODULE, type(obj), attrs)
        if isinstance(obj, list):
            return (_LIST, tuple(describe(v, (*path, i)) for i, v in enumerate(obj)))
        if isinstance(obj, tuple) and type(obj) is tuple:
            return (_TUPLE, tuple(describe(v, (*path, i)) for i, v in enumerate(obj)))
        if isinstance(obj, dict):
            return (_DICT, tuple((k, describe(v, (*path, k))) for k, v in obj.items()))
        return (_LEAF, _Opaque(obj))

    return describe(node, ()), tuple(paths)


class _Opaque:
    """A plain attribute held by reference inside a GraphDef (equal by `==` when possible)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Opaque):
            return False
        if self.obj is other.obj:
            return True
        try:
            return bool(self.obj == other.obj)
        except Exception:  # arrays and other objects without a boolean ==
            return False

    def __hash__(self) -> int:
        return 0


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


def treefy_split(node: object, *filters: FilterLike) -> tuple[Any, ...]:
    """Split `node` into a `GraphDef` and `StateTree` s of plain values.

    With no filter, returns `(graphdef, tree)` holding every state. With
    filters, returns one tree per filter; a state goes to the first filter that
    matches it, and every state must be matched (end with `...` for "the rest";
    `...` anywhere but last is a `ValueError`, as in BrainState).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.n = sj.ShortTermState(jnp.array(0))
        >>> graphdef, params, rest = sj.treefy_split(Net(), sj.ParamState, ...)
        >>> list(params), list(rest)
        ([('w',)], [('n',)])
        >>> new = sj.treefy_merge(graphdef, params, rest)
        >>> new.w.value.tolist()
        [1.0, 1.0]
    """
    root, paths = _describe_graph(node)
    found = list(iter_states(node))
    graphdef = GraphDef(root, paths)
    if not filters:
        return graphdef, StateTree((p, s.value) for p, s in found)
    compiled = _compile_filters(filters, "treefy_split")
    buckets: list[list[tuple[Path, Any]]] = [[] for _ in compiled]
    unmatched: list[Path] = []
    for path, state in found:
        for bucket, f in zip(buckets, compiled, strict=True):
            if f(path, state):
                bucket.append((path, state.value))
                break
        else:
            unmatched.append(path)
    if unmatched:
        raise ValueError(
            f"treefy_split: the states at {unmatched} match none of the filters "
            f"{[repr(f) for f in compiled]}; add ... as the last filter to collect the rest."
        )
    return (graphdef, *(StateTree(b) for b in buckets))


def treefy_merge(graphdef: GraphDef, *trees: Mapping[Path, Any]) -> Any:
    """Build a new node from `graphdef` and value trees: fresh modules, fresh states.

    Every state path of the graphdef must have a value in exactly one tree.
    """
    values: dict[Path, Any] = {}
    for tree in trees:
        for path, value in tree.items():
            if path in values:
                raise ValueError(f"treefy_merge: the state at {path} has a value in two trees")
            values[path] = value
    missing = [p for p in graphdef._state_paths if p not in values]
    if missing:
        raise ValueError(f"treefy_merge: no value for the states at {missing}")
    extra = [p for p in values if p not in set(graphdef._state_paths)]
    if extra:
        raise ValueError(f"treefy_merge: {extra} are not state paths of this graphdef")
    return _build(graphdef, values, {}, None)


def _build(graphdef: GraphDef, values: Mapping[Path, Any], built: dict[Any, Any], base: Any) -> Any:
    """The node `graphdef` describes, holding `values`; `built` maps (base, path) to
    what was built so far (shared by several builds in `tree_to_graph`)."""

    def build(desc: Any, path: Path) -> Any:
        kind = desc[0]
        if kind == _REF:
            return built[desc[1]]
        if kind == _STATE:
            cls, tag, name = desc[1], desc[2], desc[4]
            state = cls.__new__(cls)
            value = values[path]
            if isinstance(value, TreefyState):
                value = value.value
            State.__init__(state, value, name, tag=tag, sharding=desc[5])
            built[base, path] = state
            return state
        if kind == _CUSTOM:
            impl = _NODE_TYPES[desc[1]]
            node = impl.create_empty(desc[2].obj)
            built[base, path] = node
            for key, child in desc[3]:
                impl.set_key(node, key, build(child, (*path, key)))
            return node
        if kind == _MODULE:
            module = desc[1].__new__(desc[1])
            built[base, path] = module
            for key, child in desc[2]:
                setattr(module, key, build(child, (*path, key)))
            return module
        if kind == _LIST:
            return [build(c, (*path, i)) for i, c in enumerate(desc[1])]
        if kind == _TUPLE:
            return tuple(build(c, (*path, i)) for i, c in enumerate(desc[1]))
        if kind == _DICT:
            return {k: build(c, (*path, k)) for k, c in desc[1]}
        return desc[1].obj

    return build(graphdef._root, ())


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
    """The values of the states of `node`, as `StateTree`s, without the graphdef.

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
        >>> params[("w",)].tolist(), list(hidden)
        ([1.0, 1.0], [('h',)])
    """
    found = list(iter_states(node))
    if not filters:
        return StateTree((p, s.value) for p, s in found)
    buckets = _first_match(found, _compile_filters(filters, "treefy_states"))
    trees: tuple[StateTree[Any], ...] = tuple(
        StateTree((p, s.value) for p, s in b) for b in buckets
    )
    return trees[0] if len(trees) == 1 else trees


_MISSING: Any = object()


def _lookup(node: object, path: Path) -> Any:
    """The object at `path` under `node` (attribute names and container keys), or `_MISSING`."""
    obj = node
    for key in path:
        if isinstance(obj, Module):
            obj = vars(obj).get(key, _MISSING) if isinstance(key, str) else _MISSING
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
            if isinstance(value, TreefyState):
                value = value.to_state()
            if (
                target is _MISSING
                and isinstance(value, State)
                and (
                    isinstance(parent, dict)
                    or type(parent) in _NODE_TYPES
                    or (isinstance(parent, Module) and isinstance(path[-1], str))
                )
            ):
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


def graphdef(node: object) -> GraphDef:
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
    root, paths = _describe_graph(node)
    return GraphDef(root, paths)


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


def flatten(node: object) -> tuple[GraphDef, StateTree[Any]]:
    """Split `node` into its `GraphDef` and a `StateTree` of every state value.

    The same as `treefy_split(node)` with no filter; `unflatten` is the inverse.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> graph, tree = sj.graph.flatten(Net())
        >>> sj.graph.unflatten(graph, tree).w.value.tolist()
        [1.0, 1.0]
    """
    graph, tree = treefy_split(node)
    return graph, tree


def unflatten(graphdef: GraphDef, state_tree: Mapping[Path, Any]) -> Any:
    """Build a new node from a `GraphDef` and one tree of state values (see `flatten`).

    Values may also be `TreefyState`s (their `.value` is used).

    Raises:
        ValueError: a state path of the graphdef has no value, or the tree has a
            path the graphdef lacks.
    """
    return treefy_merge(graphdef, state_tree)


class NodeStates:
    """A graph node packed as a pytree: its `GraphDef` (static) and state trees (leaves).

    `graph_to_tree` puts one in place of each module; `tree_to_graph` builds the
    modules back. JAX transforms map over the state values inside.

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
        self, graphdef: GraphDef | None, states: tuple[StateTree[Any], ...], metadata: Any = None
    ) -> None:
        self._graphdef = graphdef
        self.states = states
        self.metadata = metadata

    @property
    def graphdef(self) -> GraphDef:
        """The structure of the packed node.

        Raises:
            ValueError: the `NodeStates` was made from states alone (`from_states`).
        """
        if self._graphdef is None:
            raise ValueError("this NodeStates holds states only (from_states); it has no graphdef")
        return self._graphdef

    @property
    def state(self) -> StateTree[Any]:
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
        graphdef: GraphDef,
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

    def __repr__(self) -> str:
        return f"NodeStates(graphdef={self._graphdef!r}, states={self.states!r})"


class _IdentityKey:
    """Static data holding a `GraphDef`: equal when the graphdefs are equal, hashable."""

    __slots__ = ("graphdef",)
    graphdef: GraphDef | None

    def __init__(self, graphdef: GraphDef | None) -> None:
        self.graphdef = graphdef

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _IdentityKey) and (
            other.graphdef is self.graphdef or other.graphdef == self.graphdef
        )

    def __hash__(self) -> int:
        return hash(self.graphdef) if self.graphdef is not None else 0


def _flatten_node_states(n: NodeStates) -> tuple[tuple[StateTree[Any], ...], tuple[Any, Any]]:
    return n.states, (_IdentityKey(n._graphdef), n.metadata)


def _unflatten_node_states(aux: tuple[_IdentityKey, Any], states: Iterable[Any]) -> NodeStates:
    return NodeStates(aux[0].graphdef, tuple(states), aux[1])


jax.tree_util.register_pytree_node(NodeStates, _flatten_node_states, _unflatten_node_states)


def _is_node_leaf(x: object) -> bool:
    return _is_graph_node(x) or isinstance(x, NodeStates)


def graph_to_tree(tree: Any, /) -> tuple[Any, dict[tuple[int], State[Any]]]:
    """Replace every module in the pytree `tree` with a `NodeStates`: a pure pytree.

    The result can go through any JAX transform or function (its leaves are the
    state values); `tree_to_graph` builds the modules back. Sharing between the
    modules is kept: a state or module reachable from two of them is packed once,
    at its first place in leaf order, and comes back as one object.

    Returns:
        `(pytree, found)`: the packed pytree, and every state packed, keyed `(i,)`
        in the order met.

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
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_is_graph_node)
    index: dict[int, Any] = {}
    found: dict[tuple[int], State[Any]] = {}
    out: list[Any] = []
    for k, leaf in enumerate(leaves):
        if not _is_graph_node(leaf):
            out.append(leaf)
            continue
        root, paths = _describe_graph(leaf, index, k)
        own = set(paths)
        states_here = [(p, s) for p, s in iter_states(leaf) if p in own]
        for _, s in states_here:
            found[(len(found),)] = s
        out.append(
            NodeStates(GraphDef(root, paths), (StateTree((p, s.value) for p, s in states_here),))
        )
    return jax.tree_util.tree_unflatten(treedef, out), found


def tree_to_graph(tree: Any, /) -> Any:
    """Build the modules back from a pytree made by `graph_to_tree` (fresh states).

    Each `NodeStates` becomes a module holding the values of its trees; objects
    that were shared between modules are shared again.

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
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_is_node_leaf)
    built: dict[Any, Any] = {}
    out: list[Any] = []
    for k, leaf in enumerate(leaves):
        if isinstance(leaf, NodeStates):
            values: dict[Path, Any] = {}
            for t in leaf.states:
                values.update(t.items())
            out.append(_build(leaf.graphdef, values, built, k))
        else:
            out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)

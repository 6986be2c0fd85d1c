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

from collections.abc import Hashable, Iterable, Iterator, Mapping
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import jax

from statejax._state import State, register_by_reference
from statejax.filters import (
    Everything,
    Filter,
    FilterLike,
    Path,
    PredicateFn,
    to_filter,
)

if TYPE_CHECKING:
    from statejax.filters import A, B, C, D, _Each, _One

__all__ = [
    "GraphDef",
    "Module",
    "Node",
    "StateMapping",
    "StateTree",
    "iter_states",
    "pop_states",
    "treefy_merge",
    "treefy_split",
    "treefy_states",
    "update_states",
]

S = TypeVar("S", bound=State[Any])
V = TypeVar("V")


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
        if isinstance(value, State) and value._name is None:
            value._name = f"{type(self).__name__}.{name}"
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

        With no filter, every state; with one, one mapping; with several, a tuple
        of mappings, one per filter (a state may appear in more than one).

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
        found = list(iter_states(self))
        if not filters:
            return StateMapping(found)
        compiled = [to_filter(f) for f in filters]
        maps: tuple[StateMapping[State[Any]], ...] = tuple(
            StateMapping([(p, s) for p, s in found if f(p, s)]) for f in compiled
        )
        return maps[0] if len(maps) == 1 else maps

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


def _children(node: object) -> Iterator[tuple[Hashable, object]]:
    if isinstance(node, Module):
        yield from vars(node).items()
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)
    elif isinstance(node, dict):
        yield from node.items()


def iter_states(node: object) -> Iterator[tuple[Path, State[Any]]]:
    """Yield `(path, state)` for every state reachable from `node`, each state once."""
    seen: set[int] = set()

    def walk(obj: object, path: Path) -> Iterator[tuple[Path, State[Any]]]:
        if isinstance(obj, State):
            if id(obj) not in seen:
                seen.add(id(obj))
                yield path, obj
            return
        if isinstance(obj, Module):
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
    order. It is flat already (BrainState's `NestedDict` nests by path component):
    `to_flat()` gives a plain `dict` keyed by path tuples, as BrainState's does, and
    `StateTree.from_flat` builds one back.

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
    """

    __slots__ = ("_items",)

    def __init__(self, items: Any = ()) -> None:
        self._items: dict[Path, V] = dict(items)

    def __getitem__(self, path: Path) -> V:
        return self._items[path]

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
_STATE, _MODULE, _LIST, _TUPLE, _DICT, _LEAF, _REF = range(7)


def _describe_graph(node: object) -> tuple[Any, tuple[Path, ...]]:
    index: dict[int, Path] = {}
    paths: list[Path] = []

    def describe(obj: object, path: Path) -> Any:
        if isinstance(obj, (State, Module)) and id(obj) in index:
            return (_REF, index[id(obj)])
        if isinstance(obj, State):
            index[id(obj)] = path
            paths.append(path)
            return (_STATE, type(obj), obj.tag, path, obj.sharding)
        if isinstance(obj, Module):
            index[id(obj)] = path
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
    built: dict[Path, Any] = {}

    def build(desc: Any, path: Path) -> Any:
        kind = desc[0]
        if kind == _REF:
            return built[desc[1]]
        if kind == _STATE:
            cls, tag = desc[1], desc[2]
            state = cls.__new__(cls)
            State.__init__(state, values[path], tag=tag, sharding=desc[4])
            built[path] = state
            return state
        if kind == _MODULE:
            module = desc[1].__new__(desc[1])
            built[path] = module
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
                new = value.value if isinstance(value, State) else value
                writes[id(target)] = (path, target, new)
                continue
            parent = _lookup(node, path[:-1]) if path else _MISSING
            if (
                target is _MISSING
                and isinstance(value, State)
                and (
                    isinstance(parent, dict)
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
        if isinstance(obj, (Module, list, tuple, dict)):
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
        else:
            del holder[key]
    maps: tuple[StateMapping[State[Any]], ...] = tuple(StateMapping(b) for b in buckets)
    return maps[0] if len(maps) == 1 else maps

"""Modules, state paths, and the split/merge of a module into plain arrays.

A :class:`Module` is an ordinary Python object; its states are found by walking
its attributes and the lists, tuples and dicts they hold. A state's *path* is the
sequence of attribute names and container keys that leads to it, for example
``('layers', 0, 'w')``. A state reachable along two paths is reported once, at
the first path in attribute order.

Example:
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

from collections.abc import Hashable, Iterator, Mapping
from types import EllipsisType
from typing import Any, TypeVar, overload

import jax

from statejax._state import State, register_by_reference
from statejax.filters import Filter, FilterLike, Path, PredicateFn, to_filter

__all__ = [
    "GraphDef",
    "Module",
    "StateMapping",
    "StateTree",
    "iter_states",
    "treefy_merge",
    "treefy_split",
]

S = TypeVar("S", bound=State[Any])
V = TypeVar("V")


class Module:
    """Base class for objects that own states.

    Subclass it and assign states, sub-modules, or lists/tuples/dicts of them as
    attributes. A module passes through transforms by reference (it is a pytree
    node without leaves), so a method decorated with ``statejax.jit`` works.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
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
    @overload
    def states(
        self, first: FilterLike, second: FilterLike, /, *more: FilterLike
    ) -> tuple[StateMapping[State[Any]], ...]: ...
    def states(
        self, *filters: FilterLike
    ) -> StateMapping[Any] | tuple[StateMapping[State[Any]], ...]:
        """The states of this module selected by ``filters``, as path -> State mappings.

        With no filter, every state; with one, one mapping; with several, a tuple
        of mappings, one per filter (a state may appear in more than one).

        Example:
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


def _children(node: object) -> Iterator[tuple[Hashable, object]]:
    if isinstance(node, Module):
        yield from vars(node).items()
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)
    elif isinstance(node, dict):
        yield from node.items()


def iter_states(node: object) -> Iterator[tuple[Path, State[Any]]]:
    """Yield ``(path, state)`` for every state reachable from ``node``, each state once."""
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

    Returned by :meth:`Module.states`; usable wherever a transform takes states.
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
        """The current values, as a :class:`StateTree` with the same paths."""
        return StateTree((p, s.value) for p, s in self._items.items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{p!r}: {s!r}" for p, s in self._items.items())
        return f"StateMapping({{{inner}}})"


class StateTree(Mapping[Path, V]):
    """An ordered mapping from paths to values; a pytree whose leaves are the values.

    Unlike a dict pytree its keys are never sorted, so mixed ``str``/``int`` path
    components are fine and the order is the module's attribute order.
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

    def __repr__(self) -> str:
        return f"StateTree({self._items!r})"


def _flatten_tree(tree: StateTree[Any]) -> tuple[list[Any], tuple[Path, ...]]:
    return list(tree._items.values()), tuple(tree._items)


def _unflatten_tree(paths: tuple[Path, ...], values: Any) -> StateTree[Any]:
    return StateTree(zip(paths, values, strict=True))


jax.tree_util.register_pytree_node(StateTree, _flatten_tree, _unflatten_tree)


class GraphDef:
    """The structure of a node with its state values taken out (see :func:`treefy_split`).

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
            return (_STATE, type(obj), obj.tag, path)
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
    """A plain attribute held by reference inside a GraphDef (equal by ``==`` when possible)."""

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


def treefy_split(node: object, *filters: FilterLike) -> tuple[Any, ...]:
    """Split ``node`` into a :class:`GraphDef` and :class:`StateTree` s of plain values.

    With no filter, returns ``(graphdef, tree)`` holding every state. With
    filters, returns one tree per filter; a state goes to the first filter that
    matches it, and every state must be matched (end with ``...`` for "the rest").

    Example:
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
    compiled = [to_filter(f) for f in filters]
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
    """Build a new node from ``graphdef`` and value trees: fresh modules, fresh states.

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
            State.__init__(state, values[path], tag=tag)
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

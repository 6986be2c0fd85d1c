"""BrainState's operations on a graph: `treefy_split`, `treefy_merge`, `treefy_states`,
`graphdef` and `clone`, and the in-place `update_states` and `pop_states`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from statejax._state import State, TreefyState, check_write
from statejax.filters import Everything, Filter, FilterLike, Path, PredicateFn, to_filter
from statejax.graph._containers import StateMapping, StateTree
from statejax.graph._flatten import flatten, unflatten
from statejax.graph._graphdef import GraphDef
from statejax.graph._node_types import (
    _NODE_TYPES,
    _children,
    _is_graph_node,
    _is_module,
)
from statejax.graph._walk import iter_states

if TYPE_CHECKING:
    from statejax.filters import A, B, C, EachFilter, OneFilter

S = TypeVar("S", bound=State[Any])
N = TypeVar("N")


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
        if _is_module(obj):
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
                    # a module's children are attributes: their names are strings
                    or (
                        _is_graph_node(parent)
                        and (isinstance(path[-1], str) or not _is_module(parent))
                    )
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
    # Every write is checked before any is made: a value the state refuses (a leaking
    # tracer, a new tree structure under check_state_value_tree()) changes nothing.
    for _, state, new in writes.values():
        check_write(state, new)
    for _, state, new in writes.values():
        state.value = new
    for path, parent, state in grafts.values():
        if _is_graph_node(parent):
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
    node: object, a: OneFilter[A], b: OneFilter[B], /
) -> tuple[StateMapping[A], StateMapping[B]]: ...
@overload
def pop_states(
    node: object, a: OneFilter[A], b: OneFilter[B], c: OneFilter[C], /
) -> tuple[StateMapping[A], StateMapping[B], StateMapping[C]]: ...
@overload
def pop_states(
    node: object, a: EachFilter[A], b: EachFilter[B], /
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
        if _is_graph_node(holder):
            _NODE_TYPES[type(holder)].pop_key(holder, key)
        else:
            del holder[key]
    maps: tuple[StateMapping[State[Any]], ...] = tuple(StateMapping(b) for b in buckets)
    return maps[0] if len(maps) == 1 else maps


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

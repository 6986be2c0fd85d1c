"""Walking a graph: the states, leaves and modules under a node, each once, with its path;
`states` and `nodes` select from them by filters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import EllipsisType
from typing import Any, TypeVar, overload

from statejax._state import State
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
from statejax.graph._containers import StateMapping
from statejax.graph._node_types import _children, _is_graph_node

S = TypeVar("S", bound=State[Any])


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

"""BrainState's split and merge contexts: several objects split (merged) with one shared
index, so objects shared between them are recorded (rebuilt) once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from statejax.filters import FilterLike, Path
from statejax.graph._flatten import flatten, unflatten
from statejax.graph._graphdef import GraphDef, RefMap
from statejax.graph._operations import _merged_trees, _split_tree


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

"""BrainState's `graph_to_tree` and `tree_to_graph`: the modules in a pytree packed as
`NodeStates` (a pure pytree of their state values), and built back."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax

from statejax._errors import TraceContextError
from statejax._state import State
from statejax._tracing import is_leaked
from statejax.filters import Path
from statejax.graph._containers import StateMapping, StateTree
from statejax.graph._context import MergeContext, SplitContext, merge_context, split_context
from statejax.graph._flatten import _format_path
from statejax.graph._graphdef import GraphDef, RefMap
from statejax.graph._node_types import _is_graph_node
from statejax.graph._walk import iter_leaf, iter_node


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

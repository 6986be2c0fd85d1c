"""BrainState's `flatten` and `unflatten`: a graph to its `GraphDef` and a `StateTree` of
its states, in one pre-order pass, and back."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from statejax._state import State, TreefyState
from statejax.filters import Path
from statejax.graph._containers import StateTree
from statejax.graph._graphdef import (
    GraphDef,
    NodeEdge,
    NodeSpec,
    PytreeEdge,
    RefMap,
    StateEdge,
    StateLeafEdge,
    StaticEdge,
    iter_edges,
)
from statejax.graph._node_types import _MODULE_NODE, _NODE_TYPES, _is_graph_node, _NodeType


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
    return _NODE_TYPES[type(node)].flatten(node)


def _node_type(cls: type) -> _NodeType:
    """How to rebuild a node of class `cls` (one not in the table is rebuilt as a module)."""
    return _NODE_TYPES.get(cls, _MODULE_NODE)


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
            _node_type(spec.type).clear(shell)  # checked above: type(shell) is spec.type
        else:
            shell = _node_type(spec.type).create_empty(spec.metadata)
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
        impl = _node_type(spec.type)
        for key, e in spec.fields:
            impl.set_key(node, key, resolve(e))
    return resolve(graphdef.root)

"""The `GraphDef` format: the flat structure of a graph with its state values taken out
(a root edge, and a `NodeSpec` per module with the edge classes), and the two small
utilities BrainState exports beside it: `RefMap`, a mapping keyed by object identity,
and `Static`, a pytree node holding static data."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

import jax

__all__ = [
    "GraphDef",
    "NodeEdge",
    "NodeSpec",
    "PytreeEdge",
    "PytreeType",
    "RefMap",
    "StateEdge",
    "StateLeafEdge",
    "Static",
    "StaticEdge",
]

K = TypeVar("K")
V = TypeVar("V")
A = TypeVar("A")


class RefMap(MutableMapping[K, V]):
    """A mutable mapping keyed by object identity (`is`), not by `==`/`hash`.

    Unhashable objects (lists, modules with a custom `__eq__`) can be keys, and two
    equal but distinct objects are two keys. It holds its keys strongly.

    Args:
        mapping: initial entries, a mapping or an iterable of `(key, value)` pairs.

    Examples:
        >>> import statejax as sj
        >>> a, b = [1], [1]
        >>> refs = sj.graph.RefMap([(a, "a"), (b, "b")])
        >>> len(refs), refs[a], refs[b], [2] in refs
        (2, 'a', 'b', False)
    """

    __slots__ = ("_items",)

    def __init__(self, mapping: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._items: dict[int, tuple[K, V]] = {}
        self.update(mapping)

    def __getitem__(self, key: K) -> V:
        return self._items[id(key)][1]

    def __contains__(self, key: object) -> bool:
        return id(key) in self._items

    def __setitem__(self, key: K, value: V) -> None:
        self._items[id(key)] = (key, value)

    def __delitem__(self, key: K) -> None:
        del self._items[id(key)]

    def __iter__(self) -> Iterator[K]:
        return (key for key, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"RefMap({{{', '.join(f'{k!r}: {v!r}' for k, v in self._items.values())}}})"

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class Static(Generic[A]):
    """A pytree node without leaves that carries `value` as static data.

    JAX transforms see no leaves in it, and compare `value` (which must be hashable)
    to decide whether two trees have the same structure.

    Examples:
        >>> import jax
        >>> import statejax as sj
        >>> jax.tree.leaves({"a": 1, "cfg": sj.graph.Static("relu")})
        [1]
    """

    value: A


jax.tree_util.register_static(Static)


class PytreeType:
    """The `GraphDef.type` of a graph whose root is a container (list, tuple, dict).

    Examples:
        >>> import statejax as sj
        >>> sj.graph.graphdef([sj.Module()]).type is sj.graph.PytreeType
        True
    """


@dataclasses.dataclass(frozen=True)
class NodeEdge:
    """A reference to a graph node (a module) by its index in `GraphDef.node_specs`.

    Every place that holds the same module holds an edge with the same index, so
    sharing and cycles are kept.

    Examples:
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.a = sj.Module()
        ...         self.b = self.a
        >>> fields = dict(sj.graph.graphdef(Net()).node_specs[0].fields)
        >>> fields["a"] == fields["b"] == sj.graph.NodeEdge(1)
        True
    """

    index: int


@dataclasses.dataclass(frozen=True)
class StateEdge:
    """A `State` in the graph: its index, the path of its value in the state mapping, its type.

    The first place holding a state carries its `path`; every later place (sharing)
    carries `path=None` and the same `index`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        ...         self.tied = self.w
        >>> fields = dict(sj.graph.graphdef(Net()).node_specs[0].fields)
        >>> fields["w"], fields["tied"].path
        (StateEdge(index=1, path=('w',), type=<class 'statejax._state.ParamState'>), None)
    """

    index: int
    path: tuple[Any, ...] | None
    type: type


@dataclasses.dataclass(frozen=True)
class StateLeafEdge:
    """A bare `TreefyState` value, read from the state mapping at `path` (never shared).

    Examples:
        >>> import statejax as sj
        >>> sj.graph.StateLeafEdge(("ref",)).path
        ('ref',)
    """

    path: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class PytreeEdge:
    """A container (list, tuple, dict, `TreefyState`) held inline: how to rebuild it, its children.

    Args:
        metadata: what rebuilds the container (its type, or a tree definition).
        fields: `(key, edge)` pairs, one per child, in order.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.layers = [sj.ParamState(jnp.ones(2))]
        >>> edge = dict(sj.graph.graphdef(Net()).node_specs[0].fields)["layers"]
        >>> type(edge).__name__, [k for k, _ in edge.fields]
        ('PytreeEdge', [0])
    """

    metadata: Any
    fields: tuple[tuple[Any, Any], ...]


@dataclasses.dataclass(frozen=True, eq=False)
class StaticEdge:
    """A plain value held as-is in the structure (numbers, strings, hashable tuples, arrays).

    Two static edges are equal when their values are the same object or compare
    equal; hashing one hashes its value, so a `GraphDef` holding an unhashable
    value (a bare array) works for split and merge but cannot be hashed.

    Examples:
        >>> import statejax as sj
        >>> sj.graph.StaticEdge((2, 3)) == sj.graph.StaticEdge((2, 3))
        True
    """

    value: Any

    def __eq__(self, other: object) -> bool:
        if type(other) is not StaticEdge:
            return False
        if self.value is other.value:
            return True
        if type(self.value) is not type(other.value):
            return False
        try:
            return bool(self.value == other.value)
        except Exception:  # arrays and other objects without a boolean ==
            return False

    def __hash__(self) -> int:
        return hash((StaticEdge, self.value))


N = TypeVar("N")


@dataclasses.dataclass(frozen=True)
class NodeSpec(Generic[N]):
    """One graph node of a `GraphDef`: its type, index, static metadata and children.

    Args:
        type: the node's class.
        index: its index (shared with states in one index space).
        metadata: the static data that rebuilds an empty node (`(cls,)` for a module).
        fields: `(key, edge)` pairs, one per attribute, in attribute order.

    Examples:
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.size = 3
        >>> spec = sj.graph.graphdef(Net()).node_specs[0]
        >>> spec.type.__name__, spec.index, spec.fields
        ('Net', 0, (('size', StaticEdge(value=3)),))
    """

    type: type
    index: int
    metadata: Any
    fields: tuple[tuple[Any, Any], ...]


@dataclasses.dataclass(frozen=True, repr=False)
class GraphDef(Generic[N]):
    """The structure of a graph with its state values taken out (see `treefy_split`).

    A root edge and a flat table of graph-node specs, ordered by index: modules are
    referred to by index (`NodeEdge`), so sharing and cycles are kept, and lists,
    tuples and dicts are held inline (`PytreeEdge`). Two graphdefs of identically
    built modules compare equal. It is a static pytree (no leaves); its hash is
    computed on first use and fails, with a `TypeError`, only if a plain attribute
    in it is unhashable (a bare array: hold it in a `State` or `Static`).

    Args:
        root: the edge of the root object.
        node_specs: the `NodeSpec` of every graph node, by ascending index.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2))
        >>> graphdef = sj.graph.graphdef(Net())
        >>> graphdef.type.__name__, graphdef.index, graphdef == sj.graph.graphdef(Net())
        ('Net', 0, True)
    """

    root: Any
    node_specs: tuple[NodeSpec[Any], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cached_hash", None)

    def __hash__(self) -> int:
        cached: int | None = self.__dict__["_cached_hash"]
        if cached is None:
            try:
                cached = hash((self.root, self.node_specs))
            except TypeError as e:
                raise TypeError(
                    "GraphDef is not hashable because it holds an unhashable plain value "
                    f"({e}). Hold arrays in a State (or in statejax.graph.Static if they "
                    "are meant to be static)."
                ) from e
            object.__setattr__(self, "_cached_hash", cached)
        return cached

    def __getstate__(self) -> dict[str, Any]:
        # String hashes differ between processes: an unpickled graphdef hashes afresh.
        return {**self.__dict__, "_cached_hash": None}

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is GraphDef
            and self.root == other.root
            and self.node_specs == other.node_specs
        )

    @property
    def type(self) -> type:
        """The root's class, or `PytreeType` when the root is a container."""
        if isinstance(self.root, NodeEdge):
            for spec in self.node_specs:
                if spec.index == self.root.index:
                    return spec.type
        return PytreeType

    @property
    def index(self) -> int:
        """The root's index, or `0` when the root is a container."""
        return self.root.index if isinstance(self.root, NodeEdge) else 0

    def state_paths(self) -> tuple[tuple[Any, ...], ...]:
        """The paths of the state mapping this graphdef reads, one per state.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> class Net(sj.Module):
            ...     def __init__(self):
            ...         self.w = sj.ParamState(jnp.ones(2))
            >>> sj.graph.graphdef(Net()).state_paths()
            (('w',),)
        """
        out: list[tuple[Any, ...]] = []
        for edge in iter_edges(self):
            if type(edge) is StateEdge and edge.path is not None:
                out.append(edge.path)
            elif type(edge) is StateLeafEdge:
                out.append(edge.path)
        return tuple(out)

    def __repr__(self) -> str:
        return f"GraphDef(type={self.type.__name__}, states={list(self.state_paths())})"


def iter_edges(graphdef: GraphDef[Any]) -> Iterator[Any]:
    """Every edge of `graphdef`: the root, then each node's fields, containers depth first."""
    for edge in (graphdef.root, *(e for spec in graphdef.node_specs for _, e in spec.fields)):
        todo = [edge]
        while todo:
            e = todo.pop()
            yield e
            if type(e) is PytreeEdge:
                todo.extend(c for _, c in reversed(e.fields))


jax.tree_util.register_static(GraphDef)

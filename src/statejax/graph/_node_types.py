"""The kinds of graph node: modules, and the types given to `register_graph_node_type`.

Each graph node type has an entry here saying how to take its instances apart and
build them back; `Module` enters itself and each subclass (as BrainState's `Node`
does). Walking, `flatten`/`unflatten` and the state operations ask this table, never
the `Module` class, so that `Module`, whose methods use them, sits above them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Protocol, TypeGuard

from statejax._tracing import register_by_reference


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


class _ModuleLike(Protocol):
    graph_invisible_attrs: tuple[str, ...]


def _module_items(node: _ModuleLike) -> list[tuple[str, Any]]:
    """A module's attributes in order, less those named in `graph_invisible_attrs`."""
    hidden = node.graph_invisible_attrs
    return [(k, v) for k, v in vars(node).items() if k not in hidden]


def _module_flatten(node: Any) -> tuple[tuple[tuple[str, Any], ...], tuple[type]]:
    return tuple(_module_items(node)), (type(node),)


def _module_set_key(node: Any, key: Any, value: Any) -> None:
    setattr(node, key, value)


def _module_pop_key(node: Any, key: Any) -> None:
    delattr(node, str(key))


def _module_create_empty(metadata: tuple[type]) -> Any:
    cls: Any = metadata[0]
    return cls.__new__(cls)


def _module_clear(node: Any) -> None:
    # The graphdef never recorded the invisible attributes: keep them.
    kept = set(getattr(node, "graph_invisible_attrs", ()))
    for key in [k for k in vars(node) if k not in kept]:
        del vars(node)[key]


_MODULE_NODE = _NodeType(
    _module_flatten, _module_set_key, _module_pop_key, _module_create_empty, _module_clear
)
"""The node type of `Module` and its subclasses: the children are the visible attributes."""


def _add_module_type(cls: type, *, by_reference: bool) -> None:
    """Walk and rebuild instances of `cls` as modules (`Module` and its subclasses)."""
    _NODE_TYPES[cls] = _MODULE_NODE
    if by_reference:
        register_by_reference(cls)


def _is_graph_node(obj: object) -> bool:
    """A `Module` or an instance of a registered graph node type."""
    return type(obj) in _NODE_TYPES


def _is_module(obj: object) -> TypeGuard[_ModuleLike]:
    """A `Module` (a graph node whose children are its attributes)."""
    return _NODE_TYPES.get(type(obj)) is _MODULE_NODE


def _children(node: object) -> Iterator[tuple[Hashable, object]]:
    impl = _NODE_TYPES.get(type(node))
    if impl is not None:
        yield from impl.flatten(node)[0]
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)
    elif isinstance(node, dict):
        yield from node.items()

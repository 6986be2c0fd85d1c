"""Small graph utilities BrainState exports from `brainstate.graph`: `RefMap`, a
mapping keyed by object identity, and `Static`, a pytree node holding static data."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

import jax

__all__ = ["RefMap", "Static"]

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

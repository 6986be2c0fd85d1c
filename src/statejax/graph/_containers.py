"""The path-keyed containers of the graph functions: `StateMapping` of states (BrainState's
`FlattedDict`) and `StateTree` of values (BrainState's `NestedDict`), a pytree."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import jax

from statejax._state import State
from statejax.filters import Path

S = TypeVar("S", bound=State[Any])
V = TypeVar("V")


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

    def to_flat(self) -> dict[Path, S]:
        """A plain `dict` from path tuples to the states (BrainState's `FlattedDict` view)."""
        return dict(self._items)

    def values_tree(self) -> StateTree[Any]:
        """The current values, as a `StateTree` with the same paths."""
        return StateTree((p, s.value) for p, s in self._items.items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{p!r}: {s!r}" for p, s in self._items.items())
        return f"StateMapping({{{inner}}})"


FlattedDict = StateMapping
"""BrainState's `brainstate.util.FlattedDict` (what `states` returns): here `StateMapping`.

Examples:
    >>> import statejax as sj
    >>> class Net(sj.Module):
    ...     pass
    >>> isinstance(sj.graph.states(Net()), sj.graph.FlattedDict)
    True
"""


class StateTree(Mapping[Path, V]):
    """An ordered mapping from paths to values; a pytree whose leaves are the values.

    Returned by `treefy_split` and `treefy_states`, and taken by `treefy_merge` and
    `update_states`. Unlike a dict pytree its keys are never sorted, so mixed
    `str`/`int` path components are fine and the order is the module's attribute
    order. It is keyed by whole paths (`tree[("enc", "w")]`), and also reads like
    BrainState's nested `NestedDict`: `tree["enc"]` or `tree.enc` is the subtree of
    the paths under `"enc"` (or the value, if `("enc",)` is itself a path), so
    `tree.enc.w` works. `to_flat()` gives a plain `dict` keyed by path tuples, as
    BrainState's does, `to_nest()` nested dicts, and `StateTree.from_flat` builds
    one back. Iterating yields whole paths.

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
        >>> nested = sj.StateTree({("enc", "w"): 1.0, ("enc", "b"): 0.0})
        >>> nested.enc.w, list(nested["enc"]), "enc" in nested
        (1.0, [('w',), ('b',)], True)
    """

    __slots__ = ("_items",)

    def __init__(self, items: Any = ()) -> None:
        flat = dict(items)
        if any(not isinstance(p, tuple) for p in flat):
            # BrainState's `NestedDict({"enc": {"w": ...}})`: nested dicts of values.
            flat = dict(_flatten_nested(flat, ()))
        self._items: dict[Path, V] = flat

    def __getitem__(self, path: Any) -> Any:
        """The value at `path` (a tuple), or the subtree under a key (BrainState's nesting).

        `tree["layers"]` (or `tree.layers`) is the value at `("layers",)` if that is a
        path, else a `StateTree` of the paths starting with `"layers"`, that key removed.
        """
        if isinstance(path, tuple):
            return self._items[path]
        return self._nested(path, KeyError)

    def _nested(self, key: Any, error: type[Exception]) -> Any:
        single = (key,)
        if single in self._items:
            return self._items[single]
        sub: StateTree[Any] = StateTree(
            (p[1:], v) for p, v in self._items.items() if p[:1] == single
        )
        if not sub:
            raise error(
                f"StateTree: no path starts with {key!r}; the paths are {list(self._items)}"
            )
        return sub

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._nested(name, AttributeError)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, tuple):
            return key in self._items
        return any(p[:1] == (key,) for p in self._items)

    def to_nest(self) -> dict[Any, Any]:
        """The tree as nested plain `dict`s, one level per path component.

        Examples:
            >>> import statejax as sj
            >>> sj.StateTree({("enc", "w"): 1.0, ("b",): 0.0}).to_nest()
            {'enc': {'w': 1.0}, 'b': 0.0}
        """
        out: dict[Any, Any] = {}
        for path, value in self._items.items():
            level = out
            for key in path[:-1]:
                level = level.setdefault(key, {})
            level[path[-1]] = value
        return out

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


def _flatten_nested(nested: Mapping[Any, Any], prefix: Path) -> Iterator[tuple[Path, Any]]:
    for key, value in nested.items():
        if isinstance(value, StateTree):
            yield from (((*prefix, key, *p), v) for p, v in value.items())
        elif isinstance(value, dict) and value:
            yield from _flatten_nested(value, (*prefix, key))
        else:
            yield (*prefix, key), value


NestedDict = StateTree
"""BrainState's `brainstate.util.NestedDict`: in statejax the same class as `StateTree`.

`NestedDict({"enc": {"w": 1.0}})` (nested dicts) and `NestedDict.from_flat(...)`
(paths) both build one.

Examples:
    >>> import statejax as sj
    >>> tree = sj.graph.NestedDict({"enc": {"w": 1.0}})
    >>> tree.enc.w, tree.to_flat()
    (1.0, {('enc', 'w'): 1.0})
"""


def _flatten_tree(tree: StateTree[Any]) -> tuple[list[Any], tuple[Path, ...]]:
    return list(tree._items.values()), tuple(tree._items)


def _unflatten_tree(paths: tuple[Path, ...], values: Any) -> StateTree[Any]:
    return StateTree(zip(paths, values, strict=True))


jax.tree_util.register_pytree_node(StateTree, _flatten_tree, _unflatten_tree)

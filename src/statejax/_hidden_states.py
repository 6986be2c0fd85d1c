"""Hidden states holding several variables in one array: BrainState's
`HiddenGroupState` (the variables stacked on the last axis) and `HiddenTreeState`
(built from a named dict or a list of equally shaped arrays)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from statejax._state import HiddenState, _check_array, peek_array

__all__ = ["HiddenGroupState", "HiddenTreeState"]


class HiddenGroupState(HiddenState[jax.Array]):
    """Several hidden variables of one shape, stacked on the value's last axis.

    `varshape` is the shape of one variable (the value's shape without the last
    axis) and `num_state` the number of variables; `get_value(i)` reads one and
    `set_value({i: v})` writes some (a recorded write of the whole array).
    Variables are named `"0"`, `"1"`, ... (`name2index`).

    Raises:
        TypeError: the value is not an array.
        ValueError: the value has fewer than two axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> g = sj.HiddenGroupState(jnp.zeros((3, 2)))
        >>> g.varshape, g.num_state
        ((3,), 2)
        >>> g.set_value({1: jnp.ones(3)}); g.get_value(1).tolist(), g.get_value("0").tolist()
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """

    __slots__ = ("name2index",)
    name2index: dict[str, int]

    def __init__(
        self, value: Any, name: str | None = None, *, tag: str | Iterable[str] | None = None
    ) -> None:
        _check_array(type(self).__name__, value)
        if len(value.shape) < 2:
            raise ValueError(
                f"{type(self).__name__} stacks its variables on the last axis, so its value "
                f"needs at least two axes (variable shape..., number of variables); got "
                f"shape {tuple(value.shape)}. Use a HiddenState for a single variable."
            )
        super().__init__(value, name, tag=tag)
        self.name2index = {str(i): i for i in range(value.shape[-1])}

    @property
    def varshape(self) -> tuple[int, ...]:
        """The shape of one variable: the value's shape without its last axis."""
        return tuple(peek_array(self).shape[:-1])

    @property
    def num_state(self) -> int:
        """The number of variables: the size of the value's last axis."""
        return int(peek_array(self).shape[-1])

    def _index(self, item: int | str) -> int:
        if isinstance(item, str):
            if item not in self.name2index:
                raise KeyError(
                    f"{type(self).__name__}: no variable named {item!r}; the names are "
                    f"{list(self.name2index)}"
                )
            return self.name2index[item]
        if not isinstance(item, int) or isinstance(item, bool):
            raise TypeError(
                f"{type(self).__name__}: a variable is chosen by int index or str name, "
                f"got {type(item).__name__}"
            )
        n = self.num_state
        if not -n <= item < n:
            raise IndexError(f"{type(self).__name__}: index {item} out of range for {n} variables")
        return item % n

    def get_value(self, item: int | str) -> Any:
        """One variable, by index or name (a recorded read).

        Raises:
            IndexError: the index is out of range.
            KeyError: no variable has that name.
            TypeError: `item` is neither an int nor a str.
        """
        index = self._index(item)
        return self.value[..., index]

    def set_value(self, val: Mapping[int | str, Any] | Sequence[Any]) -> None:
        """Write some variables: `{index or name: array}`, or a list for the first ones.

        Raises:
            TypeError: `val` is not a mapping or a list/tuple, or a key is not an int or str.
            IndexError: an index is out of range.
            ValueError: an array's shape is not `varshape`.
        """
        if isinstance(val, (list, tuple)):
            val = dict(enumerate(val))
        if not isinstance(val, Mapping):
            raise TypeError(
                f"{type(self).__name__}.set_value takes a mapping {{index or name: array}} "
                f"or a list, got {type(val).__name__}"
            )
        new = jnp.asarray(self.value)
        for key, v in val.items():
            index = self._index(key)
            if tuple(jnp.shape(v)) != self.varshape:
                raise ValueError(
                    f"{type(self).__name__}.set_value: variable {key!r} has shape "
                    f"{tuple(jnp.shape(v))}, expected {self.varshape}"
                )
            new = new.at[..., index].set(v)
        self.value = new


class HiddenTreeState(HiddenGroupState):
    """Several named hidden variables of one shape, given as a dict (or a list).

    The variables are stacked on the last axis of one array; `name2index` maps
    each name (for a list: `"0"`, `"1"`, ...) to its index, `index2name` back.

    Raises:
        TypeError: the value is not a dict or list of arrays.
        ValueError: the arrays differ in shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> t = sj.HiddenTreeState({"v": jnp.zeros(3), "u": jnp.ones(3)})
        >>> t.varshape, t.num_state, t.get_value("u").tolist()
        ((3,), 2, [1.0, 1.0, 1.0])
    """

    __slots__ = ("index2name",)
    index2name: dict[int, str]

    def __init__(
        self,
        value: Mapping[str, Any] | Sequence[Any],
        name: str | None = None,
        *,
        tag: str | Iterable[str] | None = None,
    ) -> None:
        kind = type(self).__name__
        if isinstance(value, (list, tuple)):
            value = {str(i): v for i, v in enumerate(value)}
        if not isinstance(value, Mapping):
            raise TypeError(f"{kind} takes a dict or list of arrays, got {type(value).__name__}")
        for key, v in value.items():
            _check_array(f"{kind} entry {key!r}", v)
        shapes = {k: tuple(v.shape) for k, v in value.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"{kind}: every variable needs the same shape, got {shapes}")
        HiddenGroupState.__init__(
            self, jnp.stack([jnp.asarray(v) for v in value.values()], axis=-1), name, tag=tag
        )
        self.name2index = {str(k): i for i, k in enumerate(value)}
        self.index2name = {i: k for k, i in self.name2index.items()}

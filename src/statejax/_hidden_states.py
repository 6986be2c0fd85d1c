"""Hidden states holding several variables in one array: BrainState's
`HiddenGroupState` (the variables stacked on the last axis) and `HiddenTreeState`
(built from a named dict or a list of equally shaped arrays)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from statejax._state import HiddenState, check_array, peek_array

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
        check_array(type(self).__name__, value)
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
                    f"{type(self).__name__}: variable {item!r} not found; the names are "
                    f"{list(self.name2index)}"
                )
            return self.name2index[item]
        if not isinstance(item, int) or isinstance(item, bool):
            raise TypeError(
                f"{type(self).__name__}: key {item!r} should be int or str (a variable's "
                f"index or name), got {type(item).__name__}"
            )
        n = self.num_state
        if not -n <= item < n:
            raise IndexError(f"{type(self).__name__}: index {item} out of range for {n} variables")
        return item % n

    def _unit_of(self, index: int) -> Any:
        return None

    def _magnitude(self, index: int, v: Any) -> Any:
        return v

    def get_value(self, item: int | str) -> Any:
        """One variable, by index or name (a recorded read).

        Raises:
            IndexError: the index is out of range.
            KeyError: no variable has that name.
            TypeError: `item` is neither an int nor a str.
        """
        index = self._index(item)
        value = self.value[..., index]
        unit = self._unit_of(index)
        return value if unit is None else value * unit

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
                f"{type(self).__name__}.set_value takes a dictionary of hidden states "
                f"{{index or name: array}} or a list, got {type(val).__name__}"
            )
        current = self.value
        # A NumPy value becomes a JAX array (for `.at`); a brainunit Quantity keeps its unit.
        new = current if hasattr(current, "at") else jnp.asarray(current)
        n = self.num_state
        for key, v in val.items():
            if isinstance(key, int) and not isinstance(key, bool) and not 0 <= key < n:
                raise ValueError(
                    f"{type(self).__name__}.set_value: index {key} out of range; the state "
                    f"holds {n} variables"
                )
            index = self._index(key)
            if tuple(v.shape) != self.varshape:
                raise ValueError(
                    f"{type(self).__name__}.set_value: variable {key!r} has shape "
                    f"{tuple(v.shape)}, but the shape of the hidden state is {self.varshape}"
                )
            new = new.at[..., index].set(self._magnitude(index, v))
        self.value = new


class HiddenTreeState(HiddenGroupState):
    """Several named hidden variables of one shape, given as a dict (or a list).

    The variables are stacked on the last axis of one array; `name2index` maps
    each name (for a list: `"0"`, `"1"`, ...) to its index, `index2name` back.
    A `brainunit.Quantity` entry is stored as its magnitude and its unit kept in
    `name2unit`/`index2unit`: `get_value` gives it back with the unit, and
    `set_value` converts a Quantity to that unit.

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

    __slots__ = ("index2name", "index2unit", "name2unit")
    index2name: dict[int, str]
    name2unit: dict[str, Any]
    index2unit: dict[int, Any]

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
            raise TypeError(
                f"{kind} takes a dictionary/sequence of arrays, got {type(value).__name__}"
            )
        for key, v in value.items():
            check_array(f"{kind} entry {key!r}", v)
        shapes = {k: tuple(v.shape) for k, v in value.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"{kind}: every variable needs the same shape, got {shapes}")
        # A brainunit Quantity is stored as its magnitude; get_value puts the unit back.
        units = [
            getattr(v, "unit", None) if hasattr(v, "mantissa") else None for v in value.values()
        ]
        magnitudes = [
            jnp.asarray(v.mantissa if u is not None else v)
            for v, u in zip(value.values(), units, strict=True)
        ]
        HiddenGroupState.__init__(self, jnp.stack(magnitudes, axis=-1), name, tag=tag)
        self.name2index = {str(k): i for i, k in enumerate(value)}
        self.index2name = {i: k for k, i in self.name2index.items()}
        self.name2unit = dict(zip(self.name2index, units, strict=True))
        self.index2unit = dict(enumerate(units))

    @property
    def num_state(self) -> int:
        """The number of variables.

        Raises:
            ValueError: the value's last axis and `name2index` disagree.
        """
        n = int(peek_array(self).shape[-1])
        if n != len(self.name2index):
            raise ValueError(
                f"{type(self).__name__}: the value holds {n} variables but "
                f"{len(self.name2index)} are named ({list(self.name2index)})"
            )
        return n

    def _unit_of(self, index: int) -> Any:
        unit = self.index2unit[index]
        dim = getattr(unit, "dim", None)
        return None if unit is None or getattr(dim, "is_dimensionless", False) else unit

    def _magnitude(self, index: int, v: Any) -> Any:
        if not hasattr(v, "mantissa"):
            return v
        unit = self.index2unit[index]
        return v.to(unit).mantissa if unit is not None else v.mantissa

"""`StateFinder`: which states a function reads or writes, found by tracing it.

Not a plugin: it registers no transform; `statejax.transform.StateFinder` is a class built
on `StatefulFunction`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal

from statejax._transforms.stateful import StatefulFunction
from statejax.extend import State
from statejax.filters import PredicateLike, to_predicate

__all__ = ["StateFinder"]

_USAGES = ("all", "read", "write", "both")
_RETURN_TYPES = ("dict", "list", "tuple")


class StateFinder:
    """Find the states a function touches, by tracing it (no state changes).

    Calling the finder with example arguments returns the states `fn` touches,
    selected by `filter` and `usage`, in the container `return_type` names.

    Args:
        fn: the function to inspect.
        filter: keep only the states it matches (see `statejax.filters.to_predicate`).
        usage: `'all'`, `'read'` (read only), `'write'`, or `'both'` (a dict
            `{'read': ..., 'write': ...}`).
        return_type: `'dict'` (keys from `key_fn`), `'list'` or `'tuple'`.
        key_fn: `key_fn(index, state)` gives a dict key (default: the index). An
            unhashable key is turned into its `str`; a `None` or repeated key
            becomes the state's name or `state_<index>`, made unique.

    Raises:
        ValueError: `usage` or `return_type` is not one of the above.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> w = sj.ParamState(jnp.ones(()))
        >>> b = sj.State(jnp.zeros(()))
        >>> def forward(x):
        ...     w.value = w.value * x
        ...     return w.value + b.value
        >>> found = sj.transform.StateFinder(forward, usage="both", return_type="tuple")(2.0)
        >>> found["read"] == (b,), found["write"] == (w,), float(w.value)
        (True, True, 1.0)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        filter: PredicateLike | None = None,
        *,
        usage: Literal["all", "read", "write", "both"] = "all",
        return_type: Literal["dict", "list", "tuple"] = "dict",
        key_fn: Callable[[int, State[Any]], Hashable] | None = None,
    ) -> None:
        if usage not in _USAGES:
            raise ValueError(f"StateFinder: invalid usage {usage!r}; expected one of {_USAGES}.")
        if return_type not in _RETURN_TYPES:
            raise ValueError(
                f"StateFinder: invalid return_type {return_type!r}; expected one of "
                f"{_RETURN_TYPES}."
            )
        self.fn = fn
        self.usage = usage
        self.return_type = return_type
        self.key_fn = key_fn if key_fn is not None else _index
        self._filter = to_predicate(filter) if filter is not None else None
        self.stateful_fn = StatefulFunction(fn, name="StateFinder")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Same as `find`."""
        return self.find(*args, **kwargs)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        """The selected states of a call with these (example) arguments.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(()))
            >>> sj.transform.StateFinder(lambda: s.value, return_type="list").find() == [s]
            True
        """
        if self.usage == "both":
            return {
                "read": self._format(self._collect("read", args, kwargs)),
                "write": self._format(self._collect("write", args, kwargs)),
            }
        return self._format(self._collect(self.usage, args, kwargs))

    def _collect(
        self, usage: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[State[Any]]:
        sf = self.stateful_fn
        getter = {"all": sf.get_states, "read": sf.get_read_states, "write": sf.get_write_states}
        states = list(getter[usage](*args, **kwargs))
        if self._filter is not None:
            states = [s for s in states if self._filter((), s)]
        return states

    def _format(self, states: Sequence[State[Any]]) -> Any:
        if self.return_type == "list":
            return list(states)
        if self.return_type == "tuple":
            return tuple(states)
        result: dict[Hashable, State[Any]] = {}
        for index, state in enumerate(states):
            key = self.key_fn(index, state)
            try:
                hash(key)
            except TypeError:
                key = str(key)
            if key is None or key in result:
                base = getattr(state, "name", None) or f"state_{index}"
                key, suffix = base, 1
                while key in result:
                    key, suffix = f"{base}_{suffix}", suffix + 1
            result[key] = state
        return result


def _index(index: int, state: State[Any]) -> Hashable:
    return index

"""BrainState's helpers around states: value-tree checks, `maybe_state`, `FakeState`,
and `StateDictManager` (a dict of states with bulk value access)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from statejax._state import _TLS, State

__all__ = [
    "FakeState",
    "StateDictManager",
    "check_state_jax_tracer",
    "check_state_value_tree",
    "maybe_state",
]

T = TypeVar("T")


@contextlib.contextmanager
def check_state_value_tree(val: bool = True) -> Iterator[None]:
    """Inside the block, refuse writes that change a state's tree structure (`val=False`: allow).

    Off by default, as in BrainState, since the check costs a tree comparison per
    write. Blocks nest: the innermost one decides. This thread only.

    Raises:
        ValueError: (on a write inside the block) the new value's tree structure
            differs from the state's; the message names the state and both structures.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> s = sj.State(jnp.zeros(2))
        >>> with sj.check_state_value_tree():
        ...     s.value = jnp.ones(2)
        ...     s.value = {"a": jnp.ones(2)}
        Traceback (most recent call last):
        ...
        ValueError: the value written to State (float32[2]) has tree structure ...
    """
    _TLS.tree_check.append(val)
    try:
        yield
    finally:
        _TLS.tree_check.pop()


@contextlib.contextmanager
def check_state_jax_tracer(val: bool = True) -> Iterator[None]:
    """Accepted for BrainState code; statejax always checks what this turns on.

    In BrainState this block makes a write from a JAX trace the state does not
    belong to an error. statejax refuses such writes everywhere (a `TraceError`
    naming the state), so the block changes nothing; `val` is accepted and ignored.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> s = sj.State(jnp.zeros(2))
        >>> with sj.check_state_jax_tracer():
        ...     jax.jit(lambda x: s.__setattr__("value", x))(jnp.ones(2))
        Traceback (most recent call last):
        ...
        statejax._errors.TraceError: a JAX tracer was written to State (float32[2]) ...
    """
    del val
    yield


def maybe_state(val: Any) -> Any:
    """`val.value` if `val` is a `State`, else `val` itself.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> sj.maybe_state(sj.State(jnp.ones(2))).tolist(), sj.maybe_state(3)
        ([1.0, 1.0], 3)
    """
    if isinstance(val, State):
        return val.value
    return val


class FakeState(Generic[T]):
    """A plain holder with `value` and `name`, standing in where a `State` is optional.

    Not a `State`: transforms neither see nor thread it, and writing it inside one
    just sets the attribute.

    Examples:
        >>> import statejax as sj
        >>> f = sj.FakeState(1, name="x"); f.value = 2
        >>> f
        FakedState(value=2)
    """

    __slots__ = ("_name", "_value")

    def __init__(self, value: T, name: str | None = None) -> None:
        self._value = value
        self._name = name

    @property
    def value(self) -> T:
        """The held value."""
        return self._value

    @value.setter
    def value(self, v: T) -> None:
        self._value = v

    @property
    def name(self) -> str | None:
        """The name given, or `None`."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        self._name = name

    def __repr__(self) -> str:
        # BrainState's spelling, which its users' doctests match.
        return f"FakedState(value={self._value!r})"


class StateDictManager(dict[Any, State[Any]]):
    """A `dict` of states with bulk access to their values.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> m = sj.StateDictManager(w=sj.ParamState(jnp.ones(2)), n=sj.State(jnp.array(0)))
        >>> m.assign_values({"n": jnp.array(5)})
        >>> int(m.collect_values()["n"])
        5
        >>> params, rest = m.split_values(sj.ParamState)
        >>> list(params), list(rest)
        (['w'], ['n'])
    """

    def assign_values(self, *values: Mapping[Any, Any]) -> None:
        """Write each `key -> value` of each mapping into the state at `key`.

        Raises:
            TypeError: an argument is not a mapping.
            KeyError: a key holds no state.
        """
        for mapping in values:
            if not isinstance(mapping, Mapping):
                raise TypeError(
                    f"StateDictManager.assign_values takes mappings of key -> value, got "
                    f"{type(mapping).__name__}"
                )
            for key, value in mapping.items():
                self[key].value = value

    def collect_values(self) -> dict[Any, Any]:
        """The current values, keyed as the states are."""
        return {k: s.value for k, s in self.items()}

    def to_dict_values(self) -> dict[Any, Any]:
        """The current values as a plain `dict` (the same as `collect_values`)."""
        return self.collect_values()

    def split_values(self, *types: type) -> tuple[dict[Any, Any], ...]:
        """The values split by state type: one dict per type, then one of the rest.

        Each state goes to the first type it is an instance of.
        """
        out: tuple[dict[Any, Any], ...] = tuple({} for _ in range(len(types) + 1))
        for key, state in self.items():
            index = next((i for i, t in enumerate(types) if isinstance(state, t)), len(types))
            out[index][key] = state.value
        return out

    def subset(self, kind: type | tuple[type, ...]) -> StateDictManager:
        """The entries whose state is an instance of `kind`, as a new manager."""
        return StateDictManager((k, s) for k, s in self.items() if isinstance(s, kind))

    def add_unique_key(self, key: Any, state: State[Any]) -> None:
        """Add `state` at `key`.

        Raises:
            TypeError: `state` is not a `State`.
            ValueError: `key` already holds another state.
        """
        self._check(state)
        if key in self and self[key] is not state:
            raise ValueError(f"StateDictManager: the key {key!r} already holds another state")
        self[key] = state

    def add_unique_value(self, key: Any, state: State[Any]) -> bool:
        """Add `state` at `key` unless it is already held; return whether it was added.

        Raises:
            TypeError: `state` is not a `State`.
            ValueError: `key` already holds another state.
        """
        self._check(state)
        if any(s is state for s in self.values()):
            return False
        self.add_unique_key(key, state)
        return True

    @staticmethod
    def _check(state: object) -> None:
        if not isinstance(state, State):
            raise TypeError(
                f"StateDictManager holds States, got {type(state).__name__}; wrap the value "
                "in a State first."
            )

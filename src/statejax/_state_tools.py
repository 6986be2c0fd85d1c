"""BrainState's helpers around states: value-tree checks, `maybe_state`, `FakeState`,
and `StateDictManager` (a dict of states with bulk value access)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Self, TypeVar

import jax

from statejax._state import State
from statejax._tracing import checking_value_trees

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
    with checking_value_trees(val):
        yield


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


class StateDictManager(dict[Any, Any]):
    """A `dict` of states with bulk access to their values (BrainState's `DictManager` API).

    Besides `dict`'s methods: value access (`collect_values`, `assign_values`,
    `split_values`), selection by type or predicate (`subset`, `not_subset`,
    `split`, `filter_by_predicate`), by keys or values (`*_by_keys`, `*_by_values`,
    compared by identity or with `by="value"` by `==`), de-duplication (`unique`,
    `unique_`), `+`/`|` to combine, and pytree flattening (the states travel by
    reference, as everywhere in statejax).

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
        >>> list(m.subset(sj.ParamState)), list(m.not_subset(sj.ParamState))
        (['w'], ['n'])
    """

    def assign_values(self, *args: Mapping[Any, Any]) -> None:
        """Write each `key -> value` of each mapping into the state at `key`.

        Raises:
            TypeError: an argument is not a mapping.
            KeyError: a key holds no state.
        """
        for mapping in args:
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

    def to_dict(self) -> dict[Any, Any]:
        """The entries (the states themselves) as a plain `dict`."""
        return dict(self)

    def split_values(self, *filters: type) -> tuple[dict[Any, Any], ...]:
        """The values split by state type: one dict per type, then one of the rest.

        Each state goes to the first type it is an instance of.
        """
        return tuple({k: s.value for k, s in part.items()} for part in self.split(*filters))

    def split(self, *types: type) -> tuple[StateDictManager, ...]:
        """The entries split by type: one manager per type, then one of the rest.

        Each entry goes to the first type its state is an instance of.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> m = sj.StateDictManager(w=sj.ParamState(jnp.ones(2)), n=sj.State(jnp.zeros(1)))
            >>> [list(part) for part in m.split(sj.ParamState)]
            [['w'], ['n']]
        """
        out = tuple(type(self)() for _ in range(len(types) + 1))
        for key, state in self.items():
            index = next((i for i, t in enumerate(types) if isinstance(state, t)), len(types))
            out[index][key] = state
        return out

    def subset(self, sep: type | tuple[type, ...] | Callable[[Any], bool]) -> StateDictManager:
        """The entries whose state is an instance of `sep` (a type or tuple of types),
        or, for a callable that is not a type, for which `sep(state)` is true."""
        if callable(sep) and not isinstance(sep, type):
            return type(self)((k, s) for k, s in self.items() if sep(s))
        return type(self)((k, s) for k, s in self.items() if isinstance(s, sep))

    def not_subset(self, sep: type | tuple[type, ...]) -> StateDictManager:
        """The entries whose state is not an instance of `sep`."""
        return type(self)((k, s) for k, s in self.items() if not isinstance(s, sep))

    def filter_by_predicate(self, predicate: Callable[[Any, Any], bool]) -> StateDictManager:
        """The entries for which `predicate(key, state)` is true."""
        return type(self)((k, s) for k, s in self.items() if predicate(k, s))

    def map_values(self, func: Callable[[Any], Any]) -> StateDictManager:
        """A manager with `func(state)` at each key."""
        return type(self)((k, func(s)) for k, s in self.items())

    def map_keys(self, func: Callable[[Any], Any]) -> StateDictManager:
        """A manager with each entry at `func(key)`.

        Raises:
            ValueError: two keys map to the same new key.
        """
        out = type(self)()
        for key, state in self.items():
            new = func(key)
            if new in out:
                raise ValueError(f"StateDictManager.map_keys: keys map to the same new key {new!r}")
            out[new] = state
        return out

    def unique(self) -> StateDictManager:
        """The entries with each state once (the first key of a state held twice)."""
        seen: set[int] = set()
        out = type(self)()
        for key, state in self.items():
            if id(state) not in seen:
                seen.add(id(state))
                out[key] = state
        return out

    def unique_(self) -> StateDictManager:
        """Drop, in place, the later keys of a state held twice; returns the manager."""
        keep = self.unique()
        for key in [k for k in self if k not in keep]:
            del self[key]
        return self

    def assign(self, *args: Mapping[Any, Any], **kwargs: Any) -> None:
        """`update` with each mapping in turn, then with the keyword arguments.

        Raises:
            TypeError: an argument is not a mapping.
        """
        for mapping in args:
            if not isinstance(mapping, Mapping):
                raise TypeError(
                    f"StateDictManager.assign takes mappings, got {type(mapping).__name__}"
                )
            self.update(mapping)
        self.update(kwargs)

    def pop_by_keys(self, keys: Iterable[Any]) -> None:
        """Remove the entries at `keys` (missing keys are ignored)."""
        for key in set(keys):
            self.pop(key, None)

    def pop_by_values(self, values: Iterable[Any], by: str = "id") -> None:
        """Remove the entries whose state is in `values` (`by`: `"id"` or `"value"`)."""
        for key in [k for k, s in self.items() if _among(s, values, by)]:
            del self[key]

    def difference_by_keys(self, keys: Iterable[Any]) -> StateDictManager:
        """The entries whose key is not in `keys`."""
        keys = set(keys)
        return type(self)((k, s) for k, s in self.items() if k not in keys)

    def difference_by_values(self, values: Iterable[Any], by: str = "id") -> StateDictManager:
        """The entries whose state is not in `values` (`by`: `"id"` or `"value"`)."""
        values = list(values)
        return type(self)((k, s) for k, s in self.items() if not _among(s, values, by))

    def intersection_by_keys(self, keys: Iterable[Any]) -> StateDictManager:
        """The entries whose key is in `keys`."""
        keys = set(keys)
        return type(self)((k, s) for k, s in self.items() if k in keys)

    def intersection_by_values(self, values: Iterable[Any], by: str = "id") -> StateDictManager:
        """The entries whose state is in `values` (`by`: `"id"` or `"value"`)."""
        values = list(values)
        return type(self)((k, s) for k, s in self.items() if _among(s, values, by))

    def __add__(self, other: Mapping[Any, Any]) -> StateDictManager:
        if not isinstance(other, Mapping):
            return NotImplemented
        out = type(self)(self)
        out.update(other)
        return out

    def __or__(self, other: Mapping[Any, Any]) -> StateDictManager:
        return self.__add__(other)

    def __ior__(self, other: Mapping[Any, Any]) -> Self:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        self.update(other)
        return self

    def tree_flatten(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """`(values, keys)`, for JAX's pytree registry."""
        return tuple(self.values()), tuple(self.keys())

    @classmethod
    def tree_unflatten(cls, keys: tuple[Any, ...], values: Iterable[Any]) -> StateDictManager:
        """The manager holding `values` at `keys`, for JAX's pytree registry."""
        return cls(zip(keys, values, strict=True))

    def add_unique_key(self, key: Any, val: State[Any]) -> None:
        """Add `val` at `key`.

        Raises:
            TypeError: `val` is not a `State`.
            ValueError: `key` already holds another state.
        """
        self._check(val)
        if key in self and self[key] is not val:
            raise ValueError(f"StateDictManager: the key {key!r} already holds another state")
        self[key] = val

    def add_unique_value(self, key: Any, val: State[Any]) -> bool:
        """Add `val` at `key` unless it is already held; return whether it was added.

        Raises:
            TypeError: `val` is not a `State`.
            ValueError: `key` already holds another state.
        """
        self._check(val)
        if key in self and self[key] is not val:
            raise ValueError(f"StateDictManager: the key {key!r} already holds another state")
        if any(s is val for s in self.values()):
            return False
        self[key] = val
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"

    @staticmethod
    def _check(state: object) -> None:
        if not isinstance(state, State):
            raise TypeError(
                f"StateDictManager holds States, got {type(state).__name__}; wrap the value "
                "in a State first."
            )


def _among(item: Any, values: Iterable[Any], by: str) -> bool:
    if by == "id":
        return any(item is v for v in values)
    if by == "value":
        return any(item == v for v in values)
    raise ValueError(f"StateDictManager: by must be 'id' or 'value', not {by!r}")


jax.tree_util.register_pytree_node(
    StateDictManager,
    lambda m: m.tree_flatten(),
    StateDictManager.tree_unflatten,
)

"""`RandomState`: a PRNG key held in a state, split on every draw."""

from __future__ import annotations

import operator
from typing import Any

import jax
import numpy as np

from statejax._jax_compat import is_top_level
from statejax._samplers import _ADVANCING, Samplers, SeedOrKey, as_key
from statejax._state import State
from statejax._tracing import peek_value

__all__ = ["RandomState"]


def _fresh_seed() -> np.ndarray:
    """Raw key bits from NumPy's global generator, as BrainState's `RandomState(None)`."""
    return np.random.randint(0, 2**32, size=2, dtype=np.uint32)


def _count(n: Any) -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer, not {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be a positive integer, not {n}")
    return int(n)


class RandomState(Samplers, State[Any]):
    """A PRNG key as state: every draw splits `.value` and writes one half back.

    Holds a typed key (`jax.random.key`), as BrainState's. Built from an integer seed
    or a key: a typed key (any shape) or a raw key `jax.random.PRNGKey(n)` (`uint32[2]`,
    or stacked keys `uint32[..., 2]`, wrapped into typed keys with the same bits);
    `None` draws a seed from NumPy's global generator. Anything else is a `TypeError`
    when given, not at the first draw. Every sampler of `statejax.random` is a method
    (`rs.normal(0.0, 1.0, size=3)`). Under `jit` the key is threaded through the
    compiled code, so each call draws fresh numbers without recompiling; under `vmap`
    each lane gets its own key (see `statejax.random`).

    Examples:
        >>> from statejax.random import RandomState
        >>> rs = RandomState(0)
        >>> a = rs.normal(size=2)
        >>> rs.seed(0)
        >>> bool((rs.normal(size=2) == a).all())
        True
    """

    __slots__ = ("_backup",)

    def __init__(self, seed_or_key: SeedOrKey | None = None, *, tag: str | None = None) -> None:
        key = as_key(_fresh_seed() if seed_or_key is None else seed_or_key)
        super().__init__(key, tag=tag)
        self._backup: Any = None

    def seed(self, seed_or_key: SeedOrKey | None = None) -> None:
        """Reset the key from an integer seed or a key (`None`: a seed from NumPy's generator).

        Raises:
            TypeError: `seed_or_key` is neither an integer seed nor a key.

        Examples:
            >>> import jax
            >>> from statejax.random import RandomState
            >>> rs = RandomState(0)
            >>> rs.seed(jax.random.PRNGKey(1))
            >>> jax.random.key_data(rs.value).tolist() == jax.random.PRNGKey(1).tolist()
            True
        """
        self.value = as_key(_fresh_seed() if seed_or_key is None else seed_or_key)

    def set_key(self, key: SeedOrKey) -> None:
        """Set the key (an integer seed is accepted too).

        Examples:
            >>> import jax
            >>> from statejax.random import RandomState
            >>> rs = RandomState(0)
            >>> rs.set_key(jax.random.key(5))
            >>> jax.random.key_data(rs.value).tolist() == jax.random.PRNGKey(5).tolist()
            True
        """
        self.value = as_key(key)

    def split_key(self, n: int | None = None, backup: bool = False) -> jax.Array:
        """A fresh key (or `n` keys stacked on axis 0); the state advances once.

        With `backup=True` the key before the split is kept for `restore_key`.

        Raises:
            TypeError: `n` is not an integer.
            ValueError: `n < 1`, or `backup=True` while a backup is already held.

        Examples:
            >>> from statejax.random import RandomState
            >>> RandomState(0).split_key(3).shape
            (3,)
        """
        count = None if n is None else _count(n)
        with _ADVANCING:
            keys = jax.random.split(self.value, 2 if count is None else count + 1)
            if backup:
                self.backup_key()
            self.value = keys[0]
        return keys[1] if count is None else keys[1:]

    def self_assign_multi_keys(self, n: int, backup: bool = True) -> None:
        """Replace the key by `n` keys split from it (for `vmap` with `in_states`).

        Examples:
            >>> from statejax.random import RandomState
            >>> rs = RandomState(0)
            >>> rs.self_assign_multi_keys(4)
            >>> rs.value.shape
            (4,)
            >>> rs.restore_key()
            >>> rs.value.shape
            ()
        """
        count = _count(n)
        with _ADVANCING:
            keys = jax.random.split(self.value, count)
            if backup:
                self.backup_key()
            self.value = keys

    def backup_key(self) -> None:
        """Keep the current key, to be put back by `restore_key` (outside transforms only).

        Raises:
            ValueError: a backup is already held (restore it first).
            RuntimeError: called inside a transform, where the key is a tracer that
                must not outlive it.

        Examples:
            >>> from statejax.random import RandomState
            >>> rs = RandomState(0)
            >>> rs.backup_key()
            >>> x = rs.normal()
            >>> rs.restore_key()
            >>> bool(rs.normal() == x)
            True
        """
        if self._backup is not None:
            raise ValueError("the key is already backed up and not yet restored")
        if not is_top_level():
            raise RuntimeError(
                "RandomState.backup_key inside a transform: the key there is a tracer that "
                "must not outlive the transform; back up and restore outside it"
            )
        self._backup = self.value

    def restore_key(self) -> None:
        """Put back the key kept by `backup_key` (or `split_key(backup=True)`).

        Raises:
            ValueError: no backup is held.

        Examples:
            >>> from statejax.random import RandomState
            >>> rs = RandomState(0)
            >>> _ = rs.split_key(backup=True)
            >>> rs.restore_key()
        """
        if self._backup is None:
            raise ValueError("the key has not been backed up")
        self.value, self._backup = self._backup, None

    def clone(self) -> RandomState:
        """A new `RandomState` seeded with a key split from this one (which advances).

        Examples:
            >>> from statejax.random import RandomState
            >>> rs = RandomState(0)
            >>> bool(rs.clone().normal() != rs.normal())
            True
        """
        return type(self)(self.split_key())

    def __repr__(self) -> str:
        """`RandomState(<key>)`, showing the key's data (as BrainState's repr does).

        Examples:
            >>> from statejax.random import RandomState
            >>> print(repr(RandomState(42)))
            RandomState(Array((), dtype=key<fry>) overlaying:
            [ 0 42])
        """
        value = peek_value(self)
        if not isinstance(value, jax.Array) or isinstance(value, jax.core.Tracer):
            return super().__repr__()  # a traced or leaked key: its shape only
        tag = f", tag={self.tag!r}" if self.tag is not None else ""
        return f"{type(self).__name__}({value}{tag})"

    def check_if_deleted(self) -> None:
        """Reseed (from NumPy's generator) if the key's buffer was deleted (donated).

        Examples:
            >>> from statejax.random import RandomState
            >>> RandomState(0).check_if_deleted()
        """
        value = self.value
        if is_top_level() and isinstance(value, jax.Array) and value.is_deleted():
            self.seed()

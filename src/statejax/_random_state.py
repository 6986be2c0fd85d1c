"""``RandomState``: a PRNG key held in a state, split on every draw."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from statejax._state import State

__all__ = ["RandomState"]


class RandomState(State[Any]):
    """A PRNG key as state: every draw splits ``.value`` and writes one half back.

    Built from an integer seed or a key (``jax.random.PRNGKey(n)`` or
    ``jax.random.key(n)``). Under ``jit`` the key is threaded through the
    compiled code, so each call draws fresh numbers without recompiling; under
    ``vmap`` each lane gets its own key (see :mod:`statejax.random`).

    Example:
        >>> import statejax as sj
        >>> from statejax.random import RandomState
        >>> rng = RandomState(0)
        >>> k1, k2 = rng.next_key(), rng.next_key()
        >>> bool((k1 != k2).any())
        True
    """

    __slots__ = ()

    def __init__(self, seed_or_key: Any = 0, *, tag: str | None = None) -> None:
        super().__init__(_as_key(seed_or_key), tag=tag)

    def seed(self, seed_or_key: Any) -> None:
        """Reset the key from an integer seed or a key."""
        self.value = _as_key(seed_or_key)

    def next_key(self) -> Any:
        """A fresh key; the state advances (a read and a write of ``.value``)."""
        keep, use = jax.random.split(self.value)
        self.value = keep
        return use

    def split_keys(self, n: int) -> Any:
        """``n`` fresh keys stacked on axis 0; the state advances once."""
        keys = jax.random.split(self.value, n + 1)
        self.value = keys[0]
        return keys[1:]


def _as_key(seed_or_key: Any) -> Any:
    """A key from an integer seed (a Python, NumPy or 0-d JAX integer); a key as it is."""
    if isinstance(seed_or_key, bool):
        raise TypeError(f"a RandomState takes an integer seed or a key, not {seed_or_key!r}")
    if isinstance(seed_or_key, (int, np.integer)) or (
        np.ndim(seed_or_key) == 0 and jnp.issubdtype(jnp.result_type(seed_or_key), jnp.integer)
    ):
        return jax.random.PRNGKey(seed_or_key)
    return seed_or_key

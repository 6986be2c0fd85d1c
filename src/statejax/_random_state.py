"""`RandomState`: a PRNG key held in a state, split on every draw."""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from statejax._state import State

__all__ = ["RandomState"]


class RandomState(State[Any]):
    """A PRNG key as state: every draw splits `.value` and writes one half back.

    Built from an integer seed or a key: a raw key `jax.random.PRNGKey(n)`
    (`uint32[2]`, or stacked keys `uint32[..., 2]`) or a typed key
    `jax.random.key(n)` (any shape); `None` draws a seed from NumPy's global
    generator, as BrainState does. Anything else is refused when given, not at the
    first draw: a `TypeError` for a value that is not an int or an array (a bool, a
    float, a string, a list), a `ValueError` for an array that is neither an
    integer scalar nor a key (wrong dtype or shape). Under `jit` the key is
    threaded through the compiled code, so each call draws fresh numbers without
    recompiling; under `vmap` each lane gets its own key (see `statejax.random`).

    Examples:
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

    def seed(self, seed_or_key: Any = None) -> None:
        """Reset the key from an integer seed or a key (`None`: a random seed).

        Raises:
            TypeError: `seed_or_key` is not an int, an array or `None`.
            ValueError: `seed_or_key` is an array but neither an integer scalar nor a key.

        Examples:
            >>> import jax
            >>> from statejax.random import RandomState
            >>> rng = RandomState(0)
            >>> rng.seed(jax.random.PRNGKey(1))
            >>> rng.value.tolist() == jax.random.PRNGKey(1).tolist()
            True
        """
        self.value = _as_key(seed_or_key)

    def next_key(self) -> Any:
        """A fresh key; the state advances (a read and a write of `.value`)."""
        with _ADVANCING:
            keep, use = jax.random.split(self.value)
            self.value = keep
        return use

    def split_keys(self, n: int) -> Any:
        """`n` fresh keys stacked on axis 0; the state advances once."""
        with _ADVANCING:
            keys = jax.random.split(self.value, n + 1)
            self.value = keys[0]
        return keys[1:]


# Read, split and write back as one step: two threads drawing outside any transform
# at once must not both split the same key (they would draw the same numbers).
# Inside a transform the values are the thread's own, and the lock costs nothing.
_ADVANCING = threading.RLock()


_ACCEPTED = (
    "an int seed, a raw key jax.random.PRNGKey(seed) (uint32[{raw}], or uint32[..., {raw}] for "
    "stacked keys), or a typed key jax.random.key(seed)"
)


def _shown(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is None or not hasattr(value, "shape"):
        return f"{value!r} ({type(value).__name__})"
    return f"an array {np.dtype(dtype).name}[{','.join(map(str, np.shape(value)))}]"


def _raw_key_size() -> int:
    """The length of a raw key of JAX's default PRNG implementation (2 for threefry)."""
    impl = str(jax.config.jax_default_prng_impl)  # type: ignore[attr-defined]
    size = _RAW_KEY_SIZES.get(impl)
    if size is None:
        size = _RAW_KEY_SIZES[impl] = int(jax.eval_shape(jax.random.PRNGKey, 0).shape[-1])
    return size


_RAW_KEY_SIZES: dict[str, int] = {}


def _as_key(seed_or_key: Any) -> Any:
    """A key from an integer seed (a Python, NumPy or 0-d JAX integer); a key as it is.

    Anything else raises here, naming what was given and what is accepted, rather
    than at the first draw.
    """
    if seed_or_key is None:
        return jax.random.PRNGKey(np.random.randint(0, 2**31 - 1))
    if isinstance(seed_or_key, (bool, np.bool_)):
        raise TypeError(
            f"a RandomState takes an integer seed or a key, not {seed_or_key!r}: give "
            + _ACCEPTED.format(raw=_raw_key_size())
        )
    if isinstance(seed_or_key, (int, np.integer)):
        return jax.random.PRNGKey(seed_or_key)
    if not isinstance(seed_or_key, (jax.Array, np.ndarray)):
        raise TypeError(
            f"a RandomState takes an integer seed or a key, not {_shown(seed_or_key)}: give "
            + _ACCEPTED.format(raw=_raw_key_size())
        )
    dtype = seed_or_key.dtype
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return seed_or_key
    shape = np.shape(seed_or_key)
    if not shape and jnp.issubdtype(dtype, jnp.integer):
        return jax.random.PRNGKey(seed_or_key)
    raw = _raw_key_size()
    if dtype == np.uint32 and shape and shape[-1] == raw:
        return seed_or_key
    raise ValueError(
        f"a RandomState takes an integer seed or a key, not {_shown(seed_or_key)}: give "
        + _ACCEPTED.format(raw=raw)
    )

"""Random numbers drawn from key states: a default key, seeding, and the common samplers.

Every sampler reads a `RandomState` (the module's default one, or the
`rng=` you pass), splits its key, writes one half back and draws with the
other. Because the key is a state, the statejax transforms thread it:

- under `jit` each call draws fresh numbers, and nothing recompiles;
- under `vmap` each lane gets its own key and the key advances once per call
  (`vmap(..., split_keys=False)` broadcasts the key instead: every lane draws
  the same numbers). vmap learns this through the registry hook
  `statejax_batch_state`, implemented here, which a third party's State
  type can implement too.

Examples:
    >>> import statejax as sj
    >>> from statejax import random
    >>> random.seed(0)
    >>> a = random.normal((2,))
    >>> random.seed(0)
    >>> bool((random.normal((2,)) == a).all())
    True
    >>> draw = sj.jit(lambda: random.uniform((3,)))
    >>> bool((draw() != draw()).all())
    True
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from statejax._errors import BatchAxisError
from statejax._random_state import RandomState
from statejax._state import State, describe_state, outside_traces
from statejax.extend import StateBatching, TransformSpec, hookimpl

__all__ = [
    "RandomState",
    "bernoulli",
    "categorical",
    "default_state",
    "normal",
    "permutation",
    "randint",
    "seed",
    "split_key",
    "truncated_normal",
    "uniform",
]

Shape = Sequence[int]

_default: RandomState | None = None
_DEFAULT_LOCK = threading.Lock()


def default_state() -> RandomState:
    """The default key state (`DEFAULT`), used when a sampler gets no `rng=`.

    Made on first use, not at import, so importing statejax does not start a JAX
    backend; first use may be inside a transform, and the state is global all the same.

    Examples:
        >>> from statejax import random
        >>> random.default_state() is random.DEFAULT
        True
    """
    global _default
    if _default is None:
        with _DEFAULT_LOCK:  # two threads drawing first must share one key state
            if _default is None:
                with outside_traces(), jax.ensure_compile_time_eval():
                    _default = RandomState(0, tag="statejax.random.DEFAULT")
    return _default


def __getattr__(name: str) -> Any:
    # DEFAULT: the key state the samplers use when no `rng=` is given (see seed()).
    if name == "DEFAULT":
        return default_state()
    raise AttributeError(f"module 'statejax.random' has no attribute {name!r}")


def seed(seed_or_key: Any = None, *, rng: RandomState | None = None) -> None:
    """Reset a key state (the default one unless `rng` is given) from a seed or a key.

    Accepts what BrainState's `seed` accepts: an int seed (a Python, NumPy or 0-d
    JAX integer), `None` (a seed drawn from NumPy's global generator), a raw key
    `jax.random.PRNGKey(n)` (`uint32[2]`), or a typed key `jax.random.key(n)`.

    Raises:
        TypeError: `seed_or_key` is not an int, an array or `None` (a bool, a float, a
            string, a list); the message names it and what is accepted.
        ValueError: `seed_or_key` is an array but neither an integer scalar nor a key
            (a float array, or an integer array of the wrong dtype or shape).

    Examples:
        >>> from statejax import random
        >>> random.seed(42)
        >>> x = random.randint((3,), 0, 10)
        >>> random.seed(42)
        >>> random.randint((3,), 0, 10).tolist() == x.tolist()
        True
    """
    (rng or default_state()).seed(seed_or_key)


def split_key(n: int | None = None, *, rng: RandomState | None = None) -> Any:
    """A fresh key (or `n` keys stacked on axis 0); the key state advances once.

    Examples:
        >>> from statejax import random
        >>> random.split_key(3).shape
        (3, 2)
    """
    state = rng or default_state()
    return state.next_key() if n is None else state.split_keys(n)


def normal(shape: Shape = (), dtype: Any = float, *, rng: RandomState | None = None) -> jax.Array:
    """Standard normal samples of `shape`.

    Examples:
        >>> from statejax import random
        >>> random.normal((2, 3)).shape
        (2, 3)
    """
    return jax.random.normal(split_key(rng=rng), tuple(shape), dtype)


def uniform(
    shape: Shape = (),
    dtype: Any = float,
    minval: Any = 0.0,
    maxval: Any = 1.0,
    *,
    rng: RandomState | None = None,
) -> jax.Array:
    """Uniform samples in `[minval, maxval)`.

    Examples:
        >>> from statejax import random
        >>> x = random.uniform((100,), minval=2.0, maxval=3.0)
        >>> bool(((x >= 2) & (x < 3)).all())
        True
    """
    return jax.random.uniform(split_key(rng=rng), tuple(shape), dtype, minval, maxval)


def bernoulli(
    p: Any = 0.5, shape: Shape | None = None, *, rng: RandomState | None = None
) -> jax.Array:
    """Booleans that are `True` with probability `p`.

    Examples:
        >>> from statejax import random
        >>> random.bernoulli(0.5, (4,)).dtype
        dtype('bool')
    """
    return jax.random.bernoulli(split_key(rng=rng), p, None if shape is None else tuple(shape))


def randint(
    shape: Shape, minval: Any, maxval: Any, dtype: Any = int, *, rng: RandomState | None = None
) -> jax.Array:
    """Integers in `[minval, maxval)`.

    Examples:
        >>> from statejax import random
        >>> x = random.randint((50,), 0, 3)
        >>> bool(((x >= 0) & (x < 3)).all())
        True
    """
    return jax.random.randint(split_key(rng=rng), tuple(shape), minval, maxval, dtype)


def permutation(
    x: Any, axis: int = 0, independent: bool = False, *, rng: RandomState | None = None
) -> jax.Array:
    """A random permutation of `x` along `axis` (of `arange(x)` if `x` is an int).

    Examples:
        >>> from statejax import random
        >>> sorted(random.permutation(5).tolist())
        [0, 1, 2, 3, 4]
    """
    return jax.random.permutation(split_key(rng=rng), x, axis, independent)


def categorical(
    logits: Any,
    axis: int = -1,
    shape: Shape | None = None,
    *,
    rng: RandomState | None = None,
) -> jax.Array:
    """Category indices drawn with probabilities `softmax(logits)` along `axis`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax import random
        >>> random.categorical(jnp.array([0.0, -1e9, -1e9]), shape=(3,)).tolist()
        [0, 0, 0]
    """
    return jax.random.categorical(
        split_key(rng=rng), logits, axis, None if shape is None else tuple(shape)
    )


def truncated_normal(
    lower: Any,
    upper: Any,
    shape: Shape | None = None,
    dtype: Any = float,
    *,
    rng: RandomState | None = None,
) -> jax.Array:
    """Normal samples truncated to `(lower, upper)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax import random
        >>> x = random.truncated_normal(-1.0, 1.0, (100,))
        >>> bool((jnp.abs(x) <= 1).all())
        True
    """
    return jax.random.truncated_normal(
        split_key(rng=rng), lower, upper, None if shape is None else tuple(shape), dtype
    )


# --- vmap batching: each lane gets its own key, the state advances once per call ----------


def _split_per_lane(state: RandomState) -> StateBatching:
    def prepare(key: Any, axis_size: int) -> tuple[Any, Any]:
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        if jnp.ndim(key) > (0 if typed else 1):
            raise BatchAxisError(
                f"vmap: {describe_state(state)} holds a batch of keys (shape "
                f"{jnp.shape(key)}), but vmap splits one key into a key per lane. To give "
                "each lane one of these keys, map the state: in_states={0: rng}."
            )
        keys = jax.random.split(key, axis_size + 1)
        return keys[1:], keys[0]

    return StateBatching(prepare=prepare, finish=_advanced_key, in_axis=0, out_axis=0)


def _advanced_key(_lanes_keys: Any, advanced: Any) -> Any:
    return advanced


@hookimpl
def statejax_batch_state(state: State[Any], spec: TransformSpec) -> StateBatching | None:
    """Split a `RandomState` per lane under vmap, unless `split_keys=False`."""
    if isinstance(state, RandomState) and getattr(spec, "split_keys", True):
        return _split_per_lane(state)
    return None

"""Random numbers NumPy-style, drawn from key states, as BrainState's `brainstate.random`.

Every sampler (`normal(loc, scale, size)`, `uniform(low, high, size)`,
`randint(low, high, size)`, ...) is a method of `RandomState`; the function of the
same name here calls it on the default state `DEFAULT`, which it advances (splits its
key, writes one half back, draws with the other). `key=` draws with that seed or key
instead, leaving the state alone. Because the key is a state, the statejax transforms
thread it:

- under `jit` each call draws fresh numbers, and nothing recompiles;
- under `vmap` each lane gets its own key and the key advances once per call
  (`vmap(..., split_keys=False)` broadcasts the key instead: every lane draws
  the same numbers). vmap learns this through the registry hook
  `statejax_batch_state`, implemented here, which a third party's State
  type can implement too;
- in loops (`scan`, `for_loop`, `map`) each step draws fresh numbers.

Examples:
    >>> import statejax as sj
    >>> from statejax import random
    >>> random.seed(0)
    >>> a = random.normal(size=2)
    >>> random.seed(0)
    >>> bool((random.normal(size=2) == a).all())
    True
    >>> draw = sj.jit(lambda: random.uniform(size=3))
    >>> bool((draw() != draw()).all())
    True
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from statejax._errors import BatchAxisError
from statejax._random_state import RandomState
from statejax._samplers import SeedOrKey, as_key, on_default
from statejax._state import State
from statejax._tracing import describe_state, outside_traces
from statejax.extend import StateBatching, TransformSpec, hookimpl

__all__ = [
    "bernoulli",
    "beta",
    "binomial",
    "categorical",
    "chisquare",
    "choice",
    "clone_rng",
    "default_rng",
    "default_state",
    "dirichlet",
    "exponential",
    "f",
    "gamma",
    "geometric",
    "get_key",
    "get_key_data",
    "gumbel",
    "hypergeometric",
    "laplace",
    "loggamma",
    "logistic",
    "lognormal",
    "logseries",
    "maxwell",
    "multinomial",
    "multivariate_normal",
    "negative_binomial",
    "noncentral_chisquare",
    "noncentral_f",
    "normal",
    "orthogonal",
    "pareto",
    "permutation",
    "poisson",
    "power",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "random",
    "random_integers",
    "random_sample",
    "RandomState",
    "ranf",
    "rayleigh",
    "restore_key",
    "sample",
    "seed",
    "seed_context",
    "self_assign_multi_keys",
    "set_key",
    "shuffle",
    "split_key",
    "split_keys",
    "standard_cauchy",
    "standard_exponential",
    "standard_gamma",
    "standard_normal",
    "standard_t",
    "t",
    "triangular",
    "truncated_normal",
    "uniform",
    "vonmises",
    "wald",
    "weibull",
    "weibull_min",
    "zipf",
]

_default: RandomState | None = None
_DEFAULT_LOCK = threading.Lock()


def default_state() -> RandomState:
    """The default key state (`DEFAULT`), which the module's functions draw from.

    Made on first use, not at import, so importing statejax does not start a JAX
    backend; first use may be inside a transform, and the state is global all the
    same. Its first seed comes from NumPy's global generator, as BrainState's.

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
                    _default = RandomState(None, tag="statejax.random.DEFAULT")
    return _default


def __getattr__(name: str) -> Any:
    # DEFAULT: the key state the module's functions draw from (see seed()).
    if name == "DEFAULT":
        return default_state()
    raise AttributeError(f"module 'statejax.random' has no attribute {name!r}")


def seed(seed_or_key: SeedOrKey | None = None) -> None:
    """Reset the default key state from a seed or a key; an int seed also seeds NumPy.

    Accepts what BrainState's `seed` accepts: an int seed (a Python, NumPy or size-1
    integer array), a raw key `jax.random.PRNGKey(n)` (`uint32[2]`) or a typed key
    `jax.random.key(n)`. An int seed (or the first word of a key) also seeds NumPy's
    global generator, as BrainState does; `None` draws a fresh seed from the operating
    system and leaves NumPy's generator alone.

    Raises:
        TypeError: `seed_or_key` is neither an int seed nor a key (a bool, a float, a
            string, a list, a float array); the message names it and what is accepted.

    Examples:
        >>> import numpy as np
        >>> from statejax import random
        >>> random.seed(42)
        >>> x, n = random.randint(0, 10, size=3), np.random.rand()
        >>> random.seed(42)
        >>> random.randint(0, 10, size=3).tolist() == x.tolist(), np.random.rand() == n
        (True, True)
    """
    with jax.ensure_compile_time_eval():
        if seed_or_key is None:
            fresh = np.random.default_rng().integers(0, 2**32, size=2, dtype=np.uint32)
            default_state().seed(fresh)
            return
        key = as_key(seed_or_key)
        default_state().set_key(key)
        try:
            if isinstance(seed_or_key, (int, np.integer)):
                np.random.seed(int(seed_or_key) % 2**32)
            else:
                np.random.seed(int(jax.random.key_data(key).ravel()[0]))
        except jax.errors.ConcretizationTypeError:
            pass  # a traced key: NumPy cannot be seeded with its value


@contextmanager
def seed_context(seed_or_key: SeedOrKey | None) -> Iterator[None]:
    """Seed the default key state (and NumPy) inside a `with` block; both are restored after.

    Examples:
        >>> from statejax import random
        >>> with random.seed_context(42):
        ...     a = random.rand(3)
        >>> with random.seed_context(42):
        ...     b = random.rand(3)
        >>> bool((a == b).all())
        True
    """
    state = default_state()
    old_key, old_numpy = state.value, np.random.get_state()
    try:
        seed(seed_or_key)
        yield
    finally:
        state.value = old_key
        np.random.set_state(old_numpy)


def set_key(seed_or_key: SeedOrKey) -> None:
    """Set the default state's key (a typed or raw key, or an int seed).

    Examples:
        >>> import jax
        >>> from statejax import random
        >>> random.set_key(jax.random.key(1))
        >>> jax.random.key_data(random.get_key()).tolist() == jax.random.PRNGKey(1).tolist()
        True
    """
    default_state().set_key(seed_or_key)


def get_key() -> jax.Array:
    """The default state's key (a typed key).

    Examples:
        >>> import jax
        >>> from statejax import random
        >>> jax.dtypes.issubdtype(random.get_key().dtype, jax.dtypes.prng_key)
        True
    """
    return default_state().value  # type: ignore[no-any-return]


def get_key_data() -> jax.Array:
    """The raw `uint32` data of the default state's key.

    Examples:
        >>> from statejax import random
        >>> random.seed(0)
        >>> random.get_key_data().tolist()
        [0, 0]
    """
    return jax.random.key_data(default_state().value)


def default_rng(seed_or_key: SeedOrKey | None = None) -> RandomState:
    """The default `RandomState` (`DEFAULT`), or a new one from `seed_or_key` if given.

    Examples:
        >>> from statejax import random
        >>> random.default_rng() is random.DEFAULT, random.default_rng(3).normal(size=2).shape
        (True, (2,))
    """
    return default_state() if seed_or_key is None else RandomState(seed_or_key)


def clone_rng(seed_or_key: SeedOrKey | None = None, clone: bool = True) -> RandomState:
    """A new `RandomState`: split from `DEFAULT` (which advances), or from `seed_or_key`.

    With `clone=False` and no seed, `DEFAULT` itself.

    Examples:
        >>> from statejax import random
        >>> random.clone_rng() is random.DEFAULT, random.clone_rng(clone=False) is random.DEFAULT
        (False, True)
    """
    if seed_or_key is None:
        return default_state().clone() if clone else default_state()
    return RandomState(seed_or_key)


def split_key(n: int | None = None, backup: bool = False) -> jax.Array:
    """A fresh key from the default state (or `n` keys stacked); the state advances once.

    Examples:
        >>> from statejax import random
        >>> random.split_key().shape, random.split_key(3).shape
        ((), (3,))
    """
    return default_state().split_key(n, backup)


def split_keys(n: int, backup: bool = False) -> jax.Array:
    """`n` fresh keys from the default state, stacked on axis 0; the state advances once.

    Raises:
        ValueError: `n` is not a positive int.

    Examples:
        >>> from statejax import random
        >>> random.split_keys(4).shape
        (4,)
    """
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"split_keys: n must be a positive integer, not {n!r}")
    return default_state().split_key(n, backup)


def self_assign_multi_keys(n: int, backup: bool = True) -> None:
    """Replace the default key by `n` keys split from it (put back by `restore_key`).

    Raises:
        ValueError: `n` is not a positive int.

    Examples:
        >>> from statejax import random
        >>> random.self_assign_multi_keys(2)
        >>> random.get_key().shape
        (2,)
        >>> random.restore_key()
    """
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"self_assign_multi_keys: n must be a positive integer, not {n!r}")
    default_state().self_assign_multi_keys(n, backup)


def restore_key() -> None:
    """Put back the default key kept by `split_key(backup=True)` or `self_assign_multi_keys`.

    Examples:
        >>> from statejax import random
        >>> before = random.get_key_data()
        >>> _ = random.split_key(backup=True)
        >>> random.restore_key()
        >>> random.get_key_data().tolist() == before.tolist()
        True
    """
    default_state().restore_key()


# The samplers: RandomState's methods, drawing from (and advancing) DEFAULT.
rand = on_default(RandomState.rand, "rand", default_state)
randn = on_default(RandomState.randn, "randn", default_state)
random = on_default(RandomState.random, "random", default_state)
random_sample = on_default(RandomState.random_sample, "random_sample", default_state)
ranf = on_default(RandomState.ranf, "ranf", default_state)
sample = on_default(RandomState.sample, "sample", default_state)
uniform = on_default(RandomState.uniform, "uniform", default_state)
randint = on_default(
    RandomState.randint,
    "randint",
    default_state,
    order=("low", "high", "size", "key", "dtype"),  # the method takes dtype before key
)
random_integers = on_default(RandomState.random_integers, "random_integers", default_state)
choice = on_default(RandomState.choice, "choice", default_state)
permutation = on_default(RandomState.permutation, "permutation", default_state)
shuffle = on_default(RandomState.shuffle, "shuffle", default_state)
normal = on_default(RandomState.normal, "normal", default_state)
standard_normal = on_default(RandomState.standard_normal, "standard_normal", default_state)
truncated_normal = on_default(RandomState.truncated_normal, "truncated_normal", default_state)
lognormal = on_default(RandomState.lognormal, "lognormal", default_state)
standard_cauchy = on_default(RandomState.standard_cauchy, "standard_cauchy", default_state)
exponential = on_default(RandomState.exponential, "exponential", default_state)
standard_exponential = on_default(
    RandomState.standard_exponential, "standard_exponential", default_state
)
gamma = on_default(RandomState.gamma, "gamma", default_state)
standard_gamma = on_default(RandomState.standard_gamma, "standard_gamma", default_state)
beta = on_default(RandomState.beta, "beta", default_state)
gumbel = on_default(RandomState.gumbel, "gumbel", default_state)
laplace = on_default(RandomState.laplace, "laplace", default_state)
logistic = on_default(RandomState.logistic, "logistic", default_state)
pareto = on_default(RandomState.pareto, "pareto", default_state)
standard_t = on_default(RandomState.standard_t, "standard_t", default_state)
t = on_default(RandomState.t, "t", default_state)
chisquare = on_default(RandomState.chisquare, "chisquare", default_state)
noncentral_chisquare = on_default(
    RandomState.noncentral_chisquare, "noncentral_chisquare", default_state
)
f = on_default(RandomState.f, "f", default_state)
noncentral_f = on_default(RandomState.noncentral_f, "noncentral_f", default_state)
rayleigh = on_default(RandomState.rayleigh, "rayleigh", default_state)
triangular = on_default(RandomState.triangular, "triangular", default_state)
vonmises = on_default(RandomState.vonmises, "vonmises", default_state)
wald = on_default(RandomState.wald, "wald", default_state)
weibull = on_default(RandomState.weibull, "weibull", default_state)
weibull_min = on_default(RandomState.weibull_min, "weibull_min", default_state)
maxwell = on_default(RandomState.maxwell, "maxwell", default_state)
loggamma = on_default(RandomState.loggamma, "loggamma", default_state)
power = on_default(RandomState.power, "power", default_state)
dirichlet = on_default(RandomState.dirichlet, "dirichlet", default_state)
multivariate_normal = on_default(
    RandomState.multivariate_normal, "multivariate_normal", default_state
)
orthogonal = on_default(RandomState.orthogonal, "orthogonal", default_state)
bernoulli = on_default(RandomState.bernoulli, "bernoulli", default_state)
binomial = on_default(RandomState.binomial, "binomial", default_state)
poisson = on_default(RandomState.poisson, "poisson", default_state)
geometric = on_default(RandomState.geometric, "geometric", default_state)
negative_binomial = on_default(RandomState.negative_binomial, "negative_binomial", default_state)
hypergeometric = on_default(RandomState.hypergeometric, "hypergeometric", default_state)
logseries = on_default(RandomState.logseries, "logseries", default_state)
zipf = on_default(RandomState.zipf, "zipf", default_state)
multinomial = on_default(RandomState.multinomial, "multinomial", default_state)
categorical = on_default(RandomState.categorical, "categorical", default_state)
# As BrainState's module functions (not its methods): dtype and key are keyword-only.
rand_like = on_default(
    RandomState.rand_like, "rand_like", default_state, keyword_only=("dtype", "key")
)
randn_like = on_default(
    RandomState.randn_like, "randn_like", default_state, keyword_only=("dtype", "key")
)
randint_like = on_default(
    RandomState.randint_like, "randint_like", default_state, keyword_only=("dtype", "key")
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

"""Random keys as state: samplers, jit freshness, per-lane keys under vmap, the batching hook."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax import random
from statejax._transforms.vmap import vmap
from statejax.extend import StateBatching, get_registry, hookimpl
from statejax.random import RandomState


def test_samplers_match_jax_random_on_the_split_key() -> None:
    rng = RandomState(3)
    key = jax.random.key(3)
    cases: list[tuple[Any, Any]] = [
        (lambda: rng.normal(size=(2, 3)), lambda k: jax.random.normal(k, (2, 3))),
        (
            lambda: rng.uniform(1.0, 2.0, size=4),
            lambda k: jax.random.uniform(k, (4,), float, 1.0, 2.0),
        ),
        (lambda: rng.bernoulli(0.3, size=5), lambda k: jax.random.bernoulli(k, 0.3, (5,))),
        (lambda: rng.randint(0, 7, size=5), lambda k: jax.random.randint(k, (5,), 0, 7)),
        (lambda: rng.permutation(6), lambda k: jax.random.permutation(k, 6)),
        (
            lambda: rng.categorical(jnp.zeros(4), size=3),
            lambda k: jax.random.categorical(k, jnp.zeros(4), shape=(3,)),
        ),
        (
            lambda: rng.truncated_normal(-1.0, 1.0, size=3),
            lambda k: jax.random.truncated_normal(k, -1.0, 1.0, (3,)),
        ),
    ]
    for draw, reference in cases:
        key, use = jax.random.split(key)
        np.testing.assert_allclose(draw(), reference(use), rtol=1e-6)
        assert_same_key(rng.value, key)  # advanced exactly once
    key, use = jax.random.split(key)
    assert_same_key(rng.split_key(), use)
    keys = jax.random.split(key, 4)
    assert_same_key(rng.split_key(3), keys[1:])
    assert_same_key(rng.value, keys[0])


def assert_same_key(a: Any, b: Any) -> None:
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))


def test_key_argument_draws_with_that_key_and_leaves_the_state() -> None:
    rng = RandomState(0)
    before = jax.random.key_data(rng.value)
    for key in (5, jax.random.key(5), jax.random.PRNGKey(5)):
        np.testing.assert_array_equal(
            rng.normal(size=3, key=key), jax.random.normal(jax.random.key(5), (3,))
        )
    np.testing.assert_array_equal(jax.random.key_data(rng.value), before)


def test_default_state_and_seed() -> None:
    random.seed(7)
    a = random.normal(size=3)
    b = random.normal(size=3)
    assert not np.allclose(a, b)
    random.seed(7)
    np.testing.assert_array_equal(random.normal(size=3), a)
    assert random.default_state() is random.DEFAULT
    random.seed(jax.random.PRNGKey(7))
    np.testing.assert_array_equal(random.normal(size=3), a)
    random.seed(jax.random.key(7))
    np.testing.assert_array_equal(random.normal(size=3), a)
    for seed in (np.int64(7), jnp.array(7)):  # any integer scalar is a seed, not a key
        random.seed(seed)
        np.testing.assert_array_equal(random.normal(size=3), a)
    with pytest.raises(TypeError, match="integer seed or a key, not True"):
        RandomState(True)


def test_seed_seeds_numpy_and_seed_context_restores_both() -> None:
    random.seed(11)
    first = np.random.rand()
    random.seed(11)
    assert np.random.rand() == first
    key_before = jax.random.key_data(random.get_key())
    numpy_before = np.random.get_state()[1].copy()
    with random.seed_context(3):
        inside = random.rand(2)
    np.testing.assert_array_equal(jax.random.key_data(random.get_key()), key_before)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_before)
    with random.seed_context(3):
        np.testing.assert_array_equal(random.rand(2), inside)


def test_backup_restore_clone_and_multi_keys() -> None:
    rng = RandomState(1)
    start = jax.random.key_data(rng.value)
    rng.split_key(backup=True)
    with pytest.raises(ValueError, match="already backed up"):
        rng.backup_key()
    rng.restore_key()
    np.testing.assert_array_equal(jax.random.key_data(rng.value), start)
    with pytest.raises(ValueError, match="not been backed up"):
        rng.restore_key()
    rng.self_assign_multi_keys(3)
    assert rng.value.shape == (3,)
    rng.restore_key()
    clone = rng.clone()
    assert clone is not rng and not np.array_equal(
        jax.random.key_data(clone.value), jax.random.key_data(rng.value)
    )
    with pytest.raises(ValueError, match="positive"):
        rng.split_key(0)
    with pytest.raises(TypeError, match="integer"):
        rng.split_key(1.5)  # type: ignore[arg-type]


def test_backup_inside_a_transform_is_refused_and_leaves_the_key() -> None:
    rng = RandomState(2)
    before = jax.random.key_data(rng.value)
    with pytest.raises(RuntimeError, match="backup_key inside a transform"):
        sj.jit(lambda: rng.split_key(backup=True))()
    np.testing.assert_array_equal(jax.random.key_data(rng.value), before)
    assert rng._backup is None


def test_jit_draws_fresh_numbers_without_recompiling() -> None:
    random.seed(0)
    traces = []

    @sj.jit
    def draw(x: jax.Array) -> jax.Array:
        traces.append(1)
        return x + random.normal(size=2)

    first = draw(jnp.zeros(2))
    n = len(traces)
    second, third = draw(jnp.zeros(2)), draw(jnp.zeros(2))
    assert len(traces) == n  # no recompilation
    assert not np.allclose(first, second) and not np.allclose(second, third)
    random.seed(0)
    np.testing.assert_array_equal(random.normal(size=2), first)  # same stream as eager


def test_vmap_gives_each_lane_its_own_key_and_advances_once() -> None:
    rng = RandomState(1)
    key0 = rng.value
    out = vmap(lambda x: x + rng.normal())(jnp.zeros(4))
    keys = jax.random.split(key0, 5)
    expected = jnp.stack([jax.random.normal(jax.random.split(k)[1], ()) for k in keys[1:]])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert len(set(np.asarray(out).tolist())) == 4
    assert_same_key(rng.value, keys[0])  # advanced once per call
    again = vmap(lambda x: x + rng.normal())(jnp.zeros(4))
    assert not np.allclose(again, out)


def test_split_keys_false_broadcasts_the_key() -> None:
    rng = RandomState(2)
    key0 = rng.value
    out = vmap(lambda x: x + rng.normal(), split_keys=False)(jnp.zeros(4))
    np.testing.assert_allclose(out, jnp.full(4, out[0]))
    keep, use = jax.random.split(key0)
    np.testing.assert_allclose(out[0], jax.random.normal(use, ()), rtol=1e-6)
    assert_same_key(rng.value, keep)


def test_jit_of_vmap_with_keys_is_fresh_each_call_without_recompiling() -> None:
    rng = RandomState(4)
    key = rng.value
    traces = []

    def lane(x: jax.Array) -> jax.Array:
        traces.append(1)
        return x + rng.uniform()

    f = sj.jit(vmap(lane))
    a = f(jnp.zeros(3))
    n = len(traces)
    b = f(jnp.zeros(3))
    assert len(traces) == n  # the second call runs the cached executable
    for out in (a, b):  # the same keys as eager, one split per call
        keys = jax.random.split(key, 4)
        key = keys[0]
        expected = [jax.random.uniform(jax.random.split(k)[1], ()) for k in keys[1:]]
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert_same_key(rng.value, key)
    assert len(set(np.asarray(a).tolist())) == 3
    assert not np.allclose(a, b)


def test_keys_mapped_explicitly_with_in_states() -> None:
    rng = RandomState(jax.random.split(jax.random.PRNGKey(0), 3))  # one key per lane
    lanes = rng.value
    out = vmap(lambda: rng.normal(), in_states=rng, axis_size=3)()
    expected = jnp.stack([jax.random.normal(jax.random.split(k)[1], ()) for k in lanes])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert rng.value.shape == (3,)  # written back batched


def test_a_batch_of_keys_not_mapped_is_a_clear_error() -> None:
    rng = RandomState(jax.random.split(jax.random.PRNGKey(0), 3))
    with pytest.raises(
        sj.BatchAxisError,
        match=r"RandomState \(key<fry>\[3\]\) holds a batch of keys .* in_states=\{0: rng\}",
    ):
        vmap(lambda x: x + rng.normal())(jnp.zeros(3))


# --- the statejax_batch_state hook, as a third party would use it --------------------------


class Tally(sj.State[jax.Array]):
    """A custom state type: each lane counts from the shared value; the lanes' sum is kept."""

    __slots__ = ()


class TallyPlugin:
    @hookimpl
    def statejax_batch_state(self, state: sj.State[Any], spec: Any) -> StateBatching | None:
        if not isinstance(state, Tally):
            return None
        return StateBatching(
            prepare=lambda value, n: (jnp.broadcast_to(value, (n, *jnp.shape(value))), value),
            finish=lambda new, old: old + (new - old).sum(0),
        )


@pytest.fixture
def tally_plugin() -> Iterator[None]:
    manager = get_registry().manager
    manager.register(TallyPlugin(), name="test-tally")
    try:
        yield
    finally:
        manager.unregister(name="test-tally")


def test_custom_state_type_batched_through_the_hook(tally_plugin: None) -> None:
    tally = Tally(jnp.array(10.0))

    @vmap
    def count(x: jax.Array) -> jax.Array:
        tally.value = tally.value + x  # batched write: allowed, the plugin merges it
        return tally.value

    out = count(jnp.arange(4.0))
    np.testing.assert_allclose(out, 10.0 + jnp.arange(4.0))
    np.testing.assert_allclose(tally.value, 10.0 + jnp.arange(4.0).sum())


def test_without_the_plugin_the_custom_state_is_broadcast() -> None:
    tally = Tally(jnp.array(10.0))

    def count(x: jax.Array) -> jax.Array:
        tally.value = tally.value + x
        return tally.value

    with pytest.raises(sj.BatchAxisError, match=r"Tally .*broadcast"):
        vmap(count)(jnp.arange(4.0))


def test_import_starts_no_backend_and_default_key_made_inside_jit_is_global() -> None:
    import subprocess
    import sys

    code = (
        "import statejax as sj\n"
        "from jax._src import xla_bridge\n"
        "assert not xla_bridge._backends, 'import started a JAX backend'\n"
        "from statejax import random\n"
        "draw = sj.jit(lambda: random.normal(size=2))\n"
        "a, b = draw(), draw()\n"
        "assert (a != b).all()\n"
        "assert not sj.extend.is_leaked(random.DEFAULT)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# --- invalid seeds and keys are rejected where they are given -------------------------


@pytest.mark.parametrize(
    ("bad", "error", "shown"),
    [
        (np.array([1, 2, 3], np.uint32), TypeError, r"uint32\[3\]"),
        (np.array([5.0, 9.0]), TypeError, r"float64\[2\]"),
        (jnp.zeros(3, jnp.int32), TypeError, r"int32\[3\]"),
        (np.array(2.5), TypeError, r"float64\[\]"),
        (1.5, TypeError, "1.5"),
        ("7", TypeError, "'7'"),
        ([1, 2], TypeError, r"\[1, 2\]"),
    ],
)
def test_invalid_seeds_and_keys_are_rejected(bad: Any, error: type[Exception], shown: str) -> None:
    accepted = r"an int seed, a raw key jax\.random\.PRNGKey\(seed\).*jax\.random\.key\(seed\)"
    before = random.get_key_data()
    with pytest.raises(error, match=rf"{shown}.*{accepted}"):
        random.seed(bad)
    np.testing.assert_array_equal(random.get_key_data(), before)
    with pytest.raises(error, match=rf"{shown}.*{accepted}"):
        RandomState(bad)
    rng = RandomState(1)
    with pytest.raises(error, match=shown):
        rng.seed(bad)


def test_valid_seeds_and_keys_still_work() -> None:
    for good in (3, np.int64(3), jnp.array(3), np.uint32(3), jax.random.PRNGKey(3)):
        random.seed(good)
        np.testing.assert_array_equal(random.get_key_data(), jax.random.PRNGKey(3))
    random.seed(jax.random.key(3))
    assert jnp.issubdtype(random.default_state().value.dtype, jax.dtypes.prng_key)
    random.seed(None)  # a fresh random key, as BrainState's seed(None)
    random.seed()
    assert random.default_state().value.shape == ()  # one typed key, as BrainState's
    stacked = RandomState(jax.random.split(jax.random.PRNGKey(0), 3))  # one key per lane
    assert stacked.value.shape == (3,)
    random.seed(0)


# --- a refused draw leaves the key ------------------------------------------------------

REFUSED: dict[str, tuple[Any, type[Exception], str]] = {
    "choice_of_zero": (lambda rs: rs.choice(0), ValueError, "choice: a must be a positive int"),
    "choice_more_than_population": (
        lambda rs: rs.choice(3, size=5, replace=False),
        ValueError,
        "choice: cannot take 5 samples without replacement from 3 elements",
    ),
    "choice_p_of_wrong_length": (
        lambda rs: rs.choice(3, p=jnp.array([0.5, 0.5])),
        ValueError,
        r"choice: p has shape \(2,\), but a has 3 elements",
    ),
    "choice_negative_p": (
        lambda rs: rs.choice(2, p=jnp.array([1.5, -0.5])),
        ValueError,
        "choice: p must be non-negative",
    ),
    "permutation_axis": (
        lambda rs: rs.permutation(jnp.arange(3), axis=3),
        ValueError,
        r"permutation: axis 3 is out of bounds .* \[-1, 1\)",
    ),
    "shuffle_axis": (
        lambda rs: rs.shuffle(jnp.arange(3), axis=3),
        ValueError,
        "shuffle: axis 3 is out of bounds",
    ),
    "categorical_size": (
        lambda rs: rs.categorical(jnp.zeros((2, 4)), size=3),
        ValueError,
        r"categorical: .*\(2,\) cannot be broadcast to size=\(3,\)",
    ),
    "multivariate_normal_scalar_mean": (
        lambda rs: rs.multivariate_normal(0.0, jnp.eye(2)),
        ValueError,
        "multivariate_normal: mean must have at least one dimension",
    ),
    "multivariate_normal_cov_shape": (
        lambda rs: rs.multivariate_normal(jnp.zeros(2), jnp.eye(3)),
        ValueError,
        r"multivariate_normal: cov has shape \(3, 3\), but mean \(2,\) needs",
    ),
    "orthogonal_negative_n": (
        lambda rs: rs.orthogonal(-1),
        ValueError,
        "orthogonal: n must not be negative, not -1",
    ),
    "orthogonal_float_n": (
        lambda rs: rs.orthogonal(2.5),
        TypeError,
        "orthogonal: n must be an int",
    ),
    "normal_negative_size": (
        lambda rs: rs.normal(size=-1),
        ValueError,
        "normal: size must not be negative, not -1",
    ),
    "uniform_fractional_size": (
        lambda rs: rs.uniform(size=2.5),
        TypeError,
        "uniform: size must be an int or a sequence of ints .*, not 2.5",
    ),
    "lognormal_size_entry": (
        lambda rs: rs.lognormal(size=(2, -3)),
        ValueError,
        "lognormal: size must not be negative",
    ),
    "rand_negative_dimension": (
        lambda rs: rs.rand(2, -1),
        ValueError,
        "rand: size must not be negative",
    ),
    "parameter_bigger_than_size": (
        lambda rs: rs.normal(jnp.zeros(3), size=()),
        ValueError,
        r"normal: parameters of shapes \(3,\) cannot be broadcast to size=\(\)",
    ),
    # Raised by JAX, after the sampler split its key: the draw still leaves the key.
    "error_raised_by_jax": (
        lambda rs: rs.normal(size=3, dtype=jnp.int32),
        ValueError,
        "must be a float",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_refused_draw_leaves_the_key(case: str) -> None:
    draw, error, message = REFUSED[case]
    rng = RandomState(0)
    before = jax.random.key_data(rng.value)
    with pytest.raises(error, match=message):
        draw(rng)
    np.testing.assert_array_equal(jax.random.key_data(rng.value), before)
    random.seed(0)
    before = random.get_key_data()
    with pytest.raises(error, match=message):
        draw(random)  # the module's function, on DEFAULT
    np.testing.assert_array_equal(random.get_key_data(), before)


def test_a_refused_draw_inside_jit_leaves_the_key_and_no_tracer() -> None:
    rng = RandomState(0)
    before = jax.random.key_data(rng.value)
    with pytest.raises(ValueError, match="choice: cannot take 5 samples"):
        sj.jit(lambda: rng.normal() + rng.choice(3, size=5, replace=False))()
    np.testing.assert_array_equal(jax.random.key_data(rng.value), before)
    assert not isinstance(rng.value, jax.core.Tracer)


@pytest.mark.parametrize(
    "draw",
    [
        lambda rs, key: rs.lognormal(0.0, 1.0, size=3, key=key),  # calls normal
        lambda rs, key: rs.random_integers(1, 6, size=3, key=key),  # calls randint
        lambda rs, key: rs.rand_like(jnp.zeros(3), key=key),  # calls random
        lambda rs, key: rs.standard_gamma(2.0, size=3, key=key),  # calls gamma
        lambda rs, key: rs.shuffle(jnp.arange(5), key=key),  # calls permutation
        lambda rs, key: rs.weibull(1.5, size=3, key=key),  # calls weibull_min
    ],
    ids=["lognormal", "random_integers", "rand_like", "standard_gamma", "shuffle", "weibull"],
)
def test_a_sampler_calling_a_sampler_is_one_draw(draw: Any) -> None:
    rng = RandomState(5)
    keep, use = jax.random.split(rng.value)
    np.testing.assert_array_equal(draw(rng, None), draw(RandomState(0), use))
    assert_same_key(rng.value, keep)


@pytest.mark.slow
def test_a_draw_splitting_several_keys_advances_once() -> None:
    rng = RandomState(5)
    keys = jax.random.split(rng.value, 3)
    rng.noncentral_f(3.0, 20.0, 3.0, size=2)
    assert_same_key(rng.value, keys[0])

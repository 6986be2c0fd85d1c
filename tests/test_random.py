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
from statejax.extend import StateBatching, get_registry, hookimpl
from statejax.random import RandomState
from statejax.transforms.vmap import vmap


def test_samplers_match_jax_random_on_the_split_key() -> None:
    rng = RandomState(3)
    key = jax.random.PRNGKey(3)
    cases: list[tuple[Any, Any]] = [
        (lambda: random.normal((2, 3), rng=rng), lambda k: jax.random.normal(k, (2, 3))),
        (
            lambda: random.uniform((4,), minval=1.0, maxval=2.0, rng=rng),
            lambda k: jax.random.uniform(k, (4,), float, 1.0, 2.0),
        ),
        (
            lambda: random.bernoulli(0.3, (5,), rng=rng),
            lambda k: jax.random.bernoulli(k, 0.3, (5,)),
        ),
        (lambda: random.randint((5,), 0, 7, rng=rng), lambda k: jax.random.randint(k, (5,), 0, 7)),
        (lambda: random.permutation(6, rng=rng), lambda k: jax.random.permutation(k, 6)),
        (
            lambda: random.categorical(jnp.zeros(4), shape=(3,), rng=rng),
            lambda k: jax.random.categorical(k, jnp.zeros(4), shape=(3,)),
        ),
        (
            lambda: random.truncated_normal(-1.0, 1.0, (3,), rng=rng),
            lambda k: jax.random.truncated_normal(k, -1.0, 1.0, (3,)),
        ),
    ]
    for draw, reference in cases:
        key, use = jax.random.split(key)
        np.testing.assert_array_equal(draw(), reference(use))
        np.testing.assert_array_equal(rng.value, key)  # advanced exactly once
    key, use = jax.random.split(key)
    np.testing.assert_array_equal(random.split_key(rng=rng), use)
    keys = jax.random.split(key, 4)
    np.testing.assert_array_equal(random.split_key(3, rng=rng), keys[1:])
    np.testing.assert_array_equal(rng.value, keys[0])


def test_default_state_and_seed() -> None:
    random.seed(7)
    a = random.normal((3,))
    b = random.normal((3,))
    assert not np.allclose(a, b)
    random.seed(7)
    np.testing.assert_array_equal(random.normal((3,)), a)
    assert random.default_state() is random.DEFAULT
    random.seed(jax.random.PRNGKey(7))
    np.testing.assert_array_equal(random.normal((3,)), a)
    for seed in (np.int64(7), jnp.array(7)):  # any integer scalar is a seed, not a key
        random.seed(seed)
        np.testing.assert_array_equal(random.normal((3,)), a)
    with pytest.raises(TypeError, match="integer seed or a key, not True"):
        RandomState(True)


def test_jit_draws_fresh_numbers_without_recompiling() -> None:
    random.seed(0)
    traces = []

    @sj.jit
    def draw(x: jax.Array) -> jax.Array:
        traces.append(1)
        return x + random.normal((2,))

    first = draw(jnp.zeros(2))
    n = len(traces)
    second, third = draw(jnp.zeros(2)), draw(jnp.zeros(2))
    assert len(traces) == n  # no recompilation
    assert not np.allclose(first, second) and not np.allclose(second, third)
    random.seed(0)
    np.testing.assert_array_equal(random.normal((2,)), first)  # same stream as eager


def test_vmap_gives_each_lane_its_own_key_and_advances_once() -> None:
    rng = RandomState(1)
    key0 = rng.value
    out = vmap(lambda x: x + random.normal((), rng=rng))(jnp.zeros(4))
    keys = jax.random.split(key0, 5)
    expected = jnp.stack([jax.random.normal(jax.random.split(k)[1], ()) for k in keys[1:]])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert len(set(np.asarray(out).tolist())) == 4
    np.testing.assert_array_equal(rng.value, keys[0])  # advanced once per call
    again = vmap(lambda x: x + random.normal((), rng=rng))(jnp.zeros(4))
    assert not np.allclose(again, out)


def test_split_keys_false_broadcasts_the_key() -> None:
    rng = RandomState(2)
    key0 = rng.value
    out = vmap(lambda x: x + random.normal((), rng=rng), split_keys=False)(jnp.zeros(4))
    np.testing.assert_allclose(out, jnp.full(4, out[0]))
    keep, use = jax.random.split(key0)
    np.testing.assert_allclose(out[0], jax.random.normal(use, ()), rtol=1e-6)
    np.testing.assert_array_equal(rng.value, keep)


def test_jit_of_vmap_with_keys_is_fresh_each_call_without_recompiling() -> None:
    rng = RandomState(4)
    key = rng.value
    traces = []

    def lane(x: jax.Array) -> jax.Array:
        traces.append(1)
        return x + random.uniform((), rng=rng)

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
    np.testing.assert_array_equal(rng.value, key)
    assert len(set(np.asarray(a).tolist())) == 3
    assert not np.allclose(a, b)


def test_keys_mapped_explicitly_with_in_states() -> None:
    rng = RandomState(jax.random.split(jax.random.PRNGKey(0), 3))  # one key per lane
    lanes = rng.value
    out = vmap(lambda: random.normal((), rng=rng), in_states=rng, axis_size=3)()
    expected = jnp.stack([jax.random.normal(jax.random.split(k)[1], ()) for k in lanes])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert rng.value.shape == (3, 2)  # written back batched


def test_a_batch_of_keys_not_mapped_is_a_clear_error() -> None:
    rng = RandomState(jax.random.split(jax.random.PRNGKey(0), 3))
    with pytest.raises(
        sj.BatchAxisError,
        match=r"RandomState \(uint32\[3,2\]\) holds a batch of keys .* in_states=\{0: rng\}",
    ):
        vmap(lambda x: x + random.normal((), rng=rng))(jnp.zeros(3))


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
        "draw = sj.jit(lambda: random.normal((2,)))\n"
        "a, b = draw(), draw()\n"
        "assert (a != b).all()\n"
        "assert not sj.extend.is_leaked(random.DEFAULT)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr

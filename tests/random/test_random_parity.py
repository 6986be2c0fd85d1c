"""BrainState 0.5.4 parity of `statejax.random`: signatures, shape checks, `rayleigh(None)`,
traced `multinomial` counts and the `RandomState` repr, against pure JAX and scipy."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import statejax as sj
from statejax import random
from statejax.random import RandomState

N = 4000


def test_rayleigh_scale_none_is_unit_scale() -> None:
    key = jax.random.key(7)
    rs = RandomState(0)
    none = rs.rayleigh(None, size=(N,), key=key)
    np.testing.assert_array_equal(none, rs.rayleigh(1.0, size=(N,), key=key))
    np.testing.assert_array_equal(none, jax.random.rayleigh(key, 1.0, (N,)))
    assert stats.kstest(np.asarray(none), stats.rayleigh().cdf).pvalue > 1e-3
    assert random.rayleigh(None).shape == ()


def test_weibull_with_array_shape_follows_scipy_per_column() -> None:
    a = jnp.array([0.8, 2.5])
    x = np.asarray(RandomState(3).weibull(a, size=(N, 2)))
    assert x.shape == (N, 2)
    for column, c in enumerate(a.tolist()):
        assert stats.kstest(x[:, column], stats.weibull_min(c).cdf).pvalue > 1e-3
    y = np.asarray(RandomState(4).weibull_min(a, 2.0, size=(N, 2)))
    for column, c in enumerate(a.tolist()):
        assert stats.kstest(y[:, column], stats.weibull_min(c, scale=2.0).cdf).pvalue > 1e-3


@pytest.mark.parametrize(
    ("call", "sampler"),
    [
        (lambda rs: rs.weibull(jnp.array([1.0, 2.0]), size=(3,)), "weibull"),
        (lambda rs: rs.weibull_min(jnp.array([1.0, 2.0]), size=(3,)), "weibull_min"),
        (lambda rs: rs.normal(jnp.zeros(2), 1.0, size=(3,)), "normal"),
        (lambda rs: rs.gamma(jnp.ones(4), size=(2, 3)), "gamma"),
        (lambda rs: rs.binomial(5, jnp.full(2, 0.5), size=5), "binomial"),
    ],
)
def test_parameters_that_cannot_broadcast_to_size_are_a_value_error(
    call: object, sampler: str
) -> None:
    rs = RandomState(0)
    before = jax.random.key_data(rs.value)
    with pytest.raises(ValueError, match=rf"^{sampler}: parameters of shapes .* size=\("):
        call(rs)  # type: ignore[operator]
    # the check runs before the key is split: the state is untouched
    np.testing.assert_array_equal(jax.random.key_data(rs.value), before)


def test_parameters_that_broadcast_to_size_still_work() -> None:
    assert random.normal(jnp.zeros(3), 1.0, size=(2, 3)).shape == (2, 3)
    assert random.weibull(2.0, size=(2, 3)).shape == (2, 3)
    assert random.uniform(jnp.zeros((2, 1)), 1.0, size=(2, 5)).shape == (2, 5)


@pytest.mark.slow
def test_multinomial_takes_a_traced_count_under_jit() -> None:
    # BrainState refuses a traced n (ValueError); jax.random.multinomial handles it.
    p = jnp.array([0.2, 0.3, 0.5])
    key = jax.random.key(11)
    rs = RandomState(0)
    draw = sj.jit(lambda n: rs.multinomial(n, p, size=(4,), key=key))
    for n in (10, 25):
        got = draw(jnp.array(n))
        expected = jax.random.multinomial(key, n, p, shape=(4, 3)).astype(jnp.int32)
        np.testing.assert_array_equal(got, expected)
        assert (np.asarray(got).sum(-1) == n).all()


def test_random_state_repr_shows_the_key() -> None:
    rs = RandomState(42)
    text = repr(rs)
    assert text.startswith("RandomState(") and "42" in text
    assert str(rs.value) in text
    assert "tag={'t'}" in repr(RandomState(1, tag="t"))

    @sj.jit
    def inside() -> jax.Array:
        assert "traced" in repr(rs) or "key<" in repr(rs)  # a tracer: shape only
        return rs.normal()

    inside()


def test_randint_method_takes_dtype_before_key_and_the_function_key_before_dtype() -> None:
    method = list(inspect.signature(RandomState.randint).parameters)
    function = list(inspect.signature(random.randint).parameters)
    assert method == ["self", "low", "high", "size", "dtype", "key"]
    assert function == ["low", "high", "size", "key", "dtype"]
    key = jax.random.key(3)
    by_method = RandomState(0).randint(0, 9, (5,), jnp.int16, key)
    by_function = random.randint(0, 9, (5,), key, jnp.int16)
    expected = jax.random.randint(key, (5,), 0, 9, jnp.int16)
    np.testing.assert_array_equal(by_method, expected)
    np.testing.assert_array_equal(by_function, expected)
    assert by_method.dtype == by_function.dtype == jnp.int16
    np.testing.assert_array_equal(
        random.random_integers(1, 3, 5, key=key, dtype=jnp.int16),
        jax.random.randint(key, (5,), 1, 4, jnp.int16),
    )


@pytest.mark.parametrize("name", ["rand_like", "randn_like", "randint_like"])
def test_like_functions_take_dtype_and_key_by_keyword_only(name: str) -> None:
    function = getattr(random, name)
    params = inspect.signature(function).parameters
    assert params["dtype"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["key"].kind is inspect.Parameter.KEYWORD_ONLY
    x = jnp.full((2, 3), 4, jnp.int32 if name == "randint_like" else jnp.float32)
    key = jax.random.key(5)
    got = function(x, key=key)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_array_equal(got, getattr(RandomState(0), name)(x, key=key))
    with pytest.raises(TypeError):
        if name == "randint_like":
            function(x, 0, 5, jnp.int16)
        else:
            function(x, jnp.float16)

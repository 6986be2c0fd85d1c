"""Every sampler of `statejax.random` against scipy's distribution (fixed seeds, small N).

Continuous samplers: a Kolmogorov-Smirnov test against the scipy distribution.
Discrete samplers: each value's frequency within 5 standard errors of scipy's pmf.
Then the NumPy-style functions under jit, vmap and scan: the default `RandomState`
advances as in eager code, and each vmap lane draws with its own key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import statejax as sj
from statejax import random
from statejax.random import RandomState

N = 4000
Draw = Callable[[RandomState], Any]


def grid(names: Any, default_run: set[str]) -> list[Any]:
    """`names` sorted, each compiling its own sampler: those outside `default_run` are
    marked slow (the default run keeps a few of each kind; `--full` runs them all)."""
    assert default_run <= set(names), default_run - set(names)
    return [
        pytest.param(n, marks=() if n in default_run else pytest.mark.slow) for n in sorted(names)
    ]


CONTINUOUS: dict[str, tuple[Draw, Any]] = {
    "rand": (lambda rs: rs.rand(N), stats.uniform()),
    "randn": (lambda rs: rs.randn(N), stats.norm()),
    "random": (lambda rs: rs.random(N), stats.uniform()),
    "random_sample": (lambda rs: rs.random_sample(N), stats.uniform()),
    "ranf": (lambda rs: rs.ranf(N), stats.uniform()),
    "sample": (lambda rs: rs.sample(N), stats.uniform()),
    "uniform": (lambda rs: rs.uniform(2.0, 5.0, N), stats.uniform(2.0, 3.0)),
    "normal": (lambda rs: rs.normal(1.0, 2.0, N), stats.norm(1.0, 2.0)),
    "standard_normal": (lambda rs: rs.standard_normal(N), stats.norm()),
    "truncated_normal": (
        lambda rs: rs.truncated_normal(-1.0, 2.0, N, loc=0.5, scale=1.5),
        stats.truncnorm(-1.0, 1.0, loc=0.5, scale=1.5),
    ),
    "lognormal": (lambda rs: rs.lognormal(0.5, 0.4, N), stats.lognorm(0.4, scale=np.exp(0.5))),
    "standard_cauchy": (lambda rs: rs.standard_cauchy(N), stats.cauchy()),
    "exponential": (lambda rs: rs.exponential(2.0, N), stats.expon(scale=2.0)),
    "standard_exponential": (lambda rs: rs.standard_exponential(N), stats.expon()),
    "gamma": (lambda rs: rs.gamma(2.5, 1.5, N), stats.gamma(2.5, scale=1.5)),
    "standard_gamma": (lambda rs: rs.standard_gamma(2.5, N), stats.gamma(2.5)),
    "beta": (lambda rs: rs.beta(2.0, 5.0, N), stats.beta(2.0, 5.0)),
    "gumbel": (lambda rs: rs.gumbel(1.0, 2.0, N), stats.gumbel_r(1.0, 2.0)),
    "laplace": (lambda rs: rs.laplace(1.0, 2.0, N), stats.laplace(1.0, 2.0)),
    "logistic": (lambda rs: rs.logistic(1.0, 2.0, N), stats.logistic(1.0, 2.0)),
    "pareto": (lambda rs: rs.pareto(3.0, N), stats.lomax(3.0)),
    "standard_t": (lambda rs: rs.standard_t(5.0, N), stats.t(5.0)),
    "t": (lambda rs: rs.t(5.0, N), stats.t(5.0)),
    "chisquare": (lambda rs: rs.chisquare(3.0, N), stats.chi2(3.0)),
    "noncentral_chisquare": (
        lambda rs: rs.noncentral_chisquare(3.0, 2.0, N),
        stats.ncx2(3.0, 2.0),
    ),
    "f": (lambda rs: rs.f(5.0, 10.0, N), stats.f(5.0, 10.0)),
    "noncentral_f": (lambda rs: rs.noncentral_f(5.0, 10.0, 2.0, N), stats.ncf(5.0, 10.0, 2.0)),
    "rayleigh": (lambda rs: rs.rayleigh(2.0, N), stats.rayleigh(scale=2.0)),
    "triangular": (
        lambda rs: rs.triangular(0.0, 1.0, 3.0, N),
        stats.triang(1.0 / 3.0, loc=0.0, scale=3.0),
    ),
    "vonmises": (lambda rs: rs.vonmises(0.5, 2.0, N), stats.vonmises(2.0, loc=0.5)),
    "vonmises_small_kappa": (
        lambda rs: rs.vonmises(0.0, 0.0, N),
        stats.uniform(-np.pi, 2 * np.pi),
    ),
    # Inverse Gaussian with mean m and shape lam is scipy's invgauss(m / lam, scale=lam).
    "wald": (lambda rs: rs.wald(1.5, 2.0, N), stats.invgauss(0.75, scale=2.0)),
    "weibull": (lambda rs: rs.weibull(1.5, N), stats.weibull_min(1.5)),
    "weibull_min": (lambda rs: rs.weibull_min(1.5, 2.0, N), stats.weibull_min(1.5, scale=2.0)),
    "maxwell": (lambda rs: rs.maxwell(N), stats.maxwell()),
    "loggamma": (lambda rs: rs.loggamma(2.0, N), stats.loggamma(2.0)),
    "power": (lambda rs: rs.power(3.0, N), stats.powerlaw(3.0)),
    # A Dirichlet marginal is a beta distribution.
    "dirichlet": (
        lambda rs: rs.dirichlet(jnp.array([2.0, 3.0, 5.0]), N)[:, 0],
        stats.beta(2.0, 8.0),
    ),
    "rand_like": (lambda rs: rs.rand_like(jnp.zeros(N)), stats.uniform()),
    "randn_like": (lambda rs: rs.randn_like(jnp.zeros(N)), stats.norm()),
}


@pytest.mark.parametrize("name", grid(CONTINUOUS, {"randn", "gamma", "beta", "dirichlet"}))
def test_continuous_sampler_matches_scipy(name: str) -> None:
    draw, reference = CONTINUOUS[name]
    x = np.asarray(draw(RandomState(sum(map(ord, name)))), dtype=np.float64)
    assert x.shape == (N,)
    result = stats.kstest(x, reference.cdf)
    assert result.pvalue > 1e-3, (name, result)


DISCRETE: dict[str, tuple[Draw, Any]] = {
    "randint": (lambda rs: rs.randint(0, 5, N), stats.randint(0, 5)),
    "random_integers": (lambda rs: rs.random_integers(1, 6, N), stats.randint(1, 7)),
    "randint_like": (lambda rs: rs.randint_like(jnp.zeros(N, int), 2, 6), stats.randint(2, 6)),
    "bernoulli": (lambda rs: rs.bernoulli(0.3, N), stats.bernoulli(0.3)),
    "binomial": (lambda rs: rs.binomial(10, 0.3, N), stats.binom(10, 0.3)),
    "poisson": (lambda rs: rs.poisson(3.0, N), stats.poisson(3.0)),
    "geometric": (lambda rs: rs.geometric(0.3, N), stats.geom(0.3)),
    "negative_binomial": (lambda rs: rs.negative_binomial(3, 0.4, N), stats.nbinom(3, 0.4)),
    "hypergeometric": (
        lambda rs: rs.hypergeometric(10, 15, 8, N),
        stats.hypergeom(25, 10, 8),
    ),
    "logseries": (lambda rs: rs.logseries(0.6, N), stats.logser(0.6)),
    "zipf": (lambda rs: rs.zipf(2.5, N), stats.zipf(2.5)),
    "choice": (
        lambda rs: rs.choice(4, N, p=jnp.array([0.1, 0.2, 0.3, 0.4])),
        stats.rv_discrete(values=([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4])),
    ),
    "categorical": (
        lambda rs: rs.categorical(jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4])), size=N),
        stats.rv_discrete(values=([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4])),
    ),
    # One multinomial count is binomial.
    "multinomial": (
        lambda rs: rs.multinomial(20, jnp.array([0.2, 0.3, 0.5]), N)[:, 1],
        stats.binom(20, 0.3),
    ),
}


@pytest.mark.parametrize("name", grid(DISCRETE, {"bernoulli", "binomial", "poisson", "choice"}))
def test_discrete_sampler_matches_scipy(name: str) -> None:
    draw, reference = DISCRETE[name]
    x = np.asarray(draw(RandomState(sum(map(ord, name)))))
    assert x.shape == (N,)
    values = np.arange(int(reference.ppf(0.999)) + 1)
    pmf = reference.pmf(values)
    freq = np.array([(x == v).mean() for v in values])
    tolerance = 5 * np.sqrt(pmf * (1 - pmf) / N) + 1e-3
    assert (np.abs(freq - pmf) <= tolerance).all(), (name, freq, pmf)


def test_multivariate_normal_moments_and_methods() -> None:
    mean = jnp.array([1.0, -2.0])
    cov = jnp.array([[2.0, 0.6], [0.6, 1.0]])
    for method in ("cholesky", "eigh", "svd"):
        x = np.asarray(RandomState(4).multivariate_normal(mean, cov, N, method=method))
        assert x.shape == (N, 2)
        np.testing.assert_allclose(x.mean(0), mean, atol=0.1)
        np.testing.assert_allclose(np.cov(x.T), cov, atol=0.15)
    with pytest.raises(ValueError, match="cholesky, eigh or svd, not 'qr'"):
        random.multivariate_normal(mean, cov, method="qr")


@pytest.mark.slow
def test_orthogonal_permutation_and_shuffle() -> None:
    rs = RandomState(0)
    q = rs.orthogonal(4, size=2)
    assert q.shape == (2, 4, 4)
    np.testing.assert_allclose(
        q @ jnp.swapaxes(q, -1, -2), jnp.broadcast_to(jnp.eye(4), q.shape), atol=1e-5
    )
    firsts = np.asarray(
        jax.vmap(lambda k: rs.permutation(5, key=k)[0])(jax.random.split(jax.random.key(1), N))
    )
    freq = np.bincount(firsts, minlength=5) / N
    np.testing.assert_allclose(freq, 0.2, atol=0.03)  # every element first as often
    x = jnp.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(jnp.sort(rs.shuffle(x, axis=1), axis=1), x)


@pytest.mark.slow
def test_shapes_follow_numpy_broadcasting() -> None:
    assert random.normal(jnp.zeros(3), 1.0).shape == (3,)
    assert random.uniform(jnp.zeros((2, 1)), jnp.ones(3)).shape == (2, 3)
    assert random.binomial(jnp.array([2, 3, 4]), jnp.full((2, 3), 0.5)).shape == (2, 3)
    assert random.hypergeometric(8, [10, 4], [[5, 2], [5, 5]], size=(3, 2, 2)).shape == (3, 2, 2)
    assert random.multinomial(jnp.array([10, 20]), jnp.array([0.5, 0.5])).shape == (2, 2)
    assert random.categorical(jnp.zeros((2, 5))).shape == (2,)
    assert random.choice(["a", "b", "c"], size=4).shape == (4,)
    assert random.randn(2, 3).dtype == jnp.float32 and random.randint(3).dtype == jnp.int32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: random.bernoulli(1.5), "bernoulli: p must be within"),
        (lambda: random.binomial(3, -0.1), "binomial: p must be within"),
        (lambda: random.chisquare(0.0), "chisquare: df must be > 0"),
        (lambda: random.zipf(1.0), "zipf: a must be > 1"),
        (lambda: random.geometric(0.0), "geometric: p must be within"),
        (lambda: random.triangular(0.0, 2.0, 1.0), "left <= mode <= right"),
        (lambda: random.multinomial(5, jnp.array([0.8, 0.5, 0.1])), "sum\\(pvals"),
    ],
)
def test_invalid_parameters_are_rejected_and_the_key_kept(call: Any, message: str) -> None:
    before = random.get_key_data()
    with pytest.raises(ValueError, match=message):
        call()
    np.testing.assert_array_equal(random.get_key_data(), before)


# --- the default RandomState under jit, vmap and scan -------------------------------------


def test_jit_advances_the_default_state_as_eager_code_does() -> None:
    draw = sj.jit(lambda: (random.normal(size=2), random.randint(0, 100, size=3)))
    random.seed(0)
    compiled = [draw(), draw()]
    random.seed(0)
    eager = [(random.normal(size=2), random.randint(0, 100, size=3)) for _ in range(2)]
    for (a, b), (c, d) in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-6)
        np.testing.assert_array_equal(b, d)
    assert not np.allclose(compiled[0][0], compiled[1][0])


def test_key_argument_inside_jit_leaves_the_default_state() -> None:
    random.seed(1)
    before = random.get_key_data()
    out = sj.jit(lambda k: random.normal(size=3, key=k))(jax.random.key(9))
    np.testing.assert_allclose(out, jax.random.normal(jax.random.key(9), (3,)), rtol=1e-6)
    np.testing.assert_array_equal(random.get_key_data(), before)


def test_vmap_splits_the_default_key_per_lane() -> None:
    random.seed(2)
    key = random.get_key()
    out = sj.vmap(lambda x: x + random.uniform(size=2))(jnp.zeros((3, 2)))
    keys = jax.random.split(key, 4)
    expected = [jax.random.uniform(jax.random.split(k)[1], (2,)) for k in keys[1:]]
    np.testing.assert_allclose(out, jnp.stack(expected), rtol=1e-6)
    np.testing.assert_array_equal(random.get_key_data(), jax.random.key_data(keys[0]))


def test_scan_advances_the_default_state_each_step() -> None:
    def step(carry: jax.Array, _: Any) -> tuple[jax.Array, jax.Array]:
        x = random.normal()
        return carry + x, x

    random.seed(3)
    total, xs = sj.transform.scan(step, jnp.array(0.0), None, length=4)
    random.seed(3)
    eager = jnp.stack([random.normal() for _ in range(4)])
    np.testing.assert_allclose(xs, eager, rtol=1e-6)
    np.testing.assert_allclose(total, eager.sum(), rtol=1e-5)
    random.seed(3)
    for _ in range(4):
        random.split_key()
    after_eager = random.get_key_data()
    random.seed(3)
    sj.jit(lambda: sj.transform.scan(step, jnp.array(0.0), None, length=4))()
    np.testing.assert_array_equal(random.get_key_data(), after_eager)


# --- parameters outside the support: concrete ones raise, traced ones give NaN or -1 -------

# name: (draw(rs, *params), valid params, invalid params, message)
SUPPORT: dict[str, tuple[Any, tuple[Any, ...], tuple[Any, ...], str]] = {
    "randint": (lambda rs, lo, hi: rs.randint(lo, hi), (0, 5), (5, 2), "randint: need low < high"),
    "random_integers": (
        lambda rs, lo, hi: rs.random_integers(lo, hi),
        (1, 5),
        (5, 2),
        "random_integers: need low <= high",
    ),
    "randint_like": (
        lambda rs, lo, hi: rs.randint_like(jnp.zeros(2, int), lo, hi),
        (0, 5),
        (5, 2),
        "randint_like: need low < high",
    ),
    "normal": (lambda rs, s: rs.normal(0.0, s), (1.0,), (-1.0,), "normal: scale must be >= 0"),
    "truncated_normal": (
        lambda rs, loc: rs.truncated_normal(-1.0, 1.0, loc=loc),
        (0.0,),
        (5.0,),
        "truncated_normal: loc must be within 2 scales",
    ),
    "lognormal": (
        lambda rs, s: rs.lognormal(0.0, s),
        (1.0,),
        (-1.0,),
        "lognormal: sigma must be >= 0",
    ),
    "exponential": (
        lambda rs, s: rs.exponential(s),
        (1.0,),
        (-1.0,),
        "exponential: scale must be >= 0, not scale=-1.0",
    ),
    "gamma": (lambda rs, k: rs.gamma(k, 1.0), (2.0,), (-1.0,), "gamma: shape must be >= 0"),
    "standard_gamma": (
        lambda rs, k: rs.standard_gamma(k),
        (2.0,),
        (-1.0,),
        "standard_gamma: shape must be >= 0",
    ),
    "beta": (lambda rs, a: rs.beta(a, 2.0), (2.0,), (0.0,), "beta: a and b must be > 0"),
    "gumbel": (lambda rs, s: rs.gumbel(0.0, s), (1.0,), (-1.0,), "gumbel: scale must be >= 0"),
    "laplace": (lambda rs, s: rs.laplace(0.0, s), (1.0,), (-1.0,), "laplace: scale must be >= 0"),
    "logistic": (
        lambda rs, s: rs.logistic(0.0, s),
        (1.0,),
        (-1.0,),
        "logistic: scale must be >= 0",
    ),
    "pareto": (lambda rs, a: rs.pareto(a), (3.0,), (0.0,), "pareto: a must be > 0"),
    "standard_t": (lambda rs, df: rs.standard_t(df), (5.0,), (0.0,), "standard_t: df must be > 0"),
    "chisquare": (lambda rs, df: rs.chisquare(df), (3.0,), (0.0,), "chisquare: df must be > 0"),
    "noncentral_chisquare": (
        lambda rs, nonc: rs.noncentral_chisquare(3.0, nonc),
        (2.0,),
        (-1.0,),
        "noncentral_chisquare: nonc must be >= 0",
    ),
    "f": (lambda rs, d: rs.f(5.0, d), (10.0,), (0.0,), "f: dfden must be > 0"),
    "noncentral_f": (
        lambda rs, nonc: rs.noncentral_f(5.0, 10.0, nonc),
        (2.0,),
        (-1.0,),
        "noncentral_f: nonc must be >= 0",
    ),
    "rayleigh": (lambda rs, s: rs.rayleigh(s), (2.0,), (-1.0,), "rayleigh: scale must be >= 0"),
    "triangular": (
        lambda rs, mode: rs.triangular(0.0, mode, 1.0),
        (0.5,),
        (2.0,),
        "triangular: need left <= mode <= right",
    ),
    "vonmises": (
        lambda rs, k: rs.vonmises(0.0, k),
        (2.0,),
        (-1.0,),
        "vonmises: kappa must be >= 0",
    ),
    "wald": (lambda rs, m: rs.wald(m, 2.0), (1.0,), (0.0,), "wald: mean must be > 0"),
    "weibull": (lambda rs, a: rs.weibull(a), (1.5,), (0.0,), "weibull: a must be > 0"),
    "weibull_min": (
        lambda rs, s: rs.weibull_min(1.5, s),
        (2.0,),
        (-1.0,),
        "weibull_min: scale must be >= 0",
    ),
    "loggamma": (lambda rs, a: rs.loggamma(a), (2.0,), (0.0,), "loggamma: a must be > 0"),
    "power": (lambda rs, a: rs.power(a), (3.0,), (0.0,), "power: a must be > 0"),
    "dirichlet": (
        lambda rs, alpha: rs.dirichlet(alpha),
        ([1.0, 2.0],),
        ([1.0, -1.0],),
        "dirichlet: alpha must be > 0",
    ),
    "binomial": (lambda rs, n: rs.binomial(n, 0.5), (5,), (-1,), "binomial: n must be >= 0"),
    "poisson": (lambda rs, lam: rs.poisson(lam), (3.0,), (-1.0,), "poisson: lam must be >= 0"),
    "geometric": (lambda rs, p: rs.geometric(p), (0.5,), (0.0,), r"geometric: p must be within"),
    "negative_binomial": (
        lambda rs, p: rs.negative_binomial(5, p),
        (0.5,),
        (1.5,),
        r"negative_binomial: p must be within \(0, 1\], not p=1.5",
    ),
    "hypergeometric": (
        lambda rs, nsample: rs.hypergeometric(2, 2, nsample),
        (3,),
        (10,),
        "hypergeometric: need 0 <= nsample <= ngood \\+ nbad, not ngood=2, nbad=2, nsample=10",
    ),
    "logseries": (lambda rs, p: rs.logseries(p), (0.5,), (1.0,), r"logseries: p must be within"),
    "zipf": (lambda rs, a: rs.zipf(a), (2.5,), (1.0,), "zipf: a must be > 1"),
    "multinomial": (
        lambda rs, n: rs.multinomial(n, jnp.array([0.5, 0.5])),
        (5,),
        (-5,),
        "multinomial: n must be >= 0, not n=-5",
    ),
}


@pytest.mark.parametrize("name", sorted(SUPPORT))
def test_concrete_parameters_outside_the_support_raise_and_keep_the_key(name: str) -> None:
    draw, _, invalid, message = SUPPORT[name]
    rng = RandomState(0)
    before = jax.random.key_data(rng.value)
    with pytest.raises(ValueError, match=message):
        draw(rng, *invalid)
    np.testing.assert_array_equal(jax.random.key_data(rng.value), before)
    # A constant inside a transform is known too: the trace refuses it.
    with pytest.raises(ValueError, match=message):
        sj.jit(lambda: draw(rng, *invalid))()
    np.testing.assert_array_equal(jax.random.key_data(rng.value), before)


@pytest.mark.parametrize("name", grid(SUPPORT, {"binomial", "beta", "gamma"}))
def test_traced_parameters_outside_the_support_give_nan_or_minus_one(name: str) -> None:
    draw, valid, invalid, _ = SUPPORT[name]
    params = [jnp.array([v, b]) for v, b in zip(valid, invalid, strict=True)]
    rng = RandomState(1)
    out = np.asarray(sj.jit(lambda *ps: draw(rng, *ps))(*params))
    good, bad = out[0], out[1]
    if np.issubdtype(out.dtype, np.floating):
        assert not np.isnan(good).any() and np.isnan(bad).all(), out
    else:
        assert (good >= 0).all() and (bad == -1).all(), out


def test_traced_bernoulli_p_is_clamped() -> None:
    rng = RandomState(2)
    p = jnp.array([jnp.nan, -0.5, 1.5, 0.0, 1.0])
    out = sj.jit(lambda p: rng.bernoulli(p, size=(100, 5)))(p)
    np.testing.assert_array_equal(out.any(0), [False, False, True, False, True])
    np.testing.assert_array_equal(out.all(0), [False, False, True, False, True])
    with pytest.raises(ValueError, match="bernoulli: p must be within \\[0, 1\\], not p=nan"):
        rng.bernoulli(jnp.nan)


def test_check_valid_false_skips_the_support_check() -> None:
    rng = RandomState(3)
    assert bool(rng.bernoulli(1.5, check_valid=False))
    out = sj.jit(lambda a: rng.power(a, check_valid=False))(jnp.array(-1.0))
    assert not np.isnan(out)


def test_integer_results_of_unsigned_dtype_mark_invalid_draws_with_the_largest_value() -> None:
    rng = RandomState(4)
    out = sj.jit(lambda lam: rng.poisson(lam, dtype=jnp.uint8))(jnp.array([2.0, -1.0]))
    assert out.dtype == jnp.uint8 and int(out[1]) == 255 and int(out[0]) < 255

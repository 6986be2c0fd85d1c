"""Samplers `jax.random` lacks, as pure functions of a key (NumPy's algorithms).

Each takes a key, broadcast parameters and a result shape. The rejection samplers
loop until every element is accepted (`lax.while_loop`, so they work under `jit`
and `vmap`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["hypergeometric", "logseries", "vonmises_centered", "zipf"]

Shape = tuple[int, ...]


def _until_accepted(
    key: jax.Array,
    shape: Shape,
    dtype: jnp.dtype,
    propose: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
) -> jax.Array:
    """Draw `propose(key) -> (values, accepted)` again where not yet accepted."""

    def more(carry: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        return ~jnp.all(carry[2])

    def draw(carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, ...]:
        key, values, done = carry
        key, use = jax.random.split(key)
        new, ok = propose(use)
        return key, jnp.where(done, values, new), done | ok

    start = (key, jnp.zeros(shape, dtype), jnp.zeros(shape, bool))
    return lax.while_loop(more, draw, start)[1]  # type: ignore[arg-type]


def zipf(key: jax.Array, a: jax.Array, shape: Shape, dtype: jnp.dtype) -> jax.Array:
    """Zipf samples by rejection from a Pareto envelope (Devroye; NumPy's method)."""
    am1 = jnp.broadcast_to(a, shape).astype(float) - 1.0
    b = jnp.power(2.0, am1)
    limit = float(np.iinfo(dtype).max)

    def propose(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        ku, kv = jax.random.split(k)
        u = 1.0 - jax.random.uniform(ku, shape)
        v = jax.random.uniform(kv, shape)
        x = jnp.floor(jnp.power(u, -1.0 / am1))
        t = jnp.power(1.0 + 1.0 / x, am1)
        ok = (x >= 1) & (x <= limit) & (v * x * (t - 1.0) / (b - 1.0) <= t / b)
        return jnp.clip(x, 1, limit).astype(dtype), ok

    return _until_accepted(key, shape, dtype, propose)


def vonmises_centered(
    key: jax.Array, kappa: jax.Array, shape: Shape, dtype: jnp.dtype
) -> jax.Array:
    """Von Mises samples with mean 0 by Best and Fisher's rejection method."""
    kappa = jnp.broadcast_to(kappa, shape).astype(dtype)
    tiny = kappa < 1e-6  # (nearly) uniform on the circle: the method divides by kappa
    k = jnp.where(tiny, 1.0, kappa)
    tau = 1.0 + jnp.sqrt(1.0 + 4.0 * k * k)
    rho = (tau - jnp.sqrt(2.0 * tau)) / (2.0 * k)
    r = (1.0 + rho * rho) / (2.0 * rho)

    def propose(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        u1, u2, u3 = jax.random.uniform(key, (3, *shape), dtype)
        z = jnp.cos(jnp.pi * u1)
        f = (1.0 + r * z) / (r + z)
        c = k * (r - f)
        ok = (c * (2.0 - c) - u2 > 0) | (jnp.log(c / u2) + 1.0 - c >= 0)
        theta = jnp.sign(u3 - 0.5) * jnp.arccos(jnp.clip(f, -1.0, 1.0))
        return jnp.where(tiny, jnp.pi * (2.0 * u3 - 1.0), theta), ok | tiny

    return _until_accepted(key, shape, dtype, propose)


def logseries(key: jax.Array, p: jax.Array, shape: Shape, dtype: jnp.dtype) -> jax.Array:
    """Logarithmic series samples by Kemp's method (NumPy's)."""
    p = jnp.broadcast_to(p, shape).astype(float)
    kv, ku = jax.random.split(key)
    v = jax.random.uniform(kv, shape, minval=1e-30)
    u = jax.random.uniform(ku, shape)
    q = -jnp.expm1(jnp.log1p(-p) * u)
    tail = jnp.maximum(jnp.floor(1.0 + jnp.log(v) / jnp.log(q)), 1.0)
    out = jnp.where(v >= p, 1.0, jnp.where(v <= q * q, tail, jnp.where(v >= q, 1.0, 2.0)))
    return out.astype(dtype)


def hypergeometric(
    key: jax.Array,
    ngood: jax.Array,
    nbad: jax.Array,
    nsample: jax.Array,
    shape: Shape,
    dtype: jnp.dtype,
) -> jax.Array:
    """Good items among `nsample` drawn without replacement, one draw at a time."""
    good = jnp.broadcast_to(ngood, shape).astype(float)
    total = good + jnp.broadcast_to(nbad, shape)
    nsample = jnp.broadcast_to(nsample, shape)

    def draw(i: jax.Array, carry: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        good, total, count = carry
        active = i < nsample
        u = jax.random.uniform(jax.random.fold_in(key, i), shape)
        took = active & (u * total < good)
        return good - took, total - active, count + took

    start = (good, total, jnp.zeros(shape, dtype))
    count: jax.Array = lax.fori_loop(0, jnp.max(nsample, initial=0), draw, start)[2]
    return count

"""Benchmark (run by hand): statejax ``scan`` updating states vs ``jax.lax.scan`` on a pure carry.

A leaky integrator with a trace and a step counter runs for 1,000 steps. The
statejax version keeps ``v``, ``trace`` and ``count`` in states and reads the
weights from a ``ParamState``; the reference passes the same arrays through
``jax.lax.scan`` as an explicit carry. Both are compiled with ``jit`` and timed
in one process, interleaved, on the same inputs; the script prints the median
time of each and their ratio (target: at most 1.05x).

    python benchmarks/loops.py [--steps 1000] [--size 256] [--repeats 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import statejax as sj
from statejax.transform import scan


class Neurons(sj.Module):
    def __init__(self, size: int) -> None:
        key = jax.random.PRNGKey(0)
        self.w = sj.ParamState(jax.random.normal(key, (size,)) * 0.1)
        self.v = sj.HiddenState(jnp.zeros(size))
        self.trace = sj.HiddenState(jnp.zeros(size))
        self.count = sj.ShortTermState(jnp.array(0))

    def step(self, x: jax.Array) -> jax.Array:
        self.count.value += 1
        self.v.value = 0.9 * self.v.value + self.w.value * x
        self.trace.value = 0.95 * self.trace.value + jnp.tanh(self.v.value)
        return self.v.value.sum()


def pure_step(w: Any, carry: Any, x: Any) -> tuple[Any, Any]:
    v, trace, count = carry
    v = 0.9 * v + w * x
    trace = 0.95 * trace + jnp.tanh(v)
    return (v, trace, count + 1), v.sum()


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())  # type: ignore[no-untyped-call]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1000)
    opts = parser.parse_args()

    xs = jax.random.normal(jax.random.PRNGKey(1), (opts.steps,))
    model = Neurons(opts.size)

    @sj.jit
    def stateful(xs: jax.Array) -> jax.Array:
        def body(acc: jax.Array, x: jax.Array) -> tuple[jax.Array, None]:
            return acc + model.step(x), None

        return scan(body, jnp.array(0.0), xs)[0]

    carry = (jnp.zeros(opts.size), jnp.zeros(opts.size), jnp.array(0))
    w = model.w.value

    @jax.jit
    def pure(w: jax.Array, carry: Any, xs: jax.Array) -> tuple[Any, jax.Array]:
        def body(c: Any, x: jax.Array) -> tuple[Any, None]:
            inner, acc = c
            inner, y = pure_step(w, inner, x)
            return (inner, acc + y), None

        (carry, acc), _ = jax.lax.scan(body, (carry, jnp.array(0.0)), xs)
        return carry, acc

    def run_pure() -> Any:
        nonlocal carry
        carry, acc = pure(w, carry, xs)
        return acc

    # Same results on a fresh model, then warm up both.
    check = Neurons(opts.size)
    model.v.value, model.trace.value, model.count.value = (
        check.v.value,
        check.trace.value,
        check.count.value,
    )
    got = stateful(xs)
    ref = run_pure()
    assert jnp.allclose(got, ref, rtol=1e-5), (got, ref)
    assert jnp.allclose(model.v.value, carry[0], rtol=1e-5)
    for _ in range(20):
        stateful(xs)
        run_pure()

    def run_stateful() -> Any:
        return stateful(xs)

    times: dict[str, list[float]] = {"statejax": [], "jax": []}
    for i in range(opts.repeats):  # alternate, so drift on a shared machine hits both alike
        order = [("statejax", run_stateful), ("jax", run_pure)]
        for name, fn in order if i % 2 else order[::-1]:
            times[name].append(timed(fn))
    sj_times, jax_times = times["statejax"], times["jax"]
    t_sj = statistics.median(sj_times)
    t_jax = statistics.median(jax_times)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(f"scan of {opts.steps} steps, 3 written states of size {opts.size}, 1 read state")
    print(f"statejax scan under sj.jit : {t_sj * 1e6:9.1f} us (median of {len(sj_times)})")
    print(f"jax.lax.scan under jax.jit : {t_jax * 1e6:9.1f} us (median of {len(jax_times)})")
    print(f"ratio statejax / jax       : {t_sj / t_jax:9.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()

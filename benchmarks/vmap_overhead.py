"""Overhead of a jitted ``statejax.vmap`` ensemble step against ``jax.jit(jax.vmap(...))``.

An ensemble of E small MLPs (2 -> 32 -> 32 -> 1, tanh) is trained with SGD, each
member on its own batch of 64 points. statejax: the ensemble is created by
running the initialiser under ``vmap`` and trained with
``jit(vmap(step, in_states={0: ensemble.states()}))``, ``grad`` inside.
Baseline: the same step written as a pure function of stacked arrays, under
``jax.jit(jax.vmap(...))``, its new parameters fed back by hand. Both run in one
process, calls interleaved; the script prints median step times and their ratio
(target: at most 1.15x).

Run by hand: ``python benchmarks/vmap_overhead.py [--repeats 300] [--sizes 8 64]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import statejax as sj
from statejax.transform import grad, vmap

SIZES = (2, 32, 32, 1)
LR = 0.05


class MLP(sj.Module):
    def __init__(self, key: jax.Array) -> None:
        keys = jax.random.split(key, len(SIZES) - 1)
        self.layers = [
            {
                "w": sj.ParamState(jax.random.normal(k, (a, b)) / jnp.sqrt(a)),
                "b": sj.ParamState(jnp.zeros(b)),
            }
            for k, a, b in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
        ]

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = x @ layer["w"].value + layer["b"].value
            if i < len(self.layers) - 1:
                x = jnp.tanh(x)
        return x


def pure_forward(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jnp.tanh(x)
    return x


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def data(e: int) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.PRNGKey(1), (e, 64, 2))
    return x, jnp.sin(x.sum(-1, keepdims=True))


def statejax_step(e: int) -> Callable[[], Any]:
    ensemble = vmap(MLP)(jax.random.split(jax.random.PRNGKey(0), e))
    params = ensemble.states(sj.ParamState)
    x, y = data(e)

    def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((ensemble(x) - y) ** 2)

    @sj.jit
    @vmap(in_states={0: params})
    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, loss = grad(loss_fn, params, return_value=True)(x, y)
        for path, g in grads.items():
            params[path].value = params[path].value - LR * g
        return loss

    return lambda: step(x, y)


def plain_step(e: int) -> Callable[[], Any]:
    ensemble = vmap(MLP)(jax.random.split(jax.random.PRNGKey(0), e))
    box = [[{k: s.value for k, s in layer.items()} for layer in ensemble.layers]]
    x, y = data(e)

    def one(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> Any:
        loss, g = jax.value_and_grad(lambda p: jnp.mean((pure_forward(p, x) - y) ** 2))(params)
        new = jax.tree.map(lambda p, gp: p - LR * gp, params, g)
        return new, loss

    step = jax.jit(jax.vmap(one))

    def call() -> Any:
        box[0], loss = step(box[0], x, y)
        return loss

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8, 64])
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}; median of {args.repeats} steps")
    for e in args.sizes:
        base, fn = plain_step(e), statejax_step(e)
        for _ in range(10):
            _timed(base), _timed(fn)
        base_times, times = [], []
        for _ in range(args.repeats):
            base_times.append(_timed(base))
            times.append(_timed(fn))
        b, t = statistics.median(base_times), statistics.median(times)
        # Both trained the same steps from the same start: they must agree.
        np.testing.assert_allclose(fn(), base(), rtol=1e-4, atol=1e-6)
        print(
            f"  ensemble of {e:3d}: statejax {t * 1e6:8.1f} us vs jax.jit(jax.vmap) "
            f"{b * 1e6:8.1f} us  ({t / b:5.2f}x)"
        )


if __name__ == "__main__":
    main()

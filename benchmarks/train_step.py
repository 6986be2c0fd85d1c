"""One training step (jit of grad + an optax Adam update): statejax vs plain JAX.

Run by hand: ``python benchmarks/train_step.py [--repeats N]``. For a 3-layer
MLP, tiny (width 8, batch 8: overhead-dominated) and wide (width 256, batch 64:
compute-dominated), it builds

* the statejax step: ``sj.jit`` of ``grad(loss, model.states(ParamState))`` plus
  ``statejax.optim.Optimizer(optax.adam(...)).update``, states written in place;
* the plain-JAX step: ``jax.jit`` of ``jax.value_and_grad`` plus the same optax
  update, parameters and optimizer state passed in and returned,

checks that both give the same losses over a few steps from the same start, then
times them interleaved in one process and prints the ratio of median step times
(statejax / plain JAX). Targets: <= 1.2 tiny, <= 1.05 wide.
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
import optax

import statejax as sj
from statejax.optim import Optimizer

LEARNING_RATE = 1e-3


def init_params(width: int, seed: int) -> list[tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    scale = 1.0 / np.sqrt(width)
    return [(jax.random.normal(k, (width, width)) * scale, jnp.zeros(width)) for k in keys]


def forward(params: Any, x: jax.Array) -> jax.Array:
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = jnp.tanh(x)
    return x


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((pred - y) ** 2)


# ----------------------------------------------------------------------------- statejax


class Layer(sj.Module):
    def __init__(self, w: jax.Array, b: jax.Array) -> None:
        self.w = sj.ParamState(w)
        self.b = sj.ParamState(b)


class MLP(sj.Module):
    def __init__(self, params: list[tuple[jax.Array, jax.Array]]) -> None:
        self.layers = [Layer(w, b) for w, b in params]

    def __call__(self, x: jax.Array) -> jax.Array:
        return forward([(layer.w.value, layer.b.value) for layer in self.layers], x)


def statejax_step(width: int) -> tuple[Callable[[jax.Array, jax.Array], jax.Array], MLP]:
    model = MLP(init_params(width, seed=0))
    params = model.states(sj.ParamState)
    optimizer = Optimizer(optax.adam(LEARNING_RATE), params)

    def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
        return mse(model(x), y)

    @sj.jit
    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, loss = sj.grad(loss_fn, params, return_value=True)(x, y)
        optimizer.update(grads)
        return loss  # type: ignore[no-any-return]

    return step, model


# ----------------------------------------------------------------------------- plain JAX


def plain_step(width: int) -> tuple[Callable[..., Any], Any, Any]:
    tx = optax.adam(LEARNING_RATE)
    params = init_params(width, seed=0)
    opt_state = tx.init(params)

    def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return mse(forward(params, x), y)

    @jax.jit
    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, params, opt_state


# ----------------------------------------------------------------------------- harness


def run(name: str, width: int, batch: int, repeats: int, inner: int) -> float:
    key_x, key_y = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(key_x, (batch, width))
    y = jax.random.normal(key_y, (batch, width))

    sj_step, _model = statejax_step(width)
    pj_step, params, opt_state = plain_step(width)

    # 1. The same math: the losses agree step by step.
    for _ in range(5):
        sj_loss = sj_step(x, y)
        params, opt_state, pj_loss = pj_step(params, opt_state, x, y)
        np.testing.assert_allclose(float(sj_loss), float(pj_loss), rtol=1e-5)

    # 2. Timing, interleaved so drift hits both alike; per-step medians of `inner` steps.
    def time_sj() -> float:
        start = time.perf_counter()
        for _ in range(inner):
            loss = sj_step(x, y)
        loss.block_until_ready()
        return (time.perf_counter() - start) / inner

    state = [params, opt_state]

    def time_pj() -> float:
        p, s = state
        start = time.perf_counter()
        for _ in range(inner):
            p, s, loss = pj_step(p, s, x, y)
        loss.block_until_ready()
        elapsed = time.perf_counter() - start
        state[:] = [p, s]
        return elapsed / inner

    sj_times, pj_times = [], []
    for i in range(repeats):  # alternate which goes first, so neither always runs warm
        if i % 2:
            pj_times.append(time_pj())
            sj_times.append(time_sj())
        else:
            sj_times.append(time_sj())
            pj_times.append(time_pj())
    sj_median, pj_median = statistics.median(sj_times), statistics.median(pj_times)
    ratio = sj_median / pj_median
    print(
        f"{name:5s} (width {width:3d}, batch {batch:2d}): statejax {sj_median * 1e6:8.1f} us, "
        f"plain JAX {pj_median * 1e6:8.1f} us, ratio {ratio:.3f}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per variant")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; losses agree on both models")
    run("tiny", width=8, batch=8, repeats=args.repeats, inner=200)
    run("wide", width=256, batch=64, repeats=args.repeats, inner=20)


if __name__ == "__main__":
    main()

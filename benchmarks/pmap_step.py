"""A data-parallel train step under ``pmap`` on 8 simulated CPU devices: statejax vs jax.pmap.

Run by hand: ``python benchmarks/pmap_step.py [--repeats N]`` (it sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` itself, before JAX starts).
A 2-layer MLP (width 64; a batch of 8 x 8 points, one row of 8 per device; SGD with
momentum) is trained by

* ``statejax.transform.pmap`` of ``grad`` + ``Optimizer.update``, the parameters and
  optimizer state replicated states, the gradients averaged with ``lax.pmean``;
* ``statejax.transform.pmap2``, BrainState's form, of the same step;
* against ``jax.pmap`` of the same step written as a pure function
  (``in_axes=(None, None, 0, 0)``, ``out_axes=None`` for the new parameters and
  optimizer state), its results fed back by hand.

It checks that the losses agree step by step, then times the calls interleaved (each
call waited for) and prints the ratio of median cached-call times (target <= 1.1x).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

# The model, loss, optimizer and timing of the sharded-step benchmark (same folder).
from sharded_step import MLP, WIDTH, init, loss_of, timed, tx

import statejax as sj
from statejax.optim import Optimizer

DEVICES, PER_DEVICE = 8, 8


def statejax_step(which: str) -> Callable[..., Any]:
    model = MLP()
    params = model.states(sj.ParamState)
    opt = Optimizer(tx(), params)

    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
            return loss_of([s.value for s in params.values()], x, y)

        grads, loss = sj.grad(loss_fn, params, return_value=True)(x, y)
        opt.update(jax.lax.pmean(grads, "data"))
        return jax.lax.pmean(loss, "data")

    if which == "pmap":
        return sj.transform.pmap(step, "data")
    return sj.transform.pmap2(step, "data")


def plain_step() -> tuple[Callable[..., Any], Any]:
    optimizer = tx()

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(loss_of)(params, x, y)
        grads = jax.lax.pmean(grads, "data")
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, jax.lax.pmean(loss, "data")

    params = init()
    mapped = jax.pmap(step, "data", in_axes=(None, None, 0, 0), out_axes=(None, None, 0))
    return mapped, (params, optimizer.init(params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner", type=int, default=50)
    args = parser.parse_args()
    assert jax.device_count() == DEVICES, jax.devices()
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(k1, (DEVICES, PER_DEVICE, WIDTH))
    y = jax.random.normal(k2, (DEVICES, PER_DEVICE, WIDTH))
    plain, start = plain_step()
    for which in ("pmap", "pmap2"):
        ours = statejax_step(which)
        state = list(start)

        def theirs(state: list[Any] = state) -> Any:
            params, opt_state, loss = plain(*state, x, y)
            state[:] = [params, opt_state]
            return loss

        for _ in range(3):  # the same losses, step by step
            np.testing.assert_allclose(
                np.asarray(ours(x, y)), np.asarray(theirs()), rtol=1e-5, atol=1e-6
            )
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            ours_t.append(timed(lambda ours=ours: ours(x, y), args.inner))
            theirs_t.append(timed(theirs, args.inner))
        a, b = statistics.median(ours_t), statistics.median(theirs_t)
        print(
            f"{which} vs jax.pmap: statejax {a * 1e6:.0f} us, plain JAX {b * 1e6:.0f} us, "
            f"ratio {a / b:.3f}x"
        )


if __name__ == "__main__":
    main()

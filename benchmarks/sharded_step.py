"""A data-parallel train step on 8 simulated CPU devices: statejax vs plain JAX.

Run by hand: ``python benchmarks/sharded_step.py [--repeats N]`` (it sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` itself, before JAX starts).
A 2-layer MLP (width 64, batch 64; parameters replicated, batch split over the 8
devices, SGD with momentum) is trained by

* ``sj.jit`` of ``grad`` + ``Optimizer.update`` with ``state_shardings``, against
  ``jax.jit`` of ``jax.value_and_grad`` + the same optax update with identical
  ``in_shardings``/``out_shardings``, on the same arrays;
* ``sj.shard_map`` of the same step (loss averaged with ``lax.pmean``), against
  ``jax.jit(jax.shard_map(...))`` of the plain step.

It checks that each pair gives the same losses, then times them interleaved and
prints the ratio of median cached-call times (target <= 1.05x). If BrainState is
installed, it also counts how often BrainState's ``shard_map`` traces the function.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj
from statejax.optim import Optimizer
from statejax.sharding import shard_states

WIDTH, BATCH = 64, 64
MESH = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
REPLICATED = NamedSharding(MESH, P())
DATA = NamedSharding(MESH, P("data"))


def init() -> list[jax.Array]:
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    scale = 1.0 / np.sqrt(WIDTH)
    return [jax.random.normal(k, (WIDTH, WIDTH)) * scale for k in (k1, k2)]


def loss_of(params: list[jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((jnp.tanh(x @ params[0]) @ params[1] - y) ** 2)


def tx() -> optax.GradientTransformation:
    return optax.sgd(0.01, momentum=0.9)


class MLP(sj.Module):
    def __init__(self) -> None:
        self.layers = [sj.ParamState(w) for w in init()]


def statejax_steps() -> tuple[Callable[..., Any], Callable[..., Any]]:
    steps = []
    for sharded in (False, True):
        model = MLP()
        shard_states(model, MESH)
        params = model.states(sj.ParamState)
        opt = Optimizer(tx(), params)
        opt.shard_like_params()

        def step(
            x: jax.Array,
            y: jax.Array,
            params: Any = params,
            opt: Any = opt,
            sharded: bool = sharded,
        ) -> Any:
            def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
                loss = loss_of([s.value for s in params.values()], x, y)
                return jax.lax.pmean(loss, "data") if sharded else loss

            grads, loss = sj.grad(loss_fn, params, return_value=True)(x, y)
            opt.update(grads)
            return loss

        if sharded:
            steps.append(sj.shard_map(step, MESH, (P("data"), P("data")), P()))
        else:
            steps.append(
                sj.jit(step, in_shardings=(DATA, DATA), state_shardings={sj.ParamState: REPLICATED})
            )
    return steps[0], steps[1]


def plain_steps() -> tuple[Callable[..., Any], Callable[..., Any], Any]:
    optimizer = tx()

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(loss_of)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def local_step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        loss, grads = jax.value_and_grad(lambda p, x, y: jax.lax.pmean(loss_of(p, x, y), "data"))(
            params, x, y
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = jax.device_put(init(), REPLICATED)
    opt_state = jax.device_put(optimizer.init(params), REPLICATED)
    jitted = jax.jit(
        step,
        in_shardings=(REPLICATED, REPLICATED, DATA, DATA),
        out_shardings=(REPLICATED, REPLICATED, REPLICATED),
    )
    mapped = jax.jit(
        jax.shard_map(
            local_step, mesh=MESH, in_specs=(P(), P(), P("data"), P("data")), out_specs=P()
        )
    )
    return jitted, mapped, (params, opt_state)


def brainstate_traces(x: jax.Array, y: jax.Array) -> str:
    try:
        import brainstate  # optional: only to compare
    except ImportError:
        return "BrainState not installed: skipped"
    traces = []
    w = brainstate.ParamState(jnp.ones(WIDTH))

    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        w.value = w.value + jax.lax.pmean(x.sum(0), "data")
        return x * 2

    g = brainstate.transform.shard_map(f, MESH, in_specs=(P("data"),), out_specs=P("data"))
    for _ in range(5):
        g(x)
    return f"BrainState shard_map: {len(traces)} traces in 5 calls"


def timed(call: Callable[[], Any], inner: int) -> float:
    # Each call is waited for: with 8 simulated devices on a few host cores, a long
    # queue of dispatched programs with collectives can starve XLA:CPU's rendezvous
    # (seen as "Expected 8 threads to join the rendezvous" and an abort). Waiting also
    # puts all of the Python-side overhead in the measurement, the stricter test.
    start = time.perf_counter()
    for _ in range(inner):
        jax.block_until_ready(call())
    return (time.perf_counter() - start) / inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner", type=int, default=50)
    args = parser.parse_args()
    x = jax.device_put(jax.random.normal(jax.random.PRNGKey(1), (BATCH, WIDTH)), DATA)
    y = jax.device_put(jax.random.normal(jax.random.PRNGKey(2), (BATCH, WIDTH)), DATA)
    sj_jit, sj_map = statejax_steps()
    pj_jit, pj_map, start = plain_steps()
    state = {"jit": list(start), "map": list(start)}

    def plain(name: str, fn: Callable[..., Any]) -> Callable[[], Any]:
        def call() -> Any:
            params, opt_state, loss = fn(*state[name], x, y)
            state[name] = [params, opt_state]
            return loss

        return call

    pairs = {
        "jit + state_shardings vs jax.jit": (lambda: sj_jit(x, y), plain("jit", pj_jit)),
        "shard_map vs jax.shard_map": (lambda: sj_map(x, y), plain("map", pj_map)),
    }
    for name, (ours, theirs) in pairs.items():
        for _ in range(3):  # the same losses, step by step
            np.testing.assert_allclose(float(ours()), float(theirs()), rtol=1e-5)
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            ours_t.append(timed(ours, args.inner))
            theirs_t.append(timed(theirs, args.inner))
        a, b = statistics.median(ours_t), statistics.median(theirs_t)
        print(f"{name}: statejax {a * 1e6:.0f} us, plain JAX {b * 1e6:.0f} us, ratio {a / b:.3f}x")
    print(brainstate_traces(x, y))


if __name__ == "__main__":
    main()

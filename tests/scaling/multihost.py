"""Multi-host data-parallel training: 2 processes x 2 CPU devices via jax.distributed.

Run by tests/scaling/test_scaling.py, which starts `worker 0` and `worker 1` (a coordinator on
127.0.0.1, gloo collectives) and then `single` (one process, 4 devices). Each writes
its results to an .npz file for the test to compare:

- worker: trains one model with `statejax.jit` (state shardings) and one with
  `statejax.shard_map` (pmean of the loss), from the same start; then shards the first
  model's parameters over the 4 devices and saves a checkpoint, each process writing
  its own shards.
- single: trains the same model on one process with 4 devices (the reference), then
  restores the 2-process checkpoint onto its own, replicated placement.
"""

from __future__ import annotations

import os
import sys

MODE = sys.argv[1]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={2 if MODE == 'worker' else 4}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

if MODE == "worker":
    PROCESS, PORT = int(sys.argv[2]), int(sys.argv[3])
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{PORT}",
        num_processes=2,
        process_id=PROCESS,
        initialization_timeout=30,
    )

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import statejax as sj  # noqa: E402
from statejax import checkpoints  # noqa: E402
from statejax.optim import Optimizer  # noqa: E402
from statejax.sharding import shard_states  # noqa: E402

assert jax.device_count() == 4, jax.devices()
MESH = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
BATCH = NamedSharding(MESH, P("data"))
STEPS = 3


class MLP(sj.Module):
    def __init__(self) -> None:
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        self.w1 = sj.ParamState(np.asarray(jax.random.normal(k1, (4, 8))) * 0.3)
        self.w2 = sj.ParamState(np.asarray(jax.random.normal(k2, (8, 4))) * 0.3)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x @ self.w1.value) @ self.w2.value


X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (8, 4)))
Y = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (8, 4)))


def global_batch(a: np.ndarray) -> jax.Array:
    # Each process supplies the rows of its own devices.
    return jax.make_array_from_callback(a.shape, BATCH, lambda index: a[index])


def setup() -> tuple[MLP, dict, Optimizer]:
    model = MLP()
    shard_states(model, MESH)  # replicated on all 4 devices of both processes
    params = model.states(sj.ParamState)
    opt = Optimizer(optax.sgd(0.1, momentum=0.9), params)
    opt.shard_like_params()
    return model, params, opt


def local(value: jax.Array) -> np.ndarray:
    return np.asarray(value.addressable_data(0))


def jit_training() -> tuple[MLP, list[float]]:
    model, params, opt = setup()

    @sj.jit(in_shardings=(BATCH, BATCH), state_shardings={sj.ParamState: NamedSharding(MESH, P())})
    def step(x, y):
        grads, loss = sj.grad(
            lambda x, y: jnp.mean((model(x) - y) ** 2), params, return_value=True
        )(x, y)
        opt.update(grads)
        return loss

    x, y = global_batch(X), global_batch(Y)
    return model, [float(local(step(x, y))) for _ in range(STEPS)]


def shard_map_training() -> tuple[MLP, list[float]]:
    model, params, opt = setup()

    def step(x, y):
        def loss_fn(x, y):
            return jax.lax.pmean(jnp.mean((model(x) - y) ** 2), "data")

        grads, loss = sj.grad(loss_fn, params, return_value=True)(x, y)
        opt.update(grads)
        return loss

    f = sj.shard_map(step, MESH, in_specs=(P("data"), P("data")), out_specs=P())
    x, y = global_batch(X), global_batch(Y)
    return model, [float(local(f(x, y))) for _ in range(STEPS)]


def results(prefix: str, model: MLP, losses: list[float]) -> dict[str, np.ndarray]:
    out = {f"{prefix}_losses": np.array(losses)}
    for path, state in model.states(sj.ParamState).items():
        out[f"{prefix}_{'_'.join(map(str, path))}"] = local(state.value)
    return out


if MODE == "worker":
    ckpt, out_file = sys.argv[4], sys.argv[5]
    jit_model, jit_losses = jit_training()
    sm_model, sm_losses = shard_map_training()
    found = {**results("jit", jit_model, jit_losses), **results("shard_map", sm_model, sm_losses)}
    shard_states(jit_model, MESH, {sj.ParamState: P("data")})  # each process owns half the rows
    assert not jit_model.w1.value.is_fully_addressable
    checkpoints.save(ckpt, jit_model, step=STEPS)
    np.savez(out_file, **found)
    jax.distributed.shutdown()
    print(f"OK worker {PROCESS}")
else:
    ckpt, out_file = sys.argv[2], sys.argv[3]
    model, losses = jit_training()
    found = results("single", model, losses)
    restored = MLP()
    shard_states(restored, MESH, {sj.ParamState: P(None, "data")})  # another placement
    assert checkpoints.restore(ckpt, restored) == STEPS
    assert restored.w1.value.sharding.spec == P(None, "data")
    found.update({f"restored_{k}": np.asarray(v.value) for (k,), v in restored.states().items()})
    np.savez(out_file, **found)
    print("OK single")

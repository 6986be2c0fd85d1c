"""Checkpoints on 4 simulated CPU devices: a restored model trains in a sharded step.

Run by tests/test_checkpoints.py in a subprocess (XLA_FLAGS must be set before JAX
starts), with the checkpoint directory as its argument. Prints `OK <check>` per
check; any failure raises.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj
from statejax import checkpoints

assert jax.device_count() == 4, jax.devices()
MESH = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
ROWS = NamedSharding(MESH, P("data"))


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.arange(8.0))
        self.steps = sj.ShortTermState(jnp.array(0))


def train(net: Net) -> None:
    @sj.jit(state_shardings={sj.ParamState: ROWS})
    def step() -> None:
        net.w.value = net.w.value * 2
        net.steps.value += 1

    step()


directory = sys.argv[1]
saved = Net()
train(saved)  # a fresh model trains in the sharded step
checkpoints.save(directory, saved)

# Restored into a freshly built model, values stay uncommitted: the step still runs.
fresh = Net()
checkpoints.restore(directory, fresh)
assert not fresh.w.value.committed
train(fresh)
np.testing.assert_array_equal(fresh.w.value, np.arange(8.0) * 4)
assert fresh.w.value.sharding.is_equivalent_to(ROWS, 1) and int(fresh.steps.value) == 2
print("OK restore_into_fresh_model_then_sharded_step")

# Restored where state_shardings says.
placed = Net()
checkpoints.restore(directory, placed, state_shardings={sj.ParamState: ROWS})
assert placed.w.value.sharding == ROWS, placed.w.value.sharding
assert not placed.steps.value.committed
train(placed)
print("OK restore_with_state_shardings")

# Restored onto the placement the target state already has (another one than saved).
replicated = Net()
replicated.w.value = jax.device_put(replicated.w.value, NamedSharding(MESH, P()))
checkpoints.restore(directory, replicated)
assert replicated.w.value.sharding == NamedSharding(MESH, P())
np.testing.assert_array_equal(replicated.w.value, np.arange(8.0) * 2)
print("OK restore_onto_current_sharding")
print("DONE")

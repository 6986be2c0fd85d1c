"""Data-, fully sharded- and tensor-parallel training on 8 simulated CPU devices.

Run by tests/scaling/test_scaling.py in a subprocess (XLA_FLAGS must be set before JAX
starts). Prints `OK <check>` per check; any failure raises. Tolerance: losses and
parameters equal to one device's within rtol=1e-5, atol=1e-6 (float32 sums in
another order).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj
from statejax.optim import Optimizer
from statejax.sharding import get_partition_spec, shard_states

assert jax.device_count() == 8, jax.devices()
RTOL, ATOL, STEPS = 1e-5, 1e-6, 3
AUTO = (AxisType.Auto,)


class MLP(sj.Module):
    def __init__(self) -> None:
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        self.w1 = sj.ParamState(jax.random.normal(k1, (8, 16)) * 0.3, sharding=("embed", "mlp"))
        self.b1 = sj.ParamState(jnp.zeros(16), sharding=("mlp",))
        self.w2 = sj.ParamState(jax.random.normal(k2, (16, 8)) * 0.3, sharding=("mlp", "embed"))
        self.b2 = sj.ParamState(jnp.zeros(8), sharding=("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x @ self.w1.value + self.b1.value) @ self.w2.value + self.b2.value


X = jax.random.normal(jax.random.PRNGKey(1), (16, 8))
Y = jax.random.normal(jax.random.PRNGKey(2), (16, 8))


def setup() -> tuple[MLP, dict, Optimizer]:
    model = MLP()
    params = model.states(sj.ParamState)
    # SGD with momentum: a gradient off by a factor shows (Adam would hide it), and
    # the momentum is optimizer state that must stay sharded like the parameters.
    return model, params, Optimizer(optax.sgd(0.1, momentum=0.9), params)


def make_step(model, params, opt, reduce=None):
    def step(x, y):
        def loss_fn(x, y):
            return jnp.mean((model(x) - y) ** 2)

        grads, loss = sj.grad(loss_fn, params, return_value=True)(x, y)
        if reduce is not None:
            grads, loss = reduce(grads), reduce(loss)
        opt.update(grads)
        return loss

    return step


def values(model: MLP) -> dict:
    return {p: np.asarray(s.value) for p, s in model.states(sj.ParamState).items()}


def close(a, b, what: str) -> None:
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=what)


def check_same(name: str, losses, model, ref_losses, ref_model) -> None:
    close(np.array(losses), np.array(ref_losses), f"{name} losses")
    ref = values(ref_model)
    for path, v in values(model).items():
        close(v, ref[path], f"{name} {path}")
    print(f"OK {name} losses={[round(float(v), 6) for v in losses]}")


def keeps(model, opt, shardings: dict) -> None:
    for path, state in model.states(sj.ParamState).items():
        want = shardings[path]
        assert state.value.sharding.is_equivalent_to(want, state.value.ndim), (
            path,
            state.value.sharding,
        )

    def same(leaf, param):
        assert leaf.sharding.is_equivalent_to(param.sharding, leaf.ndim), (leaf.sharding, param)

    optax.tree_utils.tree_map_params(opt.tx, same, opt.opt_state.value, opt._values())


# one device
ref_model, ref_params, ref_opt = setup()
one = sj.jit(make_step(ref_model, ref_params, ref_opt))
ref_losses = [float(one(X, Y)) for _ in range(STEPS)]


def run_jit(name: str, mesh, rules=None, logical=()) -> tuple[MLP, Optimizer]:
    model, params, opt = setup()
    shard_states(model, mesh, rules, logical_axis_rules=logical)
    opt.shard_like_params()
    shardings = {p: NamedSharding(mesh, spec) for p, spec in get_partition_spec(model).items()}
    state_shardings = {params[p]: s for p, s in shardings.items()}
    data = NamedSharding(mesh, P("data"))
    step = sj.jit(
        make_step(model, params, opt),
        in_shardings=(data, data),
        state_shardings=state_shardings,
    )
    x, y = jax.device_put(X, data), jax.device_put(Y, data)
    losses = []
    for _ in range(STEPS):
        losses.append(float(step(x, y)))
        keeps(model, opt, shardings)
    check_same(name, losses, model, ref_losses, ref_model)
    return model, opt


mesh8 = jax.make_mesh((8,), ("data",), axis_types=AUTO)
dp_model, _ = run_jit("data_parallel", mesh8, {sj.ParamState: P()})
run_jit("fsdp", mesh8, {sj.ParamState: P("data")})
mesh42 = jax.make_mesh((4, 2), ("data", "model"), axis_types=AUTO * 2)
tp_model, _ = run_jit("tensor_parallel", mesh42, logical=[("mlp", "model"), ("embed", None)])
assert get_partition_spec(tp_model)[("w1",)] == P(None, "model")


# shard_map equals the jit version: with check_vma=False, pmean of the local gradients
# (the classic data-parallel step); with check_vma=True, JAX sums the gradients of the
# replicated parameters itself, so the local loss is averaged with pmean instead.
def sharded_step(model, params, opt, check_vma, traces):
    def step(x, y):
        traces.append(1)

        def loss_fn(x, y):
            loss = jnp.mean((model(x) - y) ** 2)
            return jax.lax.pmean(loss, "data") if check_vma else loss

        grads, loss = sj.grad(loss_fn, params, return_value=True)(x, y)
        if not check_vma:
            grads, loss = jax.lax.pmean((grads, loss), "data")
        opt.update(grads)
        return loss

    return sj.shard_map(
        step, mesh8, in_specs=(P("data"), P("data")), out_specs=P(), check_vma=check_vma
    )


for check_vma in (False, True):
    model, params, opt = setup()
    shard_states(model, mesh8)
    opt.shard_like_params()
    traces = []
    sm = sharded_step(model, params, opt, check_vma, traces)
    losses = [float(sm(X, Y)) for _ in range(STEPS)]
    check_same(f"shard_map_pmean check_vma={check_vma}", losses, model, ref_losses, ref_model)
    close(values(model)[("w1",)], values(dp_model)[("w1",)], "shard_map vs jit")
    n = len(traces)
    sm(X, Y)
    sm(X, Y)
    assert len(traces) == n, (len(traces), n)
    print(f"OK shard_map_cached traces={n}")

# a device-varying write into a replicated state names the state; nothing changes
model, params, opt = setup()
model.last_loss = sj.ShortTermState(jnp.zeros(()))
before = values(model)


def local_loss(x, y):
    grads, loss = sj.grad(lambda x, y: jnp.mean((model(x) - y) ** 2), params, return_value=True)(
        x, y
    )
    opt.update(grads)
    model.last_loss.value = loss  # the local loss: differs per device
    return jax.lax.pmean(loss, "data")


bad = sj.shard_map(local_loss, mesh8, in_specs=(P("data"), P("data")), out_specs=P())
try:
    bad(X, Y)
    raise AssertionError("no error")
except sj.ShardingError as exc:
    message = str(exc)
assert "ShortTermState at path ('last_loss',)" in message, message
assert "differs across mesh axis 'data'" in message and "pmean" in message, message
for path, v in values(model).items():
    np.testing.assert_array_equal(v, before[path])
print("OK shard_map_varying_write_error")

# a bad state spec is a SpecError naming the path
model, params, opt = setup()
odd = sj.shard_map(
    lambda m, x: x @ m.w1.value,
    mesh8,
    in_specs=(P(), P("data")),
    out_specs=P("data"),
    state_in_specs={sj.ParamState: P(None, None, "data")},
)
try:
    odd(model, X)
    raise AssertionError("no error")
except sj.SpecError as exc:
    assert "ParamState at path ('w1',)" in str(exc), exc
print("OK shard_map_spec_error")

# a state committed elsewhere is never moved silently by jit(state_shardings=...)
model, params, opt = setup()
shard_states(model, mesh8)
rep = NamedSharding(mesh8, P())
step = sj.jit(make_step(model, params, opt), state_shardings={sj.ParamState: rep})
step(X, Y)
moved = jax.device_put(model.w1.value, NamedSharding(mesh8, P("data")))
model.w1.value = moved
try:
    step(X, Y)
    raise AssertionError("no error")
except sj.ShardingError as exc:
    assert "('w1',)" in str(exc) or "MLP.w1" in str(exc), exc
    assert "does not move it silently" in str(exc), exc
assert model.w1.value is moved
print("OK jit_state_sharding_mismatch_error")

# unmatched states that change sharding recompile (as jax.jit) and keep their new placement
c = sj.State(jnp.zeros(8))
inc = sj.jit(lambda: setattr(c, "value", c.value + 1))
inc()
c.value = jax.device_put(c.value, NamedSharding(mesh8, P("data")))
inc()
assert c.value.sharding.is_equivalent_to(NamedSharding(mesh8, P("data")), 1)
print("OK jit_unmatched_state_recompiles")
print("DONE")

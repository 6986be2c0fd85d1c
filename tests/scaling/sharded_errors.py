"""Run-time errors and state-naming errors of sharded calls on 8 simulated CPU devices.

Run by tests/scaling/test_scaling.py in a subprocess (XLA_FLAGS must be set before JAX
starts). Prints `OK <check>` per check; any failure raises.

On several devices a run-time error (a `jax.debug.callback` that raises) does not
fail the dispatch: it poisons the results, which raise when read. `jit(state_shardings=)`,
`shard_map` and `pmap` must raise it at the call and keep the states' last good values,
as one device does.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj

assert jax.device_count() == 8, jax.devices()
MESH = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
ROWS = NamedSharding(MESH, P("data"))
REPLICATED = NamedSharding(MESH, P())


class Model(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jax.device_put(jnp.arange(8.0), ROWS))
        self.steps = sj.ShortTermState(jax.device_put(jnp.zeros(()), REPLICATED))


def raises(error: type[BaseException], parts: tuple[str, ...], fn, *args) -> str:
    try:
        fn(*args)
    except error as exc:
        message = str(exc)
        for part in parts:
            assert part in message, (part, message)
        return message
    raise AssertionError(f"no {error.__name__}")


def fail_on_device(x: jax.Array) -> None:
    raise RuntimeError("callback failed on purpose")


# --- a run-time error keeps the last good values ------------------------------------------
def stepper(model: Model, fail: bool):
    def step(m: Model, x: jax.Array) -> jax.Array:
        m.w.value = m.w.value + x
        m.steps.value = m.steps.value + 1
        if fail:
            jax.debug.callback(fail_on_device, x)
        return x * 2  # no collective: a device whose run failed would leave it waiting

    return step


def keeps_last_good_values(name: str, make) -> None:
    model = Model()
    good, bad = make(stepper(model, False)), make(stepper(model, True))
    good(model, jnp.float32(1.0))
    w, steps = np.asarray(model.w.value), np.asarray(model.steps.value)
    raises(jax.errors.JaxRuntimeError, ("on purpose",), bad, model, jnp.float32(1.0))
    np.testing.assert_array_equal(model.w.value, w)  # readable, and the last good values
    np.testing.assert_array_equal(model.steps.value, steps)
    good(model, jnp.float32(1.0))
    np.testing.assert_array_equal(model.w.value, w + 1)
    print(f"OK {name}_runtime_error_keeps_states", flush=True)


keeps_last_good_values(
    "jit", lambda f: sj.jit(f, state_shardings={sj.ParamState: ROWS, sj.ShortTermState: REPLICATED})
)
keeps_last_good_values(
    "shard_map",
    lambda f: sj.shard_map(
        f, MESH, in_specs=(P(), P()), out_specs=P(), state_in_specs={sj.ParamState: P("data")}
    ),
)

counter = sj.State(jnp.zeros(()))


def device_step(fail: bool):
    def step(x: jax.Array) -> jax.Array:
        counter.value = counter.value + 1  # no collective (see above)
        if fail:
            jax.debug.callback(fail_on_device, x)
        return x * 2

    return sj.transform.pmap(step, "i")


device_step(False)(jnp.ones(8))
raises(jax.errors.JaxRuntimeError, ("on purpose",), device_step(True), jnp.ones(8))
assert float(counter.value) == 1.0, counter.value
print("OK pmap_runtime_error_keeps_states", flush=True)


# --- a state reshaped so that it no longer divides the mesh --------------------------------
def grow(m: Model, x: jax.Array) -> jax.Array:
    m.w.value = m.w.value + x
    return x


for name, make in [
    ("jit", lambda: sj.jit(grow, state_shardings={sj.ParamState: ROWS})),
    (
        "shard_map",
        lambda: sj.shard_map(
            grow,
            MESH,
            in_specs=(P(), P()),
            out_specs=P(),
            state_in_specs={sj.ParamState: P("data")},
        ),
    ),
]:
    model, f = Model(), make()
    f(model, jnp.float32(1.0))
    model.w.value = reshaped = jnp.ones(6)
    raises(
        sj.SpecError,
        (
            f"statejax.{name}(grow): ParamState at path ('w',) (float32[6])",
            "dimension 6 is not divisible by 8",
            "changed shape since the first call",
        ),
        f,
        model,
        jnp.float32(1.0),
    )
    assert model.w.value is reshaped
    print(f"OK {name}_reshaped_state_named", flush=True)

# --- a state committed to devices outside shard_map's mesh ---------------------------------
model = Model()
f = sj.shard_map(
    grow, MESH, in_specs=(P(), P()), out_specs=P(), state_in_specs={sj.ParamState: P("data")}
)
f(model, jnp.float32(1.0))
half = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:4])
model.w.value = elsewhere = jax.device_put(jnp.ones(8), NamedSharding(half, P("data")))
raises(
    sj.ShardingError,
    (
        "statejax.shard_map(grow): ParamState at path ('w',)",
        "devices [0, 1, 2, 3]",
        "does not move it silently",
    ),
    f,
    model,
    jnp.float32(1.0),
)
assert model.w.value is elsewhere
print("OK shard_map_foreign_mesh_state_named", flush=True)


# --- an argument both donated and read as a state (XLA would crash the process) ------------
def add(m: Model, x: jax.Array) -> jax.Array:
    m.w.value = m.w.value + x
    return x * 2


for name, f in [
    ("jit", sj.jit(add, donate_argnums=1)),
    ("jit_sharded", sj.jit(add, donate_argnums=1, state_shardings={sj.ParamState: ROWS})),
]:
    model = Model()
    before = model.w.value
    raises(
        sj.SpecError,
        ("argument 1 is donated (donate_argnums)", "ParamState at path ('w',)", "jnp.copy(x)"),
        f,
        model,
        model.w.value,
    )
    assert model.w.value is before
    print(f"OK {name}_donated_state_named", flush=True)

stacked = sj.State(jnp.zeros((8, 3)))


def bump(x: jax.Array) -> jax.Array:
    stacked.value = stacked.value + x
    return x * 2


pm = sj.transform.pmap(bump, "i", in_states={0: stacked}, donate_argnums=0)
pm(jnp.ones((8, 3)))
before = stacked.value
raises(sj.SpecError, ("donated (donate_argnums)", "jnp.copy(x)"), pm, stacked.value)
assert stacked.value is before
np.testing.assert_array_equal(stacked.value, np.ones((8, 3)))
print("OK pmap_donated_state_named", flush=True)
print("DONE")

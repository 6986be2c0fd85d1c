"""shard_map and statejax.sharding on one device (8 devices: test_scaling.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj
from statejax.optim import Optimizer
from statejax.sharding import (
    get_partition_spec,
    get_sharding,
    logical_to_mesh_axes,
    shard_states,
    with_sharding_constraint,
)

MESH = Mesh(np.array(jax.devices()[:1]), ("data",))


class Linear(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones((2, 3)), sharding=("embed", "mlp"))
        self.b = sj.ParamState(jnp.zeros(3))
        self.calls = sj.ShortTermState(jnp.array(0))


def test_shard_map_matches_jax_shard_map_and_writes_states() -> None:
    total = sj.State(jnp.array(0.0))
    traces: list[int] = []

    def step(x: jax.Array) -> jax.Array:
        traces.append(1)
        total.value = total.value + jax.lax.psum(x.sum(), "data")
        return x * 2

    f = sj.shard_map(step, MESH, in_specs=P("data"), out_specs=P("data"))
    x = jnp.arange(4.0)
    plain = jax.jit(
        jax.shard_map(lambda x: x * 2, mesh=MESH, in_specs=P("data"), out_specs=P("data"))
    )
    assert f(x).tolist() == plain(x).tolist()
    assert float(total.value) == 6.0
    f(x)
    n = len(traces)
    f(x)
    f(x)
    assert len(traces) == n  # cached calls do not retrace
    assert float(total.value) == 24.0


def test_shard_map_spec_errors_name_the_state() -> None:
    model = Linear()

    def use(m: Linear, x: jax.Array) -> jax.Array:
        return x @ m.w.value

    f = sj.shard_map(
        use, MESH, in_specs=(P(), P()), out_specs=P(), state_in_specs={sj.ParamState: P("model")}
    )
    with pytest.raises(sj.SpecError, match=r"ParamState at path \('w',\).*no axis 'model'"):
        f(model, jnp.ones((1, 2)))
    with pytest.raises(
        sj.SpecError, match=r"state_in_specs.*neither a PartitionSpec nor a mapping"
    ):
        sj.shard_map(use, MESH, P(), P(), state_in_specs=3)  # type: ignore[arg-type]
    with pytest.raises(sj.SpecError, match=r"mesh.*not a jax.sharding.Mesh"):
        sj.shard_map(use, "mesh", P(), P())
    with pytest.raises(ValueError, match="in_specs has 1 entries but the function got 2"):
        sj.shard_map(lambda a, b: a + b, MESH, (P("data"),), P("data"))(jnp.ones(2), jnp.ones(2))


def test_shard_map_error_inside_leaves_states_unchanged() -> None:
    s = sj.State(jnp.zeros(2))

    def boom(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        sj.shard_map(boom, MESH, P("data"), P("data"))(jnp.ones(2))
    assert s.value.tolist() == [0.0, 0.0] and not isinstance(s.value, jax.core.Tracer)


def test_shard_states_places_by_rules_then_logical_names_then_replicated() -> None:
    model = Linear()
    shard_states(
        model, MESH, {sj.ShortTermState: P()}, logical_axis_rules=[("embed", "data"), ("mlp", None)]
    )
    specs = get_partition_spec(model)
    assert specs == {("w",): P("data", None), ("b",): P(), ("calls",): P()}
    assert all(isinstance(s, NamedSharding) for s in get_sharding(model).values())
    assert logical_to_mesh_axes(("embed", None), {"embed": "data"}) == P("data", None)


def test_shard_states_checks_every_state_before_moving_any() -> None:
    model = Linear()
    before = model.b.value
    with pytest.raises(sj.SpecError, match=r"ParamState at path \('w',\).*3 entries for 2"):
        shard_states(model, MESH, {model.w: P(None, None, "data"), sj.ParamState: P("data")})
    assert model.b.value is before
    with pytest.raises(TypeError, match="neither a Module"):
        shard_states(3, MESH)


def test_sharding_survives_treefy_split_and_merge() -> None:
    graphdef, tree = sj.treefy_split(Linear())
    assert sj.treefy_merge(graphdef, tree).w.sharding == ("embed", "mlp")


def test_with_sharding_constraint_inside_jit() -> None:
    h = sj.State(jnp.zeros(4))

    @sj.jit
    def step() -> None:
        h.value = h.value + 1
        with_sharding_constraint(h, NamedSharding(MESH, P("data")))

    step()
    assert h.value.tolist() == [1.0] * 4
    assert h.value.sharding.is_equivalent_to(NamedSharding(MESH, P("data")), 1)


def test_optimizer_state_placed_like_params() -> None:
    model = Linear()
    opt = Optimizer(optax.adam(0.1), model.states(sj.ParamState))
    shard_states(model, MESH, {sj.ParamState: P("data")})
    opt.shard_like_params()
    mu = opt.opt_state.value[0].mu
    params = list(model.states(sj.ParamState).values())
    for m, p in zip(mu, params, strict=True):
        assert m.sharding.is_equivalent_to(p.value.sharding, m.ndim)

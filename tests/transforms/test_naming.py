"""named_call and named_scope: the operations carry the name, states are threaded, and
named_scope compiles once per static value (negative static positions count from the
end)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.transform import named_call, named_scope


def test_named_call_names_the_operations_and_keeps_state_writes() -> None:
    count = sj.State(jnp.array(0.0))

    @named_call(name="block")
    def block(x: jax.Array) -> jax.Array:
        count.value = count.value + 1.0
        return jnp.sin(x) * x

    pure = named_call(lambda x: jnp.sin(x) * x, name="pure_block")
    names = {str(e.source_info.name_stack) for e in jax.make_jaxpr(pure)(1.0).eqns}
    assert names == {"pure_block"}
    g = sj.grad(block)(jnp.array(2.0))
    np.testing.assert_allclose(g, jnp.sin(2.0) + 2.0 * jnp.cos(2.0), rtol=1e-6)
    assert float(sj.jit(block)(jnp.array(1.0))) == pytest.approx(np.sin(1.0))
    assert float(count.value) == 2.0  # grad and jit both stored the write


def test_named_scope_compiles_once_per_static_value() -> None:
    traces: list[int] = []
    calls = sj.State(jnp.array(0))

    @named_scope("scale", static_argnames="k")
    def scale(x: jax.Array, k: int) -> jax.Array:
        traces.append(k)
        calls.value += 1
        return x * k

    assert [float(scale(jnp.array(2.0), k=k)) for k in (3, 3, 4)] == [6.0, 6.0, 8.0]
    assert int(calls.value) == 3 and traces.count(3) <= 2 and scale.fn.__name__ == "scale"
    pure = named_scope("pure_scale")(lambda x: x * 2.0)
    jaxpr = jax.make_jaxpr(pure)(1.0)
    eqns = jaxpr.eqns  # the operations, named (inside the jit's equation if JAX kept one)
    if "jaxpr" in eqns[0].params:
        eqns = eqns[0].params["jaxpr"].jaxpr.eqns
    assert {str(e.source_info.name_stack) for e in eqns} == {"pure_scale"}


def test_named_scope_negative_static_argnums_count_from_the_end() -> None:
    traces: list[tuple[Any, ...]] = []

    @named_scope("scaled_power", static_argnums=(-1, -2))
    def scaled_power(x: jax.Array, n: int, scale: int) -> jax.Array:
        traces.append((n, scale))
        assert isinstance(n, int) and isinstance(scale, int)  # static: plain Python values
        return (x**n) * scale

    x = jnp.array([2.0, 3.0])
    np.testing.assert_allclose(scaled_power(x, 2, 3), (x**2) * 3)
    np.testing.assert_allclose(scaled_power(x, 2, 3), (x**2) * 3)
    np.testing.assert_allclose(scaled_power(x, 3, 1), x**3)
    assert traces == [(2, 3), (3, 1)]  # one compilation per static value
    assert scaled_power.fn.__name__ == "scaled_power"

    @named_scope("mode", static_argnums=-1)
    def shift(x: jax.Array, y: jax.Array, mode: str) -> jax.Array:
        return x + y if mode == "add" else x - y

    np.testing.assert_allclose(shift(x, x, "add"), 2 * x)
    np.testing.assert_allclose(shift(x, x, "sub"), 0 * x)


def test_named_scope_negative_static_argnums_thread_states_and_check_range() -> None:
    calls = sj.State(jnp.array(0))

    @named_scope("count", static_argnums=-1)
    def step(x: jax.Array, k: int) -> jax.Array:
        calls.value += k
        return x * k

    assert float(step(jnp.array(1.5), 2)) == 3.0 and int(calls.value) == 2
    step.clear_cache()
    assert float(step(jnp.array(1.0), 3)) == 3.0 and int(calls.value) == 5

    @named_scope("too_far", static_argnums=-3)
    def short(x: jax.Array, k: int) -> jax.Array:
        return x * k

    with pytest.raises(sj.SpecError, match=r"named_scope\(too_far\): static_argnums \(-3,\)"):
        short(jnp.array(1.0), 2)
    with pytest.raises(sj.SpecError, match="option static_argnums"):
        named_scope("bad", static_argnums=True)

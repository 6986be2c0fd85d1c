"""StatefulMapping (BrainState's class form of vmap) against jax.vmap on the pure function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._transforms.mapping import StatefulMapping


def test_static_arguments_are_closed_over_and_states_batched() -> None:
    counter = sj.ShortTermState(jnp.zeros(3))
    shared = sj.State(jnp.array(10.0))

    def f(x: jax.Array, y: jax.Array, flag: bool) -> jax.Array:
        counter.value = counter.value + x
        return (x + y) * (2.0 if flag else 1.0) + shared.value

    sm = StatefulMapping(f, in_axes=(0, None, None), state_in_axes={0: counter}, static_argnums=2)
    xs, y = jnp.arange(3.0), jnp.array(1.0)
    ref = jax.vmap(lambda x: (x + y) * 2.0 + 10.0)(xs)
    np.testing.assert_allclose(sm(xs, y, True), ref)
    np.testing.assert_allclose(sm(xs, y, False), jax.vmap(lambda x: x + y + 10.0)(xs))
    assert counter.value.tolist() == [0.0, 2.0, 4.0]  # both calls wrote back, per lane
    assert float(shared.value) == 10.0

    g = StatefulMapping(lambda x, *, scale: x * scale, static_argnames=["scale"])
    assert g.static_argnames == ("scale",)
    np.testing.assert_allclose(g(xs, scale=3.0), xs * 3.0)


def test_errors() -> None:
    total = sj.State(jnp.array(0.0))

    def write(x: jax.Array) -> jax.Array:
        total.value = total.value + x  # batched write into a broadcast state
        return x

    with pytest.raises(sj.BatchAxisError):
        StatefulMapping(write)(jnp.arange(3.0))
    assert float(total.value) == 0.0
    np.testing.assert_allclose(
        StatefulMapping(write, state_out_axes={0: total})(jnp.arange(3.0)), jnp.arange(3.0)
    )
    assert total.value.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(sj.SpecError, match="unexpected_out_state_mapping"):
        StatefulMapping(write, unexpected_out_state_mapping="auto")
    with pytest.raises(sj.SpecError, match="static_argnums"):
        StatefulMapping(write, static_argnums=-1)
    with pytest.raises(ValueError, match="static_argnums contains index 5"):
        StatefulMapping(lambda x, f: x, static_argnums=5)(jnp.arange(3.0), True)
    with pytest.raises(TypeError, match="must be hashable"):
        StatefulMapping(lambda x, f: x, static_argnums=1)(jnp.arange(3.0), [1])

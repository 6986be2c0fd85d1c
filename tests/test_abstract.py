"""eval_shape and make_jaxpr against jax.eval_shape / jax.make_jaxpr on the pure function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.transforms.abstract import StatefulJaxpr, eval_shape, make_jaxpr
from statejax.transforms.loops import scan


class Cell(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones((3, 4)))
        self.h = sj.HiddenState(jnp.zeros(4))
        self.calls = sj.ShortTermState(jnp.array(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        self.calls.value += 1
        self.h.value = jnp.tanh(x @ self.w.value + self.h.value)
        return self.h.value.astype(jnp.float16)


def test_eval_shape_matches_jax_eval_shape_and_changes_nothing() -> None:
    cell = Cell()
    x = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    out = eval_shape(cell, x)
    ref = jax.eval_shape(
        lambda x, w, h: jnp.tanh(x @ w + h).astype(jnp.float16), x, cell.w.value, cell.h.value
    )
    assert out == ref
    assert cell.h.value.shape == (4,) and int(cell.calls.value) == 0

    out2, states = eval_shape(cell, jnp.ones((2, 3)), return_states=True)
    assert out2 == ref
    assert list(states) == [cell.calls, cell.h]  # first-write order
    assert states[cell.h] == jax.ShapeDtypeStruct((2, 4), jnp.float32)
    assert states[cell.calls] == jax.eval_shape(lambda c: c + 1, cell.calls.value)
    assert cell.h.value.shape == (4,) and int(cell.calls.value) == 0


def test_eval_shape_inside_jit_is_invisible_to_the_enclosing_transform() -> None:
    cell = Cell()

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        shape = eval_shape(cell, x).shape
        return jnp.zeros(shape)

    assert step(jnp.ones((5, 3))).shape == (5, 4)
    assert int(cell.calls.value) == 0
    _, reads, writes = make_jaxpr(step)(jnp.ones((5, 3)))
    assert reads == () and writes == ()


def test_make_jaxpr_documented_order_and_equivalence() -> None:
    cell = Cell()
    x = jnp.arange(6.0).reshape(2, 3)
    result = make_jaxpr(cell)(x)
    assert isinstance(result, StatefulJaxpr)
    jaxpr, reads, writes = result
    assert reads == (cell.w,)
    assert writes == (cell.calls, cell.h)
    assert result.states == (cell.w, cell.calls, cell.h)
    # inputs: read states, written states, args; outputs: out, then written states
    in_avals = [v.aval for v in jaxpr.jaxpr.invars]
    assert [(a.shape, a.dtype) for a in in_avals] == [
        ((3, 4), jnp.float32),
        ((), jnp.int32),
        ((4,), jnp.float32),
        ((2, 3), jnp.float32),
    ]
    out, calls, h = jax.core.eval_jaxpr(
        jaxpr.jaxpr, jaxpr.consts, cell.w.value, cell.calls.value, cell.h.value, x
    )
    ref_h = jnp.tanh(x @ cell.w.value + cell.h.value)
    np.testing.assert_allclose(h, ref_h, rtol=1e-6)
    np.testing.assert_allclose(out, ref_h.astype(jnp.float16))
    assert int(calls) == 1
    assert int(cell.calls.value) == 0 and cell.h.value.tolist() == [0.0] * 4
    # the same primitives as jax.make_jaxpr on the hand-written pure function
    ref = jax.make_jaxpr(
        lambda w, c, h, x: (jnp.tanh(x @ w + h).astype(jnp.float16), c + 1, jnp.tanh(x @ w + h))
    )(cell.w.value, cell.calls.value, cell.h.value, x)
    assert {e.primitive.name for e in jaxpr.eqns} == {e.primitive.name for e in ref.eqns}


def test_make_jaxpr_static_argnums_and_nested_loops() -> None:
    acc = sj.State(jnp.array(0.0))

    def f(x: jax.Array, n: int) -> jax.Array:
        def body(c: None, x: jax.Array) -> tuple[None, jax.Array]:
            acc.value = acc.value + x
            return c, acc.value

        return scan(body, None, jnp.broadcast_to(x, (n,)))[1]

    jaxpr, reads, writes = make_jaxpr(f, static_argnums=1)(jnp.array(1.0), 4)
    assert reads == () and writes == (acc,)
    assert jaxpr.out_avals[0].shape == (4,)
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.make_jaxpr: option static_argnums\[0\]: "
        r"Input should be greater than or equal to 0",
    ):
        make_jaxpr(f, static_argnums=-1)


def test_abstract_transforms_are_registered() -> None:
    assert sj.transform.__getattr__("eval_shape") is eval_shape
    assert sj.transform.__getattr__("make_jaxpr") is make_jaxpr

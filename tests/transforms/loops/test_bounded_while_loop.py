"""bounded_while_loop against the unrolled loop: values, gradients, vmap, the step cap,
states and its errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.transform import bounded_while_loop


def test_bounded_while_loop_grad_equals_the_unrolled_grad() -> None:
    def ours(x: jax.Array) -> jax.Array:
        return bounded_while_loop(lambda v: v < 10.0, lambda v: v * 1.5 + 0.1, x, max_steps=20)

    def unrolled(x: jax.Array) -> jax.Array:
        for _ in range(20):
            x = jnp.where(x < 10.0, x * 1.5 + 0.1, x)
        return x

    for x0 in (0.5, 3.0, 12.0):
        x = jnp.array(x0)
        np.testing.assert_allclose(ours(x), unrolled(x), rtol=1e-6)
        np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(unrolled)(x), rtol=1e-6)
    lanes = jnp.array([0.5, 3.0, 12.0])
    np.testing.assert_allclose(jax.vmap(ours)(lanes), jax.vmap(unrolled)(lanes), rtol=1e-6)


def test_bounded_while_loop_caps_steps_and_threads_states() -> None:
    total = sj.State(jnp.array(0))

    def body(i: jax.Array) -> jax.Array:
        total.value = total.value + 1
        return i + 1

    assert int(bounded_while_loop(lambda i: i < 100, body, 0, max_steps=7, base=2)) == 7
    assert int(total.value) == 7
    assert int(bounded_while_loop(lambda i: i < 3, body, 0, max_steps=50)) == 3
    assert int(total.value) == 10
    assert int(bounded_while_loop(lambda i: i < 3, body, 0, max_steps=0)) == 0
    with jax.disable_jit():
        assert int(bounded_while_loop(lambda i: i < 100, body, 0, max_steps=4)) == 4
    assert int(total.value) == 14

    def writes(i: jax.Array) -> jax.Array:
        total.value = total.value + 1
        return i < 3

    with pytest.raises(sj.TraceError, match=r"statejax\.bounded_while_loop: cond_fun"):
        bounded_while_loop(writes, body, 0, max_steps=5)
    assert int(total.value) == 14
    with pytest.raises(sj.SpecError, match=r"bounded_while_loop: option max_steps"):
        bounded_while_loop(lambda i: i < 3, body, 0, max_steps=-1)


def test_a_repeated_bounded_while_loop_call_traces_nothing() -> None:
    count = sj.State(jnp.array(0))
    traces: list[int] = []

    def body(v: jax.Array) -> jax.Array:
        traces.append(1)  # a Python side effect: runs once per trace
        count.value = count.value + 1
        return v * 2.0

    def cond(v: jax.Array) -> jax.Array:
        traces.append(1)
        return v < 10.0

    def call() -> jax.Array:
        return bounded_while_loop(cond, body, jnp.array(1.0), max_steps=8, base=2)

    assert float(call()) == 16.0
    assert traces, "the first call traces"
    traces.clear()
    call()
    call()
    assert traces == []
    assert int(count.value) == 12  # every call still writes

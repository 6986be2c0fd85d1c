"""checkpointed_scan and checkpointed_for_loop against lax.scan: values, gradients,
states, memory kept for reverse mode, and their options."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import statejax as sj
from statejax.transform import checkpointed_for_loop, checkpointed_scan


def _rnn(w: jax.Array, h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = jnp.tanh(w * h + x)
    return h, h * x


@pytest.mark.parametrize(("n", "base"), [(1, 2), (5, 2), (17, 4), (40, 16)])
def test_checkpointed_scan_matches_lax_scan_and_its_grad(n: int, base: int) -> None:
    xs = jnp.linspace(-1.0, 1.0, n)

    def ours(w: jax.Array) -> jax.Array:
        h, ys = checkpointed_scan(lambda h, x: _rnn(w, h, x), jnp.array(0.1), xs, base=base)
        return h + ys.sum()

    def plain(w: jax.Array) -> jax.Array:
        h, ys = lax.scan(lambda h, x: _rnn(w, h, x), jnp.array(0.1), xs)
        return h + ys.sum()

    np.testing.assert_allclose(ours(jnp.array(0.7)), plain(jnp.array(0.7)), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(ours)(jnp.array(0.7)), jax.grad(plain)(jnp.array(0.7)), rtol=1e-5
    )


def test_checkpointed_for_loop_threads_states_and_grad_wrt_a_param() -> None:
    w = sj.ParamState(jnp.array(0.5))
    h = sj.HiddenState(jnp.array(0.0))

    def loss() -> jax.Array:
        def step(x: jax.Array) -> jax.Array:
            h.value = jnp.tanh(w.value * h.value + x)
            return h.value

        return checkpointed_for_loop(step, jnp.ones(9), base=2).sum()

    def reference(wv: jax.Array) -> jax.Array:
        return lax.scan(lambda c, x: (jnp.tanh(wv * c + x),) * 2, 0.0, jnp.ones(9))[1].sum()

    g = sj.grad(loss, w)()
    np.testing.assert_allclose(g, jax.grad(reference)(jnp.array(0.5)), rtol=1e-5)
    loss()
    np.testing.assert_allclose(
        h.value, lax.scan(lambda c, x: (jnp.tanh(0.5 * c + x),) * 2, 0.0, jnp.ones(9))[0], rtol=1e-6
    )


def test_checkpointed_scan_keeps_less_for_reverse_mode_than_scan() -> None:
    xs = jnp.ones((2048, 16))

    def loss(scan: Any, w: jax.Array) -> jax.Array:
        return scan(lambda h, x: (jnp.tanh(w @ h + x), None), jnp.zeros(16), xs)[0].sum()

    def temp(scan: Any) -> int:
        grad = jax.jit(jax.grad(lambda w: loss(scan, w)))
        stats = grad.lower(jnp.eye(16)).compile().memory_analysis()
        return int(stats.temp_size_in_bytes)

    ours = temp(lambda f, c, xs: checkpointed_scan(f, c, xs))
    plain = temp(lax.scan)
    assert ours < plain / 4


def test_checkpointed_scan_options_are_checked() -> None:
    with pytest.raises(sj.SpecError, match=r"statejax\.checkpointed_scan: option base"):
        checkpointed_scan(lambda c, x: (c, x), 0.0, jnp.ones(3), base=1)
    with pytest.raises(sj.SpecError, match=r"checkpointed_for_loop: option base"):
        checkpointed_for_loop(lambda x: x, jnp.ones(3), base=True)
    with pytest.raises(
        sj.SpecError, match=r"leading axis lengths \[3, 2\] .* runs 3 \(the first\)"
    ):
        checkpointed_for_loop(lambda x, y: x, jnp.ones(3), jnp.ones(2))
    with pytest.raises(sj.SpecError, match=r"lengths \[3\] .* runs length=4 steps"):
        checkpointed_scan(lambda c, x: (c, x), 0.0, jnp.ones(3), length=4)
    # no steps: nothing to bound, it runs as scan
    assert checkpointed_scan(lambda c, x: (c + x, x), 1.0, jnp.ones(0))[1].shape == (0,)


def test_a_repeated_checkpointed_loop_call_traces_nothing() -> None:
    total = sj.State(jnp.array(0.0))
    traces: list[int] = []

    def step(h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        traces.append(1)  # a Python side effect: runs once per trace
        total.value = total.value + x
        return h + x, h

    def one(x: jax.Array) -> jax.Array:
        traces.append(1)
        total.value = total.value + x
        return x

    xs = jnp.ones(20)
    for call in (
        lambda: checkpointed_scan(step, jnp.array(0.0), xs, base=4),
        lambda: checkpointed_for_loop(one, xs, base=4),
    ):
        call()
        assert traces, "the first call traces"
        traces.clear()
        call()
        call()
        assert traces == []
    assert float(total.value) == 120.0  # every call still writes

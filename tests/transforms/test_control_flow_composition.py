"""Control flow composed with statejax's grad and vmap: grad(scan(...)), vmap(cond(...)), ..."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import statejax as sj
from statejax._transforms.autodiff import grad, jacfwd, jvp
from statejax._transforms.conditionals import cond, ifelse, switch
from statejax._transforms.loops import for_loop, scan, while_loop
from statejax._transforms.vmap import vmap

XS = jnp.linspace(-1.0, 1.0, 6)


class RNN(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.array(0.7))
        self.u = sj.ParamState(jnp.array(1.3))
        self.h = sj.HiddenState(jnp.array(0.0))

    def __call__(self, x: jax.Array) -> jax.Array:
        self.h.value = jnp.tanh(self.w.value * self.h.value + self.u.value * x)
        return self.h.value


def pure_rnn_loss(w: Any, u: Any, xs: Any) -> Any:
    def body(h: Any, x: Any) -> tuple[Any, Any]:
        h = jnp.tanh(w * h + u * x)
        return h, h

    h, ys = lax.scan(body, 0.0, xs)
    return jnp.sum(ys**2) + h


def test_grad_of_scan_wrt_states_and_arguments() -> None:
    rnn = RNN()

    def loss(xs: jax.Array) -> jax.Array:
        rnn.h.value = jnp.array(0.0)
        _, ys = scan(lambda c, x: (c, rnn(x)), None, xs)
        return jnp.sum(ys**2) + rnn.h.value

    (g_w, g_u), g_xs = grad(loss, (rnn.w, rnn.u), argnums=0)(XS)
    r_w, r_u, r_xs = jax.grad(pure_rnn_loss, argnums=(0, 1, 2))(0.7, 1.3, XS)
    np.testing.assert_allclose((g_w, g_u), (r_w, r_u), rtol=1e-5)
    np.testing.assert_allclose(g_xs, r_xs, rtol=1e-5)
    # the written state keeps the value of the forward pass
    np.testing.assert_allclose(
        rnn.h.value,
        lax.scan(lambda h, x: (jnp.tanh(0.7 * h + 1.3 * x), None), 0.0, XS)[0],
        rtol=1e-6,
    )


def test_grad_of_for_loop_wrt_read_and_carried_states_and_arguments() -> None:
    rnn = RNN()
    rnn.h.value = jnp.array(0.3)  # the carried state's initial value is differentiated too

    def loss(xs: jax.Array, scale: jax.Array) -> jax.Array:
        ys = for_loop(lambda x: rnn(scale * x), xs)
        return jnp.sum(ys**2) + rnn.h.value

    def pure(w: Any, u: Any, h0: Any, xs: Any, scale: Any) -> Any:
        def body(h: Any, x: Any) -> tuple[Any, Any]:
            h = jnp.tanh(w * h + u * scale * x)
            return h, h

        h, ys = lax.scan(body, h0, xs)
        return jnp.sum(ys**2) + h

    (g_w, g_u, g_h), (g_xs, g_scale) = grad(loss, (rnn.w, rnn.u, rnn.h), argnums=(0, 1))(
        XS, jnp.array(1.5)
    )
    ref = jax.grad(pure, argnums=(0, 1, 2, 3, 4))(0.7, 1.3, 0.3, XS, 1.5)
    np.testing.assert_allclose(
        (g_w, g_u, g_h, g_scale), (ref[0], ref[1], ref[2], ref[4]), rtol=1e-5
    )
    np.testing.assert_allclose(g_xs, ref[3], rtol=1e-5)


def test_while_loop_forward_mode_through_statejax_autodiff() -> None:
    rate = sj.ParamState(jnp.array(2.0))

    def f(x: jax.Array) -> jax.Array:
        return while_loop(lambda v: v < 10.0, lambda v: v * rate.value, x)

    def pure(r: Any, x: Any) -> Any:
        return lax.while_loop(lambda v: v < 10.0, lambda v: v * r, x)

    (j_rate, j_x) = jacfwd(f, rate, argnums=0)(jnp.array(1.0))
    ref = jax.jacfwd(pure, argnums=(0, 1))(2.0, 1.0)
    np.testing.assert_allclose((j_rate, j_x), ref)  # x * r**4 after 4 steps: (4 r**3, r**4)
    out, tangent = jvp(f, (jnp.array(1.0),), (jnp.array(1.0),))
    ref_out, ref_tangent = jax.jvp(lambda x: pure(2.0, x), (1.0,), (1.0,))
    np.testing.assert_allclose((out, tangent), (ref_out, ref_tangent))
    # reverse mode is JAX's own error, as documented
    with pytest.raises(
        ValueError, match=r"Reverse-mode differentiation does not work for lax\.while_loop"
    ):
        grad(f, rate)(jnp.array(1.0))
    assert float(rate.value) == 2.0


def test_jit_of_grad_of_for_loop() -> None:
    rnn = RNN()

    @sj.jit
    def step(xs: jax.Array) -> jax.Array:
        def loss(xs: jax.Array) -> jax.Array:
            rnn.h.value = jnp.array(0.0)
            ys = for_loop(rnn, xs)
            return jnp.sum(ys**2) + rnn.h.value

        grads, value = grad(loss, [rnn.w, rnn.u], return_value=True)(xs)
        rnn.w.value = rnn.w.value - 0.1 * grads[0]
        rnn.u.value = rnn.u.value - 0.1 * grads[1]
        return value

    value = step(XS)
    r_w, r_u = jax.grad(pure_rnn_loss, argnums=(0, 1))(0.7, 1.3, XS)
    np.testing.assert_allclose(value, pure_rnn_loss(0.7, 1.3, XS), rtol=1e-6)
    np.testing.assert_allclose(rnn.w.value, 0.7 - 0.1 * r_w, rtol=1e-5)
    np.testing.assert_allclose(rnn.u.value, 1.3 - 0.1 * r_u, rtol=1e-5)


def test_vmap_of_cond_with_a_batched_predicate() -> None:
    hits = sj.State(jnp.zeros(3, jnp.int32))
    scale = sj.ParamState(jnp.array(2.0))

    def up(x: jax.Array) -> jax.Array:
        hits.value = hits.value + 1
        return x * scale.value

    def down(x: jax.Array) -> jax.Array:
        return -x

    f = vmap(lambda x: cond(x > 0, up, down, x), in_states={0: hits})
    xs = jnp.array([1.0, -2.0, 3.0])
    out = f(xs)
    ref = jax.vmap(lambda x, h: lax.cond(x > 0, lambda: (x * 2.0, h + 1), lambda: (-x, h)))(
        xs, jnp.zeros(3, jnp.int32)
    )
    np.testing.assert_allclose(out, ref[0])
    assert hits.value.tolist() == ref[1].tolist() == [1, 0, 1]
    assert float(scale.value) == 2.0


def test_vmap_of_cond_writing_a_broadcast_state_is_an_error() -> None:
    class Counter(sj.Module):
        def __init__(self) -> None:
            self.hits = sj.State(jnp.array(0))

    c = Counter()

    def up(x: jax.Array) -> jax.Array:
        c.hits.value = c.hits.value + 1
        return x

    # a batched predicate selects per lane, so the written state becomes batched
    with pytest.raises(
        sj.BatchAxisError,
        match=r"wrote a value batched over the vmap axis into State Counter\.hits "
        r"\(int32\[\]=0\), which is broadcast",
    ):
        vmap(lambda x: cond(x > 0, up, lambda x: -x, x))(jnp.array([1.0, -1.0]))
    assert int(c.hits.value) == 0


def test_vmap_of_switch_and_ifelse() -> None:
    counts = sj.State(jnp.zeros((4, 3), jnp.int32))

    def mark(i: int) -> Any:
        def f(x: jax.Array) -> jax.Array:
            counts.value = counts.value.at[i].add(1)
            return x + i

        return f

    branches = [mark(0), mark(1), mark(2)]
    idx = jnp.array([0, 2, 1, 5])
    out = vmap(lambda k, x: switch(k, branches, x), in_states={0: counts})(idx, jnp.zeros(4))
    assert out.tolist() == [0.0, 2.0, 1.0, 2.0]
    assert counts.value.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]

    a = jnp.array([7.0, 3.0, -1.0, 0.5])
    got = vmap(
        lambda a: ifelse([a > 5, a > 2, a > 0], [lambda: 0, lambda: 1, lambda: 2], check_cond=False)
    )(a)
    assert got.tolist() == [0, 1, 2, 2]


def test_vmap_of_scan_and_while_loop() -> None:
    acc = sj.State(jnp.zeros(3))

    def run(x: jax.Array) -> jax.Array:
        def body(c: jax.Array, _: None) -> tuple[jax.Array, None]:
            acc.value = acc.value + c
            return c * 2, None

        return scan(body, x, None, length=3)[0]

    out = vmap(run, in_states={0: acc})(jnp.array([1.0, 2.0, 3.0]))
    assert out.tolist() == [8.0, 16.0, 24.0]
    assert acc.value.tolist() == [7.0, 14.0, 21.0]

    steps = sj.State(jnp.zeros(3, jnp.int32))

    def count(limit: jax.Array) -> jax.Array:
        def body(i: jax.Array) -> jax.Array:
            steps.value = steps.value + 1
            return i + 1

        return while_loop(lambda i: i < limit, body, jnp.array(0))

    assert vmap(count, in_states={0: steps})(jnp.array([2, 5, 0])).tolist() == [2, 5, 0]
    assert steps.value.tolist() == [2, 5, 0]


def test_cond_and_an_inner_loop_inside_a_scan_body() -> None:
    total = sj.State(jnp.array(0.0))
    big = sj.State(jnp.array(0))

    def body(c: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        def inner(y: jax.Array) -> None:
            total.value = total.value + y

        for_loop(inner, jnp.arange(3.0) + x)
        cond(x > 1, lambda: setattr(big, "value", big.value + 1), lambda: None)
        return c + 1, total.value

    n, ys = sj.jit(lambda xs: scan(body, 0, xs))(jnp.arange(4.0))

    def pure_body(c: Any, x: Any) -> tuple[Any, Any]:
        t, b = c
        t = t + jnp.sum(jnp.arange(3.0) + x)
        b = lax.cond(x > 1, lambda: b + 1, lambda: b)
        return (t, b), t

    (t, b), ref = lax.scan(pure_body, (0.0, 0), jnp.arange(4.0))
    np.testing.assert_allclose(ys, ref)
    assert (int(n), float(total.value), int(big.value)) == (4, float(t), int(b))


def test_grad_of_cond() -> None:
    scale = sj.ParamState(jnp.array(3.0))
    n = sj.ShortTermState(jnp.array(0))

    def f(x: jax.Array) -> jax.Array:
        def up(x: jax.Array) -> jax.Array:
            n.value += 1
            return x * scale.value**2

        return cond(x > 0, up, lambda x: x, x)

    g_scale, g_x = grad(f, scale, argnums=0)(jnp.array(2.0))
    assert (float(g_scale), float(g_x)) == (12.0, 9.0)
    assert int(n.value) == 1

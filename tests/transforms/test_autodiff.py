"""The gradient family, compared with jax's transforms on the equivalent pure function."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import statejax as sj
from statejax._transforms.autodiff import (
    fwd_grad,
    grad,
    hessian,
    jacfwd,
    jacrev,
    jvp,
    vector_grad,
    vjp,
)
from statejax._transforms.jit import jit
from statejax.optim import Optimizer

X = jnp.array([[0.5, -1.0], [2.0, 0.25], [-0.3, 0.7]])
Y = jnp.array([1.0, -1.0, 0.5])
W0 = jnp.array([0.3, -0.2])
B0 = jnp.array(0.1)


def pure_loss(w: jax.Array, b: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((jnp.tanh(x @ w + b) - y) ** 2)


def pure_vec(w: jax.Array, b: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.sin(x @ w) * b + jnp.sum(w**2)


class Model(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(W0)
        self.b = sj.ParamState(B0)
        self.calls = sj.ShortTermState(jnp.array(0))

    def loss(self, x: jax.Array, y: jax.Array) -> jax.Array:
        self.calls.value += 1
        return pure_loss(self.w.value, self.b.value, x, y)

    def vec(self, x: jax.Array) -> jax.Array:
        return pure_vec(self.w.value, self.b.value, x)


def close(a: Any, b: Any) -> None:
    assert str(jax.tree.structure(a)) == str(jax.tree.structure(b)), (a, b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- grad structure


def test_grad_single_state_gives_an_array() -> None:
    m = Model()
    g = grad(m.loss, m.w)(X, Y)
    close(g, jax.grad(pure_loss)(W0, B0, X, Y))


def test_grad_list_and_tuple_keep_their_type() -> None:
    m = Model()
    gw, gb = jax.grad(pure_loss, argnums=(0, 1))(W0, B0, X, Y)
    as_list = grad(m.loss, [m.w, m.b])(X, Y)
    as_tuple = grad(m.loss, (m.b, m.w))(X, Y)
    assert isinstance(as_list, list) and isinstance(as_tuple, tuple)
    close(as_list, [gw, gb])
    close(as_tuple, (gb, gw))


def test_grad_other_iterables_give_a_list() -> None:
    m = Model()
    grads = grad(m.loss, m.states(sj.ParamState).values())(X, Y)
    assert isinstance(grads, list)
    close(grads, list(jax.grad(pure_loss, argnums=(0, 1))(W0, B0, X, Y)))


def test_grad_mapping_has_the_same_keys() -> None:
    m = Model()
    params = m.states(sj.ParamState)
    grads = grad(m.loss, params)(X, Y)
    assert list(grads) == list(params) == [("w",), ("b",)]
    gw, gb = jax.grad(pure_loss, argnums=(0, 1))(W0, B0, X, Y)
    close(grads[("w",)], gw)
    close(grads[("b",)], gb)


def test_grad_plain_dict_gives_a_dict() -> None:
    m = Model()
    grads = grad(m.loss, {"weight": m.w, "bias": m.b})(X, Y)
    assert type(grads) is dict and list(grads) == ["weight", "bias"]
    gw, gb = jax.grad(pure_loss, argnums=(0, 1))(W0, B0, X, Y)
    close(grads, {"weight": gw, "bias": gb})


def test_grad_states_and_argnums() -> None:
    m = Model()
    expected = jax.grad(pure_loss, argnums=(0, 2, 3))(W0, B0, X, Y)
    state_grads, arg_grads = grad(m.loss, [m.w], argnums=(0, 1))(X, Y)
    close(state_grads, [expected[0]])
    close(arg_grads, (expected[1], expected[2]))
    state_grads, gx = grad(m.loss, m.w, argnums=0)(X, Y)
    close((state_grads, gx), (expected[0], expected[1]))


def test_grad_without_states_differentiates_argument_zero() -> None:
    m = Model()
    close(grad(m.loss)(X, Y), jax.grad(pure_loss, argnums=2)(W0, B0, X, Y))
    close(
        grad(m.loss, argnums=(1, 0))(X, Y),
        jax.grad(pure_loss, argnums=(3, 2))(W0, B0, X, Y),
    )


def test_grad_value_and_aux_come_in_order() -> None:
    m = Model()

    def loss_aux(x: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        loss = m.loss(x, y)
        return loss, {"double": 2 * loss}

    expected_g = jax.grad(pure_loss)(W0, B0, X, Y)
    value = pure_loss(W0, B0, X, Y)
    g, v = grad(m.loss, m.w, return_value=True)(X, Y)
    close((g, v), (expected_g, value))
    g, aux = grad(loss_aux, m.w, has_aux=True)(X, Y)
    close((g, aux), (expected_g, {"double": 2 * value}))
    g, v, aux = grad(loss_aux, m.w, has_aux=True, return_value=True)(X, Y)
    close((g, v, aux), (expected_g, value, {"double": 2 * value}))


def test_grad_as_decorator() -> None:
    w = sj.ParamState(jnp.array(3.0))

    @grad(grad_states=w)
    def f() -> jax.Array:
        return w.value**2

    close(f(), jnp.array(6.0))


def test_states_read_but_not_differentiated_are_constants() -> None:
    m = Model()
    g = grad(m.loss, m.b)(X, Y)
    close(g, jax.grad(pure_loss, argnums=1)(W0, B0, X, Y))


# --------------------------------------------------------------------------- state semantics


def test_writes_are_applied_and_grad_is_at_the_entry_value() -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    count = sj.ShortTermState(jnp.array(0))

    def f(x: jax.Array) -> jax.Array:
        loss = jnp.sum(w.value**2 * x)
        w.value = w.value * 10.0
        count.value += 1
        return loss

    g, value = grad(f, w, return_value=True)(jnp.array(3.0))
    close(g, jnp.array([6.0, 12.0]))
    close(value, jnp.array(15.0))
    close(w.value, jnp.array([10.0, 20.0]))
    assert int(count.value) == 1
    assert not isinstance(w.value, jax.core.Tracer)
    grad(f, w)(jnp.array(3.0))
    close(w.value, jnp.array([100.0, 200.0]))
    assert int(count.value) == 2


def test_a_raising_function_changes_no_state() -> None:
    w = sj.ParamState(jnp.array(1.0))
    count = sj.ShortTermState(jnp.array(0))

    def f() -> jax.Array:
        count.value += 1
        w.value = w.value + 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        grad(f, w, check_states=False)()
    assert float(w.value) == 1.0 and int(count.value) == 0


def test_state_discovered_on_the_fly() -> None:
    m = Model()
    f = grad(m.loss, m.w)
    for _ in range(3):
        close(f(X, Y), jax.grad(pure_loss)(W0, B0, X, Y))
    assert int(m.calls.value) == 3


# --------------------------------------------------------------------------- errors


def test_unused_grad_state_is_an_error() -> None:
    m = Model()
    unused = sj.ParamState(jnp.ones(2))
    unused._where = "Extra.u"
    with pytest.raises(
        sj.SpecError, match=r"option grad_states: the ParamState Extra\.u .* is never read"
    ):
        grad(m.loss, [m.w, unused])(X, Y)
    with pytest.raises(sj.SpecError, match=r"ParamState at path \('u',\) .*check_states=False"):
        grad(m.loss, {"u": unused, "w": m.w})(X, Y)
    with pytest.raises(ValueError):  # BrainState raises ValueError: a SpecError is one
        grad(m.loss, [unused, m.w])(X, Y)
    gw, gu = grad(m.loss, [m.w, unused], check_states=False)(X, Y)
    close(gu, jnp.zeros(2))
    close(gw, jax.grad(pure_loss)(W0, B0, X, Y))


def test_integer_grad_state_is_an_error() -> None:
    count = sj.State(jnp.array(3), tag="steps")
    with pytest.raises(
        sj.TraceError,
        match=r"statejax\.grad\(.*\): cannot differentiate with respect to the grad state State "
        r"tagged 'steps' \(int32\[\]=3\): its value has dtype int32, not a float\. Store a float",
    ):
        grad(lambda: count.value * 2.0, count)()


def test_has_aux_needs_a_pair() -> None:
    w = sj.ParamState(jnp.array(1.0))
    with pytest.raises(
        sj.TraceError,
        match=r"has_aux=True but the function returned an array of shape \(\), not a pair",
    ):
        grad(lambda: w.value**2, w, has_aux=True)()
    with pytest.raises(sj.TraceError, match=r"returned a tuple of length 3, not a pair"):
        grad(lambda: (w.value, 1, 2), w, has_aux=True)()


def test_negative_argnums_is_a_spec_error() -> None:
    with pytest.raises(sj.SpecError, match=r"statejax\.grad: option argnums: .*non-negative"):
        grad(lambda x: x, argnums=-1)
    with pytest.raises(sj.SpecError, match=r"statejax\.jacrev: option argnums: .*non-negative"):
        jacrev(lambda x: x, argnums=(0, -2))
    with pytest.raises(sj.SpecError, match=r"option argnums: argnums has a repeated position"):
        grad(lambda x: x, argnums=(1, 1))


def test_argnums_out_of_range_is_a_spec_error() -> None:
    with pytest.raises(sj.SpecError, match=r"argnums=2 but the function was called with 2 posit"):
        grad(lambda x, y: jnp.sum(x * y), argnums=2)(1.0, 2.0)
    # vjp resolves argnums against its primals: negative ones count from the end.
    with pytest.raises(sj.SpecError, match=r"statejax\.vjp\(.*\): option argnums: 2 is out of ra"):
        vjp(lambda x, y: x * y, 1.0, 2.0, argnums=2)
    with pytest.raises(sj.SpecError, match=r"option argnums: argnums has a repeated position"):
        vjp(lambda x, y: x * y, 1.0, 2.0, argnums=(1, -1))
    with pytest.raises(sj.SpecError, match=r"nothing to differentiate"):
        vjp(lambda: jnp.ones(2))
    with pytest.raises(sj.SpecError, match=r"statejax\.vjp: option grad_states: \[\] selects no"):
        vjp(lambda x: x, 1.0, grad_states=[])
    out, vjp_fn = vjp(lambda x, y: x * y**2, 2.0, 3.0, argnums=-1)
    assert (float(out), float(vjp_fn(1.0))) == (18.0, 12.0)


def test_jvp_primals_and_tangents_must_be_sequences() -> None:
    with pytest.raises(TypeError, match=r"statejax\.jvp\(.*\): primals must be a tuple or list"):
        jvp(lambda x: x, 1.0, (1.0,))  # type: ignore[arg-type]
    with pytest.raises(sj.SpecError, match=r"tangents must be a tuple or list"):
        jvp(lambda x: x, (1.0,), 1.0)  # type: ignore[arg-type]


def test_bad_grad_states_and_unknown_options() -> None:
    with pytest.raises(sj.SpecError, match=r"grad_states: 3 is not a State"):
        grad(lambda: 1.0, [3])  # type: ignore[list-item]
    w = sj.ParamState(jnp.array(1.0))
    with pytest.raises(sj.SpecError, match=r"the ParamState \(float32\[\]=1\.0\) appears twice"):
        grad(lambda: w.value, [w, w])
    with pytest.raises(sj.SpecError, match=r"option has_aux"):
        grad(lambda: w.value, w, has_aux="maybe")  # type: ignore[arg-type]


def test_nested_grad_states_whose_keys_do_not_sort_is_a_spec_error_at_decoration() -> None:
    w = sj.ParamState(jnp.array(1.0))
    # JAX sorts a nested mapping's keys; 0 and '' do not compare (it used to raise
    # "Comparator raised exception" from the pytree sort).
    with pytest.raises(
        sj.SpecError,
        match=r"^statejax\.vector_grad: option grad_states: the keys 0, '' of a mapping in "
        r".* do not sort",
    ):
        vector_grad(lambda: w.value, grad_states={0: None, "": []})  # type: ignore[dict-item]
    with pytest.raises(sj.SpecError, match=r"^statejax\.grad: .* the keys 1, 'b' of a mapping"):
        grad(lambda: w.value, {"enc": {1: w, "b": w}})
    # A flat mapping keeps its keys in order, whatever their types.
    v = sj.ParamState(jnp.ones(()))
    g = vector_grad(lambda: 2 * w.value * v.value, grad_states={0: w, "": v})
    assert list(g()) == [0, ""]


# --------------------------------------------------------------------------- composition


def test_jit_of_grad_is_one_cached_executable() -> None:
    m = Model()
    params = m.states(sj.ParamState)
    traces = 0

    def loss(x: jax.Array, y: jax.Array) -> jax.Array:
        nonlocal traces
        traces += 1
        return m.loss(x, y)

    step = jit(lambda x, y: grad(loss, params, return_value=True)(x, y))
    first = step(X, Y)
    traced = traces
    for _ in range(3):
        grads, value = step(X, Y)
    assert traces == traced  # later calls never run Python: one compiled executable
    close(first, (grads, value))
    gw, gb = jax.grad(pure_loss, argnums=(0, 1))(W0, B0, X, Y)
    close(grads[("w",)], gw)
    close(grads[("b",)], gb)
    assert int(m.calls.value) == 4


def test_jit_of_grad_train_step_is_one_executable() -> None:
    m = Model()
    params = m.states(sj.ParamState)
    optimizer = Optimizer(optax.adam(0.1), params)
    traces = 0

    def loss(x: jax.Array, y: jax.Array) -> jax.Array:
        nonlocal traces
        traces += 1
        return m.loss(x, y)

    @jit
    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, value = grad(loss, params, return_value=True)(x, y)
        optimizer.update(grads)
        return value  # type: ignore[no-any-return]

    # Gradient, update and every state write are one jitted call at the top level...
    jaxpr, _ = sj.make_jaxpr(step)(X, Y)
    assert [eqn.primitive.name for eqn in jaxpr.eqns] == ["jit"]
    # ...compiled once: the parameters and Adam's moments change, their types do not.
    step(X, Y)
    traced = traces
    for _ in range(4):
        step(X, Y)
    assert traces == traced
    assert int(m.calls.value) == 5 and int(optimizer.opt_state.value[0].count) == 5


def test_jit_of_grad_training_loop_matches_pure() -> None:
    m = Model()
    params = m.states(sj.ParamState)

    @jit
    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, loss = grad(m.loss, params, return_value=True)(x, y)
        for path, g in grads.items():
            params[path].value -= 0.1 * g
        return loss  # type: ignore[no-any-return]

    w, b = W0, B0
    for _ in range(3):
        loss = step(X, Y)
        expected = pure_loss(w, b, X, Y)
        gw, gb = jax.grad(pure_loss, argnums=(0, 1))(w, b, X, Y)
        w, b = w - 0.1 * gw, b - 0.1 * gb
        close(loss, expected)
    close((m.w.value, m.b.value), (w, b))


def test_grad_of_jit() -> None:
    m = Model()
    inner = jit(m.loss)
    close(grad(inner, [m.w, m.b])(X, Y), list(jax.grad(pure_loss, (0, 1))(W0, B0, X, Y)))
    assert int(m.calls.value) == 1  # the inner jit's write, applied once


def test_grad_of_grad() -> None:
    w = sj.ParamState(jnp.array(0.7))
    count = sj.ShortTermState(jnp.array(0))

    def f(x: jax.Array) -> jax.Array:
        count.value += 1
        return jnp.sin(w.value * x) * w.value

    def pure(w: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.sin(w * x) * w

    dw = grad(f, w)
    ddw = grad(dw, w)
    close(ddw(1.3), jax.grad(jax.grad(pure))(0.7, 1.3))
    mixed = grad(dw, argnums=0)
    close(mixed(1.3), jax.grad(jax.grad(pure), argnums=1)(0.7, 1.3))
    close(jit(ddw)(1.3), jax.grad(jax.grad(pure))(0.7, 1.3))
    assert int(count.value) == 3  # one write per call, through both levels


# --------------------------------------------------------------------------- the family


@pytest.mark.slow
def test_jacrev_and_jacfwd_mixed() -> None:
    m = Model()
    expected = jax.jacrev(pure_vec, argnums=(0, 1, 2))(W0, B0, X)
    for transform in (jacrev, jacfwd):
        (gs, gx) = transform(m.vec, {"w": m.w, "b": m.b}, argnums=0)(X)
        close(gs, {"w": expected[0], "b": expected[1]})
        close(gx, expected[2])
        jac, value = transform(m.vec, m.w, return_value=True)(X)
        close((jac, value), (expected[0], pure_vec(W0, B0, X)))


def test_jacobians_with_aux() -> None:
    m = Model()
    for transform in (jacrev, jacfwd):
        jac, aux = transform(lambda x: (m.vec(x), x.sum()), [m.b], has_aux=True)(X)
        close(aux, X.sum())
        close(jac, [jax.jacfwd(pure_vec, argnums=1)(W0, B0, X)])


@pytest.mark.slow
def test_hessian_mixed() -> None:
    m = Model()
    expected = jax.hessian(pure_loss, argnums=(0, 2))(W0, B0, X, Y)
    got = hessian(m.loss, m.w, argnums=0)(X, Y)
    close(got, expected)
    got = hessian(m.loss, [m.w, m.b])(X, Y)
    expected = jax.hessian(pure_loss, argnums=(0, 1))(W0, B0, X, Y)
    close(got, [list(row) for row in expected])
    h, v = hessian(m.loss, {"w": m.w}, return_value=True)(X, Y)
    close(h, {"w": {"w": expected[0][0]}})
    close(v, pure_loss(W0, B0, X, Y))


def test_vector_grad() -> None:
    m = Model()
    gs, gx = vector_grad(m.vec, [m.w, m.b], argnums=0)(X)
    _, pullback = jax.vjp(pure_vec, W0, B0, X)
    ew, eb, ex = pullback(jnp.ones(3))
    close((gs, gx), ([ew, eb], ex))
    g, value = vector_grad(m.vec, return_value=True)(X)
    close((g, value), (ex, pure_vec(W0, B0, X)))


def test_vjp() -> None:
    m = Model()
    ct = jnp.array([1.0, -2.0, 0.5])
    out, pullback = vjp(m.vec, X, grad_states=(m.w,), argnums=(0,))
    e_out, e_pullback = jax.vjp(pure_vec, W0, B0, X)
    ew, eb, ex = e_pullback(ct)
    close(out, e_out)
    close(pullback(ct), ((ew,), (ex,)))
    out, pullback, aux = vjp(
        lambda x: (m.vec(x), 7), X, grad_states=m.b, argnums=None, has_aux=True
    )
    assert aux == 7
    close(pullback(ct), eb)
    _, pullback = vjp(m.vec, X)  # no states: the argument's cotangent, unwrapped
    close(pullback(ct), ex)
    close(
        vjp(m.vec, X, grad_states={"layer": {"w": m.w}}, argnums=None)[1](ct), {"layer": {"w": ew}}
    )


def test_jvp() -> None:
    m = Model()
    tx = jnp.ones_like(X)
    e_out, e_tan = jax.jvp(lambda x: pure_vec(W0, B0, x), (X,), (tx,))
    out, tan = jvp(m.vec, (X,), (tx,))
    close((out, tan), (e_out, e_tan))
    out, tan, aux = jvp(lambda x: (m.vec(x), "a"), [X], [tx], has_aux=True)
    close(tan, e_tan)
    assert aux == "a"
    out, tan = jvp(lambda x, y: x * y, (2.0, 3.0), (1.0, 0.0))
    assert (float(out), float(tan)) == (6.0, 3.0)


def test_family_writes_are_applied() -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    count = sj.ShortTermState(jnp.array(0))

    def f() -> jax.Array:
        count.value += 1
        return w.value**2

    jacrev(f, w)()
    jacfwd(f, w)()
    vector_grad(f, w)()
    vjp(f, grad_states=w)
    jvp(f, (), ())
    hessian(lambda: jnp.sum(f()), w)()
    assert int(count.value) == 6


def test_family_checks_unused_and_integer_states() -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    n = sj.State(jnp.array([1, 2]))
    for transform in (jacrev, jacfwd, vector_grad, hessian, fwd_grad):
        with pytest.raises(sj.SpecError, match="is never read"):
            transform(lambda: jnp.sum(n.value) * 1.0, w)()
        with pytest.raises(sj.TraceError, match="not a float"):
            transform(lambda: jnp.sum(n.value) * 1.0, n)()
    with pytest.raises(sj.SpecError, match="is never read"):
        vjp(lambda: jnp.sum(n.value) * 1.0, grad_states=w)


# --------------------------------------------------------------------------- property


@settings(max_examples=15, deadline=None)
@given(
    w=st.lists(st.floats(-2, 2), min_size=1, max_size=4),
    scale=st.floats(-3, 3),
    mode=st.sampled_from(["list", "dict", "single"]),
)
def test_grad_matches_jax_grad(w: list[float], scale: float, mode: str) -> None:
    wv = jnp.asarray(w, jnp.float32)
    ws = sj.ParamState(wv)
    s = sj.ParamState(jnp.asarray(scale, jnp.float32))

    def pure(wv: jax.Array, s: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.cos(wv * s) * x) + s**2

    def f(x: jax.Array) -> jax.Array:
        return pure(ws.value, s.value, x)

    x = jnp.linspace(-1.0, 1.0, len(w))
    ew, es, ex = jax.grad(pure, argnums=(0, 1, 2))(wv, jnp.float32(scale), x)
    if mode == "list":
        close(grad(f, [ws, s], argnums=0)(x), ([ew, es], ex))
    elif mode == "dict":
        close(grad(f, {"s": s, "w": ws})(x), {"s": es, "w": ew})
    else:
        close(grad(f, s)(x), es)


def test_registered_as_plugins() -> None:
    for name, function in [
        ("grad", grad),
        ("vector_grad", vector_grad),
        ("jacrev", jacrev),
        ("jacfwd", jacfwd),
        ("hessian", hessian),
        ("vjp", vjp),
        ("jvp", jvp),
        ("fwd_grad", fwd_grad),
        ("jacobian", jacrev),
    ]:
        assert getattr(sj.transform, name) is function
        assert sj.transform.__getattr__(name) is function  # through the registry too


def test_vjp_and_jvp_under_jit() -> None:
    m = Model()
    ct = jnp.array([1.0, -2.0, 0.5])

    @jit
    def both(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        _, pullback = vjp(m.vec, x, grad_states=m.w, argnums=None)
        _, tangent = jvp(m.vec, (x,), (jnp.ones_like(x),))
        return pullback(ct), tangent

    g, tangent = both(X)
    close(g, jax.vjp(lambda w: pure_vec(w, B0, X), W0)[1](ct)[0])
    close(tangent, jax.jvp(lambda x: pure_vec(W0, B0, x), (X,), (jnp.ones_like(X),))[1])


# --------------------------------------------------------------------------- the family vs jax
#
# Each transform of the family, over each form of grad_states and argnums, against the jax
# transform of the equivalent pure function ``ref(state_values, arg_values)``: the state
# values travel in the same container the states were given in (a StateMapping as a dict).


def pure_out(w: jax.Array, b: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.tanh(x @ w + b) * y


STRUCTURES = ["none", "single", "list", "tuple", "dict", "mapping"]
ARGNUMS: list[Any] = [None, 1, (1, 0)]
FAMILY: dict[str, tuple[Any, Any]] = {
    "grad": (grad, jax.grad),
    "vector_grad": (vector_grad, None),
    "jacrev": (jacrev, jax.jacrev),
    "jacfwd": (jacfwd, jax.jacfwd),
    "hessian": (hessian, jax.hessian),
    "vjp": (vjp, None),
}


def plain(tree: Any) -> Any:
    """StateTrees as dicts, so results compare with jax's on dicts."""

    def convert(node: Any) -> Any:
        return {k: plain(v) for k, v in node.items()} if isinstance(node, sj.StateTree) else node

    return jax.tree.map(convert, tree, is_leaf=lambda node: isinstance(node, sj.StateTree))


def grad_states_and_values(m: Model, structure: str) -> tuple[Any, Any, Any]:
    """``(grad_states, state_values, to_wb)``; ``to_wb(values)`` gives ``(w, b)``."""
    if structure == "single":
        return m.w, W0, lambda v: (v, B0)
    if structure == "list":
        return [m.w, m.b], [W0, B0], lambda v: (v[0], v[1])
    if structure == "tuple":
        return (m.b, m.w), (B0, W0), lambda v: (v[1], v[0])
    if structure == "dict":
        return {"w": m.w, "b": m.b}, {"w": W0, "b": B0}, lambda v: (v["w"], v["b"])
    params = m.states(sj.ParamState)
    return params, {("w",): W0, ("b",): B0}, lambda v: (v[("w",)], v[("b",)])


# Every structure with every argnums; the slow forward-mode ones (eager vmap) on a sample.
ALL_CASES = [("none", None)] + [(s, a) for s in STRUCTURES[1:] for a in ARGNUMS]
SAMPLE = [("none", None), ("single", None), ("list", (1, 0)), ("dict", 1), ("mapping", (1, 0))]
CASES = [
    (name, s, a)
    for name in FAMILY
    for s, a in (SAMPLE if name in ("jacfwd", "hessian") else ALL_CASES)
]


@pytest.mark.parametrize(
    ("name", "structure", "argnums"), CASES, ids=[f"{n}-{s}-{a}" for n, s, a in CASES]
)
def test_family_matches_jax(name: str, structure: str, argnums: Any) -> None:
    m = Model()
    transform, jax_transform = FAMILY[name]
    scalar = name in ("grad", "hessian")
    args = [X, Y]
    if structure == "none":
        states, values, to_wb = None, None, None
        argnums_used: Any = 0
    else:
        states, values, to_wb = grad_states_and_values(m, structure)
        argnums_used = argnums

    def user_fn(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        m.calls.value += 1
        out = pure_out(m.w.value, m.b.value, x, y)
        out = jnp.sum(out**2) if scalar else out
        return out, 2 * out

    def ref(*primals: Any) -> tuple[jax.Array, jax.Array]:
        rest = list(primals)
        w, b = to_wb(rest.pop(0)) if to_wb is not None else (W0, B0)
        a = list(args)
        if isinstance(argnums_used, int):
            a[argnums_used] = rest.pop(0)
        elif argnums_used is not None:
            for position, value in zip(argnums_used, rest.pop(0), strict=True):
                a[position] = value
        out = pure_out(w, b, *a)
        out = jnp.sum(out**2) if scalar else out
        return out, 2 * out

    primals: list[Any] = [] if values is None else [values]
    if isinstance(argnums_used, int):
        primals.append(args[argnums_used])
    elif argnums_used is not None:
        primals.append(tuple(args[i] for i in argnums_used))
    jax_argnums = (0, 1) if len(primals) == 2 else 0
    pack = (lambda parts: tuple(parts)) if len(primals) == 2 else (lambda parts: parts[0])
    value, aux = ref(*primals)

    if name == "vjp":
        out, pullback, got_aux = vjp(
            user_fn, *args, grad_states=states, argnums=argnums_used, has_aux=True
        )
        _, e_pullback, _ = jax.vjp(ref, *primals, has_aux=True)
        ct = jnp.linspace(-1.0, 1.0, 3)
        close(plain((out, got_aux, pullback(ct))), (value, aux, pack(e_pullback(ct))))
    else:
        got = transform(user_fn, states, argnums, has_aux=True, return_value=True)(*args)
        if jax_transform is None:  # vector_grad: a vjp with a cotangent of ones
            _, e_pullback, _ = jax.vjp(ref, *primals, has_aux=True)
            expected = pack(e_pullback(jnp.ones_like(value)))
        else:
            expected = jax_transform(ref, argnums=jax_argnums, has_aux=True)(*primals)[0]
        close(plain(got), (expected, value, aux))
        if structure == "dict":  # a dict keeps its type and its order, however deep
            g = got[0][0] if argnums is not None else got[0]
            assert type(g) is dict and list(g) == ["w", "b"]
    assert int(m.calls.value) == 1  # the write was applied, once


def test_misspelled_option_is_a_spec_error_with_did_you_mean() -> None:
    import statejax as sj

    w = sj.ParamState(jnp.ones(2))
    with pytest.raises(
        sj.SpecError, match=r"statejax.grad: unknown option 'has_axu'. Did you mean 'has_aux'\?"
    ):
        sj.grad(lambda: w.value.sum(), w, has_axu=True)  # type: ignore[arg-type]
    with pytest.raises(
        sj.SpecError, match=r"statejax.checkpoint: unknown option 'polcy'. Did you mean 'policy'\?"
    ):
        sj.checkpoint(lambda x: x, polcy=None)  # type: ignore[arg-type]


# --- empty argnums and grad_states ----------------------------------------------------


def _loss(x: jax.Array) -> jax.Array:
    return jnp.sum(x**2)


@pytest.mark.parametrize(
    "transform",
    [
        sj.grad,
        sj.vector_grad,
        sj.jacrev,
        sj.jacfwd,
        sj.hessian,
        sj.transform.fwd_grad,
    ],
)
def test_grad_family_rejects_empty_argnums_and_grad_states(transform: Any) -> None:
    name = transform.__name__
    with pytest.raises(sj.SpecError, match=rf"statejax\.{name}: option argnums: .*\(\) selects no"):
        transform(_loss, argnums=())
    with pytest.raises(sj.SpecError, match=rf"statejax\.{name}: option grad_states: .*no state"):
        transform(_loss, grad_states=[])
    with pytest.raises(sj.SpecError, match=rf"statejax\.{name}: option grad_states: .*no state"):
        transform(_loss, grad_states={})
    with pytest.raises(sj.SpecError, match=rf"statejax\.{name}: option grad_states: .*not a State"):
        transform(_loss, grad_states=jnp.array(1))
    with pytest.raises(sj.SpecError, match=rf"statejax\.{name}: option argnums: .*True"):
        transform(_loss, argnums=True)
    with pytest.raises(sj.SpecError, match=rf"statejax\.{name}: option argnums: .*at most"):
        transform(_loss, argnums=2**70)


# --- unit_aware: brainunit quantities (the statejax[units] extra) ----------------------------


class _FakeQuantity:
    """Stands in for a brainunit Quantity where brainunit is blocked: a pytree of one array
    whose class is named as brainunit's (which is what the check looks at)."""

    unit = "ms"

    def __init__(self, mantissa: Any) -> None:
        self.mantissa = mantissa


_FakeQuantity.__name__ = _FakeQuantity.__qualname__ = "Quantity"
_FakeQuantity.__module__ = "saiunit._base_quantity"
jax.tree_util.register_pytree_node(
    _FakeQuantity, lambda q: ((q.mantissa,), None), lambda _, c: _FakeQuantity(c[0])
)


@pytest.fixture
def no_brainunit(monkeypatch: pytest.MonkeyPatch) -> None:
    """brainunit not installed: its import fails (whether or not it is installed here)."""
    monkeypatch.setitem(__import__("sys").modules, "brainunit", None)
    monkeypatch.setitem(__import__("sys").modules, "brainunit.autograd", None)


UNIT_AWARE_CASES = [
    (grad, lambda w, x: jnp.sum(w.value**2 * x)),
    (vector_grad, lambda w, x: w.value**2 * x),
    (jacrev, lambda w, x: w.value**2 * x),
    (jacfwd, lambda w, x: w.value**2 * x),
    (hessian, lambda w, x: jnp.sum(w.value**3 * x)),
]


def _unit_aware_matches_plain() -> None:
    for transform, body in UNIT_AWARE_CASES:
        w = sj.ParamState(jnp.array([1.0, 2.0]))
        x = jnp.array([3.0, 0.5])
        fn = functools.partial(body, w)
        plain = transform(fn, w, argnums=0, return_value=True)(x)
        aware = transform(fn, w, argnums=0, return_value=True, unit_aware=True)(x)
        assert jax.tree.structure(aware) == jax.tree.structure(plain), transform
        for got, want in zip(jax.tree.leaves(aware), jax.tree.leaves(plain), strict=True):
            assert type(got) is type(want)
            np.testing.assert_allclose(got, want)
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    got = fwd_grad(lambda: jnp.sum(w.value**2), w, unit_aware=True, key=0)()
    want = fwd_grad(lambda: jnp.sum(w.value**2), w, key=0)()
    np.testing.assert_allclose(got, want)


def test_unit_aware_is_a_no_op_on_plain_arrays_without_brainunit(no_brainunit: None) -> None:
    _unit_aware_matches_plain()


def test_unit_aware_refuses_a_quantity_without_brainunit(no_brainunit: None) -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    count = sj.State(jnp.array(0))

    def loss(x: Any) -> jax.Array:
        count.value += 1
        return jnp.sum(w.value * x.mantissa)

    with pytest.raises(
        sj.TraceTypeError,
        match=r"statejax\.grad\(.*loss\): unit_aware=True and a differentiated value is a "
        r"brainunit Quantity \(unit ms\), but brainunit is not installed.*statejax\[units\]",
    ):
        grad(loss, w, argnums=0, unit_aware=True)(_FakeQuantity(jnp.ones(2)))
    with pytest.raises(sj.TraceTypeError, match=r"and the output is a brainunit Quantity"):
        grad(lambda: _FakeQuantity(jnp.sum(w.value)), w, unit_aware=True)()
    assert int(count.value) == 0
    # unit_aware=False leaves a quantity to JAX, as before (the mantissa is differentiated).
    g = grad(loss, argnums=0)(_FakeQuantity(jnp.ones(2)))
    np.testing.assert_allclose(g.mantissa, [1.0, 2.0])


def test_unit_aware_fwd_grad_refuses_a_quantity() -> None:
    w = sj.ParamState(_FakeQuantity(jnp.array([1.0, 2.0])))
    with pytest.raises(sj.TraceTypeError, match=r"fwd_grad does not carry units .*grad\("):
        fwd_grad(lambda: jnp.sum(w.value.mantissa**2), w, unit_aware=True, key=0)()


def test_unit_aware_is_a_no_op_on_plain_arrays_with_brainunit() -> None:
    pytest.importorskip("brainunit")
    _unit_aware_matches_plain()


def test_unit_aware_gradients_carry_units_with_brainunit() -> None:
    u = pytest.importorskip("brainunit")
    s = sj.ParamState(jnp.array([1.0, 2.0]) * u.ms)
    count = sj.State(jnp.array(0))

    def loss(y: Any) -> Any:
        count.value += 1
        return u.math.sum(s.value**2 * y)

    gs, gy = grad(loss, [s], argnums=0, unit_aware=True)(jnp.array(2.0) * u.mV)
    assert u.math.allclose(gs[0], jnp.array([4.0, 8.0]) * u.ms * u.mV)
    assert u.math.allclose(gy, 5.0 * u.ms**2)
    assert int(count.value) == 1
    g, value = grad(lambda: u.math.sum(s.value**2), {"s": s}, return_value=True, unit_aware=True)()
    assert u.math.allclose(g["s"], jnp.array([2.0, 4.0]) * u.ms)
    assert u.math.allclose(value, 5.0 * u.ms**2)
    assert u.math.allclose(vector_grad(lambda: s.value**2, s, unit_aware=True)(), [2, 4] * u.ms)
    jac = jnp.array([[2.0, 0.0], [0.0, 4.0]]) * u.ms
    assert u.math.allclose(jacrev(lambda: s.value**2, s, unit_aware=True)(), jac)
    assert u.math.allclose(jacfwd(lambda: s.value**2, s, unit_aware=True)(), jac)
    h = hessian(lambda: u.math.sum(s.value**3), s, unit_aware=True)()
    assert u.math.allclose(h, jnp.array([[6.0, 0.0], [0.0, 12.0]]) * u.ms)
    assert u.math.allclose(
        jit(grad(lambda: u.math.sum(s.value**2), s, unit_aware=True))(), [2, 4] * u.ms
    )
    # Without unit_aware, JAX refuses the quantity output, as BrainState's grad does.
    with pytest.raises(TypeError, match="scalar-output"):
        grad(lambda: u.math.sum(s.value**2), s)()
    with pytest.raises(sj.TraceTypeError, match=r"fwd_grad does not carry units"):
        fwd_grad(lambda: u.math.sum(s.value**2), s, unit_aware=True, key=0)()


def test_a_repeated_jvp_call_traces_nothing() -> None:
    scale = sj.ParamState(jnp.array(2.0))
    traces: list[int] = []

    def f(x: jax.Array) -> jax.Array:
        traces.append(1)  # a Python side effect: runs once per trace
        return jnp.sum(x * scale.value)

    primal, tangent = (jnp.ones(3),), (jnp.arange(3.0),)
    sj.transform.jvp(f, primal, tangent)
    assert traces, "the first call traces"
    traces.clear()
    out, out_tangent = sj.transform.jvp(f, primal, tangent)
    sj.transform.jvp(f, primal, tangent)
    assert traces == []
    assert float(out) == 6.0 and float(out_tangent) == 6.0

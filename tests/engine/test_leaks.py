"""No tracer is ever stored in a State (issue 8, part C).

Every statejax transform, alone and nested in pairs, runs under
``jax.checking_leaks()`` and leaves each state holding the concrete array that the
same computation written in pure JAX gives. A statejax transform called inside a
plain JAX transform, or a state written inside a plain JAX transform nested in a
statejax one, is refused with a ``TraceError`` naming the state, and leaves every
state as it was. A state created inside a finished transform stays unusable
(``StateLeakError``) inside transforms as well as outside.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import statejax as sj

W0 = np.array([0.5, -1.0], np.float32)
C0 = np.int32(0)
H0 = np.float32(0.25)
X = np.array([0.3, 0.7], np.float32)

PureState = tuple[Any, Any, Any]
Pure = Callable[[PureState, Any], tuple[Any, PureState]]


class Model(sj.Module):
    """A parameter ``w`` (read only), a counter ``c`` and a hidden state ``h`` (written)."""

    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.asarray(W0))
        self.c = sj.ShortTermState(jnp.asarray(C0))
        self.h = sj.HiddenState(jnp.asarray(H0))


def stateful_body(m: Model) -> Callable[[Any], Any]:
    def body(x: Any) -> Any:
        m.c.value = m.c.value + 1
        m.h.value = 0.5 * m.h.value + jnp.sum(jnp.sin(m.w.value))
        return jnp.sin(m.w.value * x) + m.h.value

    return body


def pure_body(s: PureState, x: Any) -> tuple[Any, PureState]:
    w, c, h = s
    c = c + 1
    h = 0.5 * h + jnp.sum(jnp.sin(w))
    return jnp.sin(w * x) + h, (w, c, h)


# -- the combinator table: each entry wraps f: x -> y (y shaped like x) as a statejax
# transform, and the pure counterpart (s, x) -> (y, s) as the same plain JAX transform.


def s_jit(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.jit(f)


def p_jit(p: Pure) -> Pure:
    return jax.jit(p)


def s_grad(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.grad(lambda x: jnp.sum(f(x)), grad_states=m.w)


def p_grad(p: Pure) -> Pure:
    def q(s: PureState, x: Any) -> tuple[Any, PureState]:
        def loss(w: Any) -> tuple[Any, PureState]:
            y, s2 = p((w, s[1], s[2]), x)
            return jnp.sum(y), s2

        return jax.grad(loss, has_aux=True)(s[0])

    return q


def s_vmap(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    v = sj.vmap(f)
    return lambda x: v(jnp.stack([x, 2.0 * x])).sum(0)


def p_vmap(p: Pure) -> Pure:
    def q(s: PureState, x: Any) -> tuple[Any, PureState]:
        y, s2 = jax.vmap(p, in_axes=(None, 0), out_axes=(0, None))(s, jnp.stack([x, 2.0 * x]))
        return y.sum(0), s2

    return q


def s_vmap2(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    v = sj.transform.vmap2(f)
    return lambda x: v(jnp.stack([x, 2.0 * x])).sum(0)


def s_pmap(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    p = sj.transform.pmap(f)  # one device here: a mapped axis of size 1
    return lambda x: p(x[None])[0]


def s_pmap2(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    p = sj.transform.pmap2(f)
    return lambda x: p(x[None])[0]


def s_scan(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    def g(x: Any) -> Any:
        _, ys = sj.scan(lambda carry, xi: (carry, f(xi)), 0, jnp.stack([x, x + 1.0]))
        return ys.sum(0)

    return g


def p_loop(p: Pure) -> Pure:
    def q(s: PureState, x: Any) -> tuple[Any, PureState]:
        def body(s: PureState, xi: Any) -> tuple[PureState, Any]:
            y, s = p(s, xi)
            return s, y

        s2, ys = lax.scan(body, s, jnp.stack([x, x + 1.0]))
        return ys.sum(0), s2

    return q


def s_for_loop(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x: sj.for_loop(f, jnp.stack([x, x + 1.0])).sum(0)


def s_map(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x: sj.transform.map(f, jnp.stack([x, x + 1.0])).sum(0)


def s_while(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    def g(x: Any) -> Any:
        def body(carry: Any) -> Any:
            i, acc = carry
            return i + 1, acc + f(x * (i + 1).astype(x.dtype))

        _, acc = sj.while_loop(lambda c: c[0] < 2, body, (jnp.int32(0), jnp.zeros_like(x)))
        return acc

    return g


def p_while(p: Pure) -> Pure:
    def q(s: PureState, x: Any) -> tuple[Any, PureState]:
        def body(carry: Any) -> Any:
            i, acc, s = carry
            y, s = p(s, x * (i + 1).astype(x.dtype))
            return i + 1, acc + y, s

        _, acc, s2 = lax.while_loop(lambda c: c[0] < 2, body, (jnp.int32(0), jnp.zeros_like(x), s))
        return acc, s2

    return q


def s_cond(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x: sj.cond(m.c.value >= 0, f, lambda x: x, x)


def p_cond(p: Pure) -> Pure:
    return lambda s, x: lax.cond(s[1] >= 0, p, lambda s, x: (x, s), s, x)


def s_switch(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x: sj.switch(m.c.value % 2, [f, lambda x: 2.0 * f(x)], x)


def p_switch(p: Pure) -> Pure:
    def double(s: PureState, x: Any) -> tuple[Any, PureState]:
        y, s2 = p(s, x)
        return 2.0 * y, s2

    return lambda s, x: lax.switch(s[1] % 2, [p, double], s, x)


def s_checkpoint(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.checkpoint(f)


def s_remat(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.remat(f)


def p_checkpoint(p: Pure) -> Pure:
    return jax.checkpoint(p)


def s_vector_grad(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.vector_grad(f, grad_states=m.w)


def s_jacrev(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.jacrev(f, grad_states=m.w)


def s_jacfwd(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.jacfwd(f, grad_states=m.w)


def s_hessian(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return sj.hessian(lambda x: jnp.sum(f(x)), grad_states=m.w)


def _p_jac(jax_transform: Callable[..., Any], scalar: bool) -> Callable[[Pure], Pure]:
    def wrap(p: Pure) -> Pure:
        def q(s: PureState, x: Any) -> tuple[Any, PureState]:
            def fn(w: Any) -> tuple[Any, PureState]:
                y, s2 = p((w, s[1], s[2]), x)
                return (jnp.sum(y) if scalar else y), s2

            return jax_transform(fn, has_aux=True)(s[0])

        return q

    return wrap


def s_vjp(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    def g(x: Any) -> Any:
        y, pullback = sj.vjp(f, x, grad_states=m.w, argnums=None)
        return y, pullback(jnp.ones_like(y))

    return g


def p_vjp(p: Pure) -> Pure:
    def q(s: PureState, x: Any) -> tuple[Any, PureState]:
        y, pullback, s2 = jax.vjp(lambda w: p((w, s[1], s[2]), x), s[0], has_aux=True)
        return (y, pullback(jnp.ones_like(y))[0]), s2

    return q


def s_jvp(m: Model, f: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x: sj.jvp(f, (x,), (jnp.ones_like(x),))


def p_jvp(p: Pure) -> Pure:
    def q(s: PureState, x: Any) -> tuple[Any, PureState]:
        y, t, s2 = jax.jvp(lambda v: p(s, v), (x,), (jnp.ones_like(x),), has_aux=True)
        return (y, t), s2

    return q


Combinator = tuple[
    Callable[[Model, Callable[..., Any]], Callable[..., Any]], Callable[[Pure], Pure]
]

#: Transforms that map f: x -> y(shape of x) to the same kind of function, so they nest.
NESTABLE: dict[str, Combinator] = {
    "jit": (s_jit, p_jit),
    "grad": (s_grad, p_grad),
    "vmap": (s_vmap, p_vmap),
    "scan": (s_scan, p_loop),
    "cond": (s_cond, p_cond),
    "checkpoint": (s_checkpoint, p_checkpoint),
    "for_loop": (s_for_loop, p_loop),
}

#: Every statejax transform, used once around the body.
SINGLE: dict[str, Combinator] = {
    **NESTABLE,
    "remat": (s_remat, p_checkpoint),
    "map": (s_map, p_loop),
    "while_loop": (s_while, p_while),
    "switch": (s_switch, p_switch),
    "vector_grad": (s_vector_grad, _p_jac(jax.grad, scalar=True)),
    "jacrev": (s_jacrev, _p_jac(jax.jacrev, scalar=False)),
    "jacfwd": (s_jacfwd, _p_jac(jax.jacfwd, scalar=False)),
    "hessian": (s_hessian, _p_jac(jax.hessian, scalar=True)),
    "vjp": (s_vjp, p_vjp),
    "jvp": (s_jvp, p_jvp),
    "vmap2": (s_vmap2, p_vmap),
    "pmap": (s_pmap, lambda p: p),
    "pmap2": (s_pmap2, lambda p: p),
}


def _is_tracer_free(value: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def assert_concrete_states(*states: sj.State[Any]) -> None:
    """Every state holds concrete arrays, both through ``.value`` and in ``_value``."""
    for s in states:
        raw = getattr(s, "_value", None)
        assert _is_tracer_free(raw), f"{s!r} stores a tracer in _value"
        assert _is_tracer_free(s.value), f"{s!r} returns a tracer from .value"
        for leaf in jax.tree.leaves(s.value):
            assert isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float)


def check_against_pure(
    names: tuple[str, ...], table: dict[str, Combinator], *, leaks: bool = True
) -> None:
    """Apply the transforms ``names`` (outermost first) and compare with pure JAX."""
    m = Model()
    f: Callable[..., Any] = stateful_body(m)
    p: Pure = pure_body
    for name in reversed(names):
        s_comb, p_comb = table[name]
        f = s_comb(m, f)
        p = p_comb(p)
    x = jnp.asarray(X)
    if leaks:
        with jax.checking_leaks():
            out = f(x)
    else:
        out = f(x)
    with jax.disable_jit():  # the reference runs op by op: no compiles, so the file stays fast
        expected_out, (w, c, h) = p((jnp.asarray(W0), jnp.asarray(C0), jnp.asarray(H0)), x)
    assert_concrete_states(m.w, m.c, m.h)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
        out,
        expected_out,
    )
    np.testing.assert_array_equal(np.asarray(m.w.value), np.asarray(w))
    np.testing.assert_array_equal(np.asarray(m.w.value), W0)
    assert int(m.c.value) == int(c)
    np.testing.assert_allclose(np.asarray(m.h.value), np.asarray(h), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_every_transform_runs_clean_under_checking_leaks(name: str) -> None:
    """Bug C1: a transform keeps a tracer reachable (in a state or a trace record)."""
    check_against_pure((name,), SINGLE)


@pytest.mark.slow
@pytest.mark.parametrize("inner", sorted(NESTABLE))
@pytest.mark.parametrize("outer", sorted(NESTABLE))
def test_pairwise_nesting_runs_clean_under_checking_leaks(outer: str, inner: str) -> None:
    """Bug C1: nested transforms (e.g. jit(grad), jit(cond)) leak the inner trace's tracers."""
    check_against_pure((outer, inner), NESTABLE)


def test_jit_of_grad_of_a_state_is_leak_free() -> None:
    """Bug C1, the issue's example: ``sj.jit(lambda x: g(x))`` with ``g = sj.grad(loss, w)``."""
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    count = sj.ShortTermState(jnp.array(0))

    def loss(x: jax.Array) -> jax.Array:
        count.value = count.value + 1
        return jnp.sum(w.value**2 * x)

    g = sj.grad(loss, grad_states=w)
    with jax.checking_leaks():
        out = sj.jit(lambda x: g(x))(jnp.array([1.0, 3.0]))
    np.testing.assert_allclose(out, [2.0, 12.0])
    assert int(count.value) == 1
    assert_concrete_states(w, count)


# -- a statejax transform inside a plain JAX transform: every written value is checked


class Pair(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.array(2.0))
        self.a = sj.State(jnp.array(-1.0))
        self.b = sj.State(jnp.array(-2.0))


CONST = jnp.array(5.0)


def _writes_const_then_traced(m: Pair) -> Callable[[Any], Any]:
    def loss(z: Any) -> Any:
        m.a.value = CONST  # first written value: a concrete constant
        m.b.value = z * 2  # second: a tracer of the plain JAX transform outside
        return m.w.value * z

    return loss


def _grad_in_jit(m: Pair) -> None:
    jax.jit(lambda z: sj.grad(_writes_const_then_traced(m), m.w)(z))(1.0)


def _grad_in_grad(m: Pair) -> None:
    jax.grad(lambda z: sj.grad(_writes_const_then_traced(m), m.w)(z))(1.0)


def _vmap_in_jit(m: Pair) -> None:
    def lane(z: Any) -> Any:
        m.a.value = CONST
        m.b.value = m.w.value * 2  # unbatched, but a tracer of the outer jax.jit
        return z

    jax.jit(lambda z: sj.vmap(lane)(z))(jnp.ones(3))


def _cond_in_jit(m: Pair) -> None:
    loss = _writes_const_then_traced(m)
    jax.jit(lambda z: sj.cond(z > 0, loss, lambda z: z, z))(1.0)


def _cond_in_vmap(m: Pair) -> None:
    loss = _writes_const_then_traced(m)
    jax.vmap(lambda z: sj.cond(True, loss, lambda z: z, z))(jnp.ones(3))


@pytest.mark.parametrize(
    ("case", "must_name_b"),
    [
        (_grad_in_jit, True),
        (_grad_in_grad, True),
        (_vmap_in_jit, True),
        (_cond_in_vmap, True),
        (_cond_in_jit, False),  # lax.cond returns tracers for both: either may be named
    ],
    ids=[
        "grad-in-jax.jit",
        "grad-in-jax.grad",
        "vmap-in-jax.jit",
        "cond-in-jax.vmap",
        "cond-in-jax.jit",
    ],
)
def test_statejax_inside_plain_jax_refuses_every_traced_write(
    case: Callable[[Pair], None], must_name_b: bool
) -> None:
    """Bug C2: Split.scatter checks only the first written value, storing a tracer in ``b``."""
    m = Pair()
    with pytest.raises(sj.TraceError, match="plain JAX transform") as info:
        case(m)
    message = str(info.value)
    if must_name_b:
        assert "Pair.b" in message, message
    else:
        assert "Pair.a" in message or "Pair.b" in message, message
    assert_concrete_states(m.w, m.a, m.b)
    assert float(m.a.value) == -1.0
    assert float(m.b.value) == -2.0
    assert float(m.w.value) == 2.0


# -- a state written inside a plain JAX transform nested in a statejax transform


class Norm(sj.Module):
    def __init__(self) -> None:
        self.mean = sj.LongTermState(jnp.array(0.0))
        self.calls = sj.ShortTermState(jnp.array(0))


def _write_in_jax_grad(m: Norm, x: Any) -> Any:
    def f(x: Any) -> Any:
        m.mean.value = 0.9 * m.mean.value + 0.1 * x  # a running mean inside jax.grad
        return x**2

    return jax.grad(f)(x)


def _write_in_jax_jit(m: Norm, x: Any) -> Any:
    def f(x: Any) -> Any:
        m.mean.value = 0.9 * m.mean.value + 0.1 * x
        return x**2

    return jax.jit(f)(x)


def _write_in_jax_vmap(m: Norm, x: Any) -> Any:
    def f(x: Any) -> Any:
        m.mean.value = 0.9 * m.mean.value + 0.1 * x
        return x**2

    return jax.vmap(f)(jnp.stack([x, x])).sum()


def _write_in_lax_scan(m: Norm, x: Any) -> Any:
    def body(carry: Any, xi: Any) -> Any:
        m.mean.value = 0.9 * m.mean.value + 0.1 * xi
        return carry + xi, None

    return lax.scan(body, x, jnp.stack([x, x]))[0]


@pytest.mark.parametrize(
    ("case", "advice"),
    [
        (_write_in_jax_grad, r"statejax\.grad"),
        (_write_in_jax_jit, r"statejax\.jit"),
        (_write_in_jax_vmap, r"statejax\.vmap"),
        # jax.jit and lax.scan leave the same kind of tracer: a list of alternatives is fine
        (_write_in_lax_scan, r"statejax\.(\w+, )*(scan|for_loop)\b"),
    ],
    ids=["jax.grad", "jax.jit", "jax.vmap", "lax.scan"],
)
def test_state_written_inside_plain_jax_transform_in_sj_jit_is_refused(
    case: Callable[[Norm, Any], Any], advice: str
) -> None:
    """Bug C3: a write inside a plain JAX transform nested in sj.jit leaks that trace's tracer."""
    m = Norm()

    @sj.jit
    def step(x: Any) -> Any:
        m.calls.value = m.calls.value + 1
        return case(m, x)

    with pytest.raises(sj.TraceError, match="was written inside a plain JAX transform") as info:
        step(jnp.array(3.0))
    message = str(info.value)
    assert "Norm.mean" in message, message
    assert re.search(advice, message), message
    assert_concrete_states(m.mean, m.calls)
    assert float(m.mean.value) == 0.0
    assert int(m.calls.value) == 0


# -- a state created inside a finished transform stays unusable everywhere


def _leaked_state() -> sj.State[Any]:
    leaked: list[sj.State[Any]] = []

    @sj.jit
    def make(x: Any) -> Any:
        leaked.append(sj.State(x * 2))
        return x

    make(jnp.ones(2))
    assert leaked
    return leaked[-1]


def test_leaked_state_is_refused_outside_transforms() -> None:
    """Bug C4 baseline: reading a state created inside a finished sj.jit is a StateLeakError."""
    s = _leaked_state()
    with pytest.raises(sj.StateLeakError, match="was created inside"):
        _ = s.value


@pytest.mark.parametrize(
    "use",
    [
        lambda s: sj.jit(lambda: s.value * 2)(),
        lambda s: sj.jit(lambda x: x + s.value)(jnp.ones(2)),
        lambda s: sj.grad(lambda x: jnp.sum(s.value * x))(jnp.ones(2)),
        lambda s: sj.vmap(lambda x: x + s.value)(jnp.ones((3, 2))),
        lambda s: sj.jit(lambda: s.__setattr__("value", s.value + 1))(),
    ],
    ids=["jit-read", "jit-read-with-arg", "grad", "vmap", "jit-write"],
)
def test_leaked_state_is_refused_inside_transforms(use: Callable[[sj.State[Any]], Any]) -> None:
    """Bug C4: a leaked state used inside sj.jit/grad/vmap must be a StateLeakError too."""
    s = _leaked_state()
    with pytest.raises(sj.StateLeakError, match="was created inside"):
        use(s)
    with pytest.raises(sj.StateLeakError, match="was created inside"):
        _ = s.value


@pytest.mark.parametrize("transform", ["jit", "grad", "scan"])
def test_state_created_inside_a_transform_keeps_no_tracer_alive(transform: str) -> None:
    """A state created inside jit/grad/scan holds a tracer of that trace inside it; nothing in
    the engine may keep that value once the trace ends (only vmap hands created states out)."""
    made: list[sj.State[Any]] = []

    def f(x: jax.Array) -> jax.Array:
        made.append(sj.State(x * 2))
        return x * 3

    with jax.checking_leaks():
        if transform == "jit":
            sj.jit(f)(jnp.array(1.0))
        elif transform == "grad":
            sj.grad(f)(jnp.array(1.0))
        else:
            sj.scan(lambda c, x: (c, f(x)), jnp.array(0.0), jnp.ones(2))
    with pytest.raises(sj.StateLeakError, match="was created inside"):
        _ = made[0].value


# --- states created inside a plain JAX transform (issue 14) ---------------------------------


def test_state_of_a_plain_trace_refuses_a_tracer_from_a_deeper_transform() -> None:
    """A state created inside jax.jit may take that jit's tracers, but not a jax.vmap lane's
    (it would escape the vmap): TraceError naming the state."""

    class Box(sj.Module):
        def __init__(self, x: jax.Array) -> None:
            self.s = sj.State(x)

    def f(x: jax.Array) -> jax.Array:
        box = Box(x)

        def lane(y: jax.Array) -> jax.Array:
            box.s.value = y  # a BatchTracer into a state of the jit's trace
            return y

        jax.vmap(lane)(jnp.ones(3))
        return box.s.value

    with pytest.raises(sj.TraceError, match=r"Box.s .*tracer of a JAX transform nested deeper"):
        jax.jit(f)(jnp.array(1.0))


def test_vmap_initialiser_inside_plain_jit_hands_out_states_of_that_trace() -> None:
    """An ensemble made with sj.vmap inside jax.jit lives in the jit's trace: usable there."""

    class M(sj.Module):
        def __init__(self, key: jax.Array) -> None:
            self.w = sj.ParamState(jax.random.normal(key, (3,)))

    def f(keys: jax.Array) -> jax.Array:
        ensemble = sj.vmap(M)(keys)
        return ensemble.w.value.sum(axis=1)

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    expected = jax.vmap(lambda k: jax.random.normal(k, (3,)).sum())(keys)
    np.testing.assert_allclose(jax.jit(f)(keys), expected, rtol=1e-6)


def test_state_of_a_running_plain_trace_is_leaked_for_other_threads() -> None:
    """Another thread reading a state that lives in this thread's jax.jit trace gets a
    StateLeakError, never the tracer."""
    import threading

    seen: list[BaseException | object] = []

    def f(x: jax.Array) -> jax.Array:
        s = sj.State(x * 2)

        def read() -> None:
            try:
                seen.append(s.value)
            except BaseException as exc:
                seen.append(exc)

        t = threading.Thread(target=read)
        t.start()
        t.join(timeout=30)
        return s.value

    assert float(jax.jit(f)(jnp.array(1.0))) == 2.0
    assert len(seen) == 1 and isinstance(seen[0], sj.StateLeakError)

"""Fault injection: a failing call changes no state and poisons no cache (issue 8, part D).

Hypothesis draws a stack of one to three statejax transforms around a small body
that reads a parameter and writes a counter and a hidden state, and a fault: a
Python ``raise`` at trace time (in the body or in one of the wrappers, after the
inner transform returned), or a ``jax.debug.callback`` that raises at run time,
always or only at one position (one vmap lane, one loop iteration). After the
failing call every state holds exactly its old concrete value; the next call
without the fault gives the result and state updates of the same computation
written in pure JAX.

Every layer passes an integer position code ``k`` to the body: a layer that runs
its function several times (vmap lanes, loop iterations) gives run ``i`` the code
``3 * k + i + 1``, so a code names one lane or iteration of the whole stack.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from jax import lax

import statejax as sj

W0 = np.array([0.5, -1.0], np.float32)
C0 = np.int32(0)
H0 = np.float32(0.25)
X = np.array([0.3, 0.7], np.float32)

PureState = tuple[Any, Any, Any]
Pure = Callable[[PureState, Any, Any], tuple[Any, PureState]]
Fn = Callable[[Any, Any], Any]


class TraceBoom(Exception):
    """Raised while tracing."""


class RunBoom(Exception):
    """Raised by a host callback while the computation runs."""


@dataclasses.dataclass
class FaultSwitch:
    """Where the next call fails: a trace-time level, or a run-time position code."""

    trace_at: int | None = None  # 0: the body; i >= 1: the i-th layer from the inside
    trace_skip: int = 0  # traces of that level to let pass first (0: fail the first trace)
    run_code: int | None = None  # -1: every run of the body; else the body run with this code


FAULT = FaultSwitch()


@pytest.fixture(autouse=True)
def _quiet_callback_errors() -> Iterator[None]:
    """JAX logs every failing host callback with a traceback; the faults here are on purpose."""
    logger = logging.getLogger("jax._src.debugging")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _trace_check(level: int) -> None:
    if FAULT.trace_at == level:
        if FAULT.trace_skip <= 0:
            raise TraceBoom(f"injected trace-time fault at level {level}")
        FAULT.trace_skip -= 1


def _run_check(k: Any) -> None:
    code = FAULT.run_code
    if code is not None and (code == -1 or int(k) == code):
        raise RunBoom(f"injected run-time fault at position {int(k)}")


class Model(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.asarray(W0))  # read only
        self.c = sj.ShortTermState(jnp.asarray(C0))  # written: a counter
        self.h = sj.HiddenState(jnp.asarray(H0))  # written: depends on w


def stateful_body(m: Model) -> Fn:
    def body(x: Any, k: Any) -> Any:
        _trace_check(0)
        m.c.value = m.c.value + 1
        m.h.value = 0.5 * m.h.value + jnp.sum(jnp.sin(m.w.value))
        jax.debug.callback(_run_check, k)
        return jnp.sin(m.w.value * x) + m.h.value

    return body


def pure_body(s: PureState, x: Any, k: Any) -> tuple[Any, PureState]:
    w, c, h = s
    c = c + 1
    h = 0.5 * h + jnp.sum(jnp.sin(w))
    return jnp.sin(w * x) + h, (w, c, h)


# -- the combinator table: (statejax wrapper, pure JAX wrapper, runs the function twice?)


def _after(level: int, f: Fn) -> Fn:
    """``f``, then a trace-time fault check for ``level`` (after the inner transform merged)."""

    def g(x: Any, k: Any) -> Any:
        y = f(x, k)
        _trace_check(level)
        return y

    return g


def _two(x: Any, k: Any) -> tuple[Any, Any]:
    return jnp.stack([x, 2.0 * x]), jnp.stack([3 * k + 1, 3 * k + 2])


def s_jit(m: Model, f: Fn, level: int) -> Fn:
    return sj.jit(_after(level, f))


def s_checkpoint(m: Model, f: Fn, level: int) -> Fn:
    return sj.checkpoint(_after(level, f))


def s_grad(m: Model, f: Fn, level: int) -> Fn:
    inner = _after(level, f)
    return sj.grad(lambda x, k: jnp.sum(inner(x, k)), grad_states=m.w)


def s_vmap(m: Model, f: Fn, level: int) -> Fn:
    v = sj.vmap(_after(level, f))
    return lambda x, k: v(*_two(x, k)).sum(0)


def s_scan(m: Model, f: Fn, level: int) -> Fn:
    inner = _after(level, f)

    def g(x: Any, k: Any) -> Any:
        _, ys = sj.scan(lambda carry, xk: (carry, inner(*xk)), 0, _two(x, k))
        return ys.sum(0)

    return g


def s_for_loop(m: Model, f: Fn, level: int) -> Fn:
    inner = _after(level, f)
    return lambda x, k: sj.for_loop(inner, *_two(x, k)).sum(0)


def s_map(m: Model, f: Fn, level: int) -> Fn:
    inner = _after(level, f)
    return lambda x, k: sj.transform.map(inner, *_two(x, k)).sum(0)


def s_while(m: Model, f: Fn, level: int) -> Fn:
    inner = _after(level, f)

    def g(x: Any, k: Any) -> Any:
        def body(carry: Any) -> Any:
            i, acc = carry
            y = inner(x * (i + 1).astype(x.dtype), 3 * k + i + 1)
            return i + 1, acc + y

        _, acc = sj.while_loop(lambda c: c[0] < 2, body, (jnp.int32(0), jnp.zeros_like(x)))
        return acc

    return g


def s_cond(m: Model, f: Fn, level: int) -> Fn:
    inner = _after(level, f)
    return lambda x, k: sj.cond(m.c.value >= 0, inner, lambda x, k: x, x, k)


def s_switch(m: Model, f: Fn, level: int) -> Fn:
    inner = _after(level, f)
    return lambda x, k: sj.switch(m.c.value % 2, [inner, lambda x, k: 2.0 * inner(x, k)], x, k)


def p_same(jax_transform: Callable[[Pure], Pure]) -> Callable[[Pure], Pure]:
    return jax_transform


def p_grad(p: Pure) -> Pure:
    def q(s: PureState, x: Any, k: Any) -> tuple[Any, PureState]:
        def loss(w: Any) -> tuple[Any, PureState]:
            y, s2 = p((w, s[1], s[2]), x, k)
            return jnp.sum(y), s2

        return jax.grad(loss, has_aux=True)(s[0])

    return q


def p_vmap(p: Pure) -> Pure:
    def q(s: PureState, x: Any, k: Any) -> tuple[Any, PureState]:
        y, s2 = jax.vmap(p, in_axes=(None, 0, 0), out_axes=(0, None))(s, *_two(x, k))
        return y.sum(0), s2

    return q


def p_loop(p: Pure) -> Pure:
    def q(s: PureState, x: Any, k: Any) -> tuple[Any, PureState]:
        def body(s: PureState, xk: Any) -> tuple[PureState, Any]:
            y, s = p(s, *xk)
            return s, y

        s2, ys = lax.scan(body, s, _two(x, k))
        return ys.sum(0), s2

    return q


def p_while(p: Pure) -> Pure:
    def q(s: PureState, x: Any, k: Any) -> tuple[Any, PureState]:
        def body(carry: Any) -> Any:
            i, acc, s = carry
            y, s = p(s, x * (i + 1).astype(x.dtype), 3 * k + i + 1)
            return i + 1, acc + y, s

        init = (jnp.int32(0), jnp.zeros_like(x), s)
        _, acc, s2 = lax.while_loop(lambda c: c[0] < 2, body, init)
        return acc, s2

    return q


def p_cond(p: Pure) -> Pure:
    return lambda s, x, k: lax.cond(s[1] >= 0, p, lambda s, x, k: (x, s), s, x, k)


def p_switch(p: Pure) -> Pure:
    def double(s: PureState, x: Any, k: Any) -> tuple[Any, PureState]:
        y, s2 = p(s, x, k)
        return 2.0 * y, s2

    return lambda s, x, k: lax.switch(s[1] % 2, [p, double], s, x, k)


COMBINATORS: dict[str, tuple[Callable[[Model, Fn, int], Fn], Callable[[Pure], Pure], bool]] = {
    "jit": (s_jit, jax.jit, False),
    "grad": (s_grad, p_grad, False),
    "vmap": (s_vmap, p_vmap, True),
    "scan": (s_scan, p_loop, True),
    "for_loop": (s_for_loop, p_loop, True),
    "while_loop": (s_while, p_while, True),
    "cond": (s_cond, p_cond, False),
    "switch": (s_switch, p_switch, False),
    "checkpoint": (s_checkpoint, jax.checkpoint, False),
    "map": (s_map, p_loop, True),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Transforms (outermost first) and the fault to inject."""

    layers: tuple[str, ...]
    kind: str  # "trace" or "run"
    where: int  # trace: the level (0 body, i >= 1 the i-th layer from the inside); run: a code
    skip: int = 0  # trace: let this many traces of that level pass (a later trace fails)

    def __str__(self) -> str:
        skip = f" after {self.skip} clean traces" if self.skip else ""
        return f"{' o '.join(self.layers)}: {self.kind} fault at {self.where}{skip}"


def position_codes(layers: tuple[str, ...]) -> list[int]:
    """Every code the body is run with for these layers (outermost first), from code 0."""
    codes = [0]
    for name in layers:
        if COMBINATORS[name][2]:
            codes = [3 * c + i + 1 for c in codes for i in range(2)]
    return codes


def _valid(layers: tuple[str, ...]) -> bool:
    # Reverse mode cannot go through a while loop (in JAX as in statejax).
    return not any(name == "while_loop" and "grad" in layers[:i] for i, name in enumerate(layers))


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    layers = draw(
        st.lists(st.sampled_from(sorted(COMBINATORS)), min_size=1, max_size=3)
        .map(tuple)
        .filter(_valid)
    )
    kind = draw(st.sampled_from(["trace", "run"]))
    if kind == "trace":
        return Plan(layers, kind, draw(st.integers(0, len(layers))), draw(st.integers(0, 2)))
    return Plan(layers, kind, draw(st.sampled_from([-1, *position_codes(layers)])))


def build(layers: tuple[str, ...], m: Model) -> tuple[Fn, Pure]:
    f: Fn = stateful_body(m)
    p: Pure = pure_body
    for level, name in enumerate(reversed(layers), start=1):
        s_comb, p_comb, _ = COMBINATORS[name]
        f = s_comb(m, f, level)
        p = p_comb(p)
    return f, p


def is_tracer(value: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def snapshot(m: Model) -> tuple[np.ndarray, ...]:
    """The states' values as NumPy arrays, after checking that none holds a tracer."""
    out = []
    for s in (m.w, m.c, m.h):
        assert not is_tracer(getattr(s, "_value", None)), f"State._value holds a tracer: {s!r}"
        value = s.value
        assert not is_tracer(value), f"state.value is a tracer: {value!r}"
        out.append(np.array(value))
    return tuple(out)


def assert_unchanged(m: Model, before: tuple[np.ndarray, ...], plan: Plan) -> None:
    after = snapshot(m)
    for name, old, new in zip("wch", before, after, strict=True):
        assert old.dtype == new.dtype and old.shape == new.shape, (plan, name, old, new)
        np.testing.assert_array_equal(new, old, err_msg=f"{plan}: state {name} changed")


def assert_matches_pure(m: Model, out: Any, pure: Pure, before: tuple[np.ndarray, ...]) -> None:
    x = jnp.asarray(X)
    with jax.disable_jit():  # run the reference op by op: no compiles
        expected, (w, c, h) = pure(tuple(jnp.asarray(v) for v in before), x, jnp.int32(0))
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-6)
    after = snapshot(m)
    np.testing.assert_array_equal(after[0], np.asarray(w))
    assert int(after[1]) == int(c)
    np.testing.assert_allclose(after[2], np.asarray(h), rtol=1e-6)


def _mentions_boom(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, TraceBoom | RunBoom) or "Boom" in str(e):
            return True
        stack += [e.__cause__, e.__context__]
    return False


def call_with_fault(f: Fn, plan: Plan) -> Any:
    """Call ``f`` with the plan's fault switched on; ``None`` if it raised because of it.

    Only a trace-time fault that skips traces may not fire (the level is traced
    fewer times than that); then the call's output is returned.
    """
    if plan.kind == "trace":
        FAULT.trace_at, FAULT.trace_skip = plan.where, plan.skip
    else:
        FAULT.run_code = plan.where
    try:
        out = jax.block_until_ready(f(jnp.asarray(X), jnp.int32(0)))
    except Exception as exc:  # XLA wraps run-time errors in its own type
        assert _mentions_boom(exc), f"{plan}: failed for another reason: {exc!r}"
        return None
    finally:
        FAULT.trace_at, FAULT.trace_skip, FAULT.run_code = None, 0, None
    assert plan.kind == "trace" and plan.skip, f"{plan}: the injected fault did not raise"
    return out


def check_plan(plan: Plan) -> None:
    m = Model()
    f, pure = build(plan.layers, m)
    x, k = jnp.asarray(X), jnp.int32(0)
    before = snapshot(m)
    out = call_with_fault(f, plan)
    if out is None:
        assert_unchanged(m, before, plan)
    else:  # the fault did not fire: an ordinary call
        assert_matches_pure(m, out, pure, before)
        before = snapshot(m)
    out = f(x, k)  # the same callable, without the fault: a fresh trace or the cached one
    assert_matches_pure(m, out, pure, before)
    if plan.kind == "run":  # again, on the cached path, from the updated states
        before = snapshot(m)
        assert call_with_fault(f, plan) is None
        assert_unchanged(m, before, plan)
        out = f(x, k)
        assert_matches_pure(m, out, pure, before)


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: each example compiles
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plans())
@example(Plan(("jit", "grad"), "trace", 0))
@example(Plan(("jit", "vmap"), "run", 2))  # the second lane only
@example(Plan(("grad", "scan"), "run", 1))  # the first loop iteration only
@example(Plan(("vmap", "for_loop", "cond"), "trace", 2))  # after the inner loop merged
@example(Plan(("jit", "grad"), "trace", 1, skip=1))  # discovery passes, the compile trace fails
@example(Plan(("jit", "while_loop"), "run", 2))
def test_faults_leave_states_unchanged_and_caches_usable(plan: Plan) -> None:
    """Bug D: a fault anywhere in a transform stack changes states, leaks tracers or poisons caches."""
    check_plan(plan)


@pytest.mark.parametrize("name", sorted(COMBINATORS))
def test_each_transform_alone_survives_a_run_time_fault(name: str) -> None:
    """Bug D: every single transform is atomic under a run-time fault in its last body run."""
    check_plan(Plan((name,), "run", position_codes((name,))[-1]))

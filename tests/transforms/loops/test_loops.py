"""scan, for_loop and while_loop against lax.scan / lax.while_loop on the equivalent pure carry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import statejax as sj
from statejax._transforms.abstract import make_jaxpr
from statejax._transforms.bounded import CheckpointedForLoopSpec, CheckpointedScanSpec
from statejax._transforms.loops import (
    ForLoopSpec,
    ProgressBar,
    ScanSpec,
    for_loop,
    scan,
    while_loop,
)
from statejax._transforms.stateful import StatefulFunction
from statejax.extend import StateTrace
from statejax.transform import bounded_while_loop, checkpointed_for_loop, checkpointed_scan


class Leaky(sj.Module):
    """h <- decay * h + x; counts its steps; decay is only read."""

    def __init__(self) -> None:
        self.decay = sj.ParamState(jnp.array(0.9))
        self.h = sj.HiddenState(jnp.zeros(2))
        self.steps = sj.ShortTermState(jnp.array(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        self.steps.value += 1
        self.h.value = self.decay.value * self.h.value + x
        return self.h.value


def pure_leaky(decay: Any, h: Any, steps: Any, x: Any) -> tuple[Any, Any, Any]:
    h = decay * h + x
    return h, steps + 1, h


XS = jnp.arange(10.0).reshape(5, 2)


def test_scan_matches_lax_scan_and_python_loop() -> None:
    model = Leaky()

    def body(acc: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        y = model(x)
        return acc + y.sum(), y * 2

    acc, ys = scan(body, jnp.array(0.0), XS)

    def pure_body(c: Any, x: Any) -> tuple[Any, Any]:
        h, steps, acc = c
        h, steps, y = pure_leaky(0.9, h, steps, x)
        return (h, steps, acc + y.sum()), y * 2

    (h, steps, acc_ref), ys_ref = lax.scan(pure_body, (jnp.zeros(2), 0, 0.0), XS)
    np.testing.assert_allclose(acc, acc_ref, rtol=1e-6)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-6)
    np.testing.assert_allclose(model.h.value, h, rtol=1e-6)
    assert int(model.steps.value) == int(steps) == 5

    python = Leaky()
    for x in XS:
        python(x)
    np.testing.assert_allclose(model.h.value, python.h.value, rtol=1e-6)


def test_scan_reverse_length_and_unroll() -> None:
    seen = sj.State(jnp.array(0.0))

    def body(c: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        seen.value = seen.value * 10 + x
        return c, seen.value

    _, ys = scan(body, jnp.array(0), jnp.array([1.0, 2.0, 3.0]), reverse=True, unroll=2)
    _, ref = lax.scan(
        lambda c, x: (c * 10 + x, c * 10 + x), 0.0, jnp.array([1.0, 2.0, 3.0]), reverse=True
    )
    np.testing.assert_allclose(ys, ref)
    assert float(seen.value) == 321.0

    counter = sj.State(jnp.array(0))

    def tick(c: None, x: None) -> tuple[None, jax.Array]:
        counter.value += 1
        return c, counter.value

    _, ticks = scan(tick, None, None, length=4)
    assert ticks.tolist() == [1, 2, 3, 4] and int(counter.value) == 4


def test_read_states_are_constants_written_states_are_carried() -> None:
    model = Leaky()
    sf = StatefulFunction(lambda xs: scan(lambda c, x: (c + 1, model(x)), 0, xs))
    jaxpr, reads, writes = sf.get_jaxpr(XS), sf.get_read_states(XS), sf.get_write_states(XS)
    assert reads == (model.decay,)
    assert set(map(id, writes)) == {id(model.h), id(model.steps)}
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert eqn.params["num_consts"] == 1  # decay
    assert eqn.params["num_carry"] == 3  # steps, h and the user carry


def test_for_loop_matches_lax_scan_and_composes_with_jit() -> None:
    model = Leaky()
    run = sj.jit(lambda xs, scale: for_loop(lambda x, s: model(x) * s, xs, scale))
    ys = run(XS, jnp.arange(5.0))
    _, ref = lax.scan(
        lambda c, xs: ((0.9 * c[0] + xs[0], c[1] + 1), (0.9 * c[0] + xs[0]) * xs[1]),
        (jnp.zeros(2), 0),
        (XS, jnp.arange(5.0)),
    )
    np.testing.assert_allclose(ys, ref, rtol=1e-6)
    run(XS, jnp.arange(5.0))  # cached: the states continue from where they were
    assert int(model.steps.value) == 10

    bump = sj.State(jnp.array(1.0))

    def double() -> jax.Array:
        bump.value = bump.value * 2
        return bump.value

    # as lax.scan with reverse=True: outputs are stacked at the positions they ran for
    assert for_loop(double, length=3, reverse=True).tolist() == [8.0, 4.0, 2.0]


def test_while_loop_matches_lax_while_loop() -> None:
    total = sj.State(jnp.array(0))
    limit = sj.State(jnp.array(20))

    def body(i: jax.Array) -> jax.Array:
        total.value = total.value + i
        return i + 1

    out = sj.jit(lambda: while_loop(lambda i: total.value < limit.value, body, jnp.array(0)))()
    ref_i, ref_total = lax.while_loop(
        lambda c: c[1] < 20, lambda c: (c[0] + 1, c[1] + c[0]), (0, 0)
    )
    assert int(out) == int(ref_i) and int(total.value) == int(ref_total)
    assert int(limit.value) == 20

    # only read in cond_fun: a constant, not carried
    sf = StatefulFunction(
        lambda: while_loop(lambda i: total.value < limit.value, body, jnp.array(0))
    )
    jaxpr, reads, writes = sf.get_jaxpr(), sf.get_read_states(), sf.get_write_states()
    assert reads == (limit,) and writes == (total,)
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "while"]
    assert eqn.params["cond_nconsts"] == 1  # limit
    assert eqn.params["body_nconsts"] == 0
    assert len(eqn.outvars) == 2  # total and the loop value


def test_while_loop_cond_writing_a_state_is_an_error() -> None:
    class Counter(sj.Module):
        def __init__(self) -> None:
            self.n = sj.ShortTermState(jnp.array(0))

    c = Counter()

    def bad_cond(i: jax.Array) -> jax.Array:
        c.n.value += 1
        return i < 3

    with pytest.raises(
        sj.TraceError,
        match=r"cond_fun .*bad_cond writes ShortTermState Counter\.n "
        r"\(int32\[\]=0\).*Move the write into body_fun",
    ):
        while_loop(bad_cond, lambda i: i + 1, 0)
    assert int(c.n.value) == 0

    # also when body_fun writes the same state, and inside sj.jit
    def body(i: jax.Array) -> jax.Array:
        c.n.value += 2
        return i + 1

    with pytest.raises(
        sj.TraceError, match=r"cond_fun .*bad_cond writes ShortTermState Counter\.n"
    ):
        sj.jit(lambda: while_loop(bad_cond, body, 0))()
    assert int(c.n.value) == 0


def test_scan_gradients_wrt_states_and_arguments() -> None:
    model = Leaky()

    def loss(decay: jax.Array, xs: jax.Array) -> jax.Array:
        # a pure wrapper around the stateful scan: plain jax.grad can differentiate it
        with StateTrace("test", known=[model.decay, model.h, model.steps]) as trace:
            trace.set_value(model.decay, decay)
            _, ys = scan(lambda c, x: (c, model(x)), None, xs)
            return ys.sum() + model.h.value.sum()

    def pure(decay: jax.Array, xs: jax.Array) -> jax.Array:
        def body(h: Any, x: Any) -> tuple[Any, Any]:
            h = decay * h + x
            return h, h

        h, ys = lax.scan(body, jnp.zeros(2), xs)
        return ys.sum() + h.sum()

    g_decay, g_xs = jax.grad(loss, argnums=(0, 1))(jnp.array(0.9), XS)
    r_decay, r_xs = jax.grad(pure, argnums=(0, 1))(jnp.array(0.9), XS)
    np.testing.assert_allclose(g_decay, r_decay, rtol=1e-5)
    np.testing.assert_allclose(g_xs, r_xs, rtol=1e-5)
    assert float(model.decay.value) == pytest.approx(0.9)  # the wrapper changed no state
    assert model.h.value.tolist() == [0.0, 0.0]
    # and jax.vmap over the same pure wrapper
    batched = jax.vmap(loss, (0, None))(jnp.array([0.5, 0.9]), XS)
    np.testing.assert_allclose(
        batched, jax.vmap(pure, (0, None))(jnp.array([0.5, 0.9]), XS), rtol=1e-6
    )


def test_while_loop_forward_mode() -> None:
    rate = sj.ParamState(jnp.array(2.0))

    def f(r: jax.Array) -> jax.Array:
        with StateTrace("test", known=[rate]) as trace:
            trace.set_value(rate, r)
            return while_loop(lambda x: x < 10.0, lambda x: x * rate.value, jnp.array(1.0))

    primal, tangent = jax.jvp(f, (jnp.array(2.0),), (jnp.array(1.0),))
    ref = jax.jvp(
        lambda r: lax.while_loop(lambda x: x < 10.0, lambda x: x * r, 1.0), (2.0,), (1.0,)
    )
    np.testing.assert_allclose((primal, tangent), ref)


def test_progress_bar_updates_from_inside_jit(capsys: pytest.CaptureFixture[str]) -> None:
    acc = sj.State(jnp.array(0.0))

    def body(c: None, x: jax.Array) -> tuple[None, jax.Array]:
        acc.value = acc.value + x
        return c, acc.value

    run = sj.jit(lambda xs: scan(body, None, xs, pbar=ProgressBar(freq=3, desc="fit")))
    run(jnp.ones(7))
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "fit" in err and "7/7" in err and "3/7" in err
    run(jnp.ones(7))  # a second run draws a fresh bar
    jax.effects_barrier()
    assert "7/7" in capsys.readouterr().err
    assert float(acc.value) == 14.0

    for_loop(lambda x: x * 2, jnp.ones(4), pbar=ProgressBar())
    jax.effects_barrier()
    assert "Running for_loop: 100%" in capsys.readouterr().err


def test_progress_bar_is_driven_from_the_compiled_loop_every_k_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars: list[Any] = []

    class FakeBar:
        def __init__(self, total: int, desc: str, leave: bool, mininterval: float) -> None:
            assert leave and mininterval == 0
            self.total, self.desc, self.n = total, desc, 0
            self.shown: list[int] = []
            self.closed = False
            bars.append(self)

        def update(self, k: int) -> None:
            self.n += k
            self.shown.append(self.n)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    acc = sj.State(jnp.array(0.0))
    traces = []

    def body(c: None, x: jax.Array) -> tuple[None, None]:
        acc.value = acc.value + x
        return c, None

    @sj.jit
    def run(xs: jax.Array) -> None:
        traces.append(1)
        scan(body, None, xs, pbar=4)

    # (as with jax.jit, the second call may retrace once: the states now hold committed arrays)
    for _ in range(2):
        run(jnp.ones(10))
    n_traces = len(traces)
    run(jnp.ones(10))  # no new trace: the compiled loop itself reports its progress
    jax.effects_barrier()
    assert len(traces) == n_traces
    assert [(b.desc, b.total, b.shown, b.closed) for b in bars] == [
        ("Running scan", 10, [1, 4, 8, 10], True)
    ] * 3
    assert float(acc.value) == 30.0

    # the callback sits inside the scan's body (the host hears from every k-th step)
    jaxpr, _ = make_jaxpr(lambda xs: scan(body, None, xs, pbar=4))(jnp.ones(10))
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert "debug_callback" in str(eqn.params["jaxpr"])
    plain, _ = make_jaxpr(lambda xs: scan(body, None, xs))(jnp.ones(10))
    assert "debug_callback" not in str(plain)

    bars.clear()
    for_loop(lambda: None, length=3, reverse=True, pbar=ProgressBar(freq=2, desc="rev"))
    jax.effects_barrier()
    assert [(b.desc, b.shown, b.closed) for b in bars] == [("rev", [1, 2, 3], True)]


def test_a_loop_without_xs_needs_a_length() -> None:
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.for_loop: there is nothing to loop over \(no arrays in xs\) and no "
        r"length; pass length=n",
    ):
        for_loop(lambda: None)
    with pytest.raises(sj.SpecError, match=r"statejax\.scan: there is nothing to loop over"):
        scan(lambda c, x: (c, x), 0, None)


def test_pbar_and_option_validation() -> None:
    assert ScanSpec(pbar=5).pbar == ProgressBar(freq=5)
    assert ScanSpec(pbar=None).pbar is None
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.scan: option pbar: statejax\.ProgressBar: option freq: Input should "
        r"be greater than 0",
    ):
        scan(lambda c, x: (c, x), 0, jnp.ones(2), pbar=0)
    with pytest.raises(sj.SpecError, match=r"statejax\.scan: option pbar: True is a bool"):
        scan(lambda c, x: (c, x), 0, jnp.ones(2), pbar=True)
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.for_loop: option length: Input should "
        r"be greater than or equal to 0",
    ):
        for_loop(lambda x: x, jnp.ones(2), length=-1)
    with pytest.raises(sj.SpecError, match=r"statejax\.scan: option unroll"):
        scan(lambda c, x: (c, x), 0, jnp.ones(2), unroll=0)


def test_a_pbar_option_tqdm_would_refuse_is_a_spec_error_before_the_loop_runs() -> None:
    total = sj.State(jnp.array(0.0))

    def step(x: jax.Array) -> jax.Array:
        total.value = total.value + x
        return x

    # It used to be accepted and fail inside the host callback, when the loop ran.
    with pytest.raises(
        sj.SpecError,
        match=r"^statejax\.for_loop: option pbar: statejax\.ProgressBar: '' is not an option "
        r"of tqdm",
    ):
        for_loop(step, jnp.ones(3), pbar={"": None})  # type: ignore[arg-type]
    with pytest.raises(
        sj.SpecError, match=r"'leav' is not an option of tqdm.*Did you mean 'leave'"
    ):
        for_loop(step, jnp.ones(3), pbar=ProgressBar(leav=False))
    assert float(total.value) == 0.0
    assert ProgressBar(leave=False, ncols=80).kwargs == (("leave", False), ("ncols", 80))


def test_body_must_return_a_pair() -> None:
    def body(c: jax.Array, x: jax.Array) -> jax.Array:
        return c + x

    with pytest.raises(
        sj.LoopBodyError,
        match=r"^statejax\.scan\(.*body\): the loop body must return a pair "
        r"\(carry, y\); it returned .*`return carry, y`",
    ) as caught:
        scan(body, 0.0, jnp.ones(2))  # type: ignore[arg-type]
    # Public and BrainState-compatible: a TraceError, a TypeError and a ValueError, shown
    # under its public name (not a private class of a private module).
    for kind in (sj.TraceTypeError, sj.TraceError, TypeError, ValueError):
        assert isinstance(caught.value, kind), kind
    assert caught.exconly().startswith("statejax.LoopBodyError: ")


def test_a_failing_body_changes_no_state() -> None:
    s = sj.State(jnp.array(1.0))

    def body(c: None, x: jax.Array) -> tuple[None, None]:
        s.value = s.value + x
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        scan(body, None, jnp.ones(3))
    assert float(s.value) == 1.0


def test_loops_are_registered() -> None:
    for name in ("scan", "for_loop", "while_loop"):
        assert sj.transform.__getattr__(name) is globals()[name]


def test_a_body_changing_a_state_shape_or_dtype_is_an_error() -> None:
    class Buffer(sj.Module):
        def __init__(self) -> None:
            self.n = sj.State(jnp.array(0))
            self.buf = sj.State(jnp.zeros(2))

    b = Buffer()

    def grow(x: jax.Array) -> None:
        b.buf.value = jnp.concatenate([b.buf.value, x[None]])

    with pytest.raises(
        sj.TraceError,
        match=r"statejax\.for_loop: the loop body changes State Buffer\.buf \(float32\[2\]\) "
        r"from float32\[2\] to float32\[3\]; a state written in a loop is carried",
    ):
        for_loop(grow, jnp.ones(3))

    def halve(i: jax.Array) -> jax.Array:
        b.n.value = b.n.value / 2
        return i + 1

    with pytest.raises(
        sj.TraceError,
        match=r"statejax\.while_loop: the loop body changes State Buffer\.n \(int32\[\]=0\) "
        r"from int32\[\] to float32\[\]",
    ):
        while_loop(lambda i: i < 3, halve, 0)
    assert b.buf.value.shape == (2,) and int(b.n.value) == 0

    # a Python float state becoming a float32 array keeps its dtype: allowed, as in lax.scan
    f = sj.State(0.0)
    for_loop(lambda x: setattr(f, "value", f.value + x), jnp.ones(3))
    assert float(f.value) == 3.0


# --- jax.disable_jit runs the loops eagerly -------------------------------------------


def test_scan_and_for_loop_run_eagerly_under_disable_jit() -> None:
    total = sj.State(jnp.array(0.0))

    def python_step(carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if float(x) % 2 == 0:
            total.value = total.value + x
        return carry + x, total.value

    def traced_step(carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        total.value = jnp.where(x % 2 == 0, total.value + x, total.value)
        return carry + x, total.value

    xs = jnp.arange(6.0)
    for reverse in (False, True):
        total.value = jnp.array(0.0)
        expected = sj.scan(traced_step, jnp.array(0.0), xs, reverse=reverse)
        expected_total = float(total.value)
        total.value = jnp.array(0.0)
        with jax.disable_jit():
            got = sj.scan(python_step, jnp.array(0.0), xs, reverse=reverse)
        jax.tree.map(np.testing.assert_allclose, got, expected)
        assert float(total.value) == expected_total

    total.value = jnp.array(0.0)
    calls: list[None] = []

    def doubling() -> jax.Array:
        calls.append(None)
        return python_step(jnp.array(0.0), total.value)[0]  # x = total: even, so doubled

    with jax.disable_jit():
        ys = sj.for_loop(lambda x: python_step(x, x)[1], xs, pbar=2)
        counted = sj.for_loop(doubling, length=3)
    np.testing.assert_allclose(ys, [0.0, 0.0, 2.0, 2.0, 6.0, 6.0])
    np.testing.assert_allclose(counted, [6.0, 12.0, 24.0])
    assert float(total.value) == 48.0 and len(calls) == 3  # each step ran once


def test_while_loop_runs_eagerly_under_disable_jit() -> None:
    total = sj.State(jnp.array(0))
    calls: list[int] = []

    def body(i: int) -> int:
        calls.append(i)
        total.value = total.value + i
        return i + 1

    expected = int(sj.while_loop(lambda i: total.value < 10, body, 0))
    assert int(total.value) == 10
    total.value = jnp.array(0)
    calls.clear()
    with jax.disable_jit():
        got = sj.while_loop(lambda i: float(total.value) < 10, body, 0)
    assert got == expected and int(total.value) == 10
    assert calls == [0, 1, 2, 3, 4]  # each step ran once, on concrete values

    def cond(i: int) -> bool:
        total.value = total.value + 1
        return False

    with (
        jax.disable_jit(),
        pytest.raises(sj.TraceError, match=r"cond_fun .*cond writes State .*Move the write"),
    ):
        sj.while_loop(cond, body, 0)
    assert int(total.value) == 10


@pytest.mark.parametrize("loop", ["while_loop", "bounded_while_loop"])
def test_while_loop_under_disable_jit_and_vmap_runs_the_traced_loop(loop: str) -> None:
    def cond_fun(v: jax.Array) -> jax.Array:
        return jnp.all(v < 3)

    def body_fun(v: jax.Array) -> jax.Array:
        return v + 1

    def ours(i: jax.Array) -> Any:
        if loop == "while_loop":
            return while_loop(cond_fun, body_fun, i)
        return bounded_while_loop(cond_fun, body_fun, i, max_steps=10)

    xs = jnp.array([0, 1, 2])
    expected = jax.vmap(lambda i: lax.while_loop(cond_fun, body_fun, i))(xs)
    with jax.disable_jit():
        got = jax.vmap(ours)(xs)
        assert float(ours(jnp.array(0))) == 3.0  # still eager outside vmap
    np.testing.assert_array_equal(got, expected)


def test_while_loop_under_disable_jit_and_vmap_writes_each_lanes_state_once() -> None:
    steps = sj.State(jnp.zeros(3, jnp.int32))

    def body_fun(v: jax.Array) -> jax.Array:
        steps.value = steps.value + 1
        return v + 1

    mapped = sj.vmap(lambda i: while_loop(lambda v: v < 3, body_fun, i), in_states={0: steps})
    with jax.disable_jit():
        out = mapped(jnp.array([0, 1, 2]))
    np.testing.assert_array_equal(out, [3, 3, 3])
    # lanes run 3, 2 and 1 steps; the abandoned eager attempt wrote nothing
    np.testing.assert_array_equal(steps.value, [3, 2, 1])


# --- error types: a statejax error that is also BrainState's TypeError / ValueError ----


@pytest.mark.parametrize("loop", ["while_loop", "bounded_while_loop"])
@pytest.mark.parametrize("eager", [False, True], ids=["traced", "disable_jit"])
def test_a_condition_that_writes_is_a_trace_and_value_error(loop: str, eager: bool) -> None:
    count = sj.State(jnp.array(0.0))

    def cond_fun(v: jax.Array) -> jax.Array:
        count.value = count.value + 1.0
        return v < 5

    def run() -> Any:
        if loop == "while_loop":
            return while_loop(cond_fun, lambda v: v + 1, 0.0)
        return bounded_while_loop(cond_fun, lambda v: v + 1, 0.0, max_steps=10)

    with pytest.raises(sj.TraceError, match="must not change states") as info:
        if eager:
            with jax.disable_jit():
                run()
        else:
            run()
    assert isinstance(info.value, ValueError)
    assert float(count.value) == 0.0  # no state changed


@pytest.mark.parametrize("loop", [scan, checkpointed_scan])
@pytest.mark.parametrize(
    "body", [lambda c, x: c + x, lambda c, x: (c + x, x, x)], ids=["single", "triple"]
)
def test_a_body_without_a_pair_is_a_type_and_value_error(
    loop: Callable[..., Any], body: Callable[..., Any]
) -> None:
    with pytest.raises(sj.TraceError, match=r"must return a pair \(carry, y\)") as info:
        loop(body, 0.0, jnp.arange(4.0))
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


# --- pbar and ProgressBar -------------------------------------------------------------


def test_pbar_freq_count_and_dynamic_desc(monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[Any] = []

    class FakeBar:
        def __init__(self, total: int, desc: str, **options: Any) -> None:
            self.total, self.descs, self.shown, self.options = total, [desc], [0], options
            self.n = 0
            bars.append(self)

        def set_description(self, desc: str, refresh: bool) -> None:
            self.descs.append(desc)

        def update(self, k: int) -> None:
            self.n += k
            self.shown.append(self.n)

        def close(self) -> None:
            pass

    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    xs = jnp.arange(10.0)
    sj.for_loop(lambda x: x * 2, xs, pbar=ProgressBar(count=2, ncols=40))
    checkpointed_scan(lambda c, x: (c + x, c), 0.0, xs, base=2, pbar=3)
    desc = ("step {i}: carry {c:.0f}", lambda d: {"i": d["i"], "c": d["carry"]})
    sj.scan(lambda c, x: (c + x, c), 0.0, xs[:4], pbar=ProgressBar(freq=2, desc=desc))
    jax.effects_barrier()
    assert [b.shown for b in bars] == [[0, 1, 5, 10], [0, 1, 3, 6, 9, 10], [0, 1, 2, 4]]
    assert bars[0].options == {"leave": True, "mininterval": 0, "ncols": 40}
    assert bars[2].descs == [
        "step 0: carry 0",
        "step 0: carry 0",
        "step 1: carry 1",
        "step 3: carry 6",
    ]
    with pytest.raises(sj.SpecError, match=r"statejax\.for_loop: pbar freq=11 is more than"):
        sj.for_loop(lambda x: x, xs, pbar=11)
    with pytest.raises(sj.SpecError, match=r"statejax\.ProgressBar: option desc"):
        ProgressBar(desc=("{i}", "not callable"))
    with pytest.raises(sj.SpecError, match=r"give freq or count, not both"):
        ProgressBar(freq=1, count=2)


@pytest.mark.parametrize(
    ("desc", "type_error"),
    [
        (123, True),
        ((123, lambda d: d), True),
        (("step {i}", "not callable"), True),
        (["step {i}", "not callable"], True),
        (("only one",), False),
    ],
)
def test_progress_bar_desc_errors_follow_brainstate_types(desc: Any, type_error: bool) -> None:
    with pytest.raises(sj.SpecError, match=r"statejax\.ProgressBar: option desc") as info:
        ProgressBar(desc=desc)
    assert isinstance(info.value, TypeError) is type_error


def test_progress_bar_takes_a_list_desc_and_has_brainstate_names() -> None:
    bar = ProgressBar(desc=["step {i}", lambda d: d])
    assert bar.desc is not None and bar.desc[0] == "step {i}"
    assert ProgressBar(freq=2).print_freq == 2 and ProgressBar(freq=2).print_count is None
    assert ProgressBar(count=3).print_count == 3 and ProgressBar(count=3).print_freq is None


@pytest.mark.parametrize(
    "loop",
    [
        lambda pbar: scan(lambda c, x: (c, x), 0.0, jnp.ones(4), pbar=pbar),
        lambda pbar: for_loop(lambda x: x, jnp.ones(4), pbar=pbar),
        lambda pbar: checkpointed_scan(lambda c, x: (c, x), 0.0, jnp.ones(4), pbar=pbar),
        lambda pbar: checkpointed_for_loop(lambda x: x, jnp.ones(4), pbar=pbar),
    ],
    ids=["scan", "for_loop", "checkpointed_scan", "checkpointed_for_loop"],
)
def test_every_loop_refuses_a_pbar_of_the_wrong_type(loop: Callable[[Any], Any]) -> None:
    with pytest.raises(sj.SpecError, match="option pbar: str 'invalid' is not a progress bar") as e:
        loop("invalid")
    assert isinstance(e.value, TypeError)
    with pytest.raises(sj.SpecError, match="option pbar: True is a bool") as e:
        loop(True)
    assert not isinstance(e.value, TypeError)


@pytest.mark.parametrize(
    "spec", [ScanSpec, ForLoopSpec, CheckpointedScanSpec, CheckpointedForLoopSpec]
)
def test_the_loops_share_one_pbar_option(spec: Any) -> None:
    assert spec(pbar=3).pbar == ProgressBar(freq=3)
    assert spec(pbar=np.int64(2)).pbar == ProgressBar(freq=2)
    assert spec().pbar is None
    field = spec.model_json_schema()["properties"]["pbar"]
    assert field["anyOf"][0]["exclusiveMinimum"] == 0 and "positive int" in field["description"]


# --- a repeated call with the same shapes traces nothing ------------------------------


def _counting(count: list[int], fn: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any) -> Any:
        count.append(1)  # a Python side effect: runs once per trace
        return fn(*args)

    return counted


@pytest.mark.parametrize("loop", ["scan", "for_loop", "while_loop"])
def test_a_repeated_loop_call_traces_nothing(loop: str) -> None:
    total = sj.State(jnp.zeros(3))
    traces: list[int] = []

    def step(x: jax.Array) -> jax.Array:
        total.value = total.value + x
        return x * 2

    body = _counting(traces, step)
    xs = jnp.ones((4, 3))
    scan_body = lambda c, x: (c, body(x))  # noqa: E731  (one function for every call)
    cond_fn, body_fn = (lambda i: i < 4), (lambda i: (body(xs[0]), i + 1)[1])
    calls: dict[str, Callable[[], Any]] = {
        "scan": lambda: scan(scan_body, 0, xs),
        "for_loop": lambda: for_loop(body, xs),
        "while_loop": lambda: while_loop(cond_fn, body_fn, 0),
    }
    call = calls[loop]
    call()
    assert traces, "the first call traces"
    traces.clear()
    call()
    call()
    assert traces == []
    np.testing.assert_allclose(total.value, jnp.full(3, 12.0))  # every call still writes


def test_a_cached_loop_keeps_no_function_alive() -> None:
    import gc
    import weakref

    total = sj.State(jnp.array(0.0))

    def step(x: jax.Array) -> jax.Array:
        total.value = total.value + x
        return x

    class Model(sj.Module):
        def step(self, x: jax.Array) -> jax.Array:
            total.value = total.value + x
            return x

    model = Model()
    for_loop(step, jnp.ones(3))
    for_loop(model.step, jnp.ones(3))
    for_loop(model.step, jnp.ones(3))  # a bound method is new at each access: still cached
    assert float(total.value) == 9.0
    dead_fn, dead_model = weakref.ref(step), weakref.ref(model)
    del step, model
    gc.collect()
    assert dead_fn() is None and dead_model() is None


def test_a_cached_loop_meets_new_states_on_a_retrace() -> None:
    states = [sj.State(jnp.zeros(2))]

    def step(x: jax.Array) -> jax.Array:
        for s in states:
            s.value = s.value + x
        return x

    for_loop(step, jnp.ones((2, 2)))
    # A new state, and a new shape: retraced (as jax.jit, a call with the same shapes
    # reuses its trace, and with it the states that trace found).
    states.append(sj.State(jnp.zeros(3)))
    for_loop(step, jnp.ones((2, 1)))
    np.testing.assert_allclose(states[0].value, [4.0, 4.0])
    np.testing.assert_allclose(states[1].value, [2.0, 2.0, 2.0])

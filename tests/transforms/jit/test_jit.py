"""statejax.jit against plain jax.jit, caching, nesting, atomicity and errors."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import statejax as sj


class Linear(sj.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        self.w = sj.ParamState(jnp.arange(n_in * n_out, dtype=jnp.float32).reshape(n_in, n_out))
        self.b = sj.ParamState(jnp.ones(n_out))
        self.calls = sj.ShortTermState(jnp.array(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        self.calls.value += 1
        return x @ self.w.value + self.b.value

    @sj.jit
    def jitted(self, x: jax.Array) -> jax.Array:
        return self(x)


def test_matches_plain_jax_jit_and_threads_writes() -> None:
    model = Linear(3, 2)
    x = jnp.arange(6.0).reshape(2, 3)
    expected = jax.jit(lambda w, b, x: x @ w + b)(model.w.value, model.b.value, x)
    step = sj.jit(lambda x: model(x))
    np.testing.assert_allclose(step(x), expected)
    np.testing.assert_allclose(step(x), expected)
    assert int(model.calls.value) == 2


def test_traces_once_per_cache_entry() -> None:
    count = sj.State(jnp.array(0))
    traces = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        count.value += 1
        return x + count.value

    for i in range(5):
        assert int(f(jnp.array(10))) == 11 + i
    # One trace in all: the discovery trace is replayed for the compiled core (it met
    # `count` outside the split), and cached calls do not run Python.
    assert len(traces) == 1
    f(jnp.ones(3))  # new argument shape: one more trace, no rediscovery
    assert len(traces) == 2


def test_static_argnums_and_argnames_and_kwargs() -> None:
    acc = sj.State(jnp.array(0.0))

    @sj.jit(static_argnums=1, static_argnames="mode")
    def f(x: jax.Array, n: int, *, mode: str = "add", scale: jax.Array | float = 1.0) -> Any:
        for _ in range(n):  # Python loop over a static int
            acc.value = acc.value + x * scale if mode == "add" else acc.value - x
        return acc.value

    assert float(f(1.0, 3)) == 3.0
    assert float(f(1.0, 2, mode="sub")) == 1.0
    assert float(f(2.0, 1, scale=jnp.array(0.5))) == 2.0


def test_factory_form_and_jit_function_form() -> None:
    s = sj.State(jnp.array(1.0))

    def g(x: jax.Array) -> jax.Array:
        s.value = s.value * x
        return s.value

    assert float(sj.jit()(g)(2.0)) == 2.0
    assert float(sj.jit(g, static_argnums=())(3.0)) == 6.0
    assert sj.transform.jit is sj.jit


def test_methods_keep_one_entry_per_instance() -> None:
    a, b = Linear(2, 1), Linear(2, 1)
    b.w.value = b.w.value * 0
    x = jnp.ones((1, 2))
    assert a.jitted(x).tolist() == [[2.0]]
    assert b.jitted(x).tolist() == [[1.0]]
    assert a.jitted(x).tolist() == [[2.0]]
    assert (int(a.calls.value), int(b.calls.value)) == (2, 1)


def test_clear_cache_retraces() -> None:
    traces = []
    s = sj.State(jnp.array(0))

    @sj.jit
    def f() -> None:
        traces.append(1)
        s.value += 1

    f()
    f.clear_cache()  # type: ignore[attr-defined]
    f()
    assert len(traces) == 2 and int(s.value) == 2  # one trace per first call


def test_nested_jit_reports_states_to_the_outer_trace() -> None:
    a = sj.State(jnp.ones(3))
    n = sj.State(jnp.array(0))

    @sj.jit
    def inner(x: jax.Array) -> jax.Array:
        n.value += 1
        return jnp.sum(a.value * x)

    @sj.jit
    def outer(x: jax.Array) -> jax.Array:
        return inner(x) + inner(2 * x)

    assert float(outer(jnp.ones(3))) == 9.0
    assert int(n.value) == 2
    a.value = a.value * 2
    assert float(outer(jnp.ones(3))) == 18.0
    assert int(n.value) == 4


def test_shape_or_dtype_change_outside_retraces() -> None:
    s = sj.State(jnp.ones(2))
    total = sj.jit(lambda: s.value.sum())
    assert float(total()) == 2.0
    s.value = jnp.ones(5)
    assert float(total()) == 5.0
    s.value = jnp.ones(5, dtype=jnp.int32) * 2
    out = total()
    assert out.dtype == jnp.int32 and int(out) == 10


def test_exception_while_tracing_changes_nothing() -> None:
    s = sj.State(jnp.array(1.0))
    t = sj.State(jnp.array(2.0))

    @sj.jit
    def bad(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        t.value = t.value * 3
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        bad(1.0)
    for state, value in ((s, 1.0), (t, 2.0)):
        assert isinstance(state.value, jax.Array)
        assert not isinstance(state.value, jax.core.Tracer)
        assert float(state.value) == value


def test_exception_at_run_time_changes_nothing() -> None:
    s = sj.State(jnp.array(1.0))

    def check(x: np.ndarray) -> np.ndarray:
        if x > 5:
            raise RuntimeError("too big")
        return x

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return io_callback(check, jax.ShapeDtypeStruct((), jnp.float32), s.value)

    assert float(f(1.0)) == 2.0
    with pytest.raises(Exception, match="too big"):
        f(10.0)
    assert float(s.value) == 2.0


def test_state_created_inside_and_kept_is_a_clear_error_later() -> None:
    holder = Linear(1, 1)

    @sj.jit
    def make(x: jax.Array) -> jax.Array:
        holder.extra = sj.State(x * 2)  # type: ignore[attr-defined]
        return holder.extra.value  # type: ignore[attr-defined,no-any-return]

    assert float(make(1.0)) == 2.0  # usable inside the transform
    with pytest.raises(sj.StateLeakError, match=r"created inside statejax.jit\(.*make\).*__init__"):
        _ = holder.extra.value  # type: ignore[attr-defined]


def test_states_passed_and_returned_are_by_reference() -> None:
    s = sj.State(jnp.array(3.0))

    @sj.jit
    def bump(state: sj.State[jax.Array]) -> sj.State[jax.Array]:
        state.value = state.value + 1
        return state

    out = bump(s)
    assert out is s
    assert float(s.value) == 4.0
    other = sj.State(jnp.array(10.0))
    assert bump(other) is other and float(other.value) == 11.0
    assert float(s.value) == 4.0


def test_donate_states_gives_same_results() -> None:
    s = sj.State(jnp.zeros(4))

    @sj.jit(donate_states=True)
    def f(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return s.value.sum()

    assert float(f(jnp.ones(4))) == 4.0
    assert float(f(jnp.ones(4))) == 8.0


def test_read_only_states_are_not_outputs() -> None:
    w = sj.ParamState(jnp.ones(3))
    f = sj.jit(lambda x: x * w.value)
    f(1.0)
    split = f.stateful.split_for()  # type: ignore[attr-defined]
    assert split.read_states == (w,) and split.write_states == ()


def test_invalid_options_are_spec_errors() -> None:
    with pytest.raises(sj.SpecError, match=r"statejax.jit: unknown option 'static_argnum'"):
        sj.jit(lambda x: x, static_argnum=1)  # type: ignore[call-overload]
    with pytest.raises(
        sj.SpecError,
        match=r"statejax.jit: option static_argnums\[0\]: .*greater than or equal to 0; it takes positions",
    ):
        sj.jit(lambda x: x, static_argnums=-1)


def test_spec_error_did_you_mean() -> None:
    with pytest.raises(sj.SpecError, match="Did you mean 'donate_states'"):
        sj.jit(lambda x: x, donate_state=True)  # type: ignore[call-overload]


def test_state_holding_a_non_array_is_named() -> None:
    class Net(sj.Module):
        def __init__(self) -> None:
            self.mode = sj.State("train")

    net = Net()
    with pytest.raises(sj.TraceError, match=r"State Net.mode \('train'\) holds a str, which JAX"):
        sj.jit(lambda: net.mode.value)()


def test_writing_a_non_array_is_named() -> None:
    s = sj.ShortTermState(jnp.zeros(2), tag="cache")

    def f() -> None:
        s.value = "oops"  # type: ignore[assignment]

    with pytest.raises(sj.TraceError, match=r"ShortTermState tagged 'cache' .* holds a str"):
        sj.jit(f)()
    assert s.value.shape == (2,)


def test_replacing_a_state_object_needs_clear_cache() -> None:
    """Documented: cached calls thread the State objects found when tracing."""
    model = Linear(1, 1)
    f = sj.jit(lambda: model.b.value * 1)
    assert f().tolist() == [1.0]
    model.b = sj.ParamState(jnp.full(1, 5.0))
    assert f().tolist() == [1.0]
    f.clear_cache()  # type: ignore[attr-defined]
    assert f().tolist() == [5.0]


# --- jax.disable_jit runs jit eagerly -------------------------------------------------


def test_jit_runs_eagerly_under_disable_jit() -> None:
    total = sj.State(jnp.array(0.0))
    seen: list[float] = []

    def python_step(x: jax.Array) -> jax.Array:
        seen.append(float(x))  # needs a concrete value
        if x > 0:
            total.value = total.value + x
        else:
            total.value = total.value - 1.0
        return total.value * 2

    def traced_step(x: jax.Array) -> jax.Array:
        total.value = jnp.where(x > 0, total.value + x, total.value - 1.0)
        return total.value * 2

    xs = [2.0, -3.0, 0.5]
    jitted = sj.jit(traced_step)
    expected = [float(jitted(jnp.array(x))) for x in xs]
    expected_total = float(total.value)
    total.value = jnp.array(0.0)
    eager = sj.jit(python_step)
    with jax.disable_jit():
        got = [float(eager(jnp.array(x))) for x in xs]
    assert got == expected and seen == xs
    assert float(total.value) == expected_total
    # A function that has run jitted runs eagerly too, and stays atomic.
    with jax.disable_jit():
        assert float(jitted(jnp.array(1.0))) == 2 * (expected_total + 1.0)

        @sj.jit
        def fails(x: jax.Array) -> None:
            total.value = total.value + x
            raise RuntimeError(f"failed at {float(x)}")

        with pytest.raises(RuntimeError, match=r"failed at 3\.0"):
            fails(jnp.array(3.0))
    assert float(total.value) == expected_total + 1.0


def test_a_python_if_on_a_traced_value_names_the_function_and_the_state() -> None:
    class Gate(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(2))
            self.opt = sj.State((jnp.zeros(()), {"mu": jnp.zeros(2)}))

        def __call__(self, x: jax.Array) -> jax.Array:
            self.w.value = self.w.value + 1.0
            if self.w.value.sum() > 0:  # a Python branch on a state's traced value
                return x
            return -x

    gate = Gate()

    def forward(x: jax.Array) -> jax.Array:
        return gate(x)

    # JAX's own error (so its documentation link holds), naming the user's function, its
    # file and line, and the state, not `<unknown>` and `write_vals[0]`.
    with pytest.raises(
        jax.errors.TracerBoolConversionError,
        match=r"(?s)tracing the function forward at .*test_jit\.py:\d+ for jit\. .*depends on "
        r"the value of the argument ParamState Gate\.w \(float32\[2\]\)\..*"
        r"statejax\.jit\(.*forward\) hands JAX the values of the states",
    ) as caught:
        sj.jit(forward)(jnp.ones(2))
    assert "<unknown>" not in str(caught.value) and "_vals[" not in str(caught.value)
    assert gate.w.value.tolist() == [1.0, 1.0]  # nothing changed

    # A module passed as an argument gives the path; a leaf of a pytree value is located.
    @sj.jit
    def step(model: Gate, x: jax.Array) -> jax.Array:
        if model.opt.value[1]["mu"].sum() > x:
            return x
        return model.w.value

    with pytest.raises(
        jax.errors.TracerBoolConversionError,
        match=r"tracing the function step at .* depends on the values of the arguments State at "
        r"path \('opt',\) \(.*\) \(at \[1\]\['mu'\] in its value\) and x\.",
    ):
        step(gate, jnp.ones(()))

    # An argument keeps the user's name for it (not args[0]).
    def branch(x: jax.Array, scale: jax.Array) -> jax.Array:
        return x if scale > 0 else -x

    with pytest.raises(jax.errors.ConcretizationTypeError, match=r"argument scale\."):
        sj.jit(branch)(jnp.ones(2), jnp.ones(()))


def _raise_in_user_code(x: jax.Array) -> jax.Array:
    raise ValueError(f"a bug in user code ({x.shape})")


def test_tracebacks_show_the_user_frames_and_no_statejax_frames() -> None:
    source = str(Path(sj.__file__).parent)
    counter = sj.State(jnp.zeros(()))

    def step(x: jax.Array) -> jax.Array:
        counter.value = counter.value + 1
        return _raise_in_user_code(x)

    assert jax.config.jax_traceback_filtering == "auto"  # type: ignore[attr-defined]
    for transform in (sj.jit, sj.vmap):
        with pytest.raises(ValueError, match="a bug in user code") as caught:
            transform(step)(jnp.ones((2, 3)))
        frames = traceback.extract_tb(caught.value.__traceback__)
        names = [frame.name for frame in frames]
        assert names[-2:] == ["step", "_raise_in_user_code"], names
        assert not [f for f in frames if f.filename.startswith(source)], frames
        assert not [f for f in frames if "/jax/" in f.filename], frames
        assert float(counter.value) == 0.0
    # JAX_TRACEBACK_FILTERING=off shows everything again.
    jax.config.update("jax_traceback_filtering", "off")
    try:
        with pytest.raises(ValueError) as caught:
            sj.jit(step)(jnp.ones(2))
    finally:
        jax.config.update("jax_traceback_filtering", "auto")
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert any(f.filename.startswith(source) for f in frames)

"""The split / pure core / merge engine as a plugin author sees it."""

from __future__ import annotations

import enum
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.extend import PureCore, Split, StatefulFunction


def counting_lift(calls: list[str]) -> Any:
    def lift(split: Split, pure: PureCore) -> Any:
        calls.append(f"lift r={len(split.read_states)} w={len(split.write_states)}")
        return jax.jit(pure)

    return lift


def test_split_grows_to_the_union_and_is_then_stable() -> None:
    a, b, c = sj.State(jnp.array(1.0)), sj.State(jnp.array(10.0)), sj.State(jnp.array(100.0))
    calls: list[str] = []

    def f() -> jax.Array:
        b.value = b.value + a.value
        return b.value

    stateful: StatefulFunction[jax.Array] = StatefulFunction(f, "t", counting_lift(calls))
    assert float(stateful()) == 11.0
    assert float(stateful()) == 12.0
    split = stateful.split_for()
    assert split.read_states == (a,) and split.write_states == (b,)
    assert calls == ["lift r=0 w=0", "lift r=1 w=1"]
    assert c not in split


def test_seed_states_are_inputs_even_if_untouched() -> None:
    w = sj.ParamState(jnp.ones(2))
    stateful: StatefulFunction[int] = StatefulFunction(
        lambda: 0, "t", lambda split, pure: pure, seed=Split([w])
    )
    stateful()
    assert stateful.split_for().read_states == (w,)
    assert pure_reads(stateful) == []


def pure_reads(stateful: StatefulFunction[Any]) -> list[object]:
    entry = stateful._entries[()]
    assert entry.pure is not None and entry.pure.record is not None
    return list(entry.pure.record.reads.values())


def test_first_eager_call_runs_the_computation_once() -> None:
    """Discovery is abstract: an eager grad's host callback fires once per call."""
    w = sj.ParamState(jnp.array(2.0))
    steps = sj.ShortTermState(jnp.array(0))
    fired: list[float] = []

    def loss(x: jax.Array) -> jax.Array:
        steps.value += 1  # a state grad was not told about: found by discovery
        jax.debug.callback(lambda v: fired.append(float(v)), w.value)
        return w.value * x

    grad = sj.grad(loss, w)
    np.testing.assert_allclose(grad(jnp.array(3.0)), 3.0)
    jax.effects_barrier()
    assert fired == [2.0]
    assert int(steps.value) == 1


def test_statejax_transform_inside_plain_jax_jit_is_refused() -> None:
    total = sj.State(jnp.array(0.0), tag="total")
    add = sj.jit(lambda x: setattr(total, "value", total.value + x))
    with pytest.raises(sj.TraceError, match=r"would store a tracer in State tagged 'total'"):
        jax.jit(lambda x: add(x))(1.0)
    assert float(total.value) == 0.0 and not isinstance(total.value, jax.core.Tracer)


def test_escaped_tracer_written_to_a_state_is_named() -> None:
    """A tracer that escaped a finished plain jax.vmap cannot be merged: TraceError naming the state."""
    s = sj.State(jnp.zeros(2), tag="escapee")
    box: list[Any] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        jax.vmap(lambda y: box.append(y) or y)(x)  # leaks the lane tracer
        s.value = box[0]
        return x

    with pytest.raises(sj.TraceError, match=r"State tagged 'escapee' .*already returned"):
        f(jnp.ones((3, 2)))
    assert not isinstance(s.value, jax.core.Tracer) and s.value.tolist() == [0.0, 0.0]


def test_returning_a_module_created_in_an_earlier_trace_is_a_clear_error() -> None:
    """The cached result tree of a function returning a module made while tracing refers to that
    module; once it is gone, the cached call says so instead of returning a stale object."""
    import gc

    class Box(sj.Module):
        def __init__(self) -> None:
            self.n = 1

    make = sj.jit(lambda: Box())
    assert isinstance(make(), Box)
    gc.collect()
    with pytest.raises(sj.TraceError, match="no longer exists"):
        make()


@pytest.mark.parametrize("transform", ["grad", "vmap"])
def test_eager_call_meeting_a_new_state_runs_once(transform: str) -> None:
    """Issue 8: a later eager call that needs a new state ran the function twice (host
    callbacks twice for grad, 8 lanes instead of 4 for a 4-lane vmap)."""
    w = sj.ParamState(jnp.array(2.0))
    extra = sj.ShortTermState(jnp.array(0.0))
    fired: list[float] = []

    def loss(x: jax.Array, use_extra: bool) -> jax.Array:
        jax.debug.callback(lambda v: fired.append(float(v)), x)  # once per lane
        if use_extra:
            extra.value = extra.value + 1.0
        return w.value * x

    if transform == "grad":
        f = sj.grad(loss, w)
        x, lanes = jnp.array(3.0), 1
    else:
        f = sj.vmap(loss, in_axes=(0, None))  # extra: broadcast, written unbatched
        x, lanes = jnp.arange(4.0), 4
    f(x, False)
    jax.effects_barrier()
    assert len(fired) == lanes
    f(x, True)  # touches `extra` for the first time
    jax.effects_barrier()
    assert len(fired) == 2 * lanes
    f(x, True)  # known signature: no abstract check, still once
    jax.effects_barrier()
    assert len(fired) == 3 * lanes
    assert float(extra.value) == 2.0


def test_a_retrace_meeting_a_new_state_aborts_and_retries_without_discovery() -> None:
    """A verified jit split retraced for a new argument shape that takes a branch writing a
    new state: the real trace is aborted (nothing compiled on the stale split), the missing
    state is noted on that pure core, and the retry, itself a real trace, verifies the
    grown split (no abstract trace in between)."""
    a, b = sj.State(jnp.array(0.0)), sj.State(jnp.array(0.0))
    traces: list[tuple[int, ...]] = []
    calls: list[str] = []

    def f(x: jax.Array) -> jax.Array:
        traces.append(x.shape)
        a.value = a.value + 1.0
        if x.shape == (2,):
            b.value = b.value + 1.0
        return x.sum()

    stateful: StatefulFunction[jax.Array] = StatefulFunction(
        f, "t", counting_lift(calls), staged=True
    )
    stateful(jnp.ones(1))
    # One trace: discovery with the seed finds `a`, and jit replays it for the split with `a`.
    assert len(traces) == 1
    stale = stateful._entries[()].pure
    assert float(stateful(jnp.ones(2))) == 2.0
    assert traces[1:] == [(2,), (2,)]  # the aborted real trace, then its retry: nothing else
    assert [found.writes for found in stale.noted] == [(b,)]
    assert calls == ["lift r=0 w=0", "lift r=0 w=1", "lift r=0 w=2"]
    assert (float(a.value), float(b.value)) == (2.0, 1.0)
    stateful(jnp.ones(2))
    assert len(traces) == 3  # cached


def test_discovery_mode_is_per_pure_core_and_thread_and_restored() -> None:
    """The pure core notes missing states in either mode; only a RUN trace aborts."""
    from statejax.registry._pure import StateSetChanged, TraceMode

    s = sj.State(jnp.array(1.0))
    pure = PureCore(lambda: s.value + 1, Split(), "t", owner=object())
    with pure.traced_as(TraceMode.DISCOVER):
        out, _ = pure([], [])
    assert float(out) == 2.0 and [found.reads for found in pure.noted] == [(s,)]
    with pytest.raises(StateSetChanged):
        pure([], [])  # RUN again outside the block
    assert len(pure.noted) == 2


def test_a_cached_call_passing_only_arrays_and_numbers_computes_no_cache_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The leanest cached path: no module or state is passed, so there is no key to make."""
    w = sj.State(jnp.ones(2))

    @sj.jit
    def step(x: jax.Array, scale: float) -> jax.Array:
        w.value = w.value + x * scale
        return w.value

    step(jnp.ones(2), 2.0)

    def keyed(*args: object) -> None:
        pytest.fail("a call passing only arrays and numbers computed a cache key")

    monkeypatch.setattr(StatefulFunction, "_key", keyed)
    for _ in range(3):
        step(jnp.ones(2), np.float32(2.0))
    np.testing.assert_allclose(w.value, [9.0, 9.0])
    with pytest.raises(pytest.fail.Exception, match="computed a cache key"):
        step(x=jnp.ones(2), scale=2.0)  # by keyword: the keyed path


def test_numbers_of_any_kind_on_the_leanest_path_compute_as_on_the_keyed_path() -> None:
    """Arguments `all_concrete` takes (bool, numpy scalars, a 0-d numpy array, int and
    float subclasses) give what the same call by keyword (the keyed path) gives."""
    total = sj.State(jnp.zeros(()))

    @sj.jit
    def add(x: Any) -> jax.Array:
        total.value = total.value + x
        return total.value

    add(1.0)

    class Flag(enum.IntEnum):
        TWO = 2

    class Half(float):
        pass

    kinds = (True, np.bool_(True), np.int64(3), np.float16(0.5), np.array(2.0), Flag.TWO, Half(0.5))
    for arg in kinds:
        before = float(total.value)
        lean = float(add(arg))
        keyed = float(add(x=arg))
        assert keyed - lean == lean - before == float(arg)
    assert float(total.value) == 1.0 + 2 * (1 + 1 + 3 + 0.5 + 2 + 2 + 0.5)
    assert isinstance(total.value, jax.Array)

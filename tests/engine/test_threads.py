"""Trace-local values: concurrent traces never share tracers through a State (issue 8, part A).

While a statejax transform traces, the tracers it gives states live in that thread's
trace, not in the shared ``State`` object, so another thread reading ``state.value``
or calling a transformed function at the same moment sees the last merged concrete
value, concurrent first compiles cannot corrupt each other, and the written values
of one call are merged together (a transformed call sees a consistent snapshot).

Every test starts its threads together on a ``threading.Barrier``, joins them with
a timeout (a deadlock fails the test instead of hanging it) and re-raises the first
exception a thread hit. Traced functions sleep a little while tracing, so traces on
different threads overlap.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj

N_THREADS = 8
JOIN_TIMEOUT = 60.0
TRACE_PAUSE = 0.003  # seconds a traced function sleeps while tracing, so traces overlap
N_MERGED = 256  # states written by one call: a long merge, so a torn one is likely to be seen


@pytest.fixture(autouse=True)
def _frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 10 microseconds, so a race shows up in a short test."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(work: Callable[[int], None], n: int = N_THREADS) -> None:
    """Run ``work(i)`` for ``i < n`` on ``n`` threads started together; re-raise any error."""
    barrier = threading.Barrier(n)
    errors: list[tuple[int, BaseException]] = []
    lock = threading.Lock()

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=JOIN_TIMEOUT)
            work(i)
        except BaseException as exc:  # reported in the main thread
            with lock:
                errors.append((i, exc))
            barrier.abort()

    threads = [
        threading.Thread(target=target, args=(i,), name=f"statejax-test-{i}", daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after {JOIN_TIMEOUT}s (a deadlock?): {hung}"
    real = [(i, e) for i, e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        i, exc = (real or errors)[0]
        raise AssertionError(f"thread {i} raised {type(exc).__name__}: {exc}") from exc


def is_tracer(value: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def assert_concrete(state: sj.State[Any], expected: np.ndarray) -> None:
    """``state`` holds (and returns) exactly ``expected`` as a concrete array, never a tracer."""
    raw = getattr(state, "_value", None)
    assert not is_tracer(raw), f"State._value holds a tracer: {raw!r}"
    value = state.value
    assert not is_tracer(value), f"state.value is a tracer: {value!r}"
    assert isinstance(value, jax.Array)
    np.testing.assert_array_equal(np.asarray(value), expected)


W0 = np.arange(4.0, dtype=np.float32)
B0 = np.ones(4, np.float32)


def slow_writer(
    k: float, w: sj.State[Any], b: sj.State[Any], out: sj.State[Any]
) -> Callable[[jax.Array], jax.Array]:
    """A fresh jitted function: reads ``w`` and ``b`` (shared), writes ``out`` (its own)."""

    def f(x: jax.Array) -> jax.Array:
        first = w.value
        time.sleep(TRACE_PAUSE)  # another thread's trace runs now
        y = x * w.value + b.value + k
        assert first is not None
        time.sleep(TRACE_PAUSE)
        out.value = out.value + y
        return jnp.sum(y)

    return sj.jit(f)


def test_concurrent_first_compiles_keep_shared_params_concrete() -> None:
    """Bug A1: concurrent first compiles store tracers in shared params and corrupt each other."""
    w, b = sj.ParamState(jnp.asarray(W0)), sj.ParamState(jnp.asarray(B0))
    for rnd in range(3):
        outs = [sj.ShortTermState(jnp.zeros(4)) for _ in range(N_THREADS)]
        ks = [float(10 * rnd + i) for i in range(N_THREADS)]
        fns = [slow_writer(ks[i], w, b, outs[i]) for i in range(N_THREADS)]
        results: list[list[float]] = [[] for _ in range(N_THREADS)]

        def work(i: int, fns: Any = fns, results: Any = results) -> None:
            x = jnp.full(4, float(i), jnp.float32)
            results[i] = [float(fns[i](x)) for _ in range(2)]

        run_threads(work)
        assert_concrete(w, W0)
        assert_concrete(b, B0)
        for i in range(N_THREADS):
            y = np.full(4, float(i), np.float32) * W0 + B0 + ks[i]
            np.testing.assert_allclose(results[i], [y.sum(), y.sum()], rtol=1e-6)
            assert_concrete(outs[i], 2 * y)


def _counter_class() -> type[sj.Module]:
    class Counter(sj.Module):
        def __init__(self, k: float) -> None:
            self.w = sj.ParamState(jnp.full(3, k, jnp.float32))
            self.count = sj.ShortTermState(jnp.array(0))

        @sj.jit
        def tick(self, x: jax.Array) -> jax.Array:
            self.count.value = self.count.value + 1
            time.sleep(TRACE_PAUSE)
            return jnp.sum(self.w.value * x)

    return Counter


@pytest.mark.parametrize("warm", [True, False], ids=["cached", "first-compile"])
@pytest.mark.parametrize("style", ["method", "function"])
def test_concurrent_calls_on_separate_models_count_exactly(style: str, warm: bool) -> None:
    """Bug A2: threads updating separate models through one jitted callable lose updates."""
    counter = _counter_class()
    models = [counter(float(i)) for i in range(N_THREADS)]

    @sj.jit
    def tick(model: Any, x: jax.Array) -> jax.Array:
        model.count.value = model.count.value + 1
        time.sleep(TRACE_PAUSE)
        return jnp.sum(model.w.value * x)

    def call(m: Any, x: jax.Array) -> jax.Array:
        return m.tick(x) if style == "method" else tick(m, x)

    x = jnp.ones(3, jnp.float32)
    if warm:
        for m in models:
            call(m, x)
    results: list[list[float]] = [[] for _ in range(N_THREADS)]

    def work(i: int) -> None:
        results[i] = [float(call(models[i], x)) for _ in range(42 - int(warm))]

    run_threads(work)
    for i, m in enumerate(models):
        assert int(m.count.value) == 42, f"model {i}: count {int(m.count.value)} != 42"
        assert set(results[i]) == {3.0 * i}
        assert_concrete(m.w, np.full(3, float(i), np.float32))


@pytest.mark.parametrize("mapping", ["vmap2", "pmap", "pmap2"])
def test_concurrent_mapped_calls_on_separate_models_count_exactly(mapping: str) -> None:
    """The mapping transforms keep every thread's writes too (pmap on this one device)."""
    counter = _counter_class()
    models = [counter(float(i)) for i in range(N_THREADS)]

    def tick(model: Any, x: jax.Array) -> jax.Array:
        model.count.value = model.count.value + 1
        time.sleep(TRACE_PAUSE)
        return jnp.sum(model.w.value * x)

    mapped = getattr(sj.transform, mapping)(tick, in_axes=(None, 0))
    x = jnp.ones((1, 3), jnp.float32)
    results: list[set[float]] = [set() for _ in range(N_THREADS)]

    def work(i: int) -> None:
        results[i] = {float(mapped(models[i], x)[0]) for _ in range(20)}

    run_threads(work)
    for i, m in enumerate(models):
        assert int(m.count.value) == 20, f"model {i}: count {int(m.count.value)} != 20"
        assert results[i] == {3.0 * i}
        assert_concrete(m.w, np.full(3, float(i), np.float32))


def test_concurrent_cached_and_first_calls_reading_shared_params() -> None:
    """Bug A3: a cached call gathers a shared param while another thread's trace holds a tracer in it."""
    w, b = sj.ParamState(jnp.asarray(W0)), sj.ParamState(jnp.asarray(B0))
    read = sj.jit(lambda x: jnp.sum(w.value * x) + jnp.sum(b.value))
    x = jnp.full(4, 2.0, jnp.float32)
    expected = float((W0 * 2.0).sum() + B0.sum())
    assert float(read(x)) == expected  # warm: the readers below only hit the cache
    outs = [sj.ShortTermState(jnp.zeros(4)) for _ in range(N_THREADS)]

    def work(i: int) -> None:
        if i % 2:  # cached calls, many of them, while the others trace
            for _ in range(60):
                got = float(read(x))
                assert got == expected, f"cached call returned {got}, not {expected}"
        else:  # three fresh functions each: first compiles reading the same params
            for r in range(3):
                slow_writer(float(r), w, b, outs[i])(x)

    run_threads(work)
    assert_concrete(w, W0)
    assert_concrete(b, B0)
    for i in range(0, N_THREADS, 2):
        y = sum(2.0 * W0 + B0 + r for r in range(3))
        np.testing.assert_allclose(np.asarray(outs[i].value), y, rtol=1e-6)


def test_reader_thread_never_sees_a_tracer_during_compiles() -> None:
    """Bug A4: ``W.value`` read on another thread during a trace returns that trace's tracer."""
    w = sj.ParamState(jnp.asarray(W0))
    b = sj.ParamState(jnp.asarray(B0))
    read_w = sj.jit(lambda: w.value * 2)  # compiled for the first time by the reader thread
    outs = [sj.ShortTermState(jnp.zeros(4)) for _ in range(N_THREADS)]
    compilers_left = [N_THREADS - 1]
    lock = threading.Lock()
    done = threading.Event()
    reads = [0]

    def work(i: int) -> None:
        if i == 0:
            deadline = time.monotonic() + JOIN_TIMEOUT / 2
            while not done.is_set() and time.monotonic() < deadline:
                value = w.value
                assert not is_tracer(value), f"reader saw a tracer in W.value: {value!r}"
                np.testing.assert_array_equal(np.asarray(value), W0)
                reads[0] += 1
                if reads[0] == 20:  # a transformed call on W from this thread, mid-compiles
                    np.testing.assert_array_equal(np.asarray(read_w()), 2 * W0)
                time.sleep(0)
            np.testing.assert_array_equal(np.asarray(read_w()), 2 * W0)
            return
        try:
            for r in range(2):
                slow_writer(float(r), w, b, outs[i])(jnp.ones(4, jnp.float32))
        finally:
            with lock:
                compilers_left[0] -= 1
                if compilers_left[0] == 0:
                    done.set()

    run_threads(work)
    assert reads[0] >= 20, "the reader thread did not overlap the compiles"
    assert_concrete(w, W0)


def test_merge_is_atomic_and_calls_see_a_consistent_snapshot() -> None:
    """Bug A5: a merge writes states one by one, so a concurrent call sees a torn update."""
    states = [sj.ShortTermState(jnp.array(0)) for _ in range(N_MERGED)]

    @sj.jit
    def bump() -> None:
        for s in states:
            s.value = s.value + 1

    @sj.jit
    def spread() -> jax.Array:
        values = jnp.stack([s.value for s in states])
        return values.max() - values.min()

    bump()
    assert int(spread()) == 0
    sys.setswitchinterval(1e-6)  # restored by the autouse fixture
    writers_left = [N_THREADS // 2]
    lock = threading.Lock()
    done = threading.Event()
    torn: list[int] = []
    checks = [0]

    def work(i: int) -> None:
        if i % 2 == 0:
            try:
                for _ in range(150):
                    bump()
            finally:
                with lock:
                    writers_left[0] -= 1
                    if writers_left[0] == 0:
                        done.set()
        else:
            deadline = time.monotonic() + JOIN_TIMEOUT / 2
            while not done.is_set() and time.monotonic() < deadline:
                gap = int(spread())
                checks[0] += 1
                if gap:
                    torn.append(gap)

    run_threads(work)
    assert checks[0] > 0
    assert not torn, f"{len(torn)} of {checks[0]} calls saw a torn merge (max-min {torn[:5]})"
    final = {int(s.value) for s in states}
    assert len(final) == 1, f"states disagree after the writers finished: {sorted(final)}"
    for s in states:
        assert not is_tracer(getattr(s, "_value", None))


class Boom(Exception):
    pass


def test_exception_in_one_thread_leaves_states_intact() -> None:
    """Bug A6: a trace failing on one thread while others trace must leave every state intact."""
    w, b = sj.ParamState(jnp.asarray(W0)), sj.ParamState(jnp.asarray(B0))
    acc = sj.ShortTermState(jnp.zeros(4))
    outs = [sj.ShortTermState(jnp.zeros(4)) for _ in range(N_THREADS)]

    def fails_at_trace(x: jax.Array) -> jax.Array:
        acc.value = acc.value + x * w.value
        time.sleep(TRACE_PAUSE)
        raise Boom("trace-time failure")

    def _raise(_: Any) -> None:
        raise Boom("run-time failure")

    def fails_at_run(x: jax.Array) -> jax.Array:
        acc.value = acc.value + x * w.value
        time.sleep(TRACE_PAUSE)
        jax.debug.callback(_raise, x)
        return jnp.sum(acc.value)

    failed: list[int] = []

    def work(i: int) -> None:
        x = jnp.ones(4, jnp.float32)
        if i < 2:
            f = sj.jit(fails_at_trace if i == 0 else fails_at_run)
            for _ in range(3):
                try:
                    f(x)
                except Exception:  # a runtime error comes wrapped by XLA
                    failed.append(i)
                else:
                    raise AssertionError(f"thread {i}: the failing call did not raise")
        else:
            for r in range(2):
                slow_writer(float(r), w, b, outs[i])(x)

    run_threads(work)
    assert sorted(set(failed)) == [0, 1]
    assert_concrete(w, W0)
    assert_concrete(b, B0)
    assert_concrete(acc, np.zeros(4, np.float32))
    for i in range(2, N_THREADS):
        np.testing.assert_allclose(np.asarray(outs[i].value), 2 * (W0 + B0) + 1.0, rtol=1e-6)


def test_threads_drawing_from_the_default_key_never_share_a_key() -> None:
    """Each draw splits the key and writes one half back as one step: 8 threads drawing at once
    outside any transform get 8 x 20 distinct numbers."""
    from statejax import random as sjr

    sjr.seed(0)
    draws: list[list[float]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def draw(out: list[float]) -> None:
        barrier.wait(timeout=30)
        for _ in range(20):
            out.append(float(sjr.uniform()))

    threads = [threading.Thread(target=draw, args=(out,)) for out in draws]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    values = [v for out in draws for v in out]
    assert len(values) == 160 and len(set(values)) == 160

"""Identity-keyed weak caches (issue 8, part B).

A ``StatefulFunction`` keeps one split per module or state it is called with, keyed
by identity (never by ``==``/``hash``), whether the module is passed positionally or
by keyword, and its cache holds nothing alive: a dropped module is garbage-collected.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._tracing import CALL_REFS, is_leaked

N_MODULES = 24
JOIN_TIMEOUT = 60.0


class Counter(sj.Module):
    def __init__(self, k: float) -> None:
        self.count = sj.ShortTermState(jnp.array(0))
        self.w = sj.ParamState(jnp.full(2, k, jnp.float32))


def make_step() -> Any:
    """A fresh jitted function (a fresh cache) that updates the module it is given."""

    @sj.jit
    def step(model: Counter) -> jax.Array:
        model.count.value = model.count.value + 1
        return jnp.sum(model.w.value)

    return step


def all_dead(refs: list[weakref.ref[Any]]) -> int:
    """How many of ``refs`` still point at a live object after a full collection."""
    for _ in range(3):
        gc.collect()
    return sum(r() is not None for r in refs)


def test_keyword_module_gets_its_own_split() -> None:
    """Bug B1: a module passed by keyword shares one cache entry (2*N states) with all others."""
    step = make_step()
    models = [Counter(float(k)) for k in range(N_MODULES)]
    for _ in range(2):
        for k, m in enumerate(models):
            assert float(step(model=m)) == 2.0 * k
    assert [int(m.count.value) for m in models] == [2] * N_MODULES
    m = models[7]
    split = step.stateful.split_for(model=m)
    assert len(split.states) == 2, f"the split for one module holds {len(split.states)} states"
    assert {id(s) for s in split.states} == {id(m.count), id(m.w)}
    assert {id(s) for s in step.stateful.split_for(m).states} == {id(m.count), id(m.w)}


def test_keyword_modules_are_not_kept_alive() -> None:
    """Bug B1: the shared keyword entry's split keeps every dropped module's states alive."""
    step = make_step()
    refs = []
    for k in range(N_MODULES // 2):
        m = Counter(float(k))
        step(model=m)
        refs.append(weakref.ref(m))
        refs.append(weakref.ref(m.count))
        del m
    assert all_dead(refs) == 0, "dropped modules (or their states) are still alive"


def test_threads_updating_their_own_model_by_keyword_count_exactly() -> None:
    """Bug B1: with one shared keyword entry, every call re-merges every model: updates are lost."""
    step = make_step()
    models = [Counter(float(k)) for k in range(8)]
    barrier = threading.Barrier(len(models))
    errors: list[BaseException] = []

    def work(m: Counter) -> None:
        try:
            barrier.wait(timeout=JOIN_TIMEOUT)
            for _ in range(42):
                step(model=m)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(m,), daemon=True) for m in models]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads hung (deadlock?)"
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)] or errors
    if real:
        raise AssertionError(f"a thread raised {type(real[0]).__name__}: {real[0]}") from real[0]
    assert [int(m.count.value) for m in models] == [42] * len(models)


class EqModule(sj.Module):
    """A module whose instances all compare equal and hash alike."""

    def __init__(self, w: float) -> None:
        self.w = sj.ParamState(jnp.full(2, w, jnp.float32))
        self.steps = sj.ShortTermState(jnp.array(0))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EqModule)

    def __hash__(self) -> int:
        return 0

    @sj.jit
    def apply(self, x: jax.Array) -> jax.Array:
        self.steps.value = self.steps.value + 1
        return x * self.w.value


@pytest.mark.parametrize("by_keyword", [False, True], ids=["positional", "keyword"])
def test_modules_that_compare_equal_do_not_share_a_split(by_keyword: bool) -> None:
    """Bug B2: the cache is keyed by ==/hash, so b.apply uses a's parameters and counters."""
    a, b = EqModule(1.0), EqModule(2.0)
    x = jnp.ones(2, jnp.float32)

    @sj.jit
    def apply(model: EqModule, x: jax.Array) -> jax.Array:
        return model.apply(x)

    call = (lambda m: apply(model=m, x=x)) if by_keyword else (lambda m: m.apply(x))
    np.testing.assert_array_equal(call(a), [1.0, 1.0])
    np.testing.assert_array_equal(call(b), [2.0, 2.0])
    np.testing.assert_array_equal(call(b), [2.0, 2.0])
    np.testing.assert_array_equal(call(a), [1.0, 1.0])
    assert int(a.steps.value) == 2
    assert int(b.steps.value) == 2


@dataclasses.dataclass
class DataModule(sj.Module):
    """A dataclass module: ``eq=True`` makes it unhashable."""

    w: sj.ParamState[jax.Array]
    steps: sj.ShortTermState[jax.Array]

    @sj.jit
    def apply(self, x: jax.Array) -> jax.Array:
        self.steps.value = self.steps.value + 1
        return x * self.w.value


def test_dataclass_module_with_a_jitted_method_works() -> None:
    """Bug B3: an unhashable (dataclass) module fails with a bare ``TypeError: unhashable type``."""
    a = DataModule(sj.ParamState(jnp.full(2, 3.0)), sj.ShortTermState(jnp.array(0)))
    b = DataModule(sj.ParamState(jnp.full(2, 5.0)), sj.ShortTermState(jnp.array(0)))
    x = jnp.ones(2, jnp.float32)
    np.testing.assert_array_equal(a.apply(x), [3.0, 3.0])
    np.testing.assert_array_equal(b.apply(x), [5.0, 5.0])
    np.testing.assert_array_equal(a.apply(x), [3.0, 3.0])
    assert (int(a.steps.value), int(b.steps.value)) == (2, 1)

    @sj.jit
    def step(model: DataModule, x: jax.Array) -> jax.Array:
        return model.apply(x) + 1

    np.testing.assert_array_equal(step(b, x), [6.0, 6.0])
    np.testing.assert_array_equal(step(model=a, x=x), [4.0, 4.0])
    assert (int(a.steps.value), int(b.steps.value)) == (3, 2)


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones((2, 2), jnp.float32))
        self.calls = sj.ShortTermState(jnp.array(0))

    @sj.jit
    def apply(self, x: jax.Array) -> jax.Array:
        self.calls.value = self.calls.value + 1
        return x @ self.w.value


def test_cache_entries_keep_no_instance_alive() -> None:
    """Bug B4: the method's cache keys hold every instance that ever called it."""
    x = jnp.ones((1, 2), jnp.float32)
    refs = []
    for _ in range(N_MODULES):
        net = Net()
        net.apply(x)
        refs.append(weakref.ref(net))
        del net
    alive = all_dead(refs)
    assert alive == 0, f"{alive} of {len(refs)} dropped instances are still alive"
    keep = Net()  # a live instance still works after the others were collected
    np.testing.assert_array_equal(keep.apply(x), [[2.0, 2.0]])


def test_function_cache_keeps_no_positional_module_alive() -> None:
    """Bug B4: a module passed positionally to a jitted function is kept alive by the cache."""
    step = make_step()
    refs = []
    for k in range(N_MODULES // 2):
        m = Counter(float(k))
        step(m)
        refs.append(weakref.ref(m))
        del m
    assert all_dead(refs) == 0


# A cached call that passes only arrays takes the leanest path (no cache key): the trees
# a retrace builds on it, and those of jit's ahead-of-time methods, hold no module.


def test_a_retrace_of_a_call_passing_only_arrays_keeps_no_module_alive() -> None:
    """A plain `jax.jit` given a module, retraced because the array argument's shape
    changed: its cache key must hold the module weakly, as on a counted call."""
    box = [Counter(1.0)]
    inner = jax.jit(lambda m, x: jnp.sum(m.w.value) * x)

    @sj.jit
    def outer(x: jax.Array) -> jax.Array:
        return inner(box[0], x)

    outer(jnp.ones(2))
    outer(jnp.ones(2))
    np.testing.assert_allclose(outer(jnp.ones(3)), [2.0, 2.0, 2.0])  # retraced
    ref = weakref.ref(box[0])
    box.clear()
    assert all_dead([ref]) == 0


def test_a_retrace_of_a_call_passing_only_arrays_keeps_no_module_in_a_state_alive() -> None:
    """A state whose value holds a module: `jax.jit` flattens the state values (by
    reference) before the retrace starts, and its cache key must hold the module weakly."""
    holder = sj.State({"m": Counter(1.0)})

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        return jnp.sum(holder.value["m"].w.value) * x

    step(jnp.ones(2))
    holder.value = {"m": Counter(2.0)}
    np.testing.assert_allclose(step(jnp.ones(2)), [4.0, 4.0])  # retraced: a new module
    ref = weakref.ref(holder.value["m"])
    holder.value = {"m": Counter(3.0)}
    np.testing.assert_allclose(step(jnp.ones(2)), [6.0, 6.0])
    assert all_dead([ref]) == 0
    assert (CALL_REFS.depth, CALL_REFS.made) == (0, [])


def test_a_failed_retrace_of_a_call_passing_only_arrays_changes_nothing() -> None:
    m = Counter(1.0)

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        m.count.value = m.count.value + 1
        if x.shape[0] == 3:
            raise ValueError("three")
        return x * jnp.sum(m.w.value)

    step(jnp.ones(2))
    step(jnp.ones(2))
    with pytest.raises(ValueError, match="three"):
        step(jnp.ones(3))
    assert int(m.count.value) == 2
    assert not is_leaked(m.count)
    assert (CALL_REFS.depth, CALL_REFS.made) == (0, [])
    np.testing.assert_allclose(step(jnp.ones(2)), [2.0, 2.0])
    assert int(m.count.value) == 3


def test_an_interrupted_retrace_of_a_call_passing_only_arrays_changes_nothing() -> None:
    """A BaseException (as KeyboardInterrupt) out of a retrace changes no state and
    leaves the call depth at 0."""
    m = Counter(1.0)

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        m.count.value = m.count.value + 1
        if x.shape[0] == 3:
            raise KeyboardInterrupt
        return x

    step(jnp.ones(2))
    step(jnp.ones(2))
    with pytest.raises(KeyboardInterrupt):
        step(jnp.ones(3))
    assert int(m.count.value) == 2 and not is_leaked(m.count)
    assert (CALL_REFS.depth, CALL_REFS.made) == (0, [])


def test_a_call_from_a_callback_during_a_retrace_leaves_the_depth_at_0() -> None:
    """A jitted call made by a `jax.debug.callback` (on CPU, in the calling thread)
    while a call passing only arrays runs its retraced core."""
    inner_total = sj.State(jnp.zeros(()))
    outer_total = sj.State(jnp.zeros(()))

    @sj.jit
    def inner(x: jax.Array) -> jax.Array:
        inner_total.value = inner_total.value + x
        return x

    def callback(x: jax.Array) -> None:
        inner(jnp.asarray(x))

    @sj.jit
    def outer(x: jax.Array) -> jax.Array:
        outer_total.value = outer_total.value + jnp.sum(x)
        jax.debug.callback(callback, jnp.sum(x))
        return x

    for n in (2, 2, 3, 3):
        outer(jnp.ones(n))
    jax.effects_barrier()
    assert float(inner_total.value) == float(outer_total.value) == 10.0
    assert (CALL_REFS.depth, CALL_REFS.made) == (0, [])


@pytest.mark.parametrize("method", ["lower", "trace", "eval_shape"])
def test_ahead_of_time_methods_keep_no_module_alive(method: str) -> None:
    """jit's `lower`, `trace` and `eval_shape` trace as one counted call: the trees they
    make (here a plain `jax.jit`'s cache key) hold the module weakly once they return."""
    box = [Counter(1.0)]
    inner = jax.jit(lambda m, x: jnp.sum(m.w.value) * x)

    @sj.jit
    def outer(x: jax.Array) -> jax.Array:
        return inner(box[0], x)

    outer(jnp.ones(2))  # verified: the method's trace below is its only one
    getattr(outer, method)(jnp.ones(5))
    assert (CALL_REFS.depth, CALL_REFS.made) == (0, [])
    ref = weakref.ref(box[0])
    box.clear()
    assert all_dead([ref]) == 0


def test_a_module_argument_of_an_ahead_of_time_method_is_not_kept_alive() -> None:
    step = make_step()
    model = Counter(2.0)
    step.lower(model)
    step(Counter(3.0))
    ref = weakref.ref(model)
    del model
    assert all_dead([ref]) == 0
    assert (CALL_REFS.depth, CALL_REFS.made) == (0, [])


def test_calls_after_an_ahead_of_time_method_weaken_the_refs_they_make() -> None:
    """`lower` of a new shape leaves the call depth at 0: a later cached call passing a
    module, and a later retrace, weaken the refs they make."""
    model = Counter(1.0)
    step = make_step()
    step(model)  # the next call is cached: the compiled core, counted
    total = sj.State(jnp.zeros(()))

    @sj.jit
    def add(x: jax.Array) -> jax.Array:
        total.value = total.value + jnp.sum(x)
        return x

    add(jnp.ones(2))
    add.lower(jnp.ones(5))  # a new shape: traced by `lower` alone
    step(model)
    assert (CALL_REFS.depth, CALL_REFS.made) == (0, [])
    box = [Counter(2.0)]
    inner = jax.jit(lambda m, x: jnp.sum(m.w.value) * x)

    @sj.jit
    def outer(x: jax.Array) -> jax.Array:
        return inner(box[0], x)

    np.testing.assert_allclose(outer(jnp.ones(2)), [4.0, 4.0])
    ref = weakref.ref(box[0])
    box.clear()
    assert all_dead([ref]) == 0
    assert int(model.count.value) == 2


class AlwaysEqualState(sj.State[Any]):
    """A State subclass whose instances all compare equal (as a value-comparing one might)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AlwaysEqualState)

    def __hash__(self) -> int:
        return 0


def make_inc() -> Any:
    @sj.jit
    def inc(s: sj.State[Any]) -> jax.Array:
        s.value = s.value + 1
        return s.value

    return inc


@pytest.mark.parametrize("by_keyword", [False, True], ids=["positional", "keyword"])
def test_state_argument_keys_the_cache_by_identity(by_keyword: bool) -> None:
    """Bug B5: a State argument keys the cache by ==/hash (positional) or not at all (keyword)."""
    inc = make_inc()
    a, b = AlwaysEqualState(jnp.array(0)), AlwaysEqualState(jnp.array(100))

    def call(s: sj.State[Any]) -> int:
        return int(inc(s=s) if by_keyword else inc(s))

    assert call(a) == 1
    assert call(b) == 101
    assert call(b) == 102
    assert call(a) == 2
    assert (int(a.value), int(b.value)) == (2, 102)
    split = inc.stateful.split_for(s=b) if by_keyword else inc.stateful.split_for(b)
    assert [id(s) for s in split.states] == [id(b)]


@pytest.mark.parametrize("by_keyword", [False, True], ids=["positional", "keyword"])
def test_state_argument_is_not_kept_alive(by_keyword: bool) -> None:
    """Bug B5: the cache holds every State it was called with."""
    inc = make_inc()
    refs = []
    for k in range(N_MODULES // 2):
        s = sj.State(jnp.array(k))
        assert int(inc(s=s) if by_keyword else inc(s)) == k + 1
        refs.append(weakref.ref(s))
        del s
    assert all_dead(refs) == 0


def test_jitted_method_called_with_self_by_keyword() -> None:
    """Bug B1: ``Cls.method(self=m, ...)`` passes the module by keyword and must work like
    ``m.method(...)`` (today the wrapper's own ``self`` parameter collides with it)."""
    a, b = Net(), Net()
    x = jnp.ones((1, 2), jnp.float32)
    np.testing.assert_array_equal(Net.apply(self=a, x=x), [[2.0, 2.0]])
    np.testing.assert_array_equal(Net.apply(self=b, x=x), [[2.0, 2.0]])
    np.testing.assert_array_equal(Net.apply(self=a, x=x), [[2.0, 2.0]])
    assert (int(a.calls.value), int(b.calls.value)) == (2, 1)


# --- found in review of the rewrite -------------------------------------------------------


def test_a_split_found_stale_by_discovery_is_never_verified() -> None:
    """Two threads' first calls: jax.jit caches the lenient discovery trace of the first split,
    so a second thread holding that split got the cached trace, noted nothing, verified it and
    ran code with the write dropped. Replayed in one thread: discovering the stale split again
    must move on to the grown one."""
    from statejax.extend import StatefulFunction

    c = sj.State(jnp.array(0.0))

    def step(x: jax.Array) -> jax.Array:
        c.value = c.value + x
        return x

    stateful: StatefulFunction[Any] = StatefulFunction(
        step, "t", lambda split, pure: jax.jit(pure), staged=True
    )
    x = jnp.array(1.0)
    entry = stateful._new_entry((), (x,), {})
    first = entry.version
    assert first is not None
    grown = stateful._discover(entry, first, (x,), {})
    again = stateful._discover(entry, first, (x,), {})  # a thread that still held `first`
    assert again is grown and not first.verified
    assert [id(s) for s in again.split.write_states] == [id(c)]


def test_concurrent_first_calls_merge_every_write() -> None:
    """The same race with real threads: each thread writes its own state through one jitted
    function (the state is picked by a static argument), so no write may be lost."""
    states = [sj.State(jnp.array(0.0)) for _ in range(4)]

    @sj.jit(static_argnums=0)
    def step(i: int, x: jax.Array) -> jax.Array:
        time.sleep(0.05)  # a slow trace, so the threads trace at once
        states[i].value = states[i].value + x
        return x

    barrier = threading.Barrier(4)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        step(i, jnp.array(1.0))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [float(s.value) for s in states] == [1.0] * 4


def test_entry_keyed_by_a_state_and_a_module_is_released_with_the_module() -> None:
    """A state passed with a module held the entry after the module died (compiled code and the
    module's states included)."""

    class M(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(3))

    s = sj.State(jnp.array(0.0))
    f = sj.jit(lambda s, m, x: (m.w.value * x).sum() + s.value)
    refs = []
    for _ in range(5):
        m = M()
        f(s, m, 1.0)
        refs.append(weakref.ref(m.w))
        del m
    assert all_dead(refs) == 0
    assert s._cache_entries == []


def test_entry_is_freed_without_the_cycle_collector() -> None:
    """Nothing an entry owns points back at it, so a dropped module's states (device buffers)
    and compiled code go as soon as the module does, not at the next full collection."""

    class M(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(3))

        @sj.jit
        def apply(self, x: jax.Array) -> jax.Array:
            self.w.value = self.w.value * 2
            return (self.w.value * x).sum()

    gc.collect()
    gc.disable()
    try:
        m = M()
        m.apply(jnp.array(1.0))
        w = weakref.ref(m.w)
        del m
        assert w() is None
    finally:
        gc.enable()


def test_ensemble_states_are_not_kept_by_the_trace_record() -> None:
    """vmap's record of the states it created kept the last ensemble alive."""

    class M(sj.Module):
        def __init__(self, key: jax.Array) -> None:
            self.w = sj.ParamState(jax.random.normal(key, (16,)))

    ensemble = sj.vmap(M)(jax.random.split(jax.random.PRNGKey(0), 4))
    w = weakref.ref(ensemble.w)
    del ensemble
    gc.collect()
    assert w() is None


def test_eager_grad_with_a_changing_number_checks_its_states_once() -> None:
    """A Python float that changes every call (a learning rate) is not part of the call's
    signature (as with jax.jit): the abstract check runs on the first call only."""
    w = sj.ParamState(jnp.array(2.0))
    traced: list[int] = []

    def loss(x: jax.Array, scale: float) -> jax.Array:
        traced.append(1)
        return w.value * x * scale

    g = sj.grad(loss, w)
    for k in range(5):
        np.testing.assert_allclose(g(jnp.array(3.0), 0.1 * (k + 1)), 3.0 * 0.1 * (k + 1))
    assert len(traced) == 2 + 4  # discovery and run, then one run per call

"""Issue 8, section 4: negative vmap axes per call, an atomic map and its errors,
``jax.disable_jit``, invalid random keys, and option validation gaps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax import random
from statejax.random import RandomState
from statejax.transforms.abstract import make_jaxpr
from statejax.transforms.vmap import map as sj_map

# --- 1. a negative in_states axis counts from the current rank ----------------------------


@pytest.mark.parametrize("jitted", [False, True])
def test_negative_in_states_axis_follows_the_current_rank(jitted: bool) -> None:
    table = sj.State(jnp.arange(12.0).reshape(3, 4))
    f: Callable[[], jax.Array] = sj.vmap(lambda: table.value.sum(), in_states={-1: table})
    if jitted:
        f = sj.jit(f)
    np.testing.assert_allclose(f(), jax.vmap(jnp.sum, in_axes=-1)(table.value))
    for shape in [(2, 3, 4), (2, 3, 4), (5, 4), (3, 4)]:  # rank changes, then back
        table.value = jnp.arange(float(np.prod(shape))).reshape(shape)
        out = f()
        assert out.shape == (shape[-1],)
        np.testing.assert_allclose(out, jax.vmap(jnp.sum, in_axes=-1)(table.value))


@pytest.mark.parametrize("jitted", [False, True])
def test_negative_axis_write_back_follows_the_current_rank(jitted: bool) -> None:
    table = sj.State(jnp.arange(12.0).reshape(3, 4))

    def bump() -> jax.Array:
        table.value = table.value * 2.0 + 1.0
        return table.value.sum()

    f: Callable[[], jax.Array] = sj.vmap(bump, in_states={-1: table})
    if jitted:
        f = sj.jit(f)
    f()
    table.value = start = jnp.arange(24.0).reshape(2, 3, 4)
    out = f()
    np.testing.assert_allclose(table.value, start * 2.0 + 1.0)  # same axis, not transposed
    np.testing.assert_allclose(out, jax.vmap(lambda t: (t * 2.0 + 1.0).sum(), -1)(start))


# --- 2. map is atomic ---------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 2])
def test_map_changes_no_state_when_an_element_fails(batch_size: int | None) -> None:
    total = sj.State(jnp.array(0.0))
    other = sj.ParamState(jnp.ones(2))

    def f(x: jax.Array) -> jax.Array:
        total.value = total.value + 1.0  # the same for every element: fine in a batch
        other.value = other.value * 2.0
        # Only the last, partial batch (and, unbatched, no element) runs outside a trace.
        if batch_size is None or not isinstance(total.value, jax.core.Tracer):
            raise RuntimeError("element failed")
        return x

    with pytest.raises(RuntimeError, match="element failed"):
        sj_map(f, jnp.arange(5.0), batch_size=batch_size)
    assert float(total.value) == 0.0
    np.testing.assert_array_equal(other.value, jnp.ones(2))


def test_map_still_carries_writes_when_it_succeeds() -> None:
    total = sj.State(jnp.array(0.0))

    def f(x: jax.Array) -> jax.Array:
        total.value = total.value + 1.0
        return x * 2

    np.testing.assert_allclose(sj_map(f, jnp.arange(5.0), batch_size=2), jnp.arange(5.0) * 2)
    assert float(total.value) == 3.0  # two full batches and the remainder
    np.testing.assert_allclose(sj_map(f, jnp.arange(5.0)), jnp.arange(5.0) * 2)
    assert float(total.value) == 8.0


# --- 3. map's errors name map and give a fix that applies to it ----------------------------


def test_batched_map_write_error_names_map_and_its_fixes() -> None:
    last = sj.State(jnp.array(0.0))

    def f(x: jax.Array) -> jax.Array:
        last.value = x
        return x

    with pytest.raises(
        sj.BatchAxisError,
        match=r"^statejax\.map\(.*f\): .*State .*broadcasts states within a batch.*"
        r"batch_size=None.*statejax\.vmap\(.*f, out_states=",
    ) as info:
        sj_map(f, jnp.arange(4.0), batch_size=2)
    assert "statejax.vmap(f):" not in str(info.value)
    assert "in_states" not in str(info.value)
    assert float(last.value) == 0.0


def test_map_without_inputs_names_map() -> None:
    def f() -> int:
        return 0

    with pytest.raises(TypeError, match=r"statejax\.map\(.*f\): .*at least one array.*length="):
        sj_map(f)


# --- 4. jax.disable_jit runs the transforms eagerly ---------------------------------------


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


def test_map_under_disable_jit_is_eager() -> None:
    seen: list[float] = []
    count = sj.State(jnp.array(0))

    def f(x: jax.Array) -> jax.Array:
        seen.append(float(x))
        count.value = count.value + 1
        return x + 1

    with jax.disable_jit():
        out = sj_map(f, jnp.arange(3.0))
    np.testing.assert_allclose(out, [1.0, 2.0, 3.0])
    assert seen == [0.0, 1.0, 2.0] and int(count.value) == 3  # each element ran once


# --- 5. invalid random keys are rejected where they are given ----------------------------


@pytest.mark.parametrize(
    ("bad", "error", "shown"),
    [
        (np.array([1, 2, 3], np.uint32), TypeError, r"uint32\[3\]"),
        (np.array([5.0, 9.0]), TypeError, r"float64\[2\]"),
        (jnp.zeros(3, jnp.int32), TypeError, r"int32\[3\]"),
        (np.array(2.5), TypeError, r"float64\[\]"),
        (1.5, TypeError, "1.5"),
        ("7", TypeError, "'7'"),
        ([1, 2], TypeError, r"\[1, 2\]"),
    ],
)
def test_invalid_seeds_and_keys_are_rejected(bad: Any, error: type[Exception], shown: str) -> None:
    accepted = r"an int seed, a raw key jax\.random\.PRNGKey\(seed\).*jax\.random\.key\(seed\)"
    before = random.get_key_data()
    with pytest.raises(error, match=rf"{shown}.*{accepted}"):
        random.seed(bad)
    np.testing.assert_array_equal(random.get_key_data(), before)
    with pytest.raises(error, match=rf"{shown}.*{accepted}"):
        RandomState(bad)
    rng = RandomState(1)
    with pytest.raises(error, match=shown):
        rng.seed(bad)


def test_valid_seeds_and_keys_still_work() -> None:
    for good in (3, np.int64(3), jnp.array(3), np.uint32(3), jax.random.PRNGKey(3)):
        random.seed(good)
        np.testing.assert_array_equal(random.get_key_data(), jax.random.PRNGKey(3))
    random.seed(jax.random.key(3))
    assert jnp.issubdtype(random.default_state().value.dtype, jax.dtypes.prng_key)
    random.seed(None)  # a fresh random key, as BrainState's seed(None)
    random.seed()
    assert random.default_state().value.shape == ()  # one typed key, as BrainState's
    stacked = RandomState(jax.random.split(jax.random.PRNGKey(0), 3))  # one key per lane
    assert stacked.value.shape == (3,)
    random.seed(0)


# --- 6. option validation -----------------------------------------------------------------


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


@pytest.mark.parametrize("bad", [False, True, 2**70, 2.0, "1"])
def test_positions_reject_bools_floats_and_huge_ints(bad: Any) -> None:
    f = lambda x: x  # noqa: E731
    for make, option in [
        (lambda: sj.jit(f, static_argnums=bad), "jit: option static_argnums"),
        (lambda: sj.jit(f, static_argnums=(0, bad)), "jit: option static_argnums"),
        (lambda: sj.checkpoint(f, static_argnums=bad), "checkpoint: option static_argnums"),
        (lambda: make_jaxpr(f, static_argnums=bad), "make_jaxpr: option static_argnums"),
    ]:
        if isinstance(bad, str) and "make_jaxpr" not in option:
            continue  # a string is a static argument name there, not a position
        with pytest.raises(sj.SpecError, match=rf"statejax\.{option}"):
            make()


@pytest.mark.parametrize("bad", [False, True, 2**40, 2**70, 3.0])
def test_sizes_reject_bools_floats_and_huge_ints(bad: Any) -> None:
    xs = jnp.arange(3.0)
    step = lambda c, x: (c, x)  # noqa: E731
    cases = [
        (lambda: sj.scan(step, 0, xs, length=bad), "scan: option length"),
        (lambda: sj.for_loop(lambda x: x, xs, length=bad), "for_loop: option length"),
        (lambda: sj.vmap(lambda x: x, axis_size=bad), "vmap: option axis_size"),
        (lambda: sj_map(lambda x: x, xs, batch_size=bad), "map: option batch_size"),
    ]
    if not isinstance(bad, bool):  # unroll=True/False: unroll all steps or none (lax.scan)
        cases.append((lambda: sj.scan(step, 0, xs, unroll=bad), "scan: option unroll"))
    cases.append((lambda: sj.scan(step, 0, xs, pbar=bad), "scan: option pbar"))
    for make, option in cases:
        with pytest.raises(sj.SpecError, match=rf"statejax\.{option}"):
            make()


def test_valid_numbers_still_pass() -> None:
    xs = jnp.arange(4.0)
    assert sj.scan(lambda c, x: (c + x, x), 0.0, xs, length=np.int64(4), pbar=np.int64(2))[1].shape
    assert sj.jit(lambda x, n: x * n, static_argnums=np.int64(1))(xs, 2).shape == (4,)
    np.testing.assert_allclose(sj_map(lambda x: x + 1, xs, batch_size=np.int64(3)), xs + 1)
    assert sj.grad(_loss, argnums=(0,))(xs)[0].shape == (4,)

"""A jitted function's first call traces the user's function once.

The discovery trace of a `statejax.jit` function is `jax.jit(pure).trace(...)`: a state
met outside the split becomes a new input of that trace (the function sees a tracer,
never the stored value), and the recording is replayed when JAX traces the grown
split's pure core. These tests count the traces of the user's function with a Python
side effect and check every value against the same computation in plain Python/NumPy:
one trace on a first call, values right after several calls, nothing baked into the
compiled code, the fallbacks (two traces, still right), errors, leaks, threads and the
ahead-of-time methods.
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import SingleDeviceSharding

import statejax as sj
from statejax.extend import CALLS_PURE_AS_IS, PureCore, Split, StatefulFunction

JOIN_TIMEOUT = 60.0


def concrete(value: Any) -> bool:
    """Whether no leaf of `value` is a tracer."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


class Cell(sj.Module):
    """A parameter `w` (read only), a hidden state `h` (read and written), a counter `n`."""

    def __init__(self, scale: float) -> None:
        self.w = sj.ParamState(jnp.array([1.0, -2.0]) * scale)
        self.h = sj.HiddenState(jnp.zeros(2))
        self.n = sj.ShortTermState(jnp.array(0))


# --- 1. one trace on the first call, and right values after three calls ----------------


def test_closed_over_states_trace_once() -> None:
    acc = sj.State(jnp.ones(3))
    n = sj.State(jnp.array(0))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        n.value += 1
        acc.value = acc.value * x + 1.0
        return acc.value.sum()

    expected = np.ones(3)
    for _ in range(3):
        expected = expected * 2.0 + 1.0
        np.testing.assert_allclose(f(jnp.full(3, 2.0)), expected.sum())
    np.testing.assert_allclose(acc.value, expected)
    assert int(n.value) == 3
    assert len(traces) == 1


def test_module_argument_one_trace_per_instance() -> None:
    traces: list[str] = []

    @sj.jit
    def step(cell: Cell, x: jax.Array) -> jax.Array:
        traces.append("step")
        cell.h.value = 0.5 * cell.h.value + cell.w.value * x
        cell.n.value += 1
        return cell.h.value.sum()

    a, b = Cell(1.0), Cell(3.0)
    x = jnp.array([1.0, 2.0])
    h = np.zeros(2)
    for _ in range(3):
        h = 0.5 * h + np.array([1.0, -2.0]) * np.array([1.0, 2.0])
        np.testing.assert_allclose(step(a, x), h.sum())
    np.testing.assert_allclose(a.h.value, h)
    assert len(traces) == 1
    np.testing.assert_allclose(step(b, x), (np.array([3.0, -6.0]) * np.array([1.0, 2.0])).sum())
    assert len(traces) == 2  # the second instance: its own entry, traced once
    assert len(step.stateful._entries) == 2  # type: ignore[attr-defined]
    assert (int(a.n.value), int(b.n.value)) == (3, 1)
    np.testing.assert_allclose(a.h.value, h)  # the second instance's call left `a` alone
    assert isinstance(a.w, sj.ParamState) and isinstance(a.h, sj.HiddenState)


def test_static_argnums_and_argnames_trace_once_per_value() -> None:
    acc = sj.State(jnp.array(0.0))
    traces: list[tuple[int, str]] = []

    @sj.jit(static_argnums=1, static_argnames="mode")
    def f(x: jax.Array, n: int, mode: str = "add") -> jax.Array:
        traces.append((n, mode))
        for _ in range(n):
            acc.value = acc.value + x if mode == "add" else acc.value - x
        return acc.value

    expected = 0.0
    for _ in range(3):
        expected += 2.0
        assert float(f(1.0, 2)) == expected  # positional static, keyword default
    for _ in range(3):
        expected -= 3.0
        assert float(f(1.0, 3, mode="sub")) == expected  # keyword static
    assert traces == [(2, "add"), (3, "sub")]


def test_keyword_arguments_trace_once() -> None:
    s = sj.State(jnp.array(1.0))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array, *, scale: jax.Array, shift: float = 0.0) -> jax.Array:
        traces.append(1)
        s.value = s.value * scale + shift
        return s.value + x

    expected = 1.0
    for i in range(3):
        expected = expected * 2.0 + i
        assert float(f(jnp.array(1.0), scale=jnp.array(2.0), shift=float(i))) == expected + 1.0
    assert float(s.value) == expected
    assert len(traces) == 1


def test_python_scalar_state_values_keep_their_weak_type() -> None:
    s = sj.State(0.0)
    k = sj.State(1)
    traces: list[int] = []

    @sj.jit
    def f(x: float) -> jax.Array:
        traces.append(1)
        s.value = s.value + x
        k.value = k.value * 2
        return s.value * k.value

    results = [float(f(1.5)) for _ in range(3)]
    assert results == [1.5 * 2, 3.0 * 4, 4.5 * 8]
    assert float(s.value) == 4.5 and int(k.value) == 8
    assert len(traces) == 1  # the written values stay weakly typed: no retrace
    # The written values have the types jax.jit gives the same computation.
    plain = jax.jit(lambda s, k, x: (s + x, k * 2))(0.0, 1, 1.5)
    for state, like in zip((s, k), plain, strict=True):
        assert (state.value.dtype, state.value.weak_type) == (like.dtype, like.weak_type)
        assert state.value.weak_type


def test_python_scalar_state_made_strong_by_a_write_retraces_once() -> None:
    s = sj.State(0.0)
    traces: list[Any] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        s.value = s.value + x  # a float32 argument: the written value is strongly typed
        return s.value

    x = jnp.array(1.5, jnp.float32)
    assert float(f(x)) == 1.5
    assert len(traces) == 1
    assert not s.value.weak_type
    assert [float(f(x)) for _ in range(2)] == [3.0, 4.5]
    assert len(traces) == 2  # its type changed once, as an argument's would for jax.jit


def test_weak_typed_read_only_state_stays_weak_in_the_computation() -> None:
    s = sj.State(2.0)  # weakly typed: x (float16) * s stays float16 in plain JAX
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        return x * s.value

    x = jnp.ones(2, jnp.float16)
    for _ in range(3):
        out = f(x)
        assert out.dtype == jax.jit(lambda x, v: x * v)(x, 2.0).dtype == jnp.float16
    np.testing.assert_allclose(out, [2.0, 2.0])
    assert len(traces) == 1


def test_pytree_state_values_trace_once() -> None:
    tree = sj.State({"a": jnp.ones(2), "b": (jnp.array(1.0), jnp.zeros(3))})
    pair = sj.State((jnp.array(1), jnp.array(2)))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        v = tree.value
        tree.value = {"a": v["a"] + x, "b": (v["b"][0] * 2, v["b"][1] + v["b"][0])}
        i, j = pair.value
        pair.value = (j, i + j)
        return tree.value["a"].sum() + i

    a, b0, b1, i, j = np.ones(2), 1.0, np.zeros(3), 1, 2
    for _ in range(3):
        a, b0, b1 = a + 0.5, b0 * 2, b1 + b0
        out_i = i
        i, j = j, i + j
        np.testing.assert_allclose(f(jnp.array(0.5)), a.sum() + out_i)
    np.testing.assert_allclose(tree.value["a"], a)
    np.testing.assert_allclose(tree.value["b"][0], b0)
    np.testing.assert_allclose(tree.value["b"][1], b1)
    assert (int(pair.value[0]), int(pair.value[1])) == (i, j)
    assert isinstance(tree.value, dict) and isinstance(tree.value["b"], tuple)
    assert len(traces) == 1


def test_integer_states_trace_once() -> None:
    count = sj.State(jnp.array(0, jnp.int32))
    table = sj.State(jnp.arange(4, dtype=jnp.int32))
    traces: list[int] = []

    @sj.jit
    def f() -> jax.Array:
        traces.append(1)
        count.value += 1
        table.value = table.value * 2 + count.value
        return table.value[count.value]

    expected = np.arange(4)
    for c in range(1, 4):
        expected = expected * 2 + c
        assert int(f()) == expected[c]
    np.testing.assert_array_equal(table.value, expected)
    assert int(count.value) == 3 and count.value.dtype == jnp.int32
    assert len(traces) == 1


def test_read_only_write_only_and_read_written_states() -> None:
    w = sj.State(jnp.array([1.0, 2.0]))  # read only
    out = sj.State(jnp.zeros(2))  # written only, never read
    h = sj.State(jnp.array([0.5, 0.5]))  # read, then written
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> None:
        traces.append(1)
        out.value = w.value * x
        h.value = h.value + w.value

    for i in range(3):
        f(jnp.array(float(i)))
        np.testing.assert_allclose(out.value, np.array([1.0, 2.0]) * i)
    np.testing.assert_allclose(h.value, [3.5, 6.5])
    np.testing.assert_allclose(w.value, [1.0, 2.0])
    assert len(traces) == 1
    split = f.stateful._entries[()].split  # type: ignore[attr-defined]
    assert split.is_read_only(w)
    assert not split.is_read_only(out) and not split.is_read_only(h)


def test_write_only_state_with_a_new_shape_is_taken_as_written() -> None:
    out = sj.State(jnp.zeros(2))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> None:
        traces.append(1)
        out.value = jnp.concatenate([x, x])  # another shape than the stored value's

    f(jnp.full(3, 0.0))
    assert len(traces) == 1
    for i in range(1, 4):
        f(jnp.full(3, float(i)))
        np.testing.assert_allclose(out.value, np.full(6, float(i)))
    # The written value is the next call's (unused) input: its new shape traces once more.
    assert len(traces) == 2


# --- 2. the new states are tracers on the first call, not constants --------------------


def test_python_branch_on_a_new_state_raises_concretization_error() -> None:
    s = sj.State(jnp.array(1.0))
    n = sj.State(jnp.array(0))

    @sj.jit
    def f() -> jax.Array:
        n.value += 1
        if s.value > 0:
            return s.value
        return -s.value

    with pytest.raises(jax.errors.ConcretizationTypeError):
        f()
    assert int(n.value) == 0 and float(s.value) == 1.0
    assert concrete(n.value) and concrete(s.value)


def test_python_branch_on_a_new_state_shape_works() -> None:
    s = sj.State(jnp.ones(3))
    traces: list[int] = []

    @sj.jit
    def f() -> jax.Array:
        traces.append(1)
        if s.value.shape[0] > 2:
            s.value = s.value * 2
        return s.value.sum()

    assert [float(f()) for _ in range(3)] == [6.0, 12.0, 24.0]
    assert len(traces) == 1
    s.value = jnp.ones(2)
    assert float(f()) == 2.0  # the other branch, taken on the retrace
    assert len(traces) == 2


# --- 3. a state's value changed between calls is seen (nothing baked) -------------------


def test_changed_value_of_a_closed_over_state_is_seen() -> None:
    s = sj.State(jnp.array(2.0))
    traces: list[int] = []
    f = sj.jit(lambda x: traces.append(1) or s.value * x)
    assert float(f(3.0)) == 6.0
    s.value = jnp.array(5.0)
    assert float(f(3.0)) == 15.0
    assert len(traces) == 1


def test_state_first_read_in_a_state_trace_stack_block_is_an_input() -> None:
    s = sj.State(jnp.array(2.0))
    traces: list[int] = []
    seen: list[Any] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        with sj.StateTraceStack() as stack:
            y = s.value * x
        seen.append(stack.get_read_states())
        return y

    assert float(f(3.0)) == 6.0
    s.value = jnp.array(5.0)
    assert float(f(3.0)) == 15.0  # before: the stored 2.0 was compiled in
    assert len(traces) == 1
    assert len(seen[0]) == 1 and seen[0][0] is s
    assert float(s.value) == 5.0


def test_state_first_read_in_nested_state_trace_stack_blocks_is_an_input() -> None:
    s = sj.State(jnp.array(2.0))
    traces: list[int] = []
    seen: list[Any] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        with sj.StateTraceStack() as outer:
            with sj.StateTraceStack() as inner:
                y = s.value * x
        seen.extend([outer.get_read_states(), inner.get_read_states()])
        return y

    assert float(f(3.0)) == 6.0
    s.value = jnp.array(5.0)
    assert float(f(3.0)) == 15.0  # the inner block read through the outer one
    assert len(traces) == 1
    assert [[r is s for r in reads] for reads in seen] == [[True], [True]]


def test_state_written_in_a_state_trace_stack_block_inside_jit() -> None:
    s = sj.State(jnp.array(1.0))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        with sj.StateTraceStack():
            s.value = s.value + x
        return s.value

    assert [float(f(1.0)) for _ in range(3)] == [2.0, 3.0, 4.0]
    s.value = jnp.array(10.0)
    assert float(f(1.0)) == 11.0
    assert len(traces) == 1


def _nested_readers() -> dict[str, Any]:
    """Functions reading `s` only inside a transform nested in the outer jit."""

    def nested_jit(s: sj.State[Any], x: jax.Array) -> jax.Array:
        return sj.jit(lambda y: s.value * y)(x)

    def nested_vmap(s: sj.State[Any], x: jax.Array) -> jax.Array:
        return sj.vmap(lambda y: s.value * y)(jnp.stack([x, 2 * x])).sum() / 3

    def nested_grad(s: sj.State[Any], x: jax.Array) -> jax.Array:
        return sj.grad(lambda y: s.value * y * y / 2)(x) / x * x

    def cond_branch(s: sj.State[Any], x: jax.Array) -> jax.Array:
        return jax.lax.cond(x > 0, lambda: s.value * x, lambda: -s.value * x)

    def scan_body(s: sj.State[Any], x: jax.Array) -> jax.Array:
        def body(c: jax.Array, _: None) -> tuple[jax.Array, None]:
            return c + s.value * x / 2, None

        return jax.lax.scan(body, jnp.zeros_like(x), None, length=2)[0]

    return {
        "jit": nested_jit,
        "vmap": nested_vmap,
        "grad": nested_grad,
        "cond": cond_branch,
        "scan": scan_body,
    }


@pytest.mark.parametrize("where", sorted(_nested_readers()))
def test_state_first_read_inside_a_nested_transform_is_not_baked(where: str) -> None:
    s = sj.State(jnp.array(2.0))
    read = _nested_readers()[where]
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        return read(s, x)

    x = jnp.array(3.0)
    np.testing.assert_allclose(f(x), 6.0, rtol=1e-6)
    s.value = jnp.array(5.0)
    np.testing.assert_allclose(f(x), 15.0, rtol=1e-6)
    assert len(traces) == 1
    assert float(s.value) == 5.0


def test_new_states_of_statejax_control_flow_inside_the_first_call() -> None:
    s = sj.State(jnp.array(1.0))
    n = sj.State(jnp.array(0))
    acc = sj.State(jnp.zeros(2))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        y = sj.cond(x > 0, lambda: s.value * 2, lambda: s.value * 3)

        def body(c: jax.Array, xi: jax.Array) -> tuple[jax.Array, None]:
            n.value += 1
            acc.value = acc.value + xi
            return c + xi * s.value, None

        c, _ = sj.scan(body, jnp.array(0.0), jnp.arange(2.0) + x)

        def count(i: jax.Array) -> jax.Array:
            n.value += 1
            return i + 1

        return y + c + sj.while_loop(lambda i: i < 3, count, 0)

    assert float(f(1.0)) == 2.0 + (1.0 + 2.0) + 3
    s.value = jnp.array(10.0)
    assert float(f(1.0)) == 20.0 + (10.0 + 20.0) + 3
    assert int(n.value) == 2 * (2 + 3)
    np.testing.assert_allclose(acc.value, [6.0, 6.0])
    assert len(traces) == 1


def test_default_random_key_is_a_new_input_of_the_first_call() -> None:
    traces: list[int] = []

    @sj.jit
    def draw() -> jax.Array:
        traces.append(1)
        return sj.random.rand(3)

    sj.random.seed(7)
    draws = [np.asarray(draw()) for _ in range(3)]
    sj.random.seed(7)
    again = sj.jit(lambda: sj.random.rand(3))
    np.testing.assert_array_equal(again(), draws[0])  # the key was an input, not baked
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])
    assert len(traces) == 1


# --- 4. a first call nested in another transform ---------------------------------------


def test_first_call_inside_grad_of_an_outer_function() -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    n = sj.State(jnp.array(0))
    traces: list[int] = []

    @sj.jit
    def inner(x: jax.Array) -> jax.Array:
        traces.append(1)
        n.value += 1
        return jnp.sum(w.value * x**2)

    def loss(x: jax.Array) -> jax.Array:
        return 3.0 * inner(x)

    x = jnp.array([1.0, -3.0])
    np.testing.assert_allclose(sj.grad(loss)(x), 6.0 * np.array([1.0, 2.0]) * np.array([1.0, -3.0]))
    grads = sj.grad(loss, grad_states=w)(x)
    np.testing.assert_allclose(jax.tree.leaves(grads)[0], 3.0 * np.array([1.0, 9.0]))
    assert int(n.value) == 2 and concrete(n.value)
    assert len(traces) == 1  # traced inside the first grad, reused by the second
    np.testing.assert_allclose(inner(x), 1.0 + 18.0)
    assert int(n.value) == 3
    assert len(traces) == 1


def test_first_call_inside_grad_with_respect_to_the_state_it_reads() -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))  # inside the grad, its value is a tracer
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        return jnp.sum(w.value**2 * x)

    x = jnp.array([1.0, 3.0])
    grads = sj.grad(f, grad_states=w)(x)
    np.testing.assert_allclose(jax.tree.leaves(grads)[0], 2 * np.array([1.0, 2.0]) * [1.0, 3.0])
    assert concrete(w.value)
    np.testing.assert_allclose(f(x), 1.0 + 12.0)
    assert len(traces) == 1


def test_first_call_inside_vmap_of_an_outer_function() -> None:
    w = sj.ParamState(jnp.array(2.0))
    total = sj.State(jnp.array(0.0))
    traces: list[int] = []

    @sj.jit
    def inner(x: jax.Array) -> jax.Array:
        traces.append(1)
        total.value = total.value + 1.0
        return w.value * x + 1.0

    xs = jnp.arange(4.0)
    np.testing.assert_allclose(sj.vmap(lambda x: inner(x) * 2)(xs), (2.0 * np.arange(4.0) + 1) * 2)
    assert float(total.value) == 1.0 and concrete(total.value)
    w.value = jnp.array(-1.0)
    np.testing.assert_allclose(sj.vmap(inner)(xs), -np.arange(4.0) + 1)
    assert float(total.value) == 2.0
    assert len(traces) == 1  # traced inside the first vmap; `w`'s new value was an input


def test_jit_first_called_inside_another_jits_first_call() -> None:
    a = sj.State(jnp.ones(2))
    n = sj.State(jnp.array(0))
    traces: list[str] = []

    @sj.jit
    def inner(x: jax.Array) -> jax.Array:
        traces.append("inner")
        n.value += 1
        a.value = a.value + x
        return a.value.sum()

    @sj.jit
    def outer(x: jax.Array) -> jax.Array:
        traces.append("outer")
        return inner(x) + inner(2 * x)

    a_np = np.ones(2)
    for _ in range(3):
        first = (a_np + 1).sum()
        a_np = a_np + 3
        np.testing.assert_allclose(outer(jnp.ones(2)), first + a_np.sum())
    np.testing.assert_allclose(a.value, a_np)
    assert int(n.value) == 6
    # Each traced once: the outer trace's two calls of `inner` share JAX's trace of it,
    # and the outer trace is replayed, not run again.
    assert traces == ["outer", "inner"]
    np.testing.assert_allclose(inner(jnp.zeros(2)), a_np.sum())  # a top-level call
    assert int(n.value) == 7 and concrete(a.value)


# --- 5. fallbacks: two traces allowed, values right ---------------------------------------


def test_function_creating_a_state_falls_back_and_stays_right() -> None:
    acc = sj.State(jnp.array(0.0))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        local = sj.State(x * 2)
        local.value = local.value + 1
        acc.value = acc.value + local.value
        return local.value

    for i in range(3):
        assert float(f(jnp.array(float(i)))) == 2 * i + 1
    assert float(acc.value) == 1 + 3 + 5
    assert len(traces) <= 2


def test_donate_argnums_traces_once_and_stays_right() -> None:
    """jit's donating wrapper checks the donated arguments, then calls `jax.jit` of the
    pure core: its discovery trace is recorded and replayed as a plain jit's."""
    s = sj.State(jnp.array(1.0, jnp.float32))  # strongly typed, as the written value
    traces: list[int] = []

    @sj.jit(donate_argnums=0)
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        s.value = s.value + x.sum()
        return x * s.value

    expected = 1.0
    for _ in range(3):
        expected += 2.0
        np.testing.assert_allclose(f(jnp.ones(2)), np.full(2, expected))
    assert float(s.value) == expected
    assert len(traces) == 1


def test_state_shardings_falls_back_and_stays_right() -> None:
    sharding = SingleDeviceSharding(jax.devices()[0])
    w = sj.ParamState(jax.device_put(jnp.array([1.0, 2.0]), sharding))
    h = sj.HiddenState(jnp.zeros(2))
    traces: list[int] = []

    @sj.jit(state_shardings={sj.ParamState: sharding})
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        h.value = h.value + w.value * x
        return h.value.sum()

    for i in range(1, 4):
        np.testing.assert_allclose(f(jnp.array(1.0)), 3.0 * i)
    np.testing.assert_allclose(h.value, [3.0, 6.0])
    assert w.value.sharding == sharding
    assert 1 <= len(traces) <= 2


def test_third_party_jit_lift_wrapping_the_pure_core_discovers_classically() -> None:
    s = sj.State(jnp.array(1.0))
    n = sj.State(jnp.array(0))
    traces: list[int] = []

    def fn(x: jax.Array) -> jax.Array:
        traces.append(1)
        n.value += 1
        s.value = s.value * x
        return s.value

    def lift(split: Split, pure: PureCore) -> Any:
        return jax.jit(lambda r, w, *a: pure(r, w, *a))

    stateful: StatefulFunction[jax.Array] = StatefulFunction(fn, "third", lift, staged=True)
    assert [float(stateful(jnp.array(2.0))) for _ in range(3)] == [2.0, 4.0, 8.0]
    assert int(n.value) == 3 and float(s.value) == 8.0
    assert len(traces) == 2  # a discovery trace, then the compiled one: nothing replayed
    assert stateful._entries[()].pure.replay is None


# --- 6. errors ---------------------------------------------------------------------------


def test_error_on_the_first_call_leaves_states_unchanged() -> None:
    s = sj.State(jnp.array(1.0))
    n = sj.State(jnp.array(0))
    fail = [True]

    class Boom(Exception):
        pass

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        n.value += 1
        s.value = s.value + x
        if fail[0]:
            raise Boom("user error")
        return s.value

    with pytest.raises(Boom, match="user error"):
        f(1.0)
    assert float(s.value) == 1.0 and int(n.value) == 0
    assert concrete(s.value) and concrete(n.value)
    fail[0] = False
    assert float(f(1.0)) == 2.0 and int(n.value) == 1


def test_state_holding_a_string_raises_trace_error_naming_it() -> None:
    class Tagged(sj.Module):
        def __init__(self) -> None:
            self.label = sj.State("not an array")
            self.n = sj.State(jnp.array(0))

    m = Tagged()

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        m.n.value += 1
        return x if m.label.value else -x

    with pytest.raises(sj.TraceError, match=r"Tagged\.label.*holds a str"):
        f(1.0)
    assert m.label.value == "not an array"
    assert int(m.n.value) == 0 and concrete(m.n.value)


def test_new_state_whose_shape_changes_between_calls_retraces() -> None:
    s = sj.State(jnp.ones(2))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        s.value = s.value * x
        return s.value.sum()

    assert float(f(2.0)) == 4.0
    s.value = jnp.ones(5)
    assert float(f(2.0)) == 10.0
    assert float(f(2.0)) == 20.0
    np.testing.assert_allclose(s.value, np.full(5, 4.0))
    assert len(traces) == 2
    s.value = jnp.ones(2)
    assert float(f(3.0)) == 6.0  # the first shape's compiled code
    assert len(traces) == 2


# --- 7. no leaked tracer; the recording is dropped once replayed -----------------------


def test_first_call_with_new_states_leaks_no_tracer() -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    h = sj.HiddenState(jnp.zeros(2))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        h.value = h.value + w.value * x
        return h.value.sum()

    with jax.checking_leaks():
        np.testing.assert_allclose(f(jnp.array(2.0)), 6.0)
        np.testing.assert_allclose(f(jnp.array(1.0)), 9.0)
    assert len(traces) == 1
    assert concrete(h.value) and concrete(w.value)


def test_recording_is_dropped_after_its_replay() -> None:
    s = sj.State(jnp.array(1.0))

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return s.value

    f(1.0)
    entry = f.stateful._entries[()]  # type: ignore[attr-defined]
    assert entry.split.states  # the split grew by `s`
    assert entry.pure.replay is None


# --- 8. threads ---------------------------------------------------------------------------


def test_concurrent_first_calls_of_one_fresh_function() -> None:
    """Four threads make the first call of one fresh function at once, each adding 1.

    docs/threads.md: calls writing the same state at once are "last writer wins", so the
    stored count is the result of the call that merged last (1 to 4), never a tracer;
    the same calls made one after another count exactly, without tracing again.
    """
    n_threads = 4
    count = sj.State(jnp.array(0))
    traces: list[int] = []

    @sj.jit
    def f() -> jax.Array:
        traces.append(1)
        count.value = count.value + 1
        return count.value

    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            barrier.wait(timeout=JOIN_TIMEOUT)
            out = int(f())
            with lock:
                results.append(out)
        except BaseException as exc:  # reported in the main thread
            with lock:
                errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert concrete(count.value)
    assert len(results) == n_threads and all(1 <= r <= n_threads for r in results)
    assert int(count.value) in results  # the stored value is one call's whole result
    assert 1 <= len(traces) <= n_threads
    assert f.stateful._entries[()].pure.replay is None  # type: ignore[attr-defined]
    warm = len(traces)
    count.value = jnp.array(0)
    for _ in range(n_threads):
        f()
    assert int(count.value) == n_threads
    assert len(traces) == warm


# --- 9. ahead of time: lower, trace, eval_shape before any call ---------------------------


@pytest.mark.parametrize("method", ["lower", "trace", "eval_shape"])
def test_ahead_of_time_methods_before_the_first_call(method: str) -> None:
    s = sj.State(jnp.ones(2))
    n = sj.State(jnp.array(0))
    traces: list[int] = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        n.value += 1
        s.value = s.value * x
        return s.value.sum()

    x = jnp.array(2.0)
    staged = getattr(f, method)(x)
    if method == "eval_shape":
        assert staged.shape == () and staged.dtype == jnp.float32
    elif method == "lower":
        assert "stablehlo" in staged.as_text() or "func" in staged.as_text()
    else:
        assert len(staged.jaxpr.in_avals) >= 3  # s, n and x are inputs
    np.testing.assert_allclose(s.value, np.ones(2))
    assert int(n.value) == 0 and concrete(s.value) and concrete(n.value)
    assert len(traces) == 1
    assert [float(f(x)) for _ in range(3)] == [4.0, 8.0, 16.0]
    assert int(n.value) == 3
    assert len(traces) == 1


# --- 10. JAX features inside the first call ------------------------------------------------


def _doubling_primitive() -> Any:
    """A `jax.experimental.hijax` primitive: `x * 2`, lowered to plain JAX by the trace."""
    from jax.experimental.hijax import HiPrimitive

    class Double(HiPrimitive):
        def abstract_eval(self, x: Any) -> tuple[Any, set[Any]]:
            return x, set()

        def to_lojax(self, x: Any) -> Any:
            return x * 2

        def jvp(self, primals: Any, tangents: Any) -> Any:
            return self.bind(*primals), self.bind(*tangents)

    return Double("statejax_test_double")


def test_high_level_primitive_on_the_first_call_with_a_new_state() -> None:
    """A recorded jaxpr holding a hijax primitive is not pasted (the trace would not know
    to lower it): the first call traces the grown split again, and compiles."""
    double = _doubling_primitive()
    s = sj.State(jnp.float32(3.0))

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        s.value = double.bind(s.value) + x
        return s.value

    assert float(jax.jit(lambda v: double.bind(v) + 1.0)(jnp.float32(3.0))) == 7.0
    assert float(f(1.0)) == 7.0
    assert float(f(1.0)) == 15.0
    assert float(s.value) == 15.0 and concrete(s.value)


def test_recording_is_replayed_only_by_the_thread_that_made_it() -> None:
    """Another thread tracing the grown split before the recording thread does, in other
    JAX settings (`jax.enable_x64`), traces its own call: it is not handed the jaxpr
    recorded with 32-bit types (which JAX's cache would then keep for its settings)."""
    recorder: dict[str, int] = {}
    grown, other_done = threading.Event(), threading.Event()

    @jax.tree_util.register_pytree_node_class
    class Box:
        """An argument whose flattening, on the recording thread, waits for the other
        thread once the grown split holds the recording (between `_grow` and its trace)."""

        def __init__(self, x: Any) -> None:
            self.x = x

        def tree_flatten(self) -> tuple[tuple[Any], None]:
            if threading.get_ident() == recorder.get("thread") and not grown.is_set():
                if any(e.version.pure.replay is not None for e in f.stateful._entries.values()):  # type: ignore[attr-defined]
                    grown.set()
                    other_done.wait(JOIN_TIMEOUT)
            return (self.x,), None

        @classmethod
        def tree_unflatten(cls, aux: None, children: tuple[Any]) -> Box:
            return cls(*children)

    s = sj.State(jnp.ones(3, jnp.float32))
    traces: list[int] = []

    @sj.jit
    def f(b: Box) -> jax.Array:
        traces.append(threading.get_ident())
        return (s.value + jnp.arange(3.0)) * b.x

    results: dict[str, jax.Array] = {}

    def recording_thread() -> None:
        recorder["thread"] = threading.get_ident()
        results["x32"] = f(Box(jnp.int32(2)))

    def other_thread() -> None:
        try:
            grown.wait(JOIN_TIMEOUT)
            with jax.enable_x64(True):
                results["x64"] = f(Box(jnp.int32(2)))
        finally:
            other_done.set()

    threads = [threading.Thread(target=recording_thread), threading.Thread(target=other_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert grown.is_set()
    assert results["x32"].dtype == jnp.float32
    assert results["x64"].dtype == jnp.float64  # as a fresh trace under x64 gives
    np.testing.assert_allclose(results["x64"], [2.0, 4.0, 6.0])
    # The recording thread traced once (its discovery, replayed for its call), the
    # other thread once (its own call): the recording is this thread's alone.
    assert sorted(traces) == sorted([recorder["thread"], threads[1].ident])


def test_a_draw_on_the_first_call_splits_the_key_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The discovery trace gives the key a new input; the draw's commit accepts it as the
    key it read, instead of drawing again (which split the key twice per trace)."""
    splits: list[int] = []
    real_split = jax.random.split

    def counting_split(*args: Any, **kwargs: Any) -> jax.Array:
        splits.append(1)
        return real_split(*args, **kwargs)

    rs = sj.random.RandomState(0)
    f = sj.jit(lambda x: rs.normal(size=(2,)) + x)
    monkeypatch.setattr(jax.random, "split", counting_split)
    first = f(1.0)
    assert len(splits) == 1
    monkeypatch.undo()
    assert not np.allclose(f(1.0), first)  # the key advanced


def test_a_wrapper_marked_as_is_that_changes_values_is_not_replayed() -> None:
    """The recorded jaxpr is replayed only if its inputs and outputs are the pure core's
    own (checked variable by variable): a lift that doubles the new values, though marked
    `CALLS_PURE_AS_IS`, is traced again, and doubles once per call."""
    s = sj.State(jnp.zeros(2))

    def fn(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return x

    def lift(split: Split, pure: PureCore) -> Any:
        def doubling(r: Any, w: Any, *args: Any) -> Any:
            out, new = pure(r, w, *args)
            return out, [v * 2 for v in new]

        setattr(doubling, CALLS_PURE_AS_IS, pure)
        return jax.jit(doubling)

    f: StatefulFunction[jax.Array] = StatefulFunction(fn, "doubling", lift, staged=True)
    f(jnp.ones(2))
    assert s.value.tolist() == [2.0, 2.0]
    assert f._entries[()].pure.replay is None
    f(jnp.ones(2))
    assert s.value.tolist() == [6.0, 6.0]

"""States: values, reprs, the trace record, leak and tracer guards."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.extend import StateTrace, current_trace, describe_state, is_leaked


def test_value_roundtrip_and_pytree_values() -> None:
    s = sj.State({"a": jnp.ones(2), "b": (jnp.zeros(()),)})
    assert s.value["a"].shape == (2,)
    s.value = {"a": jnp.zeros(2), "b": (jnp.ones(()),)}
    assert float(s.value["b"][0]) == 1.0


def test_subclasses_and_tags() -> None:
    for cls in (sj.ParamState, sj.ShortTermState, sj.LongTermState, sj.HiddenState, sj.BatchState):
        s = cls(jnp.ones(3), tag="t")
        assert isinstance(s, sj.State)
        assert s.tag == {"t"}


def test_repr_is_readable() -> None:
    assert repr(sj.ParamState(jnp.zeros((3, 2)))) == "ParamState(value=float32[3,2])"
    assert repr(sj.State(jnp.array(2), tag="n")) == "State(value=int32[]=2, tag={'n'})"


def test_trace_records_reads_writes_and_restores() -> None:
    a, b = sj.State(jnp.array(1.0)), sj.State(jnp.array(2.0))
    with StateTrace("test", known=[a]) as trace:
        assert current_trace() is trace
        _ = a.value
        b.value = jnp.array(5.0)
    assert current_trace() is None
    assert list(trace.reads.values()) == [a]
    assert list(trace.writes.values()) == [b]
    assert list(trace.unknown.values()) == [b]
    assert float(b.value) == 2.0  # restored on exit


def test_trace_restores_on_exception() -> None:
    a = sj.State(jnp.array(1.0))
    with pytest.raises(RuntimeError), StateTrace("test"):
        a.value = jnp.array(9.0)
        raise RuntimeError
    assert float(a.value) == 1.0


def test_writing_a_tracer_outside_statejax_is_an_error() -> None:
    s = sj.State(jnp.array(0.0))

    def f(x: jax.Array) -> jax.Array:
        s.value = x
        return x

    with pytest.raises(
        sj.TraceError, match=r"tracer was written to State \(float32\[\]=0.0\) outside any statejax"
    ):
        jax.jit(f)(1.0)
    assert float(s.value) == 0.0


def test_a_state_created_from_a_tracer_lives_in_that_plain_jax_trace() -> None:
    """Issue 14: as in BrainState and NNX, a state made inside jax.jit holds its tracers there
    (reads and writes work inside); used after the jit returned, it is a StateLeakError."""
    made: list[sj.State[Any]] = []

    def f(x: jax.Array) -> jax.Array:
        s = sj.State(x)
        s.value = s.value * 2  # a traced write into a state of this trace
        made.append(s)
        return s.value + 1

    assert float(jax.jit(f)(1.0)) == 3.0
    with pytest.raises(sj.StateLeakError, match=r"created inside a plain JAX transform \(jax.jit"):
        _ = made[0].value
    assert is_leaked(made[0])


def test_state_created_in_trace_is_leaked_afterwards() -> None:
    with StateTrace("statejax.jit(f)"):
        s = sj.State(jnp.ones(2))
        assert s.value.shape == (2,)
    assert is_leaked(s)
    with pytest.raises(sj.StateLeakError, match=r"created inside statejax.jit\(f\)"):
        _ = s.value


def test_describe_state_names_module_attribute() -> None:
    class Linear(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.zeros((3, 2)))

    assert describe_state(Linear().w) == "ParamState Linear.w (float32[3,2])"
    assert describe_state(sj.State(jnp.ones(1), tag="x")) == "State tagged 'x' (float32[1]=1.0)"


def test_states_pass_through_pytrees_by_reference() -> None:
    s = sj.State(jnp.ones(2))
    assert jax.tree.leaves([s, 1]) == [1]
    out = jax.tree.map(lambda x: x, {"s": s})
    assert out["s"] is s


def test_repr_of_typed_key_state() -> None:
    assert repr(sj.State(jax.random.key(0))) == "State(value=key<fry>[])"


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones((2, 2)))


def test_a_state_used_as_an_array_says_to_read_value() -> None:
    net = Net()
    x = jnp.ones(2)
    cases: list[tuple[Any, str]] = [
        (lambda: x @ net.w, r"`ArrayImpl @ state`.*`x @ state\.value`"),
        (lambda: net.w @ x, r"`state @ ArrayImpl`.*`state\.value @ x`"),
        (lambda: net.w + 1, r"`state \+ int`.*`state\.value \+ x`"),
        (lambda: 2.0 * net.w, r"`float \* state`"),
        (lambda: -net.w, r"`-state`.*`-state\.value`"),
        (lambda: abs(net.w), r"`abs\(state\)`"),
        (lambda: net.w < 1, r"`state < int`"),
        (lambda: net.w[0], r"indexed \(`state\[0\]`\).*`state\.value\[\.\.\.\]`"),
        (lambda: np.ones(2) * net.w, r"`ndarray \* state`"),  # NumPy defers to the State
    ]
    for use, detail in cases:
        with pytest.raises(sj.StateOperandError, match=r"ParamState Net\.w \(float32\[2,2\]\)"):
            use()
        with pytest.raises(TypeError, match=detail):  # BrainState's (Python's) TypeError
            use()
    # Under a transform the message names it, and the call changes nothing.
    with pytest.raises(
        sj.StateOperandError, match=r"^statejax\.jit\(.*matmul\): ParamState Net\.w .*\.value"
    ):

        @sj.jit
        def matmul(x: jax.Array) -> jax.Array:
            net.w.value = net.w.value * 2
            return x @ net.w  # type: ignore[operator]

        matmul(x)
    assert not isinstance(net.w.value, jax.core.Tracer)
    assert net.w.value.tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_states_still_compare_and_hash_by_identity() -> None:
    a, b = sj.State(jnp.zeros(2)), sj.State(jnp.zeros(2))
    assert a == a and a != b and not (a == b)
    assert len({a, b, a}) == 2
    assert a in [b, a]

"""The split / pure core / merge engine as a plugin author sees it."""

from __future__ import annotations

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

"""cond, switch and ifelse against lax.cond / lax.switch on the equivalent pure carry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import statejax as sj
from statejax._transforms.conditionals import cond, ifelse, switch
from statejax._transforms.stateful import StatefulFunction
from statejax.extend import StateTrace


class Stats(sj.Module):
    def __init__(self) -> None:
        self.scale = sj.ParamState(jnp.array(3.0))
        self.pos = sj.ShortTermState(jnp.array(0))
        self.neg = sj.ShortTermState(jnp.array(0))

    def up(self, x: jax.Array) -> jax.Array:
        self.pos.value += 1
        return x * self.scale.value

    def down(self, x: jax.Array) -> jax.Array:
        self.neg.value += 1
        return -x


def pure_cond(pred: Any, pos: Any, neg: Any, x: Any) -> tuple[Any, Any, Any]:
    return lax.cond(  # type: ignore[no-any-return]
        pred, lambda p, n, x: (x * 3.0, p + 1, n), lambda p, n, x: (-x, p, n + 1), pos, neg, x
    )


@pytest.mark.parametrize("pred", [True, False])
def test_cond_matches_lax_cond_and_keeps_unwritten_states(pred: bool) -> None:
    stats = Stats()
    out = sj.jit(lambda p, x: cond(p, stats.up, stats.down, x))(pred, jnp.array(2.0))
    ref, pos, neg = pure_cond(pred, 0, 0, 2.0)
    np.testing.assert_allclose(out, ref)
    assert (int(stats.pos.value), int(stats.neg.value)) == (int(pos), int(neg))
    assert float(stats.scale.value) == 3.0


@pytest.mark.parametrize("pred", [True, False])
def test_a_state_written_in_one_branch_and_read_in_the_other(pred: bool) -> None:
    s = sj.State(jnp.array(5.0))

    def write(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return s.value

    def read(x: jax.Array) -> jax.Array:
        return s.value * x

    out = sj.jit(lambda p, x: cond(p, write, read, x))(pred, jnp.array(2.0))
    ref_out, ref_s = lax.cond(pred, lambda s, x: (s + x, s + x), lambda s, x: (s * x, s), 5.0, 2.0)
    assert (float(out), float(s.value)) == (float(ref_out), float(ref_s))
    sf = StatefulFunction(lambda p, x: cond(p, write, read, x))
    reads, writes = sf.get_read_states(pred, 2.0), sf.get_write_states(pred, 2.0)
    assert reads == () and writes == (s,)


def test_every_branch_is_traced_and_the_union_of_writes_is_carried() -> None:
    stats = Stats()
    traced = []

    def up(x: jax.Array) -> jax.Array:
        traced.append("up")
        return stats.up(x)

    def down(x: jax.Array) -> jax.Array:
        traced.append("down")
        return stats.down(x)

    sf = StatefulFunction(lambda p, x: cond(p, up, down, x))
    jaxpr = sf.get_jaxpr(True, 1.0)
    reads, writes = sf.get_read_states(True, 1.0), sf.get_write_states(True, 1.0)
    assert {"up", "down"} <= set(traced)
    assert reads == (stats.scale,)
    assert {id(s) for s in writes} == {id(stats.pos), id(stats.neg)}
    # the read state goes in as an operand only; the output and both written states come out
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond"]
    assert len(eqn.outvars) == 3
    assert jaxpr.jaxpr.invars[2] in eqn.invars  # scale: after p and x, read states first
    assert int(stats.pos.value) == 0  # make_jaxpr changed nothing


def test_switch_matches_lax_switch_and_clamps() -> None:
    acc = sj.State(jnp.zeros(3))
    reads = sj.State(jnp.array(10.0))

    def branch(i: int) -> Any:
        def f(x: jax.Array) -> jax.Array:
            acc.value = acc.value.at[i].add(x)
            return x + i * reads.value

        return f

    run = sj.jit(lambda k, x: switch(k, [branch(0), branch(1), branch(2)], x))
    outs = [float(run(k, jnp.array(1.0))) for k in (0, 2, 5, -1)]

    def pure(k: int, a: Any, x: Any) -> Any:
        return lax.switch(
            k, [lambda a, x, i=i: (x + i * 10.0, a.at[i].add(x)) for i in range(3)], a, x
        )

    a = jnp.zeros(3)
    refs = []
    for k in (0, 2, 5, -1):
        y, a = pure(k, a, 1.0)
        refs.append(float(y))
    assert outs == refs
    np.testing.assert_allclose(acc.value, a)


def test_ifelse_runs_the_first_true_condition() -> None:
    hits = sj.State(jnp.zeros(4, jnp.int32))

    def mark(i: int) -> Any:
        def f(x: jax.Array) -> jax.Array:
            hits.value = hits.value.at[i].add(1)
            return x * i

        return f

    branches = [mark(0), mark(1), mark(2), mark(3)]

    @sj.jit
    def classify(a: jax.Array) -> jax.Array:
        return ifelse([a > 10, a > 5, a > 2, a > 0], branches, a, check_cond=False)

    got = [int(classify(jnp.array(v))) for v in (11, 7, 3, 1, -4)]
    # 11 satisfies all conditions: the first one wins; -4 satisfies none: the last branch
    assert got == [0, 7, 6, 3, -12]
    assert hits.value.tolist() == [1, 1, 1, 2]

    # one branch more than conditions: an explicit else
    assert int(ifelse([False, False], [lambda: 1, lambda: 2, lambda: 3])) == 3
    assert int(ifelse([False, True], [lambda: 1, lambda: 2, lambda: 3])) == 2


def test_ifelse_check_cond_refuses_overlapping_conditions_and_keeps_states() -> None:
    hits = sj.State(jnp.array(0))

    def hit() -> jax.Array:
        hits.value += 1
        return jnp.array(1)

    branches = [hit, lambda: jnp.array(2)]
    message = r"statejax\.ifelse: 2 of the 2 conditions are true; with check_cond=True exactly one"
    with pytest.raises(ValueError, match=message):  # concrete: at the call
        ifelse([True, True], branches)

    @sj.jit
    def pick(a: jax.Array) -> jax.Array:
        return ifelse([a > 0, a > 1], branches)

    assert int(pick(jnp.array(0.5))) == 1 and int(hits.value) == 1
    with pytest.raises(jax.errors.JaxRuntimeError, match="2 of the 2 conditions are true"):
        pick(jnp.array(3.0))  # traced: checked inside the compiled function
    with pytest.raises(jax.errors.JaxRuntimeError, match="0 of the 2 conditions are true"):
        pick(jnp.array(-1.0))
    assert int(hits.value) == 1  # a failed call writes no state
    # with an else branch, no true condition is fine; two are not
    assert int(ifelse([False, False], [lambda: 1, lambda: 2, lambda: 3])) == 3
    with pytest.raises(ValueError, match="at most one must be true"):
        ifelse([True, True], [lambda: 1, lambda: 2, lambda: 3])
    # under vmap, a bad lane fails the call
    vpick = sj.vmap(lambda a: ifelse([a > 0, a > 1], [lambda: 1, lambda: 2]))
    assert vpick(jnp.array([0.5, 0.7])).tolist() == [1, 1]
    with pytest.raises(jax.errors.JaxRuntimeError, match="conditions are true"):
        sj.jit(vpick)(jnp.array([0.5, 3.0]))


def test_cond_under_jax_vmap_with_a_batched_predicate() -> None:
    stats = Stats()

    def f(pred: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        # a pure wrapper: the counters start at zero in every lane
        with StateTrace("test", known=[stats.pos, stats.neg]) as trace:
            trace.set_value(stats.pos, jnp.array(0))
            trace.set_value(stats.neg, jnp.array(0))
            out = cond(pred, stats.up, stats.down, x)
            return out, stats.pos.value, stats.neg.value

    preds = jnp.array([True, False, True])
    xs = jnp.array([1.0, 2.0, 3.0])
    out, pos, neg = jax.vmap(f)(preds, xs)
    ref = jax.vmap(lambda p, x: pure_cond(p, 0, 0, x))(preds, xs)
    np.testing.assert_allclose(out, ref[0])
    assert pos.tolist() == ref[1].tolist() == [1, 0, 1]
    assert neg.tolist() == ref[2].tolist() == [0, 1, 0]
    assert int(stats.pos.value) == 0


def test_cond_gradient_through_a_pure_wrapper() -> None:
    stats = Stats()

    def loss(scale: jax.Array, x: jax.Array) -> jax.Array:
        with StateTrace("test", known=[stats.scale]) as trace:
            trace.set_value(stats.scale, scale)
            return cond(x > 0, stats.up, stats.down, x)

    assert float(jax.grad(loss)(jnp.array(3.0), jnp.array(2.0))) == 2.0
    assert float(jax.grad(loss)(jnp.array(3.0), jnp.array(-2.0))) == 0.0


def test_branch_and_condition_errors() -> None:
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.switch: branches must be a non-empty "
        r"list or tuple of functions; got \[\]",
    ):
        switch(0, [])
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.cond: branch 1 is 3, which is not "
        r"callable",
    ):
        cond(True, lambda: 1, 3)  # type: ignore[arg-type]
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.ifelse: got 2 conditions and 4 branches; "
        r"pass one branch per condition \(2\), or one more "
        r"\(3\)",
    ):
        ifelse([True, False], [lambda: 1] * 4)
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.ifelse: conditions must be a non-empty "
        r"list or tuple",
    ):
        ifelse([], [lambda: 1])


def test_a_failing_branch_changes_no_state() -> None:
    s = sj.State(jnp.array(1.0))

    def bad() -> None:
        s.value = s.value + 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cond(True, lambda: None, bad)
    assert float(s.value) == 1.0


def test_conditionals_are_registered() -> None:
    for name in ("cond", "switch", "ifelse"):
        assert sj.transform.__getattr__(name) is globals()[name]


def test_branches_leaving_a_state_with_different_types_is_an_error() -> None:
    class Counter(sj.Module):
        def __init__(self) -> None:
            self.n = sj.State(jnp.array(0))

    c = Counter()

    def up() -> None:
        c.n.value = c.n.value + 0.5

    with pytest.raises(
        sj.TraceError,
        match=r"statejax\.cond: branch 0 leaves State Counter\.n \(int32\[\]=0\) as float32\[\] "
        r"but branch 1 as int32\[\]; a state written by any branch is carried",
    ):
        cond(True, up, lambda: None)
    assert int(c.n.value) == 0

    # both branches agreeing on the new type is fine, as in lax.cond
    cond(False, up, lambda: setattr(c.n, "value", c.n.value * 1.5))
    assert c.n.value.dtype == jnp.float32


# --- error types: a statejax error that is also BrainState's TypeError ----------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: cond(True, 1, lambda: 2),
        lambda: switch(1, [lambda: 0, 5]),
        lambda: ifelse([True, False], [lambda: 0, 2]),
    ],
    ids=["cond", "switch", "ifelse"],
)
def test_a_branch_that_is_not_callable_is_a_spec_and_type_error(call: Callable[[], Any]) -> None:
    with pytest.raises(sj.SpecError, match="which is not callable") as info:
        call()
    assert isinstance(info.value, TypeError)


def test_a_repeated_conditional_call_traces_nothing() -> None:
    hits = sj.State(jnp.array(0))
    traces: list[int] = []

    def up(x: jax.Array) -> jax.Array:
        traces.append(1)  # a Python side effect: runs once per trace
        hits.value = hits.value + 1
        return x + 1

    def down(x: jax.Array) -> jax.Array:
        traces.append(1)
        return x - 1

    x = jnp.array(1.0)
    for call in (
        lambda: cond(True, up, down, x),
        lambda: switch(0, [up, down, down], x),
        lambda: ifelse([True, False], [up, down], x),
    ):
        call()
        assert traces, "the first call traces"
        traces.clear()
        call()
        call()
        assert traces == []
    assert float(cond(False, up, down, x)) == 0.0  # the predicate is an input, not baked in
    assert int(hits.value) == 9

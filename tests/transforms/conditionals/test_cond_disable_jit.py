"""cond, switch and ifelse under `jax.disable_jit()`: only the chosen branch runs, eagerly.

As in BrainState (and `lax.cond` itself), a concrete predicate or index picks one
branch, which runs once as plain Python: `float(x)` and `if` on values work, and it
may return what it likes. Its state writes are stored after it returns, all
together; if it raises, no state changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.extend import is_leaked


class Stats(sj.Module):
    def __init__(self) -> None:
        self.total = sj.State(jnp.array(0.0))
        self.pos = sj.ShortTermState(jnp.array(0))
        self.neg = sj.ShortTermState(jnp.array(0))


def reset(stats: Stats) -> None:
    stats.total.value = jnp.array(0.0)
    stats.pos.value = jnp.array(0)
    stats.neg.value = jnp.array(0)


def values(stats: Stats) -> list[float]:
    return [float(s.value) for s in stats.states().values()]


# --- cond ----------------------------------------------------------------------------------


def test_cond_runs_only_the_chosen_branch_as_python() -> None:
    stats, calls = Stats(), []

    def up(x: jax.Array) -> str:
        calls.append(("up", float(x)))  # needs a concrete value
        if x > 1:  # a Python if on a value
            stats.total.value = stats.total.value + x
        stats.pos.value += 1
        return "up"

    def down(x: jax.Array) -> None:
        calls.append(("down", float(x)))
        stats.neg.value += 1
        return None

    with jax.disable_jit():
        assert sj.cond(True, up, down, jnp.array(2.0)) == "up"
        assert sj.cond(jnp.array(False), up, down, jnp.array(5.0)) is None
        assert sj.cond(jnp.array(3), up, down, jnp.array(0.5)) == "up"  # nonzero: true
        assert sj.cond(0.0, up, down, jnp.array(7.0)) is None
    assert calls == [("up", 2.0), ("down", 5.0), ("up", 0.5), ("down", 7.0)]  # each ran once
    assert values(stats) == [2.0, 2.0, 2.0]


def test_cond_eager_matches_jitted() -> None:
    stats = Stats()

    def up(x: jax.Array) -> jax.Array:
        stats.total.value = stats.total.value + x
        stats.pos.value += 1
        return x * stats.total.value

    def down(x: jax.Array) -> jax.Array:
        stats.neg.value += 1
        return -x

    step = sj.jit(lambda x: sj.cond(x > 0, up, down, x))
    xs = [2.0, -1.0, 3.0, 0.0, 0.5]
    expected = [float(step(jnp.array(x))) for x in xs]
    expected_states = values(stats)
    reset(stats)
    with jax.disable_jit():
        got = [float(sj.cond(jnp.array(x) > 0, up, down, jnp.array(x))) for x in xs]
    assert got == expected
    assert values(stats) == expected_states


def test_cond_writes_are_stored_together_after_the_branch() -> None:
    stats = Stats()
    seen: list[float] = []

    def up() -> None:
        stats.total.value = stats.total.value + 1.0
        stats.total.value = stats.total.value * 10.0
        seen.append(float(stats.total.value))  # the branch sees its own writes
        stats.pos.value += 1

    with jax.disable_jit():
        sj.cond(True, up, lambda: None)
    assert seen == [10.0]
    assert values(stats) == [10.0, 1.0, 0.0]


@pytest.mark.parametrize("pred", [True, False])
def test_cond_that_raises_changes_no_state(pred: bool) -> None:
    stats = Stats()

    def fails(x: jax.Array) -> None:
        stats.total.value = stats.total.value + x
        stats.pos.value += 1
        raise RuntimeError(f"failed at {float(x)}")

    with jax.disable_jit(), pytest.raises(RuntimeError, match=r"failed at 4\.0"):
        sj.cond(pred, fails, fails, jnp.array(4.0))
    assert values(stats) == [0.0, 0.0, 0.0]
    assert not any(isinstance(s.value, jax.core.Tracer) for s in stats.states().values())


def test_cond_inside_eager_jit_and_loop() -> None:
    """Nested in `sj.jit` and `sj.for_loop`, which run eagerly too: one Python run each."""
    stats = Stats()
    log: list[str] = []

    def up(x: jax.Array) -> None:
        log.append(f"up {float(x):g}")
        stats.pos.value += 1

    def down(x: jax.Array) -> None:
        log.append(f"down {float(x):g}")
        stats.neg.value += 1

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        sj.cond(float(x) % 2 == 0, up, down, x)
        stats.total.value = stats.total.value + x
        return stats.total.value

    with jax.disable_jit():
        totals = sj.for_loop(step, jnp.arange(4.0))
    np.testing.assert_allclose(totals, [0.0, 1.0, 3.0, 6.0])
    assert log == ["up 0", "down 1", "up 2", "down 3"]
    assert values(stats) == [6.0, 2.0, 2.0]


def test_cond_batched_predicate_still_selects_under_vmap() -> None:
    """Under `vmap` the predicate is batched, not concrete: both branches trace, as jitted."""
    scale = sj.ParamState(jnp.array(3.0))

    def f(x: jax.Array) -> Any:
        return sj.cond(x > 0, lambda v: v * scale.value, lambda v: -v, x)

    xs = jnp.array([-2.0, 1.0, 4.0])
    expected = sj.jit(sj.vmap(f))(xs)
    with jax.disable_jit():
        got = sj.vmap(f)(xs)
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(got, [2.0, 3.0, 12.0])


def test_cond_bad_predicate_still_reported_by_lax() -> None:
    with jax.disable_jit(), pytest.raises(TypeError, match="Pred must be a scalar"):
        sj.cond(jnp.array([True, False]), lambda: 1, lambda: 0)


# --- switch --------------------------------------------------------------------------------


def marker(stats: Stats, log: list[int], i: int) -> Callable[[jax.Array], Any]:
    def branch(x: jax.Array) -> Any:
        log.append(i)
        if float(x) > 0:
            stats.total.value = stats.total.value + i * x
        return ("branch", i) if i != 1 else None

    branch.__qualname__ = f"branch{i}"
    return branch


def test_switch_runs_only_the_chosen_branch_clamped() -> None:
    stats, log = Stats(), list[int]()
    branches = [marker(stats, log, i) for i in range(3)]
    with jax.disable_jit():
        got = [
            sj.switch(k, branches, jnp.array(1.0))
            for k in (2, jnp.array(0), np.int64(1), 7, jnp.array(-3, jnp.int8))
        ]
    assert got == [("branch", 2), ("branch", 0), None, ("branch", 2), ("branch", 0)]
    assert log == [2, 0, 1, 2, 0]  # clamped into range, as lax.switch does
    assert float(stats.total.value) == 5.0  # 2 + 0 + 1 + 2 + 0


def test_switch_eager_matches_jitted() -> None:
    stats = Stats()

    def branch(i: int) -> Callable[[jax.Array], jax.Array]:
        def run(x: jax.Array) -> jax.Array:
            stats.total.value = stats.total.value * 2.0 + i * x
            return stats.total.value - x

        return run

    branches = [branch(i) for i in range(3)]
    step = sj.jit(lambda k, x: sj.switch(k, branches, x))
    ks, xs = [0, 2, 1, 5, -1], [1.0, 2.0, 3.0, 4.0, 5.0]
    expected = [float(step(k, jnp.array(x))) for k, x in zip(ks, xs, strict=True)]
    expected_total = float(stats.total.value)
    stats.total.value = jnp.array(0.0)
    with jax.disable_jit():
        got = [float(sj.switch(k, branches, jnp.array(x))) for k, x in zip(ks, xs, strict=True)]
    assert got == expected
    assert float(stats.total.value) == expected_total


def test_switch_that_raises_changes_no_state() -> None:
    stats = Stats()

    def fails() -> None:
        stats.pos.value += 1
        raise ValueError("no")

    with jax.disable_jit(), pytest.raises(ValueError, match="no"):
        sj.switch(1, [lambda: None, fails])
    assert values(stats) == [0.0, 0.0, 0.0]


def test_switch_float_index_still_reported_by_lax() -> None:
    with jax.disable_jit(), pytest.raises(TypeError, match="Index type must be an integer"):
        sj.switch(1.5, [lambda: 0, lambda: 1])


# --- ifelse --------------------------------------------------------------------------------


@pytest.mark.parametrize("else_branch", [False, True])
def test_ifelse_runs_the_first_true_branch(else_branch: bool) -> None:
    stats, log = Stats(), list[int]()
    branches = [marker(stats, log, i) for i in range(3)]
    conditions_of: dict[str, list[Any]] = {
        "first": [True, True] if else_branch else [True, True, False],
        "second": [jnp.array(False), jnp.array(True)]
        if else_branch
        else [jnp.array(False), jnp.array(True), jnp.array(True)],
        "none": [False, 0] if else_branch else [False, 0, jnp.array(0.0)],
    }
    with jax.disable_jit():
        got = {
            k: sj.ifelse(c, branches, jnp.array(1.0), check_cond=False)
            for k, c in conditions_of.items()
        }
    assert got == {"first": ("branch", 0), "second": None, "none": ("branch", 2)}
    assert log == [0, 1, 2]  # no condition holds: the last branch, as in BrainState
    assert float(stats.total.value) == 3.0


def test_ifelse_eager_matches_jitted_and_raises_atomically() -> None:
    stats = Stats()

    def sign(a: jax.Array) -> jax.Array:
        def pos() -> jax.Array:
            stats.pos.value += 1
            return jnp.array(1)

        def neg() -> jax.Array:
            stats.neg.value += 1
            return jnp.array(-1)

        return sj.ifelse([a > 0, a < 0], [pos, neg, lambda: jnp.array(0)])

    xs = [3.0, -2.0, 0.0, 5.0]
    expected = [int(sj.jit(sign)(jnp.array(v))) for v in xs]
    expected_states = values(stats)
    reset(stats)
    with jax.disable_jit():
        got = [int(sign(jnp.array(v))) for v in xs]
    assert got == expected == [1, -1, 0, 1]
    assert values(stats) == expected_states

    def fails() -> None:
        stats.total.value = stats.total.value + 1.0
        raise KeyError("stop")

    with jax.disable_jit(), pytest.raises(KeyError, match="stop"):
        sj.ifelse([False, True], [lambda: None, fails])
    assert values(stats) == expected_states


def test_states_created_in_an_eager_branch_do_not_escape() -> None:
    """As under a traced conditional: a state created in a branch is local to it."""
    made: list[sj.State[Any]] = []

    def make() -> str:
        made.append(sj.State(jnp.array(1.0)))
        return "made"

    with jax.disable_jit():
        assert sj.cond(True, make, lambda: "not") == "made"
    assert is_leaked(made[0])
    with pytest.raises(sj.StateLeakError, match="created inside"):
        _ = made[0].value

"""Issue 9, parity sweep: BrainState's error types, while loops under `disable_jit` and
`vmap`, `named_scope`'s negative static positions, and `ProgressBar`'s BrainState names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import statejax as sj
from statejax.transform import (
    ProgressBar,
    bounded_while_loop,
    checkpointed_for_loop,
    checkpointed_scan,
    cond,
    for_loop,
    ifelse,
    named_scope,
    scan,
    switch,
    while_loop,
)
from statejax.transforms.bounded import CheckpointedForLoopSpec, CheckpointedScanSpec
from statejax.transforms.loops import ForLoopSpec, ScanSpec

# -- error types: a statejax error that is also BrainState's TypeError / ValueError ----


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


@pytest.mark.parametrize("loop", ["while_loop", "bounded_while_loop"])
@pytest.mark.parametrize("eager", [False, True], ids=["traced", "disable_jit"])
def test_a_condition_that_writes_is_a_trace_and_value_error(loop: str, eager: bool) -> None:
    count = sj.State(jnp.array(0.0))

    def cond_fun(v: jax.Array) -> jax.Array:
        count.value = count.value + 1.0
        return v < 5

    def run() -> Any:
        if loop == "while_loop":
            return while_loop(cond_fun, lambda v: v + 1, 0.0)
        return bounded_while_loop(cond_fun, lambda v: v + 1, 0.0, max_steps=10)

    with pytest.raises(sj.TraceError, match="must not change states") as info:
        if eager:
            with jax.disable_jit():
                run()
        else:
            run()
    assert isinstance(info.value, ValueError)
    assert float(count.value) == 0.0  # no state changed


@pytest.mark.parametrize("loop", [scan, checkpointed_scan])
@pytest.mark.parametrize(
    "body", [lambda c, x: c + x, lambda c, x: (c + x, x, x)], ids=["single", "triple"]
)
def test_a_body_without_a_pair_is_a_type_and_value_error(
    loop: Callable[..., Any], body: Callable[..., Any]
) -> None:
    with pytest.raises(sj.TraceError, match=r"must return a pair \(carry, y\)") as info:
        loop(body, 0.0, jnp.arange(4.0))
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


# -- pbar and ProgressBar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("desc", "type_error"),
    [
        (123, True),
        ((123, lambda d: d), True),
        (("step {i}", "not callable"), True),
        (["step {i}", "not callable"], True),
        (("only one",), False),
    ],
)
def test_progress_bar_desc_errors_follow_brainstate_types(desc: Any, type_error: bool) -> None:
    with pytest.raises(sj.SpecError, match=r"statejax\.ProgressBar: option desc") as info:
        ProgressBar(desc=desc)
    assert isinstance(info.value, TypeError) is type_error


def test_progress_bar_takes_a_list_desc_and_has_brainstate_names() -> None:
    bar = ProgressBar(desc=["step {i}", lambda d: d])
    assert bar.desc is not None and bar.desc[0] == "step {i}"
    assert ProgressBar(freq=2).print_freq == 2 and ProgressBar(freq=2).print_count is None
    assert ProgressBar(count=3).print_count == 3 and ProgressBar(count=3).print_freq is None


@pytest.mark.parametrize(
    "loop",
    [
        lambda pbar: scan(lambda c, x: (c, x), 0.0, jnp.ones(4), pbar=pbar),
        lambda pbar: for_loop(lambda x: x, jnp.ones(4), pbar=pbar),
        lambda pbar: checkpointed_scan(lambda c, x: (c, x), 0.0, jnp.ones(4), pbar=pbar),
        lambda pbar: checkpointed_for_loop(lambda x: x, jnp.ones(4), pbar=pbar),
    ],
    ids=["scan", "for_loop", "checkpointed_scan", "checkpointed_for_loop"],
)
def test_every_loop_refuses_a_pbar_of_the_wrong_type(loop: Callable[[Any], Any]) -> None:
    with pytest.raises(sj.SpecError, match="option pbar: str 'invalid' is not a progress bar") as e:
        loop("invalid")
    assert isinstance(e.value, TypeError)
    with pytest.raises(sj.SpecError, match="option pbar: True is a bool") as e:
        loop(True)
    assert not isinstance(e.value, TypeError)


@pytest.mark.parametrize(
    "spec", [ScanSpec, ForLoopSpec, CheckpointedScanSpec, CheckpointedForLoopSpec]
)
def test_the_loops_share_one_pbar_option(spec: Any) -> None:
    assert spec(pbar=3).pbar == ProgressBar(freq=3)
    assert spec(pbar=np.int64(2)).pbar == ProgressBar(freq=2)
    assert spec().pbar is None
    field = spec.model_json_schema()["properties"]["pbar"]
    assert field["anyOf"][0]["exclusiveMinimum"] == 0 and "positive int" in field["description"]


# -- while loops under jax.disable_jit() inside vmap ------------------------------------


@pytest.mark.parametrize("loop", ["while_loop", "bounded_while_loop"])
def test_while_loop_under_disable_jit_and_vmap_runs_the_traced_loop(loop: str) -> None:
    def cond_fun(v: jax.Array) -> jax.Array:
        return jnp.all(v < 3)

    def body_fun(v: jax.Array) -> jax.Array:
        return v + 1

    def ours(i: jax.Array) -> Any:
        if loop == "while_loop":
            return while_loop(cond_fun, body_fun, i)
        return bounded_while_loop(cond_fun, body_fun, i, max_steps=10)

    xs = jnp.array([0, 1, 2])
    expected = jax.vmap(lambda i: lax.while_loop(cond_fun, body_fun, i))(xs)
    with jax.disable_jit():
        got = jax.vmap(ours)(xs)
        assert float(ours(jnp.array(0))) == 3.0  # still eager outside vmap
    np.testing.assert_array_equal(got, expected)


def test_while_loop_under_disable_jit_and_vmap_writes_each_lanes_state_once() -> None:
    steps = sj.State(jnp.zeros(3, jnp.int32))

    def body_fun(v: jax.Array) -> jax.Array:
        steps.value = steps.value + 1
        return v + 1

    mapped = sj.vmap(lambda i: while_loop(lambda v: v < 3, body_fun, i), in_states={0: steps})
    with jax.disable_jit():
        out = mapped(jnp.array([0, 1, 2]))
    np.testing.assert_array_equal(out, [3, 3, 3])
    # lanes run 3, 2 and 1 steps; the abandoned eager attempt wrote nothing
    np.testing.assert_array_equal(steps.value, [3, 2, 1])


# -- named_scope: negative static positions count from the end -------------------------


def test_named_scope_negative_static_argnums_count_from_the_end() -> None:
    traces: list[tuple[Any, ...]] = []

    @named_scope("scaled_power", static_argnums=(-1, -2))
    def scaled_power(x: jax.Array, n: int, scale: int) -> jax.Array:
        traces.append((n, scale))
        assert isinstance(n, int) and isinstance(scale, int)  # static: plain Python values
        return (x**n) * scale

    x = jnp.array([2.0, 3.0])
    np.testing.assert_allclose(scaled_power(x, 2, 3), (x**2) * 3)
    np.testing.assert_allclose(scaled_power(x, 2, 3), (x**2) * 3)
    np.testing.assert_allclose(scaled_power(x, 3, 1), x**3)
    assert traces == [(2, 3), (3, 1)]  # one compilation per static value
    assert scaled_power.fn.__name__ == "scaled_power"

    @named_scope("mode", static_argnums=-1)
    def shift(x: jax.Array, y: jax.Array, mode: str) -> jax.Array:
        return x + y if mode == "add" else x - y

    np.testing.assert_allclose(shift(x, x, "add"), 2 * x)
    np.testing.assert_allclose(shift(x, x, "sub"), 0 * x)


def test_named_scope_negative_static_argnums_thread_states_and_check_range() -> None:
    calls = sj.State(jnp.array(0))

    @named_scope("count", static_argnums=-1)
    def step(x: jax.Array, k: int) -> jax.Array:
        calls.value += k
        return x * k

    assert float(step(jnp.array(1.5), 2)) == 3.0 and int(calls.value) == 2
    step.clear_cache()
    assert float(step(jnp.array(1.0), 3)) == 3.0 and int(calls.value) == 5

    @named_scope("too_far", static_argnums=-3)
    def short(x: jax.Array, k: int) -> jax.Array:
        return x * k

    with pytest.raises(sj.SpecError, match=r"named_scope\(too_far\): static_argnums \(-3,\)"):
        short(jnp.array(1.0), 2)
    with pytest.raises(sj.SpecError, match="option static_argnums"):
        named_scope("bad", static_argnums=True)

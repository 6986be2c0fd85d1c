"""statejax map: sequential (a scan carrying written states) or batched under vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._transforms.vmap import map as sj_map
from statejax.random import RandomState
from statejax.transform import raise_when


def test_sequential_map_matches_a_python_loop_and_carries_writes() -> None:
    total = sj.State(jnp.array(0.0))
    scale = sj.ParamState(jnp.array(2.0))

    def f(x: jax.Array, y: jax.Array) -> jax.Array:
        total.value = total.value + x
        return scale.value * x + y + total.value

    xs, ys = jnp.arange(5.0), jnp.ones(5)
    out = sj_map(f, xs, ys)
    running, expected = 0.0, []
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        running += x
        expected.append(2.0 * x + y + running)
    np.testing.assert_allclose(out, expected)
    assert float(total.value) == 10.0


def test_pytree_inputs_and_outputs() -> None:
    xs = {"a": jnp.arange(6.0).reshape(3, 2), "b": jnp.arange(3.0)}
    out = sj_map(lambda d: (d["a"].sum(), d["b"] * 2), xs)
    np.testing.assert_allclose(out[0], xs["a"].sum(1))
    np.testing.assert_allclose(out[1], xs["b"] * 2)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 10])
def test_batched_map_matches_jax_vmap(batch_size: int) -> None:
    w = sj.ParamState(jnp.arange(3.0))
    xs = jnp.arange(21.0).reshape(7, 3)
    out = sj_map(lambda x: jnp.dot(x, w.value), xs, batch_size=batch_size)
    np.testing.assert_allclose(out, jax.vmap(lambda x: jnp.dot(x, w.value))(xs))


def test_each_element_draws_fresh_numbers() -> None:
    rng = RandomState(0)
    key = rng.value
    out = sj_map(lambda x: x + rng.normal(), jnp.zeros(3))
    expected = []
    for _ in range(3):
        key, use = jax.random.split(key)
        expected.append(jax.random.normal(use, ()))
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(jax.random.key_data(rng.value), jax.random.key_data(key))
    batched = sj_map(lambda x: x + rng.normal(), jnp.zeros(4), batch_size=2)
    assert len(set(np.asarray(batched).tolist())) == 4


def test_map_under_jit() -> None:
    count = sj.State(jnp.array(0))

    @sj.jit
    def run(xs: jax.Array) -> jax.Array:
        def f(x: jax.Array) -> jax.Array:
            count.value = count.value + 1
            return x**2

        return sj_map(f, xs)

    np.testing.assert_allclose(run(jnp.arange(4.0)), jnp.arange(4.0) ** 2)
    run(jnp.arange(4.0))
    assert int(count.value) == 8


def test_batched_map_rejects_batched_writes_to_broadcast_states() -> None:
    last = sj.State(jnp.array(0.0))

    def f(x: jax.Array) -> jax.Array:
        last.value = x
        return x

    with pytest.raises(sj.BatchAxisError, match=r"State .*broadcast"):
        sj_map(f, jnp.arange(4.0), batch_size=2)


def test_map_spec_errors() -> None:
    with pytest.raises(sj.SpecError, match=r"statejax\.map: option batch_size: Input should be"):
        sj_map(lambda x: x, jnp.arange(3.0), batch_size=0)
    with pytest.raises(TypeError, match="at least one array") as no_inputs:
        sj_map(lambda: 0)
    assert isinstance(no_inputs.value, ValueError)  # what BrainState raises
    with pytest.raises(ValueError, match="0-d array"):
        sj_map(lambda x: x, jnp.array(5.0))
    for batch_size in (None, 2):
        with pytest.raises(ValueError, match=r"same leading axis .* leading sizes are \[3, 4\]"):
            sj_map(lambda a, b: a, jnp.arange(3.0), jnp.arange(4.0), batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_empty_input_gives_an_empty_result(batch_size: int | None) -> None:
    out = sj_map(lambda x: x.sum(), jnp.zeros((0, 3)), batch_size=batch_size)
    assert out.shape == (0,)


# --- map is atomic; its errors name map and its fixes; disable_jit --------------------


@pytest.mark.parametrize("batch_size", [None, 2])
def test_map_changes_no_state_when_an_element_fails(batch_size: int | None) -> None:
    total = sj.State(jnp.array(0.0))
    other = sj.ParamState(jnp.ones(2))

    def f(x: jax.Array) -> jax.Array:
        total.value = total.value + 1.0  # the same for every element: fine in a batch
        other.value = other.value * 2.0
        # The last element (in the last, partial batch) fails when it runs, after the
        # others have run.
        raise_when(x >= 4.0, lambda p: RuntimeError("element failed"))
        return x

    with pytest.raises(Exception, match="element failed"):
        sj_map(f, jnp.arange(5.0), batch_size=batch_size)
    assert float(total.value) == 0.0
    np.testing.assert_array_equal(other.value, jnp.ones(2))
    # An error while tracing (the function raises) changes nothing either.

    def g(x: jax.Array) -> jax.Array:
        total.value = total.value + 1.0
        raise RuntimeError("traced element failed")

    with pytest.raises(RuntimeError, match="traced element failed"):
        sj_map(g, jnp.arange(5.0), batch_size=batch_size)
    assert float(total.value) == 0.0


def test_map_still_carries_writes_when_it_succeeds() -> None:
    total = sj.State(jnp.array(0.0))

    def f(x: jax.Array) -> jax.Array:
        total.value = total.value + 1.0
        return x * 2

    np.testing.assert_allclose(sj_map(f, jnp.arange(5.0), batch_size=2), jnp.arange(5.0) * 2)
    assert float(total.value) == 3.0  # two full batches and the remainder
    np.testing.assert_allclose(sj_map(f, jnp.arange(5.0)), jnp.arange(5.0) * 2)
    assert float(total.value) == 8.0


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


@pytest.mark.parametrize("batch_size", [None, 2])
def test_a_repeated_map_call_traces_nothing(batch_size: int | None) -> None:
    total = sj.State(jnp.array(0.0))
    traces: list[int] = []

    def f(x: jax.Array) -> jax.Array:
        traces.append(1)  # a Python side effect: runs once per trace
        total.value = total.value + 1.0
        return x * 2

    xs = jnp.arange(5.0)
    sj_map(f, xs, batch_size=batch_size)
    assert traces, "the first call traces"
    traces.clear()
    out = sj_map(f, xs, batch_size=batch_size)
    sj_map(f, xs, batch_size=batch_size)
    assert traces == []
    np.testing.assert_allclose(out, xs * 2)
    assert float(total.value) == (15.0 if batch_size is None else 9.0)  # every call writes
    sj_map(f, jnp.arange(6.0), batch_size=batch_size)  # a new size: traced again
    assert traces

"""pmap, pmap2 and pmap2_new_states: in process on the devices this process has (one
CPU device in the default suite), and on 8 simulated CPU devices in a subprocess
(pmap_devices.py: JAX fixes its device count when it starts)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.transform import pmap

N = jax.local_device_count()
X = jnp.arange(N * 3.0).reshape(N, 3) / 7


def test_collectives_and_in_states_equal_jax_pmap() -> None:
    w = sj.ParamState(jnp.arange(6.0).reshape(3, 2) / 10)
    seen = sj.State(jnp.zeros(N))

    @pmap(axis_name="d", in_states={0: seen})
    def step(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        seen.value = seen.value + x.sum()
        y = x @ w.value
        return jax.lax.psum(y, "d"), jax.lax.pmean(y, "d")

    def ref(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        y = x @ w.value
        return jax.lax.psum(y, "d"), jax.lax.pmean(y, "d")

    got, want = step(X), jax.pmap(ref, axis_name="d")(X)
    jax.tree.map(np.testing.assert_allclose, got, want)
    np.testing.assert_allclose(seen.value, X.sum(1))  # written back, one slot per device
    np.testing.assert_allclose(w.value, jnp.arange(6.0).reshape(3, 2) / 10)  # read only


def test_out_states_come_back_stacked_per_device() -> None:
    param = sj.ParamState(jnp.ones(4))
    deltas = jnp.arange(N * 4.0).reshape(N, 4)

    @pmap(axis_name="d", out_states={0: param})
    def update(delta: jax.Array) -> jax.Array:
        param.value = param.value + delta
        return param.value

    want = jax.vmap(lambda d: jnp.ones(4) + d)(deltas)
    np.testing.assert_allclose(update(deltas), want)
    np.testing.assert_allclose(param.value, want)


def test_a_failing_call_changes_no_state() -> None:
    s = sj.State(jnp.arange(N * 1.0))

    @pmap(axis_name="d", in_states=s)
    def boom(x: jax.Array) -> jax.Array:
        s.value = s.value + 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        boom(X)
    np.testing.assert_array_equal(s.value, jnp.arange(N * 1.0))
    assert not isinstance(s.value, jax.core.Tracer)


def test_a_device_varying_write_into_a_replicated_state_is_named() -> None:
    count = sj.ShortTermState(jnp.array(0.0))

    def varying(x: jax.Array) -> jax.Array:
        count.value = count.value + x.sum()
        return x

    with pytest.raises(
        sj.BatchAxisError,
        match=r"statejax\.pmap\(.*varying\).*differs across devices.*out_states=\{0: state\}",
    ):
        pmap(varying, "d")(X)
    assert float(count.value) == 0.0


# --- 8 simulated devices ------------------------------------------------------------------


@pytest.mark.slow
def test_pmap_on_eight_devices_equals_jax_pmap_and_names_every_error(
    run_script: Callable[..., str],
) -> None:
    out = run_script("pmap_devices.py", timeout=240)
    for check in [
        "OK pmap_collectives_equal_jax_pmap",
        "OK pmap_out_states_stacked",
        "OK pmap_axes_equal_jax_vmap",
        "OK pmap_cached traces=",
        "OK pmap_data_parallel_equals_one_device",
        "OK pmap_random_split_per_device",
        "OK pmap_composition",
        "OK pmap_exception_leaves_states",
        "OK pmap2_and_pmap2_new_states",
        "OK pmap_static_and_donated_equal_jax_pmap",
        "OK pmap_errors",
        "DONE",
    ]:
        assert check in out, out


def test_a_repeated_pmap2_call_traces_nothing() -> None:
    total = sj.State(jnp.zeros(3))
    traces: list[int] = []

    def step(x: jax.Array) -> jax.Array:
        traces.append(1)  # a Python side effect: runs once per trace
        total.value = total.value + jax.lax.psum(x, "d")
        return x * 2

    stepped = sj.transform.pmap2(step, axis_name="d")
    stepped(X)
    assert traces, "the first call traces"
    traces.clear()
    stepped(X)
    stepped(X)
    assert traces == []
    np.testing.assert_allclose(total.value, 3 * X.sum(axis=0), rtol=1e-6)

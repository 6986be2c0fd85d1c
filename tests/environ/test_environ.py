"""`statejax.environ`: BrainState's global settings, context-local overrides, precision
and default dtypes, JAX's process-wide settings, and transforms that retrace when a
setting their trace read changed."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax import environ


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    x64 = jax.config.read("jax_enable_x64")  # type: ignore[no-untyped-call]
    environ.reset()
    yield
    environ.reset()
    jax.config.update("jax_enable_x64", x64)  # type: ignore[no-untyped-call]


# BrainState 0.5.4's signatures (inspect.signature of brainstate.environ's functions,
# from a scratch install): (name, kind, default) per parameter; "<sentinel>" for its
# private "not provided" marker.
P, K, V = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY", "VAR_KEYWORD"
ENV = ("env", K, None)
BRAINSTATE_SIGNATURES: dict[str, list[tuple[str, str, Any]]] = {
    "set": [
        ("platform", P, None),
        ("host_device_count", P, None),
        ("precision", P, None),
        ("dt", P, None),
        ENV,
        ("kwargs", V, inspect.Parameter.empty),
    ],
    "get": [
        ("key", P, inspect.Parameter.empty),
        ("default", P, "<sentinel>"),
        ("desc", P, None),
        ENV,
    ],
    "all": [ENV],
    "pop": [("key", P, inspect.Parameter.empty), ("default", P, "<sentinel>"), ENV],
    "context": [ENV, ("kwargs", V, inspect.Parameter.empty)],
    "reset": [ENV],
    "set_platform": [("platform", P, inspect.Parameter.empty)],
    "get_platform": [],
    "set_host_device_count": [("n", P, inspect.Parameter.empty)],
    "get_host_device_count": [],
    "set_precision": [("precision", P, inspect.Parameter.empty), ENV],
    "get_precision": [ENV],
    "dftype": [ENV],
    "ditype": [ENV],
    "dutype": [ENV],
    "dctype": [ENV],
    "get_dt": [ENV],
    "tolerance": [ENV],
    "register_default_behavior": [
        ("key", P, inspect.Parameter.empty),
        ("behavior", P, inspect.Parameter.empty),
        ("replace_if_exist", P, False),
        ENV,
    ],
    "unregister_default_behavior": [("key", P, inspect.Parameter.empty), ENV],
    "list_registered_behaviors": [ENV],
}
BRAINSTATE_CONSTANTS = {
    "DEFAULT_PRECISION": 32,
    "SUPPORTED_PLATFORMS": ("cpu", "gpu", "tpu"),
    "SUPPORTED_PRECISIONS": (8, 16, 32, 64, "bf16"),
    "I": "i",
    "T": "t",
    "DT": "dt",
    "PRECISION": "precision",
    "PLATFORM": "platform",
    "HOST_DEVICE_COUNT": "host_device_count",
    "JIT_ERROR_CHECK": "jit_error_check",
    "FIT": "fit",
}


@pytest.mark.parametrize("name", sorted(BRAINSTATE_SIGNATURES))
def test_functions_have_brainstates_signatures(name: str) -> None:
    params = inspect.signature(getattr(environ, name)).parameters.values()
    got = []
    for p in params:
        default = p.default
        if default is not inspect.Parameter.empty and type(default) is object:
            default = "<sentinel>"
        got.append((p.name, p.kind.name, default))
    assert got == BRAINSTATE_SIGNATURES[name]


def test_every_brainstate_name_exists() -> None:
    names = [*BRAINSTATE_SIGNATURES, *BRAINSTATE_CONSTANTS, "EnvironmentState"]
    assert sorted(environ.__all__) == sorted(names)
    for name, value in BRAINSTATE_CONSTANTS.items():
        assert getattr(environ, name) == value
    assert sj.environ is environ


def test_set_get_all_pop() -> None:
    environ.set(dt=0.1, method="euler")
    assert environ.get_dt() == 0.1 and environ.get("method") == "euler"
    assert environ.all() == {"precision": 32, "dt": 0.1, "method": "euler"}
    assert environ.pop("method") == "euler" and environ.pop("method", None) is None
    assert environ.get("platform") == environ.get_platform()
    with pytest.raises(KeyError, match=r"'absent' .the absent knob. not found in environment"):
        environ.get("absent", desc="the absent knob")
    with pytest.raises(sj.EnvironKeyError, match="'absent' not found in global environment"):
        environ.pop("absent")


def test_contexts_nest_and_restore_on_exit_and_on_exceptions() -> None:
    environ.set(dt=0.1)
    with environ.context(dt=0.2, extra=1) as inside:
        assert inside == {"precision": 32, "dt": 0.2, "extra": 1}
        with environ.context(dt=0.3):
            assert environ.get_dt() == 0.3
            with pytest.raises(sj.EnvironError, match="overridden in 2 context"):
                environ.pop("dt")
        assert environ.get_dt() == 0.2
        with pytest.raises(RuntimeError, match="boom"):
            with environ.context(dt=0.4):
                raise RuntimeError("boom")
        assert environ.get_dt() == 0.2
    assert environ.get_dt() == 0.1 and environ.get("extra", None) is None


def test_context_values_are_local_to_their_thread_and_set_is_global() -> None:
    environ.set(dt=0.1)
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def other() -> None:
        with environ.context(dt=9.0):
            entered.set()
            release.wait(10)
            seen["other"] = environ.get_dt()
        seen["other after"] = environ.get_dt()

    thread = threading.Thread(target=other)
    thread.start()
    entered.wait(10)
    seen["main"] = environ.get_dt()  # the other thread is inside its block
    environ.set(shared=1)
    release.set()
    thread.join()
    assert seen == {"main": 0.1, "other": 9.0, "other after": 0.1}
    out: list[Any] = []
    threading.Thread(target=lambda: out.append(environ.get("shared"))).start()
    while not out:
        pass
    assert out == [1]


@pytest.mark.parametrize(
    ("precision", "bits", "f", "i", "u", "c"),
    [
        (8, 8, jnp.float8_e5m2, np.int8, np.uint8, np.complex64),
        (16, 16, np.float16, np.int16, np.uint16, np.complex64),
        ("bf16", 16, jnp.bfloat16, np.int16, np.uint16, np.complex64),
        (32, 32, np.float32, np.int32, np.uint32, np.complex64),
        (64, 64, np.float64, np.int64, np.uint64, np.complex128),
    ],
)
def test_precision_gives_the_default_dtypes(
    precision: int | str, bits: int, f: Any, i: Any, u: Any, c: Any
) -> None:
    environ.set_precision(precision)
    assert environ.get("precision") == precision and environ.get_precision() == bits
    assert (environ.dftype(), environ.ditype(), environ.dutype(), environ.dctype()) == (f, i, u, c)
    assert jax.config.read("jax_enable_x64") == (bits == 64)  # type: ignore[no-untyped-call]
    assert environ.tolerance().dtype == {64: np.float64, 32: np.float32}.get(bits, np.float16)


def test_unsupported_precision_changes_nothing() -> None:
    environ.set(dt=0.1)
    for bad in (128, "invalid", -1, 3.14, True):
        with pytest.raises(sj.EnvironError, match=r"precision=.* is not supported; use one of"):
            environ.set(precision=bad, dt=0.5)  # type: ignore[arg-type]
    assert environ.get_dt() == 0.1 and environ.get_precision() == 32
    with pytest.raises(TypeError, match="dt must be a scalar number"):
        environ.set(dt=[0.1])  # type: ignore[arg-type]


def test_context_precision_switches_x64_for_its_thread_only() -> None:
    out: list[Any] = []
    with environ.context(precision=64):
        assert sj.random.randn(2).dtype == jnp.float64
        assert sj.random.randint(0, 3, (2,)).dtype == jnp.int64
        thread = threading.Thread(target=lambda: out.append(jnp.zeros(1).dtype))
        thread.start()
        thread.join()
    assert out == [jnp.float32]
    assert sj.random.randn(2).dtype == jnp.float32
    with environ.context(precision="bf16"):
        assert sj.random.randn(3).dtype == jnp.bfloat16
        assert sj.random.rand(3, dtype=jnp.float32).dtype == jnp.float32


def test_platform_and_host_devices_are_process_wide() -> None:
    with pytest.raises(sj.EnvironError, match="Cannot set 'platform' in context"):
        with environ.context(platform="cpu"):
            pass
    with pytest.raises(sj.EnvironError, match="Cannot set 'host_device_count' in context"):
        with environ.context(host_device_count=2):
            pass
    with pytest.raises(sj.EnvironError, match="Platform must be one of"):
        environ.set_platform("abacus")
    jax.devices()  # JAX has started
    environ.set_platform(environ.get_platform())  # no change: accepted
    other = "tpu" if environ.get_platform() != "tpu" else "cpu"
    with pytest.raises(sj.EnvironError, match=rf"set_platform\('{other}'\): JAX has already"):
        environ.set_platform(other)
    with pytest.raises(sj.EnvironError, match="must be a positive integer, got 0"):
        environ.set_host_device_count(0)
    assert environ.get_host_device_count() >= 1


def test_host_device_count_before_and_after_jax_starts() -> None:
    script = textwrap.dedent(
        """
        import os
        os.environ.pop("XLA_FLAGS", None)
        from statejax import environ
        import statejax as sj
        environ.set(host_device_count=2, dt=0.1)
        import jax
        print(len(jax.devices("cpu")), environ.get_host_device_count(), os.environ["XLA_FLAGS"])
        try:
            environ.set(host_device_count=3, dt=0.5)
        except sj.EnvironError as e:
            print(type(e).__name__, e)
        print(environ.get_dt(), environ.get_host_device_count())
        """
    )
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "2 2 --xla_force_host_platform_device_count=2"
    assert lines[1].startswith(
        "EnvironError environ.set_host_device_count(3): JAX has already started with 2 CPU"
    )
    assert lines[2] == "0.1 2"  # refused: nothing changed


def test_callbacks() -> None:
    calls: list[Any] = []
    environ.register_default_behavior("dt", calls.append)
    environ.set(dt=0.1)
    with environ.context(dt=0.2):
        pass
    assert calls == [0.1, 0.2, 0.1]
    with pytest.raises(sj.EnvironError, match=r"already registered\. Use replace_if_exist=True"):
        environ.register_default_behavior("dt", calls.append)
    with pytest.raises(TypeError, match="Behavior must be callable"):
        environ.register_default_behavior("x", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Key must be a string"):
        environ.register_default_behavior(1, calls.append)  # type: ignore[arg-type]

    def boom(value: Any) -> None:
        raise RuntimeError("no")

    environ.register_default_behavior("dt", boom, replace_if_exist=True)
    with pytest.warns(RuntimeWarning, match="Callback for 'dt' raised an exception: no"):
        environ.set(dt=0.3)
    assert environ.get_dt() == 0.3
    assert environ.list_registered_behaviors() == ["dt"]
    assert environ.unregister_default_behavior("dt") is True


def test_a_store_of_your_own_is_separate() -> None:
    mine = environ.EnvironmentState()
    environ.set(precision=64, dt=1.0, env=mine)
    assert environ.dftype(env=mine) == np.float64 and environ.get_dt(env=mine) == 1.0
    assert jax.config.read("jax_enable_x64") is False  # type: ignore[no-untyped-call]
    assert environ.get("dt", None) is None
    with pytest.raises(TypeError, match="not an EnvironmentState"):
        environ.get("dt", env={"dt": 1.0})  # type: ignore[arg-type]


def test_set_refuses_a_tracer() -> None:
    environ.set(t=0.0)

    @jax.jit
    def f(x: jax.Array) -> jax.Array:
        environ.set(t=x)
        return x

    with pytest.raises(sj.EnvironError, match=r"'t' would hold a tracer .* Nothing was changed"):
        f(jnp.ones(()))
    assert environ.get("t") == 0.0


# Transforms: a setting read while tracing is noted, and a changed one retraces.


def test_jit_retraces_when_a_setting_it_read_changed() -> None:
    environ.set(dt=0.1)
    traces = []
    s = sj.State(jnp.zeros(()))

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        traces.append(environ.get_dt())
        s.value = s.value + environ.get_dt()
        return x * environ.get_dt()

    assert float(step(1.0)) == pytest.approx(0.1)
    n = len(traces)
    assert float(step(1.0)) == pytest.approx(0.1) and len(traces) == n  # cached
    environ.set(dt=0.2)
    assert float(step(1.0)) == pytest.approx(0.2) and len(traces) == n + 1
    environ.set(other=1)  # not read by step: compared, kept
    with environ.context(dt=0.2):  # the same value: kept
        step(1.0)
    assert len(traces) == n + 1
    with environ.context(dt=0.5):
        assert float(step(1.0)) == pytest.approx(0.5)
    assert float(step(1.0)) == pytest.approx(0.2)
    assert float(s.value) == pytest.approx(0.1 + 0.1 + 0.2 + 0.2 + 0.5 + 0.2)


def test_a_function_that_reads_no_setting_never_retraces_for_settings() -> None:
    traces = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        return x + 1

    f(1.0)
    n = len(traces)
    environ.set(dt=0.3)
    with environ.context(precision=16):
        pass
    f(1.0)
    assert len(traces) == n


def test_a_context_inside_the_traced_function_does_not_retrace() -> None:
    environ.set(dt=0.1)
    traces = []

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        traces.append(1)
        with environ.context(dt=0.3, i=x):
            return x * environ.get_dt() + environ.get("i")

    assert float(f(1.0)) == pytest.approx(1.3)
    n = len(traces)
    for _ in range(3):
        f(1.0)
    environ.set(dt=0.7)  # shadowed inside f: no retrace
    assert float(f(1.0)) == pytest.approx(1.3) and len(traces) == n


def test_random_draws_under_jit_follow_the_precision() -> None:
    f = sj.jit(lambda: sj.random.randn(2))
    assert f().dtype == jnp.float32
    with environ.context(precision=64):
        assert f().dtype == jnp.float64
    assert f().dtype == jnp.float32


def test_nested_transforms_note_the_read_in_the_outer_trace_too() -> None:
    environ.set(scale=2.0)
    inner = sj.vmap(lambda x: x * environ.get("scale"))
    outer = sj.jit(lambda x: inner(x).sum())
    assert float(outer(jnp.ones(3))) == 6.0
    environ.set(scale=3.0)
    assert float(outer(jnp.ones(3))) == 9.0


def test_reset_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        environ.reset()

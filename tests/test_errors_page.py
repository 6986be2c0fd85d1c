"""Every row of docs/errors.md, checked against the code.

Each row of the page's tables names an error and when it is raised; the check for that
row raises it that way, asserts the type and the message, and asserts the page's closing
promise: no state changed and none holds a tracer. A row added to the page without a
check here fails `test_every_row_has_a_check`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.extend import PluginWarning
from statejax.registry._manager import get_registry, reset_registry

PAGE = Path(__file__).parent.parent / "docs" / "errors.md"


def page_rows() -> list[str]:
    """The first cell of every table row of the page (the error's name)."""
    rows = re.findall(r"^\| `(\w+)`", PAGE.read_text(), flags=re.M)
    return [row for row in rows if row != "error"]


def assert_untouched(state: sj.State[Any], before: jax.Array) -> None:
    assert isinstance(state.value, jax.Array) and not isinstance(state.value, jax.core.Tracer)
    np.testing.assert_array_equal(state.value, before)


def check_spec_error() -> None:
    def f(x: jax.Array) -> jax.Array:
        return x

    # When you decorate: unknown option, wrong type, out of range, empty argnums/grad_states.
    with pytest.raises(sj.SpecError, match=r"statejax\.vmap.*in_axis.*Did you mean 'in_axes'"):
        sj.vmap(f, in_axis=0)  # type: ignore[call-overload]
    with pytest.raises(sj.SpecError, match=r"statejax\.grad.*argnums"):
        sj.grad(f, argnums=True)
    with pytest.raises(sj.SpecError, match=r"statejax\.vmap.*axis_size"):
        sj.vmap(f, axis_size=2.0)  # type: ignore[call-overload]
    with pytest.raises(sj.SpecError, match=r"statejax\.vmap.*axis_size"):
        sj.vmap(f, axis_size=2**31)
    with pytest.raises(sj.SpecError, match=r"statejax\.grad.*argnums"):
        sj.grad(f, argnums=())
    with pytest.raises(sj.SpecError, match=r"statejax\.grad.*grad_states"):
        sj.grad(f, grad_states=[])
    assert issubclass(sj.SpecError, ValueError)

    # At the first call: a vmap selector that matches none of the states the function touches.
    counter = sj.ShortTermState(jnp.zeros(3))

    def read(x: jax.Array) -> jax.Array:
        return counter.value + x

    mapped = sj.vmap(read, in_states=sj.ParamState)  # decorating is fine
    with pytest.raises(sj.SpecError, match=r"in_states.*matches none"):
        mapped(jnp.ones((2, 3)))
    assert_untouched(counter, jnp.zeros(3))


BROKEN_PLUGIN = """
    raise ImportError("no module named 'missing_dependency'")
"""


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "fake_broken_errors_page.py").write_text(textwrap.dedent(BROKEN_PLUGIN))
    info = tmp_path / "fake_broken_errors_page-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-broken-errors-page\nVersion: 0.3.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[statejax.transforms]\nbroken = fake_broken_errors_page\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("STATEJAX_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("STATEJAX_PLUGINS", raising=False)
    reset_registry()
    yield
    sys.modules.pop("fake_broken_errors_page", None)
    reset_registry()


def check_plugin_error(broken_plugin: None) -> None:
    with pytest.warns(PluginWarning) as record:
        registry = get_registry()
    messages = [str(w.message) for w in record]
    assert any(
        "fake-broken-errors-page" in m and "0.3.0" in m and "broken" in m for m in messages
    ), messages
    # The other transforms keep working.
    state = sj.State(jnp.zeros(()))

    @sj.jit
    def step() -> None:
        state.value = state.value + 1

    step()
    assert float(state.value) == 1.0
    assert "broken" not in registry.transforms


def check_state_leak_error() -> None:
    holder: list[sj.State[Any]] = []

    @sj.jit
    def make() -> jax.Array:
        holder.append(sj.State(jnp.ones(())))
        return jnp.zeros(())

    make()
    with pytest.raises(sj.StateLeakError, match="created inside"):
        _ = holder[0].value


def check_trace_error() -> None:
    outside = sj.State(jnp.zeros(()))

    @jax.jit
    def plain(x: jax.Array) -> jax.Array:
        outside.value = x
        return x

    with pytest.raises(sj.TraceError, match="jit"):
        plain(jnp.ones(()))
    assert_untouched(outside, jnp.zeros(()))

    # A write in a while_loop condition cannot be traced.
    def cond(i: jax.Array) -> jax.Array:
        outside.value = outside.value + 1
        return i < 3

    with pytest.raises(sj.TraceError, match="condition"):
        sj.while_loop(cond, lambda i: i + 1, jnp.array(0))
    assert_untouched(outside, jnp.zeros(()))


def check_batch_axis_error() -> None:
    shared = sj.State(jnp.zeros(3))

    def write(x: jax.Array) -> jax.Array:
        shared.value = shared.value + x
        return x

    with pytest.raises(sj.BatchAxisError, match=r"out_states"):
        sj.vmap(write)(jnp.ones((2, 3)))
    assert_untouched(shared, jnp.zeros(3))

    mapped = sj.State(jnp.zeros((4, 3)))
    with pytest.raises(sj.BatchAxisError, match=r"size"):
        sj.vmap(lambda x: x + mapped.value, in_states=mapped)(jnp.ones((2, 3)))
    assert_untouched(mapped, jnp.zeros((4, 3)))
    assert issubclass(sj.BatchAxisError, ValueError)


SHARDING_MISMATCH = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import statejax as sj

mesh = jax.make_mesh((2,), ("d",), axis_types=(AxisType.Auto,))
replicated = NamedSharding(mesh, P())
w = sj.ParamState(jax.device_put(jnp.ones(4), replicated))
total = sj.jit(lambda: w.value.sum(), state_shardings={sj.ParamState: replicated})
total()
moved = jax.device_put(jnp.ones(4), NamedSharding(mesh, P("d")))
w.value = moved
try:
    total()
except sj.ShardingError as exc:
    assert isinstance(exc, ValueError)
    assert w.value is moved, "the state was moved"
    print("RAISED", exc)
"""


def check_sharding_error() -> None:
    # Two simulated devices must be set before JAX starts: a subprocess. The shard_map
    # case (a device-varying write into a replicated state) runs in tests/scaling.
    result = subprocess.run(
        [sys.executable, "-c", SHARDING_MISMATCH], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RAISED" in result.stdout and "ParamState" in result.stdout, result.stdout
    assert "does not move it silently" in result.stdout, result.stdout


def check_checkpoint_error() -> None:
    from statejax.checkpoints import CheckpointError

    directory = Path(tempfile.mkdtemp())
    try:
        w = sj.ParamState(jnp.ones(2))
        with pytest.raises(CheckpointError, match=r"paths \(1\.5,\) and \('1\.5',\)"):
            sj.checkpoints.save(directory / "a", {1.5: w, "1.5": w})
        with pytest.raises(CheckpointError, match=r"file pattern.*choose a directory"):
            sj.checkpoints.save(directory / "br[a]ck", {"w": w})
        with pytest.raises(CheckpointError, match=r"\('name',\).*holds a str"):
            sj.checkpoints.save(directory / "a", {"w": w, "name": sj.State("mlp")})
        with pytest.raises(CheckpointError, match=r"save was called inside statejax\.jit"):
            sj.jit(lambda: sj.checkpoints.save(directory / "a", {"w": w}))()
        assert_untouched(w, jnp.ones(2))
        assert list(directory.iterdir()) == []
        sj.checkpoints.save(directory / "a", {"w": w})
        bigger = sj.ParamState(jnp.zeros(3))
        with pytest.raises(CheckpointError, match=r"\('w',\).*float32\[3\] but the checkpoint"):
            sj.checkpoints.restore(directory / "a", {"w": bigger})
        assert_untouched(bigger, jnp.zeros(3))
        with pytest.raises(CheckpointError, match=r"no checkpoint in .*no such directory"):
            sj.checkpoints.restore(directory / "b", {"w": bigger})
        assert not (directory / "b").exists()
        assert issubclass(CheckpointError, (sj.StatejaxError, ValueError))
    finally:
        shutil.rmtree(directory)


def check_type_error() -> None:
    with pytest.raises(TypeError, match="xs"):
        sj.transform.map(lambda x: x)
    with pytest.raises(TypeError, match="seed"):
        sj.random.seed(1.5)
    with pytest.raises(TypeError, match="key"):
        sj.random.seed(np.array([1, 2, 3], np.uint32))


def check_value_error() -> None:
    key = sj.random.get_key()
    with pytest.raises(ValueError, match="bernoulli"):
        sj.random.bernoulli(1.5)
    np.testing.assert_array_equal(
        jax.random.key_data(sj.random.get_key()), jax.random.key_data(key)
    )


CHECKS: dict[str, Callable[..., None]] = {
    "SpecError": check_spec_error,
    "PluginError": check_plugin_error,
    "StateLeakError": check_state_leak_error,
    "TraceError": check_trace_error,
    "BatchAxisError": check_batch_axis_error,
    "ShardingError": check_sharding_error,
    "CheckpointError": check_checkpoint_error,
    "TypeError": check_type_error,
    "ValueError": check_value_error,
}


def test_every_row_has_a_check() -> None:
    assert sorted(page_rows()) == sorted(CHECKS)


@pytest.mark.parametrize("row", [r for r in CHECKS if r != "PluginError"])
def test_row(row: str) -> None:
    CHECKS[row]()


def test_plugin_error_row(broken_plugin: None) -> None:
    check_plugin_error(broken_plugin)

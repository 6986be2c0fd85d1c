"""Every row of docs/errors.md, checked against the code.

Each row of the page's tables names an error and when it is raised; the check for that
row raises it that way, asserts the type and the message, and asserts the page's closing
promise: no state changed and none holds a tracer. A row added to the page without a
check here fails `test_every_row_has_a_check`.
"""

from __future__ import annotations

import functools
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
from statejax.extend import PluginWarning, PureCore, Split, StatefulFunction
from statejax.registry._manager import get_registry, reset_registry

PAGE = Path(__file__).parents[2] / "docs" / "errors.md"


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

    # At any call: an argument donated that is also a state's value.
    class Holder(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(3))

    holder = Holder()

    def add(m: Holder, x: jax.Array) -> jax.Array:
        m.w.value = m.w.value + x
        return x

    with pytest.raises(
        sj.SpecError, match=r"argument 1 is donated.*ParamState at path \('w',\).*jnp\.copy"
    ):
        sj.jit(add, donate_argnums=1)(holder, holder.w.value)
    assert_untouched(holder.w, jnp.ones(3))
    # ... or a state whose new shape no longer divides over the mesh (two devices).
    out = _two_devices()
    assert "RESHAPED" in out and "ParamState at path ('w',)" in out, out
    assert "changed shape since the first call" in out, out


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

    # At a call: a lift handing back too few values is refused before any state changes.
    a, b = sj.State(jnp.zeros(())), sj.State(jnp.zeros(()))

    def write_both() -> None:
        a.value = a.value + 1
        b.value = b.value + 1

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        def transformed(rv: list[Any], wv: list[Any]) -> Any:
            out, new = pure(rv, wv)
            return out, new[:1]

        return transformed

    stateful: StatefulFunction[None] = StatefulFunction(write_both, "short_jit", lift)
    with pytest.raises(sj.PluginError, match=r"short_jit: 1 new value for the 2 written states"):
        stateful()
    assert_untouched(a, jnp.zeros(()))
    assert_untouched(b, jnp.zeros(()))


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

    # A state only in out_states, whose value already has the batch axis: stacked again.
    count = sj.State(jnp.zeros(2))

    def tick(x: jax.Array) -> jax.Array:
        count.value = count.value + x
        return x

    with pytest.raises(sj.BatchAxisError, match=r"second batch axis .*in_states=\{0: state\}"):
        sj.vmap(tick, out_states={0: count})(jnp.ones(2))
    assert_untouched(count, jnp.zeros(2))

    # Mapped in on one axis and out on another: the batch axis would move.
    moved = sj.State(jnp.zeros((2, 3)))

    def add(x: jax.Array) -> jax.Array:
        moved.value = moved.value + x
        return x

    with pytest.raises(sj.BatchAxisError, match=r"input axis 0 .*written back on axis 1"):
        sj.vmap(add, in_states={0: moved}, out_states={1: moved})(jnp.ones(2))
    assert_untouched(moved, jnp.zeros((2, 3)))


def check_state_operand_error() -> None:
    w = sj.ParamState(jnp.ones((2, 2)))
    x = jnp.ones(2)
    with pytest.raises(sj.StateOperandError, match=r"ParamState .*read `\.value`"):
        _ = x @ w  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"`-state`"):
        _ = -w  # type: ignore[operator]
    with pytest.raises(sj.StateOperandError, match=r"indexed"):
        _ = w[0]  # type: ignore[index]

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        w.value = w.value * 2
        return x @ w  # type: ignore[operator]

    with pytest.raises(sj.StateOperandError, match=r"^statejax\.jit\(.*step\): ParamState"):
        step(x)
    assert_untouched(w, jnp.ones((2, 2)))
    assert issubclass(sj.StateOperandError, TypeError)


def check_spec_type_error() -> None:
    with pytest.raises(sj.SpecTypeError, match=r"cond"):
        sj.cond(True, 1, lambda: 0)  # type: ignore[call-overload]
    with pytest.raises(sj.SpecTypeError, match=r"xs") as caught:
        sj.transform.map(lambda x: x)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
    assert issubclass(sj.SpecTypeError, sj.SpecError)


def check_trace_type_error() -> None:
    w = sj.ParamState(jnp.ones(2))
    with pytest.raises(sj.TraceTypeError, match=r"has_aux=True .*pair"):
        sj.grad(lambda: jnp.sum(w.value), w, has_aux=True)()
    assert_untouched(w, jnp.ones(2))
    # unit_aware=True cannot carry units under fwd_grad: a quantity is refused.
    quantity = type("Quantity", (), {"__module__": "saiunit._base_quantity", "unit": "ms"})
    jax.tree_util.register_pytree_node(quantity, lambda q: ((), None), lambda _, c: quantity())
    with pytest.raises(sj.TraceTypeError, match=r"unit_aware=True .*carry units"):
        sj.transform.fwd_grad(lambda x: jnp.sum(w.value), argnums=0, unit_aware=True, key=0)(
            quantity()
        )
    assert issubclass(sj.TraceTypeError, TypeError)


def check_trace_value_error() -> None:
    s = sj.State(jnp.zeros(()))

    def cond(i: jax.Array) -> jax.Array:
        s.value = s.value + 1
        return i < 3

    with pytest.raises(sj.TraceValueError, match=r"condition"):
        sj.while_loop(cond, lambda i: i + 1, jnp.array(0))
    assert_untouched(s, jnp.zeros(()))
    assert issubclass(sj.TraceValueError, ValueError)


def check_loop_body_error() -> None:
    s = sj.State(jnp.zeros(()))

    def body(c: jax.Array, x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return c + x

    with pytest.raises(sj.LoopBodyError, match=r"^statejax\.scan\(.*body\): the loop body must"):
        sj.scan(body, 0.0, jnp.ones(2))  # type: ignore[arg-type]
    assert_untouched(s, jnp.zeros(()))
    for kind in (sj.TraceTypeError, TypeError, ValueError):
        assert issubclass(sj.LoopBodyError, kind)


def check_nan_error() -> None:
    with pytest.raises(sj.NaNError, match=r"NaN|nan"):
        sj.transform.debug_nan(lambda x: jnp.log(x), -jnp.ones(2))
    assert issubclass(sj.NaNError, RuntimeError)


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

class Model(sj.Module):
    def __init__(self):
        self.w = sj.ParamState(jax.device_put(jnp.ones(4), NamedSharding(mesh, P("d"))))

def grow(m):
    m.w.value = m.w.value + 1

model = Model()
step = sj.shard_map(grow, mesh, in_specs=P(), out_specs=P(), state_in_specs=P("d"))
step(model)
model.w.value = jnp.ones(3)
try:
    step(model)
except sj.SpecError as exc:
    assert model.w.value.shape == (3,)
    print("RESHAPED", exc)
model.w.value = on_one = jax.device_put(jnp.ones(4), jax.devices()[1])
try:
    step(model)
except sj.ShardingError as exc:
    assert model.w.value is on_one
    print("FOREIGN", exc)
"""


@functools.cache
def _two_devices() -> str:
    """The output of SHARDING_MISMATCH, run once (two devices: a subprocess)."""
    result = subprocess.run(
        [sys.executable, "-c", SHARDING_MISMATCH], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def check_sharding_error() -> None:
    # Two simulated devices must be set before JAX starts: a subprocess. The shard_map
    # case (a device-varying write into a replicated state) runs in tests/scaling.
    out = _two_devices()
    assert "RAISED" in out and "ParamState" in out, out
    assert "does not move it silently" in out, out
    assert "FOREIGN" in out and "committed to devices [1]" in out, out


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
    with pytest.raises(TypeError, match="seed"):
        sj.random.seed(1.5)
    with pytest.raises(TypeError, match="key"):
        sj.random.seed(np.array([1, 2, 3], np.uint32))
    with pytest.raises(TypeError, match="uniform: size must be an int"):
        sj.random.uniform(size=2.5)


def check_value_error() -> None:
    key = sj.random.get_key()
    with pytest.raises(ValueError, match="bernoulli"):
        sj.random.bernoulli(1.5)
    with pytest.raises(ValueError, match="poisson: lam must be >= 0"):
        sj.random.poisson(-1)
    with pytest.raises(ValueError, match="normal: size must not be negative"):
        sj.random.normal(size=-1)
    with pytest.raises(ValueError, match="choice: cannot take 5 samples"):
        sj.random.choice(3, size=5, replace=False)
    np.testing.assert_array_equal(
        jax.random.key_data(sj.random.get_key()), jax.random.key_data(key)
    )


def check_hook_cancellation_error() -> None:
    w = sj.ParamState(jnp.zeros(2), name="w")
    b = sj.State(jnp.zeros(2), name="b")
    w.register_hook("write_before", lambda ctx: setattr(ctx, "cancel", True), name="veto")

    def step(x: jax.Array) -> jax.Array:
        b.value = x  # written first: dropped with the rest
        w.value = x
        return x

    with pytest.raises(sj.HookCancellationError, match=r"^veto: .*ParamState 'w'.*nothing was"):
        w.value = jnp.ones(2)
    with pytest.raises(sj.HookCancellationError, match=r"veto: .*'w'.*inside statejax\.jit"):
        sj.jit(step)(jnp.ones(2))
    assert_untouched(w, jnp.zeros(2))
    assert_untouched(b, jnp.zeros(2))
    assert issubclass(sj.HookCancellationError, sj.HookError)


def check_hook_execution_error() -> None:
    w = sj.ParamState(jnp.zeros(2), name="w")
    w._hooks_manager = sj.HookManager(sj.HookConfig(on_error="raise"))
    w.register_hook("write_after", lambda ctx: 1 / 0, name="bad")
    with pytest.raises(
        sj.HookExecutionError, match=r"'bad' error #\d on ParamState 'w'.*inside statejax\.jit"
    ) as caught:
        sj.jit(lambda x: setattr(w, "value", x))(jnp.ones(2))
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert_untouched(w, jnp.zeros(2))


def check_hook_registration_error() -> None:
    w = sj.ParamState(jnp.zeros(2), name="w")
    with pytest.raises(sj.HookRegistrationError, match=r"invalid hook type 'reed'; give one of"):
        w.register_hook("reed", print)  # type: ignore[arg-type]
    with pytest.raises(sj.HookRegistrationError, match="must be callable"):
        sj.register_state_hook("read", None)  # type: ignore[arg-type]
    assert issubclass(sj.HookRegistrationError, ValueError)
    assert not w.has_hooks() and not sj.has_state_hooks()
    assert_untouched(w, jnp.zeros(2))


def check_environ_error() -> None:
    from statejax import environ

    environ.set(dt=0.1)
    try:
        with pytest.raises(sj.EnvironError, match=r"precision=128 is not supported; use one of"):
            environ.set(precision=128, dt=0.5)
        with pytest.raises(sj.EnvironError, match=r"Cannot set 'platform' in context"):
            with environ.context(platform="cpu"):
                pass
        with environ.context(dt=0.2):
            with pytest.raises(sj.EnvironError, match=r"Cannot pop key 'dt' while it is active"):
                environ.pop("dt")
        assert environ.get_dt() == 0.1  # refused calls changed nothing
    finally:
        environ.reset()
    assert issubclass(sj.EnvironError, ValueError)


def check_environ_type_error() -> None:
    from statejax import environ

    with pytest.raises(sj.EnvironTypeError, match=r"dt must be a scalar number"):
        environ.set(dt="fast")  # type: ignore[arg-type]
    with pytest.raises(sj.EnvironTypeError, match=r"Behavior must be callable"):
        environ.register_default_behavior("dt", 5)  # type: ignore[arg-type]
    assert environ.get("dt", None) is None and environ.list_registered_behaviors() == []
    assert issubclass(sj.EnvironTypeError, TypeError)


def check_environ_key_error() -> None:
    from statejax import environ

    with pytest.raises(sj.EnvironKeyError, match=r"key 'dt' not found in environment. Set it"):
        environ.get_dt()
    with pytest.raises(KeyError, match=r"'nope' not found in global environment settings"):
        environ.pop("nope")


CHECKS: dict[str, Callable[..., None]] = {
    "SpecError": check_spec_error,
    "PluginError": check_plugin_error,
    "StateLeakError": check_state_leak_error,
    "TraceError": check_trace_error,
    "BatchAxisError": check_batch_axis_error,
    "StateOperandError": check_state_operand_error,
    "SpecTypeError": check_spec_type_error,
    "TraceTypeError": check_trace_type_error,
    "TraceValueError": check_trace_value_error,
    "LoopBodyError": check_loop_body_error,
    "NaNError": check_nan_error,
    "ShardingError": check_sharding_error,
    "CheckpointError": check_checkpoint_error,
    "HookCancellationError": check_hook_cancellation_error,
    "HookExecutionError": check_hook_execution_error,
    "HookRegistrationError": check_hook_registration_error,
    "EnvironError": check_environ_error,
    "EnvironTypeError": check_environ_type_error,
    "EnvironKeyError": check_environ_key_error,
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


def test_errors_show_their_public_name_and_pickle() -> None:
    import pickle

    for name in [*CHECKS, "StatejaxError", "TraceError"]:
        kind = getattr(sj, name, None)
        if kind is None or not issubclass(kind, sj.StatejaxError):
            continue
        assert f"{kind.__module__}.{kind.__qualname__}" == f"statejax.{name}"
        error = pickle.loads(pickle.dumps(kind("message")))
        assert type(error) is kind and str(error) == "message"

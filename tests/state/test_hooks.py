"""State hooks: BrainState's hook API (signatures, semantics), how hooks meet transforms
(trace time only, cancelled writes not recorded, atomic on error), thread safety, and
the switch that keeps `State.value` free of hook work when no hook is registered."""

from __future__ import annotations

import copy
import gc
import inspect
import pickle
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._state_hooks import HOOKS
from statejax.extend import StateTrace


@pytest.fixture(autouse=True)
def _no_global_hooks() -> Iterator[None]:
    sj.clear_state_hooks()
    yield
    sj.clear_state_hooks()


# Captured with `inspect.signature` from BrainState 0.5.4 (a scratch install):
# (parameter, kind, repr of its default or "").
BRAINSTATE_SIGNATURES: dict[str, list[tuple[str, str, str]]] = {
    'register_state_hook': [('hook_type', 'pk', ''), ('callback', 'pk', ''), ('priority', 'pk', '0'), ('name', 'pk', 'None'), ('enabled', 'pk', 'True')],
    'unregister_state_hook': [('handle', 'pk', '')],
    'clear_state_hooks': [('hook_type', 'pk', 'None')],
    'has_state_hooks': [('hook_type', 'pk', 'None')],
    'list_state_hooks': [('hook_type', 'pk', 'None')],
    'Hook': [('callback', 'pk', ''), ('priority', 'pk', '0'), ('name', 'pk', 'None'), ('enabled', 'pk', 'True')],
    'HookHandle': [('manager_ref', 'pk', ''), ('hook', 'pk', ''), ('hook_type', 'pk', '')],
    'HookManager': [('config', 'pk', 'None')],
    'HookConfig': [('on_error', 'pk', "'log'"), ('error_logger', 'pk', 'None'), ('max_errors_per_hook', 'pk', '10'), ('disable_on_error', 'pk', 'False')],
    'GlobalHookRegistry': [],
    'HookContext': [('operation', 'pk', ''), ('state_ref', 'pk', ''), ('timestamp', 'pk', '<factory>'), ('metadata', 'pk', '<factory>')],
    'ReadHookContext': [('operation', 'pk', ''), ('state_ref', 'pk', ''), ('timestamp', 'pk', '<factory>'), ('metadata', 'pk', '<factory>'), ('value', 'pk', 'None')],
    'WriteHookContext': [('operation', 'pk', ''), ('state_ref', 'pk', ''), ('timestamp', 'pk', '<factory>'), ('metadata', 'pk', '<factory>'), ('value', 'pk', 'None'), ('old_value', 'pk', 'None')],
    'MutableWriteHookContext': [('operation', 'pk', ''), ('state_ref', 'pk', ''), ('timestamp', 'pk', '<factory>'), ('metadata', 'pk', '<factory>'), ('value', 'pk', 'None'), ('old_value', 'pk', 'None'), ('transformed_value', 'pk', 'None'), ('cancel', 'pk', 'False'), ('cancel_reason', 'pk', 'None')],
    'RestoreHookContext': [('operation', 'pk', ''), ('state_ref', 'pk', ''), ('timestamp', 'pk', '<factory>'), ('metadata', 'pk', '<factory>'), ('value', 'pk', 'None'), ('old_value', 'pk', 'None')],
    'InitHookContext': [('operation', 'pk', ''), ('state_ref', 'pk', ''), ('timestamp', 'pk', '<factory>'), ('metadata', 'pk', '<factory>'), ('value', 'pk', 'None'), ('init_metadata', 'pk', '<factory>')],
    'State.register_hook': [('self', 'pk', ''), ('hook_type', 'pk', ''), ('callback', 'pk', ''), ('priority', 'pk', '0'), ('name', 'pk', 'None'), ('enabled', 'pk', 'True')],
    'State.unregister_hook': [('self', 'pk', ''), ('handle', 'pk', '')],
    'State.list_hooks': [('self', 'pk', ''), ('hook_type', 'pk', 'None')],
    'State.clear_hooks': [('self', 'pk', ''), ('hook_type', 'pk', 'None')],
    'State.has_hooks': [('self', 'pk', ''), ('hook_type', 'pk', 'None')],
    'State.temporary_hook': [('self', 'pk', ''), ('hook_type', 'pk', ''), ('callback', 'pk', ''), ('priority', 'pk', '0')],
    'State.restore_value': [('self', 'pk', ''), ('v', 'pk', '')],
    'HookManager.register_hook': [('self', 'pk', ''), ('hook_type', 'pk', ''), ('callback', 'pk', ''), ('priority', 'pk', '0'), ('name', 'pk', 'None'), ('enabled', 'pk', 'True')],
    'HookManager.unregister_hook': [('self', 'pk', ''), ('handle', 'pk', '')],
    'HookManager.get_hooks': [('self', 'pk', ''), ('hook_type', 'pk', 'None')],
    'HookManager.clear_hooks': [('self', 'pk', ''), ('hook_type', 'pk', 'None')],
    'HookManager.has_hooks': [('self', 'pk', ''), ('hook_type', 'pk', 'None')],
    'HookManager.execute_read_hooks': [('self', 'pk', ''), ('value', 'pk', ''), ('state_ref', 'pk', '')],
    'HookManager.execute_write_before_hooks': [('self', 'pk', ''), ('new_value', 'pk', ''), ('old_value', 'pk', ''), ('state_ref', 'pk', '')],
    'HookManager.execute_write_after_hooks': [('self', 'pk', ''), ('new_value', 'pk', ''), ('old_value', 'pk', ''), ('state_ref', 'pk', '')],
    'HookManager.execute_restore_hooks': [('self', 'pk', ''), ('new_value', 'pk', ''), ('old_value', 'pk', ''), ('state_ref', 'pk', '')],
    'HookManager.execute_init_hooks': [('self', 'pk', ''), ('value', 'pk', ''), ('state_ref', 'pk', ''), ('init_metadata', 'pk', 'None')],
    'HookHandle.enable': [('self', 'pk', '')],
    'HookHandle.disable': [('self', 'pk', '')],
    'HookHandle.remove': [('self', 'pk', '')],
    'HookHandle.is_enabled': [('self', 'pk', '')],
    'HookHandle.is_removed': [('self', 'pk', '')],
    'Hook.execute': [('self', 'pk', ''), ('context', 'pk', '')],
    'GlobalHookRegistry.instance': [],
    'GlobalHookRegistry.reset': [],
}  # fmt: skip

BRAINSTATE_HOOK_NAMES = [
    "HookContext", "ReadHookContext", "WriteHookContext", "MutableWriteHookContext",
    "RestoreHookContext", "InitHookContext", "Hook", "HookHandle", "HookManager",
    "HookConfig", "GlobalHookRegistry", "HookError", "HookExecutionError",
    "HookRegistrationError", "HookCancellationError", "HookWarning", "register_state_hook",
    "unregister_state_hook", "clear_state_hooks", "has_state_hooks", "list_state_hooks",
]  # fmt: skip

KINDS = {"POSITIONAL_OR_KEYWORD": "pk", "KEYWORD_ONLY": "kw"}


def _signature(obj: Any) -> list[tuple[str, str, str]]:
    empty = inspect.Parameter.empty
    return [
        (p.name, KINDS[p.kind.name], "" if p.default is empty else repr(p.default))
        for p in inspect.signature(obj).parameters.values()
    ]


@pytest.mark.parametrize("name", sorted(BRAINSTATE_SIGNATURES))
def test_signatures_are_brainstates(name: str) -> None:
    owner: Any = sj
    *classes, attr = name.split(".")
    for cls in classes:
        owner = getattr(sj, cls)
    assert _signature(getattr(owner, attr)) == BRAINSTATE_SIGNATURES[name]


def test_every_public_hook_name_is_exported_at_the_top_level() -> None:
    missing = [n for n in BRAINSTATE_HOOK_NAMES if not hasattr(sj, n)]
    assert missing == []
    assert set(BRAINSTATE_HOOK_NAMES) <= set(sj.__all__)
    for name in (
        "HookError",
        "HookExecutionError",
        "HookRegistrationError",
        "HookCancellationError",
    ):
        assert issubclass(getattr(sj, name), sj.StatejaxError)
        assert getattr(sj, name).__module__ == "statejax"
    assert issubclass(sj.HookWarning, UserWarning)


# --- semantics outside transforms ------------------------------------------------------


def test_priorities_chaining_and_global_hooks_first() -> None:
    s = sj.State(jnp.array([1.0, 2.0]), name="s")
    order: list[str] = []

    def double(ctx: sj.MutableWriteHookContext) -> None:
        order.append("double")
        ctx.transformed_value = ctx.transformed_value * 2

    def add_ten(ctx: sj.MutableWriteHookContext) -> None:
        order.append("add_ten")
        assert ctx.value.tolist() == [1.0, 2.0]  # the value written, whatever came before
        ctx.transformed_value = ctx.transformed_value + 10

    s.register_hook("write_before", add_ten, priority=1)
    s.register_hook("write_before", double, priority=5)
    sj.register_state_hook("write_before", lambda ctx: order.append("global"), priority=-9)
    s.value = jnp.array([1.0, 2.0])
    assert order == ["global", "double", "add_ten"]
    np.testing.assert_array_equal(s.value, [12.0, 14.0])


def test_a_cancelled_write_writes_nothing_and_names_the_state() -> None:
    class Net(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.zeros(2))

    net = Net()
    seen: list[Any] = []

    def veto(ctx: sj.MutableWriteHookContext) -> None:
        if bool(jnp.any(ctx.value < 0)):
            ctx.cancel, ctx.cancel_reason = True, "negative weights"

    net.w.register_hook("write_before", veto, name="positive")
    net.w.register_hook("write_after", lambda ctx: seen.append(ctx))
    with pytest.raises(
        sj.HookCancellationError,
        match=r"^positive: negative weights\. The write to ParamState Net\.w .* nothing was "
        r"written; write a value the hook accepts, or disable or remove the hook\.$",
    ):
        net.w.value = jnp.array([1.0, -1.0])
    np.testing.assert_array_equal(net.w.value, [0.0, 0.0])
    assert seen == []  # no write_after for a write that did not happen


def test_a_value_a_hook_makes_is_checked_like_a_written_one() -> None:
    s = sj.State(jnp.zeros(2))
    other = sj.State(jnp.ones(2))
    handle = s.register_hook("write_before", lambda ctx: setattr(ctx, "transformed_value", other))
    with pytest.raises(ValueError, match="cannot store a State as the value"):
        s.value = jnp.ones(2)
    np.testing.assert_array_equal(s.value, [0.0, 0.0])
    handle.remove()


def test_restore_runs_restore_hooks_and_not_write_hooks() -> None:
    s = sj.State(jnp.array([1.0, 2.0]))
    log: list[tuple[str, list[float], list[float]]] = []
    s.register_hook("write_before", lambda ctx: log.append(("write_before", [], [])))
    s.register_hook("write_after", lambda ctx: log.append(("write_after", [], [])))
    s.register_hook(
        "restore", lambda ctx: log.append(("restore", ctx.old_value.tolist(), ctx.value.tolist()))
    )
    s.restore_value(jnp.array([7.0, 8.0]))
    assert log == [("restore", [1.0, 2.0], [7.0, 8.0])]
    with pytest.raises(ValueError, match="tree structure"):
        s.restore_value({"a": jnp.zeros(2)})
    assert len(log) == 1


def test_error_handling_follows_the_config() -> None:
    s = sj.State(jnp.zeros(2), name="s")

    def boom(ctx: sj.HookContext) -> None:
        raise RuntimeError("bad hook")

    after: list[str] = []
    s.register_hook("read", boom, name="boom", priority=1)
    s.register_hook("read", lambda ctx: after.append("ran"))
    with pytest.warns(
        sj.HookWarning, match=r"'boom' error #1 on State 's' .*RuntimeError: bad hook"
    ):
        s.value  # noqa: B018
    assert after == ["ran"]  # 'log' (the default): the next hook still runs
    s._hooks_manager = sj.HookManager(sj.HookConfig(on_error="raise"))
    s.register_hook("read", boom, name="boom")
    with pytest.raises(
        sj.HookExecutionError, match=r"'boom' error #1 on State 's'.*Fix the hook"
    ) as caught:
        s.value  # noqa: B018
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_registration_errors() -> None:
    s = sj.State(1.0)
    with pytest.raises(
        sj.HookRegistrationError, match=r"invalid hook type 'reed'; give one of 'read'"
    ):
        s.register_hook("reed", print)  # type: ignore[arg-type]
    with pytest.raises(sj.HookRegistrationError, match="must be callable"):
        sj.register_state_hook("read", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid hook type"):
        s.has_hooks("reed")
    assert not s.has_hooks() and not sj.has_state_hooks()


def test_global_init_hooks_see_each_state_created() -> None:
    made: list[tuple[str | None, Any]] = []
    handle = sj.register_state_hook(
        "init", lambda ctx: made.append((ctx.state_name, ctx.init_metadata["tag"]))
    )
    sj.ParamState(jnp.zeros(2), name="w", tag="enc")
    handle.remove()
    sj.State(jnp.zeros(2), name="after")
    assert made == [("w", {"enc"})]


def test_copies_and_pickles_do_not_share_hooks() -> None:
    s = sj.State(jnp.zeros(2), name="s")
    reads: list[int] = []
    s.register_hook("read", lambda ctx: reads.append(1))
    c = s.copy()  # reads s: its read hook runs
    d = copy.deepcopy(s)
    p = pickle.loads(pickle.dumps(s))
    reads.clear()
    for other in (c, d, p):
        assert not other.has_hooks()
        other.value  # noqa: B018
    assert reads == []
    assert s.has_hooks() and s.hooks is not c.hooks


# --- hooks and transforms ----------------------------------------------------------------


def test_hooks_run_while_tracing_never_on_cached_calls() -> None:
    s = sj.State(jnp.zeros(2), name="s")
    log: list[tuple[str, bool]] = []
    s.register_hook(
        "read", lambda ctx: log.append(("read", isinstance(ctx.value, jax.core.Tracer)))
    )

    def double(ctx: sj.MutableWriteHookContext) -> None:
        log.append(("write_before", isinstance(ctx.value, jax.core.Tracer)))
        ctx.transformed_value = ctx.transformed_value * 2

    s.register_hook("write_before", double)

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return x

    step(jnp.ones(2))
    traced = len(log)
    assert traced >= 2 and ("write_before", True) in log  # at trace time, with tracers
    step(jnp.ones(2))
    step(jnp.ones(2))
    assert len(log) == traced  # cached calls run no hook...
    np.testing.assert_array_equal(s.value, [14.0, 14.0])  # ...but the doubling is compiled in


@pytest.mark.parametrize(
    "wrap",
    [
        lambda f: sj.jit(sj.jit(f)),
        lambda f: sj.jit(lambda x: sj.grad(lambda y: (f(y), (y**2).sum())[1])(x)),
        lambda f: sj.vmap(f, in_axes=None, axis_size=1),
    ],
    ids=["jit(jit)", "jit(grad)", "vmap"],
)
def test_a_write_before_hook_changes_a_write_once_through_nested_transforms(wrap: Any) -> None:
    s = sj.State(jnp.zeros(2))
    s.register_hook(
        "write_before", lambda ctx: setattr(ctx, "transformed_value", ctx.transformed_value * 2)
    )

    def write(x: jax.Array) -> None:
        s.value = x

    wrap(write)(jnp.ones(2))
    np.testing.assert_array_equal(s.value, [2.0, 2.0])


def test_a_state_trace_stack_block_stores_its_writes_without_running_hooks_again() -> None:
    s = sj.State(jnp.zeros(2))
    after: list[list[float]] = []
    s.register_hook(
        "write_before", lambda ctx: setattr(ctx, "transformed_value", ctx.transformed_value * 2)
    )
    s.register_hook("write_after", lambda ctx: after.append(ctx.value.tolist()))
    with sj.StateTraceStack():
        s.value = jnp.ones(2)
    np.testing.assert_array_equal(s.value, [2.0, 2.0])
    assert after == [[2.0, 2.0]]


def test_a_cancelled_write_caught_inside_a_transform_is_not_a_write() -> None:
    a, b = sj.State(jnp.zeros(2), name="a"), sj.State(jnp.zeros(2), name="b")
    a.register_hook("write_before", lambda ctx: setattr(ctx, "cancel", True))

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        try:
            a.value = x
        except sj.HookCancellationError:
            pass
        b.value = x
        return x

    step(jnp.ones(2))
    np.testing.assert_array_equal(a.value, [0.0, 0.0])
    np.testing.assert_array_equal(b.value, [1.0, 1.0])
    with StateTrace("record") as trace:
        try:
            a.value = jnp.ones(2)
        except sj.HookCancellationError:
            pass
    assert id(a) not in trace.writes


@pytest.mark.parametrize("failure", ["cancel", "raise"])
def test_a_hook_failing_inside_a_transform_leaves_every_state_as_it_was(failure: str) -> None:
    a, b = sj.State(jnp.zeros(2), name="a"), sj.State(jnp.zeros(2), name="b")
    if failure == "cancel":
        b.register_hook("write_before", lambda ctx: setattr(ctx, "cancel", True), name="veto")
        error, match = (
            sj.HookCancellationError,
            r"veto: .*'b' .*inside .*step.* nothing was written",
        )
    else:
        b._hooks_manager = sj.HookManager(sj.HookConfig(on_error="raise"))
        b.register_hook("write_after", lambda ctx: 1 / 0, name="bad")
        error, match = (
            sj.HookExecutionError,
            r"'bad' error #\d on State 'b' .*inside .*step.*ZeroDivision",
        )

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        a.value = a.value + x  # written before the failing hook runs
        b.value = b.value + x
        return x

    with pytest.raises(error, match=match):
        step(jnp.ones(2))
    for state in (a, b):
        assert not isinstance(state.value, jax.core.Tracer)
        np.testing.assert_array_equal(state.value, [0.0, 0.0])


# --- threads and the switch --------------------------------------------------------------


def test_hooks_are_thread_safe_while_registered_and_removed() -> None:
    s = sj.State(jnp.zeros(1))
    count = [0]
    lock = threading.Lock()

    def counted(ctx: sj.HookContext) -> None:
        with lock:
            count[0] += 1

    s.register_hook("read", counted)
    start = threading.Barrier(5)

    def read() -> None:
        start.wait()
        for _ in range(200):
            s.value  # noqa: B018

    def churn() -> None:
        start.wait()
        for _ in range(50):
            s.register_hook("read", lambda ctx: None).remove()

    threads = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=churn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count[0] == 800
    assert len(s.list_hooks("read")) == 1


def test_the_switch_is_off_when_no_hook_is_registered() -> None:
    gc.collect()  # states of earlier tests that held hooks
    s = sj.State(jnp.zeros(2))
    s.value  # noqa: B018
    assert not HOOKS.on
    handle = s.register_hook("read", lambda ctx: None)
    assert HOOKS.on
    handle.remove()
    assert not HOOKS.on
    sj.register_state_hook("write_after", print)
    assert HOOKS.on
    sj.clear_state_hooks()
    assert not HOOKS.on
    # A state that dies holding hooks: the next hooked access turns the switch off.
    doomed = sj.State(jnp.zeros(2))
    doomed.register_hook("read", lambda ctx: None)
    del doomed
    gc.collect()
    s.value  # noqa: B018
    assert not HOOKS.on


def test_no_warning_and_no_hook_work_on_a_plain_read() -> None:
    s = sj.State(jnp.zeros(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.value = s.value + 1
    assert not s.has_hooks() and getattr(s, "_hooks", None) is None  # no manager made

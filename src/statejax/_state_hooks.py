"""State hooks: callbacks run when a state is read, written, restored or created.

BrainState 0.5.4's hook API, with its names, signatures and semantics: per-state
hooks (`State.register_hook`), global hooks (`register_state_hook` and friends), the
hook context objects, `Hook`, `HookHandle`, `HookManager`, `HookConfig` and
`GlobalHookRegistry`. The errors are in `statejax._errors`.

How hooks meet transforms (docs/hooks.md): hooks run where Python runs, so inside a
transform they run while it traces (with tracers as values), never on a cached
call; a write a `write_before` hook cancels raises `HookCancellationError` before
the write is recorded; a hook that raises inside a transform makes the transform
raise, and no state changes. The values a transform hands from one trace to an
enclosing one, and the values it merges into the states when it returns, are not
reads or writes of the user's: they run no hook (`hooks_paused()`).

The cost with no hook registered: `State.value` checks `HOOKS.on`, one attribute of
a module-level object, and does nothing more. `HOOKS.on` is set when any manager
gains a hook, and cleared again (lazily, by the next hooked access that finds no
manager holding one) when all are removed.

Names without a leading underscore are the internal API of the package:

| name | what |
|---|---|
| `HOOKS` | the switch `State.value` checks |
| `run_read`, `run_write`, `run_init` | what `State` calls when `HOOKS.on` |
| `hooks_paused()` | a block in which this thread's state accesses run no hook |
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from statejax._errors import (
    HookCancellationError,
    HookError,
    HookExecutionError,
    HookRegistrationError,
    HookWarning,
)
from statejax._tracing import THIS_THREAD, TraceLocal, current_trace, describe_state, peek_value

if TYPE_CHECKING:
    # Type-only: a context holds a weak reference to the state it reports on.
    from statejax._state import State

__all__ = [
    "HOOKS",
    "GlobalHookRegistry",
    "Hook",
    "HookConfig",
    "HookContext",
    "HookHandle",
    "HookManager",
    "HookType",
    "InitHookContext",
    "MutableWriteHookContext",
    "ReadHookContext",
    "RestoreHookContext",
    "WriteHookContext",
    "clear_state_hooks",
    "has_state_hooks",
    "hooks_paused",
    "list_state_hooks",
    "register_state_hook",
    "run_init",
    "run_read",
    "run_write",
    "unregister_state_hook",
]

HookType = Literal["read", "write_before", "write_after", "restore", "init"]
_HOOK_TYPES: tuple[str, ...] = ("read", "write_before", "write_after", "restore", "init")


# --- the switch ---------------------------------------------------------------------


class _Switch:
    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False


HOOKS = _Switch()
"""`HOOKS.on`: some hook may be registered somewhere. Off, `State.value` runs none."""

# The managers that hold at least one hook (of any type, enabled or not). Weak: a
# state that dies takes its manager, and its hooks, with it.
_HOLDERS: weakref.WeakSet[HookManager] = weakref.WeakSet()
_HOLDERS_LOCK = threading.Lock()


def _holds_hooks(manager: HookManager, holds: bool) -> None:
    with _HOLDERS_LOCK:
        if holds:
            _HOLDERS.add(manager)
            HOOKS.on = True
        else:
            _HOLDERS.discard(manager)
            HOOKS.on = len(_HOLDERS) > 0


def _recheck_switch() -> None:
    # A manager that died holding hooks leaves the switch on; turn it off when none is left.
    with _HOLDERS_LOCK:
        HOOKS.on = len(_HOLDERS) > 0


@contextlib.contextmanager
def hooks_paused() -> Iterator[None]:
    """Inside the block, this thread's state reads and writes run no hook.

    For the values a transform passes on (from an inner trace to an enclosing one,
    or merged into the states when it returns): the user's own reads and writes of
    them ran their hooks already.
    """
    THIS_THREAD.hooks_paused += 1
    try:
        yield
    finally:
        THIS_THREAD.hooks_paused -= 1


# --- contexts -----------------------------------------------------------------------


@dataclass(slots=True)
class HookContext:
    """What a hook callback is given: the operation, the state (weakly) and when.

    Args:
        operation: `'read'`, `'write_before'`, `'write_after'`, `'restore'` or `'init'`.
        state_ref: a weak reference to the state.
        timestamp: when the operation happened (`time.time()`).
        metadata: a dict for the callback's own use.

    Examples:
        >>> import weakref
        >>> import statejax as sj
        >>> s = sj.State(1.0, name="alpha")
        >>> ctx = sj.HookContext(operation="read", state_ref=weakref.ref(s))
        >>> ctx.state is s, ctx.state_name, ctx.metadata
        (True, 'alpha', {})
    """

    operation: HookType
    state_ref: weakref.ref[Any]
    timestamp: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> State[Any] | None:
        """The state, or `None` if it has been garbage collected."""
        state: State[Any] | None = self.state_ref()
        return state

    @property
    def state_name(self) -> str | None:
        """The state's name (`None` if it has none, or has been collected)."""
        state = self.state_ref()
        return getattr(state, "name", None) if state is not None else None


@dataclass(slots=True)
class ReadHookContext(HookContext):
    """The context of a `read` hook: `value` is the value read (a tracer inside a transform).

    Examples:
        >>> import weakref
        >>> import statejax as sj
        >>> s = sj.State(1.0)
        >>> sj.ReadHookContext(operation="read", state_ref=weakref.ref(s), value=7).value
        7
    """

    value: Any = None


@dataclass(slots=True)
class WriteHookContext(HookContext):
    """The context of a `write_after` hook: the new `value` and the `old_value`.

    Examples:
        >>> import weakref
        >>> import statejax as sj
        >>> s = sj.State(1.0)
        >>> ctx = sj.WriteHookContext("write_after", weakref.ref(s), value=2, old_value=1)
        >>> ctx.value, ctx.old_value
        (2, 1)
    """

    value: Any = None
    old_value: Any = None


@dataclass(slots=True)
class MutableWriteHookContext(WriteHookContext):
    """The context of a `write_before` hook, which may change or cancel the write.

    `value` is the value given to the write; `transformed_value` is what the hooks
    before this one made of it (set it to change what is written: the next hook
    gets it); `cancel = True` (with a `cancel_reason`) cancels the write, which then
    raises `HookCancellationError` and writes nothing.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> s = sj.State(jnp.zeros(2))
        >>> def clip(ctx):
        ...     ctx.transformed_value = jnp.clip(ctx.transformed_value, -1.0, 1.0)
        >>> handle = s.register_hook("write_before", clip)
        >>> s.value = jnp.array([5.0, -0.5]); s.value.tolist()
        [1.0, -0.5]
    """

    transformed_value: Any = None
    cancel: bool = False
    cancel_reason: str | None = None


@dataclass(slots=True)
class RestoreHookContext(WriteHookContext):
    """The context of a `restore` hook (`state.restore_value(v)`): `value` and `old_value`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> s = sj.State(jnp.zeros(2)); seen = []
        >>> handle = s.register_hook("restore", lambda ctx: seen.append(ctx.old_value.tolist()))
        >>> s.restore_value(jnp.ones(2)); seen
        [[0.0, 0.0]]
    """


@dataclass(slots=True)
class InitHookContext(HookContext):
    """The context of an `init` hook: the initial `value` and `init_metadata` (`_name`, `tag`).

    Only global hooks (`register_state_hook("init", ...)`) see a state created: a
    state's own hooks are registered after it exists.

    Examples:
        >>> import statejax as sj
        >>> names = []
        >>> handle = sj.register_state_hook("init", lambda ctx: names.append(ctx.init_metadata))
        >>> s = sj.State(1.0, name="w"); handle.remove()
        True
        >>> names
        [{'_name': 'w', 'tag': None}]
    """

    value: Any = None
    init_metadata: dict[str, Any] = field(default_factory=dict)


# --- hooks and handles --------------------------------------------------------------


class Hook:
    """A callback with a priority (higher runs first), a name and an enabled flag.

    Hooks of equal priority run in the order they were made.

    Args:
        callback: called with the hook's context; what it returns is ignored by states.
        priority: higher runs earlier (default 0).
        name: shown in messages (default `hook_<id>`).
        enabled: whether it runs.

    Raises:
        HookRegistrationError: `callback` is not callable.

    Examples:
        >>> import statejax as sj
        >>> low, high = sj.Hook(print, priority=1), sj.Hook(print, priority=10, name="first")
        >>> sorted([low, high])[0]
        Hook(name='first', priority=10, enabled)
    """

    _id_counter = 0
    _id_lock = threading.Lock()

    def __init__(
        self,
        callback: Callable[[HookContext], Any],
        priority: int = 0,
        name: str | None = None,
        enabled: bool = True,
    ) -> None:
        if not callable(callback):
            raise HookRegistrationError(
                f"a hook's callback must be callable (a function taking the hook context), "
                f"got {type(callback).__name__}."
            )
        with Hook._id_lock:
            hook_id = Hook._id_counter
            Hook._id_counter += 1
        self.callback = callback
        self.priority = priority
        self.name = name or f"hook_{hook_id}"
        self.enabled = enabled
        self._error_count = 0
        self.hook_id = hook_id

    def execute(self, context: HookContext) -> Any:
        """Call the callback with `context` (nothing if disabled) and return its result.

        Raises:
            HookExecutionError: the callback raised; its exception is the `__cause__`.

        Examples:
            >>> import weakref
            >>> import statejax as sj
            >>> s = sj.State(1.0)
            >>> sj.Hook(lambda ctx: ctx.operation).execute(sj.HookContext("read", weakref.ref(s)))
            'read'
        """
        if not self.enabled:
            return None
        try:
            return self.callback(context)
        except Exception as error:
            raise HookExecutionError(
                f"{context.operation} hook {self.name!r}{_on_state(context)} raised "
                f"{type(error).__name__}: {error}"
            ) from error

    def __repr__(self) -> str:
        status = "enabled" if self.enabled else "disabled"
        return f"Hook(name={self.name!r}, priority={self.priority}, {status})"

    def __lt__(self, other: Hook) -> bool:
        if self.priority != other.priority:
            return self.priority > other.priority
        return self.hook_id < other.hook_id


class HookHandle:
    """What registering a hook returns: enable, disable or remove it.

    Holds its manager weakly: once the state is gone, `remove()` returns `False`
    and `enable()`/`disable()` raise `HookError`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> s = sj.State(jnp.zeros(2)); reads = []
        >>> handle = s.register_hook("read", lambda ctx: reads.append(1))
        >>> handle.disable(); _ = s.value; handle.enable(); _ = s.value; reads
        [1]
        >>> handle.remove(), handle.remove(), handle
        (True, False, HookHandle(name='...', removed))
    """

    def __init__(self, manager_ref: weakref.ref[HookManager], hook: Hook, hook_type: str) -> None:
        self._manager_ref = manager_ref
        self._hook = hook
        self._hook_type = hook_type
        self._removed = False

    def _manager(self, action: str) -> HookManager:
        if self._removed:
            raise HookError(
                f"cannot {action} hook {self._hook.name!r}: it was removed; register it again."
            )
        manager = self._manager_ref()
        if manager is None:
            raise HookError(
                f"cannot {action} hook {self._hook.name!r}: its HookManager has been garbage "
                "collected (with the state it belonged to)."
            )
        return manager

    def enable(self) -> None:
        """Run the hook again.

        Raises:
            HookError: the hook was removed, or its manager (its state) is gone.
        """
        manager = self._manager("enable")
        with manager._lock:
            self._hook.enabled = True
            manager._invalidate_cache()

    def disable(self) -> None:
        """Stop running the hook until `enable()`.

        Raises:
            HookError: the hook was removed, or its manager (its state) is gone.
        """
        manager = self._manager("disable")
        with manager._lock:
            self._hook.enabled = False
            manager._invalidate_cache()

    def remove(self) -> bool:
        """Unregister the hook for good; `False` if it was already removed or its manager is gone."""
        if self._removed:
            return False
        manager = self._manager_ref()
        if manager is None:
            return False
        removed = manager.unregister_hook(self)
        if removed:
            self._removed = True
        return removed

    def is_enabled(self) -> bool:
        """Whether the hook runs (`False` once removed)."""
        return not self._removed and self._hook.enabled

    def is_removed(self) -> bool:
        """Whether `remove()` removed the hook."""
        return self._removed

    @property
    def name(self) -> str:
        """The hook's name."""
        return self._hook.name

    @property
    def priority(self) -> int:
        """The hook's priority."""
        return self._hook.priority

    def __repr__(self) -> str:
        if self._removed:
            return f"HookHandle(name={self.name!r}, removed)"
        status = "enabled" if self.is_enabled() else "disabled"
        return f"HookHandle(name={self.name!r}, priority={self.priority}, {status})"


# --- managers -----------------------------------------------------------------------


@dataclass
class HookConfig:
    """How a `HookManager` handles a hook that raises.

    `on_error`: `'log'` (the default, as BrainState: a `HookWarning`, or a call of
    `error_logger(message, error, hook, context)`, and the next hook runs),
    `'raise'` (a `HookExecutionError`) or `'ignore'`. With `disable_on_error`, a
    hook is disabled after `max_errors_per_hook` errors. A cancellation
    (`HookCancellationError`) is always raised.

    Examples:
        >>> import statejax as sj
        >>> sj.HookConfig(on_error="raise").on_error
        'raise'
    """

    on_error: Literal["raise", "log", "ignore"] = "log"
    error_logger: Callable[[str, Exception, Hook, HookContext], None] | None = None
    max_errors_per_hook: int = 10
    disable_on_error: bool = False


class HookManager:
    """The hooks of one state (`state.hooks`), or the global ones (`GlobalHookRegistry`).

    Registration, removal and running are thread-safe; hooks run in priority order
    (higher first). Callbacks run outside the manager's lock, so a hook may read or
    write other states, from any thread.

    Args:
        config: how errors of the hooks are handled (default `HookConfig()`).

    Examples:
        >>> import weakref
        >>> import statejax as sj
        >>> manager = sj.HookManager()
        >>> s = sj.State(1.0); order = []
        >>> _ = manager.register_hook("read", lambda ctx: order.append("low"), priority=1)
        >>> _ = manager.register_hook("read", lambda ctx: order.append("high"), priority=9)
        >>> manager.execute_read_hooks(1.0, weakref.ref(s)); order
        ['high', 'low']
        >>> manager.has_hooks("read"), manager.has_hooks("write_after")
        (True, False)
    """

    def __init__(self, config: HookConfig | None = None) -> None:
        self._lock = threading.RLock()
        self._hooks: dict[str, list[Hook]] = {kind: [] for kind in _HOOK_TYPES}
        self._has_hooks = False
        self._hook_cache: dict[str, list[Hook]] = {}
        self._cache_valid = False
        self.config = config or HookConfig()

    def register_hook(
        self,
        hook_type: HookType,
        callback: Callable[[HookContext], Any],
        priority: int = 0,
        name: str | None = None,
        enabled: bool = True,
    ) -> HookHandle:
        """Register `callback` for `hook_type`; the handle enables, disables or removes it.

        Raises:
            HookRegistrationError: an unknown `hook_type`, or `callback` not callable.
        """
        if hook_type not in _HOOK_TYPES:
            raise HookRegistrationError(_bad_type(hook_type))
        hook = Hook(callback, priority, name, enabled)
        with self._lock:
            self._hooks[hook_type].append(hook)
            self._invalidate_cache()
            if not self._has_hooks:
                self._has_hooks = True
                _holds_hooks(self, True)
        return HookHandle(weakref.ref(self), hook, hook_type)

    def unregister_hook(self, handle: HookHandle) -> bool:
        """Remove the hook of `handle`; `False` if this manager does not hold it."""
        with self._lock:
            hooks = self._hooks.get(handle._hook_type, [])
            if handle._hook not in hooks:
                return False
            hooks.remove(handle._hook)
            self._invalidate_cache()
            self._update_has_hooks_flag()
            return True

    def get_hooks(self, hook_type: str | None = None) -> list[Hook]:
        """The hooks of `hook_type` (all but `init` ones when `None`, as BrainState), as a new list."""
        with self._lock:
            if hook_type is None:
                return [h for kind in _HOOK_TYPES if kind != "init" for h in self._hooks[kind]]
            return list(self._get_hook_list(hook_type))

    def clear_hooks(self, hook_type: str | None = None) -> None:
        """Remove the hooks of `hook_type` (every hook when `None`)."""
        with self._lock:
            if hook_type is None:
                for hooks in self._hooks.values():
                    hooks.clear()
            else:
                self._get_hook_list(hook_type).clear()
            self._invalidate_cache()
            self._update_has_hooks_flag()

    def has_hooks(self, hook_type: str | None = None) -> bool:
        """Whether any hook is registered (`None`), or any enabled one of `hook_type`.

        Raises:
            ValueError: an unknown `hook_type`.
        """
        if hook_type is not None and hook_type not in _HOOK_TYPES:
            raise ValueError(_bad_type(hook_type))
        if not self._has_hooks:
            return False
        with self._lock:
            if hook_type is None:
                return self._has_hooks
            return any(h.enabled for h in self._hooks[hook_type])

    def execute_read_hooks(self, value: Any, state_ref: weakref.ref[Any]) -> None:
        """Run the `read` hooks with a `ReadHookContext`."""
        hooks = self._get_cached_hooks("read")
        if hooks:
            self._run(hooks, ReadHookContext("read", state_ref, value=value))

    def execute_write_before_hooks(
        self, new_value: Any, old_value: Any, state_ref: weakref.ref[Any]
    ) -> Any:
        """Run the `write_before` hooks, each on what the one before made; the value to write.

        Raises:
            HookCancellationError: a hook set `cancel`; nothing is to be written.
        """
        hooks = self._get_cached_hooks("write_before")
        value = new_value
        for hook in hooks:
            if not hook.enabled:
                continue
            context = MutableWriteHookContext(
                "write_before",
                state_ref,
                value=new_value,
                old_value=old_value,
                transformed_value=value,
            )
            try:
                hook.execute(context)
            except HookExecutionError as error:
                self._handle_hook_error(hook, error, context)
                continue
            if context.cancel:
                reason = context.cancel_reason or "the hook cancelled the write"
                raise HookCancellationError(
                    f"{hook.name}: {reason}. The write{_on_state(context, 'to')} was "
                    "cancelled by this write_before hook and nothing was written; write a "
                    "value the hook accepts, or disable or remove the hook."
                )
            if context.transformed_value is not None:
                value = context.transformed_value
        return value

    def execute_write_after_hooks(
        self, new_value: Any, old_value: Any, state_ref: weakref.ref[Any]
    ) -> None:
        """Run the `write_after` hooks with a `WriteHookContext`."""
        hooks = self._get_cached_hooks("write_after")
        if hooks:
            context = WriteHookContext(
                "write_after", state_ref, value=new_value, old_value=old_value
            )
            self._run(hooks, context)

    def execute_restore_hooks(
        self, new_value: Any, old_value: Any, state_ref: weakref.ref[Any]
    ) -> None:
        """Run the `restore` hooks with a `RestoreHookContext`."""
        hooks = self._get_cached_hooks("restore")
        if hooks:
            context = RestoreHookContext("restore", state_ref, value=new_value, old_value=old_value)
            self._run(hooks, context)

    def execute_init_hooks(
        self,
        value: Any,
        state_ref: weakref.ref[Any],
        init_metadata: dict[str, Any] | None = None,
    ) -> None:
        """Run the `init` hooks with an `InitHookContext`."""
        hooks = self._get_cached_hooks("init")
        if hooks:
            context = InitHookContext(
                "init", state_ref, value=value, init_metadata=init_metadata or {}
            )
            self._run(hooks, context)

    def _run(self, hooks: list[Hook], context: HookContext) -> None:
        for hook in hooks:
            if not hook.enabled:
                continue
            try:
                hook.execute(context)
            except HookExecutionError as error:
                self._handle_hook_error(hook, error, context)

    def _get_hook_list(self, hook_type: str) -> list[Hook]:
        hooks = self._hooks.get(hook_type)
        if hooks is None:
            raise ValueError(_bad_type(hook_type))
        return hooks

    def _get_cached_hooks(self, hook_type: str) -> list[Hook]:
        # A snapshot, sorted, of the enabled hooks: callbacks run on it outside the lock,
        # while other threads register, disable or remove hooks.
        cache = self._hook_cache
        if not self._cache_valid:
            with self._lock:
                cache = {
                    kind: sorted(h for h in hooks if h.enabled)
                    for kind, hooks in self._hooks.items()
                }
                self._hook_cache = cache
                self._cache_valid = True
        return cache.get(hook_type, [])

    def _invalidate_cache(self) -> None:
        self._cache_valid = False

    def _update_has_hooks_flag(self) -> None:
        holds = any(self._hooks.values())
        if holds != self._has_hooks:
            self._has_hooks = holds
            _holds_hooks(self, holds)

    def _handle_hook_error(self, hook: Hook, error: Exception, context: HookContext) -> None:
        with self._lock:
            hook._error_count += 1
            count = hook._error_count
            disabled = self.config.disable_on_error and count >= self.config.max_errors_per_hook
            if disabled:
                hook.enabled = False
                self._invalidate_cache()
        cause = error.__cause__ if error.__cause__ is not None else error
        detail = f"{type(cause).__name__}: {cause}"
        if disabled:
            message = f"Hook {hook.name!r} disabled after {count} errors. Last error: {detail}"
        else:
            message = f"Hook {hook.name!r} error #{count}{_on_state(context)}: {detail}"
        if self.config.on_error == "raise":
            raise HookExecutionError(
                f"{message}. Fix the hook, or disable or remove it "
                "(HookConfig(on_error='log') reports a failing hook as a HookWarning)."
            ) from cause
        if self.config.on_error == "log":
            if self.config.error_logger is not None:
                self.config.error_logger(message, error, hook, context)
            else:
                warnings.warn(message, HookWarning, stacklevel=2)


def _bad_type(hook_type: object) -> str:
    return f"invalid hook type {hook_type!r}; give one of {', '.join(map(repr, _HOOK_TYPES))}."


def _on_state(context: HookContext, preposition: str = "on") -> str:
    """` on ParamState Linear.w (float32[3]) inside jit(step)`: where a hook ran, for messages."""
    state = context.state_ref()
    if state is None or not hasattr(type(state), "_value"):
        where = ""
    else:
        where = f" {preposition} {describe_state(state)}"
    trace = current_trace()
    return f"{where} inside {trace.name}" if trace is not None else where


class GlobalHookRegistry(HookManager):
    """The one registry of global hooks, which run for every state before its own hooks.

    `GlobalHookRegistry.instance()` is the registry; `reset()` drops it and its
    hooks (for tests). The module functions `register_state_hook`, ... use it.

    Examples:
        >>> import statejax as sj
        >>> sj.GlobalHookRegistry.instance() is sj.GlobalHookRegistry.instance()
        True
    """

    _instance: GlobalHookRegistry | None = None
    _initialized: bool = False

    def __new__(cls) -> GlobalHookRegistry:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __init__(self, config: HookConfig | None = None) -> None:
        if not GlobalHookRegistry._initialized:
            super().__init__(config)
            GlobalHookRegistry._initialized = True

    @classmethod
    def instance(cls) -> GlobalHookRegistry:
        """The registry (made on first use)."""
        registry = cls._instance
        if registry is None:
            registry = cls()
        return registry

    @classmethod
    def reset(cls) -> None:
        """Drop the registry and its hooks; the next `instance()` is a new, empty one."""
        old = cls._instance
        if old is not None:
            old.clear_hooks()
        cls._instance = None
        cls._initialized = False


def register_state_hook(
    hook_type: HookType,
    callback: Callable[[HookContext], Any],
    priority: int = 0,
    name: str | None = None,
    enabled: bool = True,
) -> HookHandle:
    """Register a global hook: it runs for every state, before the state's own hooks.

    Args:
        hook_type: `'read'`, `'write_before'`, `'write_after'`, `'restore'` or `'init'`.
        callback: called with the hook's context.
        priority: higher runs earlier (default 0).
        name: shown in messages.
        enabled: whether it runs.

    Returns:
        The hook's handle (`remove()`, `disable()`, `enable()`).

    Raises:
        HookRegistrationError: an unknown `hook_type`, or `callback` not callable.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> written = []
        >>> handle = sj.register_state_hook("write_after", lambda ctx: written.append(ctx.state_name))
        >>> a, b = sj.State(jnp.zeros(2), name="a"), sj.State(jnp.zeros(2), name="b")
        >>> a.value = jnp.ones(2); b.value = jnp.ones(2); written
        ['a', 'b']
        >>> sj.unregister_state_hook(handle), sj.has_state_hooks()
        (True, False)
    """
    return GlobalHookRegistry.instance().register_hook(hook_type, callback, priority, name, enabled)


def unregister_state_hook(handle: HookHandle) -> bool:
    """Remove the global hook of `handle`; `False` if it is not registered.

    Examples:
        >>> import statejax as sj
        >>> handle = sj.register_state_hook("read", print)
        >>> sj.unregister_state_hook(handle), sj.unregister_state_hook(handle)
        (True, False)
    """
    return GlobalHookRegistry.instance().unregister_hook(handle)


def clear_state_hooks(hook_type: str | None = None) -> None:
    """Remove the global hooks of `hook_type` (all of them when `None`).

    Examples:
        >>> import statejax as sj
        >>> _ = sj.register_state_hook("read", print)
        >>> sj.clear_state_hooks("read"); sj.has_state_hooks()
        False
    """
    GlobalHookRegistry.instance().clear_hooks(hook_type)


def has_state_hooks(hook_type: str | None = None) -> bool:
    """Whether any global hook is registered (or any enabled one of `hook_type`).

    Raises:
        ValueError: an unknown `hook_type`.

    Examples:
        >>> import statejax as sj
        >>> sj.has_state_hooks("write_before")
        False
    """
    return GlobalHookRegistry.instance().has_hooks(hook_type)


def list_state_hooks(hook_type: str | None = None) -> list[Hook]:
    """The global hooks of `hook_type` (all but `init` ones when `None`, as BrainState).

    Examples:
        >>> import statejax as sj
        >>> handle = sj.register_state_hook("read", print, name="trace_reads")
        >>> sj.list_state_hooks("read"); handle.remove()
        [Hook(name='trace_reads', priority=0, enabled)]
        True
    """
    return GlobalHookRegistry.instance().get_hooks(hook_type)


# --- what State calls when HOOKS.on -------------------------------------------------


def _managers(state: State[Any]) -> tuple[HookManager | None, HookManager | None]:
    registry = GlobalHookRegistry._instance
    glob = registry if registry is not None and registry._has_hooks else None
    own: HookManager | None = getattr(state, "_hooks", None)
    if own is not None and not own._has_hooks:
        own = None
    if glob is None and own is None and not _HOLDERS:
        _recheck_switch()
    return glob, own


def old_value(state: State[Any]) -> Any:
    """The value `state` has here, for a write hook's `old_value` (`None` if it has none)."""
    value = peek_value(state)
    if type(value) is TraceLocal:
        return value.value if value.usable() else None
    return value


def run_read(state: State[Any], value: Any) -> None:
    """Run the global, then the state's own, `read` hooks."""
    if THIS_THREAD.hooks_paused:
        return
    glob, own = _managers(state)
    if glob is None and own is None:
        return
    ref = weakref.ref(state)
    if glob is not None:
        glob.execute_read_hooks(value, ref)
    if own is not None:
        own.execute_read_hooks(value, ref)


def run_write(
    state: State[Any], new: Any, store: Callable[[Any], None], restore: bool = False
) -> None:
    """Write `new` into `state` by `store(value)`, with the write (or restore) hooks around it.

    `write_before` hooks (global first) may change the value or cancel the write
    (`HookCancellationError`, before `store` is called: nothing is recorded). Then
    `store` checks and makes the write, then `write_after` (or, for `restore`,
    `restore`) hooks run. A restore runs no `write_before` hook, as in BrainState.
    """
    if THIS_THREAD.hooks_paused:
        store(new)
        return
    glob, own = _managers(state)
    if glob is None and own is None:
        store(new)
        return
    ref = weakref.ref(state)
    old = old_value(state)
    if not restore:
        if glob is not None:
            new = glob.execute_write_before_hooks(new, old, ref)
        if own is not None:
            new = own.execute_write_before_hooks(new, old, ref)
    store(new)
    for manager in (glob, own):
        if manager is None:
            continue
        if restore:
            manager.execute_restore_hooks(new, old, ref)
        else:
            manager.execute_write_after_hooks(new, old, ref)


def run_init(state: State[Any], value: Any) -> None:
    """Run the global `init` hooks for a state just created (its own cannot exist yet)."""
    if THIS_THREAD.hooks_paused:
        return
    registry = GlobalHookRegistry._instance
    if registry is None or not registry._has_hooks:
        return
    metadata = {"_name": state._name, "tag": state.tag}
    registry.execute_init_hooks(value, weakref.ref(state), metadata)

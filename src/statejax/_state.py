"""The `State` classes: mutable boxes around pytrees of arrays, and `TreefyState`.

A `State` is a mutable box around a pytree of arrays. Outside any transform,
`.value` is a plain attribute access. Inside a statejax transform, reads, writes
and creations are recorded by the trace machinery (`statejax._tracing`), which
also holds the values a trace gives states: `State._value` only ever holds
concrete values, or a `TraceLocal` standing in for a value that lives in a trace.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, NoReturn, Self

import jax
import numpy as np
from jax.extend import source_info_util
from typing_extensions import TypeVar

from statejax._errors import StateOperandError, TraceContextError
from statejax._state_hooks import (
    HOOKS,
    HookContext,
    HookHandle,
    HookManager,
    HookType,
    run_init,
    run_read,
    run_write,
)
from statejax._tracing import (
    THIS_THREAD,
    TraceLocal,
    current_trace,
    describe_state,
    describe_value,
    initial_value,
    peek_value,
    register_by_reference,
    storable_value,
)

__all__ = [
    "BatchState",
    "DelayState",
    "HiddenState",
    "LongTermState",
    "ParamState",
    "ShortTermState",
    "State",
    "TreefyState",
    "check_array",
    "check_write",
    "peek_array",
]

# The value type; a bare `ParamState` (as in `states(sj.ParamState)`) is `ParamState[Any]`
# to mypy and pyright alike (without the default pyright would say `ParamState[Unknown]`).
T = TypeVar("T", default=Any)

_NO_VALUE: Any = object()
# Guards making a state's HookManager, so two threads asking at once get the same one.
_HOOKS_LOCK = threading.Lock()


class State(Generic[T]):
    """A mutable box around a pytree of arrays, with an optional name and tags.

    Reads and writes of `.value` inside a statejax transform are recorded so the
    transform can thread the value through its pure core. As in BrainState, `name`
    is an optional label and `tag` a set of strings (`tag="enc"` gives `{"enc"}`),
    matched by `WithTag`. `State(other_state)` takes the other state's value.
    `sharding` names the logical axis of each dimension (`("embed", None)`), which
    `statejax.sharding.shard_states` maps to mesh axes.

    Args:
        value: the initial value, a pytree of arrays (or a `State`, whose value is taken).
        name: an optional name, shown in reprs and error messages.
        tag: a tag or an iterable of tags.
        sharding: logical axis names, one per dimension of the value (`None`: not sharded).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> count = sj.State(jnp.array(0), name="count", tag="counter")
        >>> count.value = count.value + 1
        >>> int(count.value), count.name, count.tag
        (1, 'count', {'counter'})
    """

    # _cache_entries: the transform cache entries keyed by this state, which it keeps
    # alive (see registry/_engine.py); unset until a state is passed as an argument.
    # _where: where the state was first stored ("Linear.w"), set by Module.__setattr__.
    # _hooks: the state's HookManager, made when first asked for (`hooks`); unset before.
    __slots__ = (
        "__weakref__",
        "_cache_entries",
        "_hooks",
        "_level",
        "_name",
        "_source_info",
        "_value",
        "_where",
        "sharding",
        "tag",
    )
    _cache_entries: list[Any]
    tag: set[str] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_by_reference(cls)

    def __init__(
        self,
        value: T,
        name: str | None = None,
        *,
        tag: str | Iterable[str] | None = None,
        sharding: tuple[str | tuple[str, ...] | None, ...] | None = None,
    ) -> None:
        if isinstance(value, State):
            value = value.value
        self.tag = _tag_set(tag)
        self._name = name
        # Logical axis names, one per dimension of the value (None: not sharded);
        # statejax.sharding maps them to mesh axes through rules.
        self.sharding = None if sharding is None else tuple(sharding)
        self._where: str | None = None
        self._level = len(THIS_THREAD.stack)
        self._source_info = source_info_util.current()
        for hook in THIS_THREAD.on_create:
            hook(self)
        trace = current_trace()
        if trace is not None:
            # Born inside a trace: its value lives in the trace, and outside it the
            # state reads as leaked unless a transform adopts it (vmap's ensembles).
            self._value: Any = TraceLocal(trace.name)
            trace.record_create(self, value)
        else:
            self._value = initial_value(self, value)
        if HOOKS.on:
            run_init(self, value)

    @property
    def value(self) -> T:
        """The current value; reading it inside a transform records a read."""
        stack = THIS_THREAD.stack
        value = stack[-1].read(self) if stack else self._value
        if type(value) is TraceLocal:
            value = value.resolve(self)
        if HOOKS.on:
            run_read(self, value)
        return value  # type: ignore[no-any-return]

    @value.setter
    def value(self, new: T) -> None:
        _check_value(self, new)
        if HOOKS.on:
            run_write(self, new, self._store_checked)
            return
        stack = THIS_THREAD.stack
        if stack:
            stack[-1].write(self, new)
            return
        self._value = storable_value(self, new)

    def _store_checked(self, new: Any) -> None:
        # A write with hooks: `new` may come from a write_before hook, so it is checked again.
        _check_value(self, new)
        stack = THIS_THREAD.stack
        if stack:
            stack[-1].write(self, new)
            return
        self._value = storable_value(self, new)

    # --- hooks (BrainState's API; see statejax._state_hooks and docs/hooks.md) ---------

    @property
    def hooks(self) -> HookManager:
        """The state's `HookManager`: its own hooks (made on first use).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2))
            >>> s.hooks is s.hooks, s.hooks.has_hooks()
            (True, False)
        """
        manager: HookManager | None = getattr(self, "_hooks", None)
        if manager is None:
            with _HOOKS_LOCK:
                manager = getattr(self, "_hooks", None)
                if manager is None:
                    manager = self._hooks = HookManager()
        return manager

    @property
    def _hooks_manager(self) -> HookManager:
        # BrainState's attribute name for `hooks`; its tests replace it (a configured manager).
        return self.hooks

    @_hooks_manager.setter
    def _hooks_manager(self, manager: HookManager) -> None:
        self._hooks = manager

    def register_hook(
        self,
        hook_type: HookType,
        callback: Callable[[HookContext], Any],
        priority: int = 0,
        name: str | None = None,
        enabled: bool = True,
    ) -> HookHandle:
        """Register a hook on this state: `callback(context)` runs on each such operation.

        `hook_type` is `'read'` (`state.value` read), `'write_before'` (before a write;
        the hook may change the value or cancel the write), `'write_after'`,
        `'restore'` (`restore_value`) or `'init'` (never runs for a state's own hooks:
        the state exists already; use `register_state_hook`). Higher `priority` runs
        first; global hooks run before the state's own. Inside a transform, hooks run
        while it traces, never on a cached call (docs/hooks.md).

        Args:
            hook_type: the operation.
            callback: called with the hook's context (`ReadHookContext`, ...).
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
            >>> w = sj.ParamState(jnp.zeros(2), name="w")
            >>> def no_nan(ctx):
            ...     if bool(jnp.isnan(ctx.value).any()):
            ...         ctx.cancel, ctx.cancel_reason = True, "NaN written"
            >>> handle = w.register_hook("write_before", no_nan)
            >>> w.value = jnp.array([1.0, jnp.nan])
            Traceback (most recent call last):
            ...
            statejax.HookCancellationError: hook_...: NaN written. The write to ParamState 'w' ...
            >>> w.value.tolist()
            [0.0, 0.0]
        """
        return self.hooks.register_hook(hook_type, callback, priority, name, enabled)

    def unregister_hook(self, handle: HookHandle) -> bool:
        """Remove the hook of `handle` from this state; `False` if it holds no such hook.

        Examples:
            >>> import statejax as sj
            >>> s = sj.State(1.0); handle = s.register_hook("read", print)
            >>> s.unregister_hook(handle), s.unregister_hook(handle)
            (True, False)
        """
        return self.hooks.unregister_hook(handle)

    def list_hooks(self, hook_type: str | None = None) -> list[Any]:
        """This state's hooks of `hook_type` (all but `init` ones when `None`, as BrainState).

        Examples:
            >>> import statejax as sj
            >>> s = sj.State(1.0); _ = s.register_hook("read", print, name="show")
            >>> s.list_hooks()
            [Hook(name='show', priority=0, enabled)]
        """
        return self.hooks.get_hooks(hook_type)

    def clear_hooks(self, hook_type: str | None = None) -> None:
        """Remove this state's hooks of `hook_type` (all of them when `None`).

        Examples:
            >>> import statejax as sj
            >>> s = sj.State(1.0); _ = s.register_hook("read", print)
            >>> s.clear_hooks(); s.has_hooks()
            False
        """
        self.hooks.clear_hooks(hook_type)

    def has_hooks(self, hook_type: str | None = None) -> bool:
        """Whether this state has a hook (or an enabled one of `hook_type`).

        Raises:
            ValueError: an unknown `hook_type`.

        Examples:
            >>> import statejax as sj
            >>> sj.State(1.0).has_hooks("read")
            False
        """
        manager: HookManager | None = getattr(self, "_hooks", None)
        if manager is None:
            return HookManager().has_hooks(hook_type)  # validates hook_type
        return manager.has_hooks(hook_type)

    @contextlib.contextmanager
    def temporary_hook(
        self, hook_type: str, callback: Callable[..., Any], priority: int = 0
    ) -> Iterator[HookHandle]:
        """A block in which a hook is registered on this state; removed when the block ends.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2)); reads = []
            >>> with s.temporary_hook("read", lambda ctx: reads.append(1)):
            ...     _ = s.value
            >>> _ = s.value; reads
            [1]
        """
        handle = self.register_hook(hook_type, callback, priority)  # type: ignore[arg-type]
        try:
            yield handle
        finally:
            self.unregister_hook(handle)

    @property
    def name(self) -> str | None:
        """The name given at creation (or set since); `None` if none was given."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        self._name = name

    def _slot_items(self) -> list[tuple[str, Any]]:
        names = (
            name
            for cls in type(self).__mro__
            for name in (
                (vars(cls).get("__slots__", ()),)
                if isinstance(vars(cls).get("__slots__", ()), str)
                else vars(cls).get("__slots__", ())
            )
        )
        # A copy gets no hooks (BrainState gives it a fresh manager): hooks are one
        # state's behaviour, and a manager (a lock) can be neither shared nor pickled.
        skip = ("__weakref__", "_hooks")
        return [(n, getattr(self, n)) for n in names if n not in skip and hasattr(self, n)]

    # JAX's source information holds a traceback, which cannot be pickled or deep-copied:
    # copies share it (it is immutable), and an unpickled state gets the place it was
    # unpickled.
    def __copy__(self) -> Self:
        new = type(self).__new__(type(self))
        for name, value in self._slot_items():
            setattr(new, name, value)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self._slot_items():
            setattr(new, name, value if name == "_source_info" else copy.deepcopy(value, memo))
        return new

    def __getstate__(self) -> dict[str, Any]:
        return {n: v for n, v in self._slot_items() if n != "_source_info"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._source_info = source_info_util.current()

    @property
    def source_info(self) -> source_info_util.SourceInfo:
        """Where the state was created: JAX's source information (traceback and name stack).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> from jax.extend import source_info_util
            >>> s = sj.State(jnp.zeros(2))
            >>> isinstance(s.source_info, source_info_util.SourceInfo)
            True
        """
        return self._source_info

    def raise_error_with_source_info(self, error: Exception) -> NoReturn:
        """Raise `error` with the place the state was created shown as its user frame.

        JAX's traceback filtering then points at the line that created the state.

        Raises:
            Exception: `error`, always.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State(jnp.zeros(2)).raise_error_with_source_info(ValueError("bad state"))
            Traceback (most recent call last):
            ...
            ValueError: bad state
        """
        info = self._source_info
        name_stack = source_info_util.current_name_stack() + info.name_stack
        with source_info_util.user_context(info.traceback, name_stack=name_stack):
            raise error

    def check_valid_trace(self, error_msg: Callable[[], str]) -> None:
        """Raise `TraceContextError(error_msg())` if the state cannot be used here.

        A state is unusable when it was created inside a transform that has returned
        (its value died with that trace). `error_msg` is called only then.

        Raises:
            TraceContextError: the state's value died with the trace that created it.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State(jnp.zeros(2)).check_valid_trace(lambda: "unused")
        """
        value = peek_value(self)  # inside its own trace: the trace's value
        if type(value) is TraceLocal and not value.usable():
            raise TraceContextError(error_msg())

    @property
    def stack_level(self) -> int:
        """How many statejax traces were active when the state was created (BrainState's level)."""
        return self._level

    @stack_level.setter
    def stack_level(self, level: int) -> None:
        self._level = level

    def increase_stack_level(self) -> None:
        """Add one to `stack_level`."""
        self._level += 1

    def decrease_stack_level(self) -> None:
        """Subtract one from `stack_level`, never going below zero."""
        self._level = max(self._level - 1, 0)

    def add_tag(self, tag: str) -> None:
        """Add `tag` to the state's tag set (creating the set if it has none).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2))
            >>> s.add_tag("frozen"); s.add_tag("frozen"); s.tag
            {'frozen'}
        """
        if self.tag is None:
            self.tag = set()
        self.tag.add(tag)

    def numel(self) -> int:
        """The total number of array elements in the value (summed over its leaves).

        Does not record a read: it depends only on shapes.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State({"a": jnp.zeros(5), "b": jnp.zeros((2, 3))}).numel()
            11
        """
        value = peek_array(self)
        return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(value))

    def value_call(self, func: Callable[[Any], Any]) -> Any:
        """`jax.tree.map(func, self.value)`: apply `func` to every leaf of the value.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State({"a": jnp.ones(2)}).value_call(lambda x: x * 2)["a"].tolist()
            [2.0, 2.0]
        """
        return jax.tree.map(func, self.value)

    def restore_value(self, v: T) -> None:
        """Put back a value of the same tree structure (such as one saved earlier).

        The same write as `state.value = v` (recorded by a running transform),
        but the tree structure must match the current value's, and it runs the
        state's `restore` hooks instead of its write hooks (as BrainState).

        Raises:
            ValueError: `v` is a `State`, or its tree structure differs; the
                message names the state and both structures.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2)); saved = s.value
            >>> s.value = jnp.ones(2); s.restore_value(saved); s.value.tolist()
            [0.0, 0.0]
        """
        if not isinstance(v, State):
            _check_same_tree(self, v)
        if HOOKS.on:
            # BrainState: a restore runs the restore hooks, not the write hooks.
            _check_value(self, v)
            run_write(self, v, self._store_checked, restore=True)
            return
        self.value = v

    def check_if_deleted(self) -> None:
        """Raise `StateLeakError` if the state's value died with the trace that created it.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> sj.State(jnp.zeros(2)).check_if_deleted()
        """
        value = self._value
        if type(value) is TraceLocal:
            value.resolve(self)

    def copy(self) -> Self:
        """A new state of the same type, holding the current value, name and tags.

        Reading the value is a recorded read; inside a transform the copy is a
        state created there.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a = sj.ParamState(jnp.ones(2), name="w")
            >>> b = a.copy(); b.value = jnp.zeros(2)
            >>> a.value.tolist(), b.name, type(b).__name__
            ([1.0, 1.0], 'w', 'ParamState')
        """
        return self._rebuilt(self.value, {})

    def replace(self, value: Any = _NO_VALUE, **kwargs: Any) -> State[Any]:
        """A copy with some attributes replaced: `value`, `name` (or `_name`), `tag`.

        Given a `State` of the same type as `value`, returns that state (with
        `kwargs` applied to a copy of it, if any), as BrainState does.

        Raises:
            ValueError: `value` is a `State` of another type.
            TypeError: a keyword is none of the above.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a = sj.State(jnp.zeros(2), name="a")
            >>> b = a.replace(jnp.ones(2), name="b")
            >>> b.value.tolist(), b.name, a.name
            ([1.0, 1.0], 'b', 'a')
        """
        if "_value" in kwargs:
            value = kwargs.pop("_value")
        if isinstance(value, State):
            if type(value) is not type(self):
                raise ValueError(
                    f"{type(self).__name__}.replace: cannot replace with a "
                    f"{type(value).__name__}; give a {type(self).__name__} or a plain value."
                )
            return value._rebuilt(value.value, kwargs) if kwargs else value
        return self._rebuilt(self.value if value is _NO_VALUE else value, kwargs)

    def _rebuilt(self, value: Any, changes: dict[str, Any]) -> Self:
        attrs: dict[str, Any] = {
            "name": self._name,
            "tag": set(self.tag) if self.tag is not None else None,
        }
        for key, new in changes.items():
            key = key.lstrip("_")
            if key not in attrs:
                raise TypeError(
                    f"{type(self).__name__}.replace: unknown attribute {key!r}; "
                    "give value, name or tag."
                )
            attrs[key] = new
        new_state = type(self).__new__(type(self))
        State.__init__(new_state, value, attrs["name"], tag=attrs["tag"])
        # Static slots of subclasses (a HiddenGroupState's names) come along.
        for cls in type(self).__mro__:
            if cls is State:
                break
            for slot in vars(cls).get("__slots__", ()):
                if hasattr(self, slot):
                    setattr(new_state, slot, getattr(self, slot))
        return new_state

    def copy_from(self, other: State[T]) -> None:
        """Take the value, name and tags of `other` (a state of exactly this type).

        The value is written as `self.value = other.value` (a recorded write).

        Raises:
            ValueError: `other` is of another type.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> a, b = sj.State(jnp.zeros(2)), sj.State(jnp.ones(2), name="b")
            >>> a.copy_from(b); a.value.tolist(), a.name
            ([1.0, 1.0], 'b')
        """
        if type(other) is not type(self):
            raise ValueError(
                f"{type(self).__name__}.copy_from: cannot copy from a {type(other).__name__}; "
                "both states must be of the same type."
            )
        if other is self:
            return
        self.value = other.value
        self._name = other._name
        self.tag = set(other.tag) if other.tag is not None else None

    def to_state_ref(self) -> TreefyState[T]:
        """The value and metadata as a `TreefyState`, a pytree (BrainState's state reference).

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> ref = sj.State(jnp.ones(2), name="w").to_state_ref()
            >>> ref.type.__name__, ref.name, ref.value.tolist()
            ('State', 'w', [1.0, 1.0])
        """
        return TreefyState(type(self), self.value, _name=self._name, tag=self.tag)

    def update_from_ref(self, state_ref: TreefyState[T]) -> None:
        """Take the value (a recorded write) and the name and tags of `state_ref`.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> s = sj.State(jnp.zeros(2))
            >>> s.update_from_ref(sj.TreefyState(sj.State, jnp.ones(2), _name="w"))
            >>> s.value.tolist(), s.name
            ([1.0, 1.0], 'w')
        """
        meta = state_ref.get_metadata()
        self.value = state_ref.value
        if "_name" in meta:
            self._name = meta["_name"]
        if "tag" in meta:
            self.tag = _tag_set(meta["tag"])

    def __repr__(self) -> str:
        name = f", name={self._name!r}" if self._name is not None else ""
        tag = f", tag={self.tag!r}" if self.tag is not None else ""
        return f"{type(self).__name__}(value={describe_value(peek_value(self))}{name}{tag})"


def _tag_set(tag: str | Iterable[str] | None) -> set[str] | None:
    if tag is None:
        return None
    if isinstance(tag, str):
        return {tag}
    tags = set(tag)
    bad = [t for t in tags if not isinstance(t, str)]
    if bad:
        raise TypeError(f"a state's tags are strings; got {bad!r}")
    return tags


def _check_value(state: State[Any], new: Any) -> None:
    """The checks of a write `state.value = new` that do not depend on a trace."""
    if isinstance(new, State):
        raise ValueError(
            f"cannot store a State as the value of {describe_state(state)}; to copy its "
            "value write `state.value = other.value`, or use `state.copy_from(other)`."
        )
    if THIS_THREAD.tree_check and THIS_THREAD.tree_check[-1]:
        _check_same_tree(state, new)


def check_write(state: State[Any], new: Any) -> None:
    """Raise the error `state.value = new` would raise here, without writing anything.

    For writing several states together: check every write first, then make them,
    so that a refused one leaves every state as it was.

    Raises:
        ValueError: `new` is a `State`, or (under `check_state_value_tree()`) its
            tree structure differs from the state's.
        TraceError: `new` holds a tracer that would outlive its trace.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax._state import check_write
        >>> s = sj.State(jnp.zeros(2))
        >>> check_write(s, jnp.ones(2)); s.value.tolist()
        [0.0, 0.0]
        >>> check_write(s, s)
        Traceback (most recent call last):
        ...
        ValueError: cannot store a State as the value of State (float32[2]) ...
    """
    _check_value(state, new)
    stack = THIS_THREAD.stack
    if stack:
        stack[-1].check_write(state, new)
    else:
        storable_value(state, new)


def _check_same_tree(state: State[Any], new: Any) -> None:
    current = peek_value(state)
    if type(current) is TraceLocal:
        return  # a leaked state may take any value (which revives it)
    old_tree: Any = jax.tree.structure(current)
    new_tree: Any = jax.tree.structure(new)
    if old_tree != new_tree:
        raise ValueError(
            f"the value written to {describe_state(state)} has tree structure {new_tree}, "
            f"but the state's is {old_tree}; write a value of the same structure."
        )


# A State is a box, not an array: `x @ state` (a forgotten `.value`) must say so, not
# "unsupported operand type(s) for @: 'DynamicJaxprTracer' and 'ParamState'". BrainState's
# State defines no operator (each is Python's TypeError); StateOperandError is a TypeError.
# `==`/`!=` stay identity comparisons, which caches and selectors rely on. Set on the class
# rather than written out, so type checkers still flag the operation.
_OPERATORS = {
    "add": "+", "sub": "-", "mul": "*", "matmul": "@", "truediv": "/", "floordiv": "//",
    "mod": "%", "pow": "**", "lshift": "<<", "rshift": ">>",
    "and": "&", "xor": "^", "or": "|",
}  # fmt: skip


def _where_used() -> str:
    trace = current_trace()
    return f"{trace.name}: " if trace is not None else ""


def _refuse_operand(symbol: str, reflected: bool = False, unary: bool = False) -> Any:
    def refuse(self: State[Any], *other: Any) -> NoReturn:
        if unary:
            used = f"{symbol}(state)" if symbol.isalpha() else f"{symbol}state"
            fix = used.replace("state", "state.value")
        elif reflected:
            used = f"{type(other[0]).__name__} {symbol} state"
            fix = f"x {symbol} state.value"
        else:
            used = f"state {symbol} {type(other[0]).__name__}"
            fix = f"state.value {symbol} x"
        raise StateOperandError(
            f"{_where_used()}{describe_state(self)} is used as an array (`{used}`), but a "
            f"State is a box around its value: read `.value` (`{fix}`; to update the state, "
            "`state.value = ...`)."
        )

    return refuse


def _refuse_item(self: State[Any], index: Any) -> NoReturn:
    raise StateOperandError(
        f"{_where_used()}{describe_state(self)} is indexed (`state[{index!r}]`), but a State "
        "is a box around its value: index `.value` instead (`state.value[...]`)."
    )


for _op, _symbol in _OPERATORS.items():
    setattr(State, f"__{_op}__", _refuse_operand(_symbol))
    setattr(State, f"__r{_op}__", _refuse_operand(_symbol, reflected=True))
for _op, _symbol in {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}.items():
    setattr(State, f"__{_op}__", _refuse_operand(_symbol))
for _op, _symbol in {"neg": "-", "pos": "+", "abs": "abs", "invert": "~"}.items():
    setattr(State, f"__{_op}__", _refuse_operand(_symbol, unary=True))
setattr(State, "__getitem__", _refuse_item)  # noqa: B010 (hidden from type checkers)
# NumPy defers to the reflected operators above instead of making an object array.
setattr(State, "__array_ufunc__", None)  # noqa: B010
del _op, _symbol


class ShortTermState(State[T]):
    """State that lives for one step or episode (counters, caches)."""

    __slots__ = ()


class LongTermState(State[T]):
    """State kept across steps but not trained (running statistics)."""

    __slots__ = ()


class ParamState(LongTermState[T]):
    """A trainable parameter (a `LongTermState`, as in BrainState)."""

    __slots__ = ()


class BatchState(LongTermState[T]):
    """State that carries a batch dimension (a `LongTermState`, as in BrainState)."""

    __slots__ = ()


class DelayState(ShortTermState[T]):
    """The buffer of a delay line (a `ShortTermState`, as in BrainState).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> isinstance(sj.DelayState(jnp.zeros((4, 2))), sj.ShortTermState)
        True
    """

    __slots__ = ()


class HiddenState(ShortTermState[T]):
    """The hidden variable of a dynamical system (membrane potential, RNN carry).

    Its value is one array (a NumPy or JAX array, or an array-like with a `shape`
    and `dtype`, such as a `brainunit.Quantity`), never a list or dict: `varshape`
    is its shape and `num_state` is 1.

    Raises:
        TypeError: the value is not an array; the message names its type.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> h = sj.HiddenState(jnp.zeros((3, 4)))
        >>> h.varshape, h.num_state
        ((3, 4), 1)
    """

    __slots__ = ()

    def __init__(
        self, value: T, name: str | None = None, *, tag: str | Iterable[str] | None = None
    ) -> None:
        if isinstance(value, State):
            value = value.value
        check_array(type(self).__name__, value)
        super().__init__(value, name, tag=tag)

    @property
    def varshape(self) -> tuple[int, ...]:
        """The shape of the hidden variable."""
        return tuple(peek_array(self).shape)

    @property
    def num_state(self) -> int:
        """How many hidden variables the state holds: 1."""
        return 1


def check_array(kind: str, value: object) -> None:
    if isinstance(value, (np.ndarray, jax.Array)) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, State)
    ):
        return
    raise TypeError(
        f"{kind} holds one array (a NumPy or JAX array, or an array-like with shape and "
        f"dtype), got a {type(value).__name__}; keep several hidden variables in several "
        "states, or in a HiddenGroupState."
    )


def peek_array(state: State[Any]) -> Any:
    """The value of `state` here (a tracer inside a trace), without recording a read."""
    value = peek_value(state)
    if type(value) is TraceLocal:
        value = value.resolve(state)
    return value


register_by_reference(State)


class TreefyState(Generic[T]):
    """A state's type, value and metadata as a pytree: BrainState's state reference.

    The value is the pytree's only child (so `jax.tree.map` maps over it); the type
    and metadata (`_name`, `tag`, ...) are static. `to_state()` builds a new state.

    Args:
        type: the `State` class this describes.
        value: the value.
        **metadata: the state's metadata, such as `_name="w"` and `tag={"enc"}`.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> ref = sj.TreefyState(sj.ParamState, jnp.ones(2), _name="w")
        >>> doubled = jax.tree.map(lambda x: x * 2, ref)
        >>> doubled.value.tolist(), doubled.name
        ([2.0, 2.0], 'w')
        >>> state = doubled.to_state(); type(state).__name__, state.name
        ('ParamState', 'w')
    """

    __slots__ = ("_metadata", "type", "value")

    def __init__(self, type: type[State[Any]], value: T, **metadata: Any) -> None:
        self.type = type
        self.value = value
        self._metadata = metadata

    @property
    def name(self) -> str | None:
        """The state's name (metadata `_name`), or `None`."""
        name: str | None = self._metadata.get("_name")
        return name

    @name.setter
    def name(self, name: str | None) -> None:
        self._metadata["_name"] = name

    def get_metadata(self) -> dict[str, Any]:
        """The metadata (everything but `type` and `value`), as a new dict."""
        return dict(self._metadata)

    def replace(self, value: Any) -> TreefyState[Any]:
        """The same reference holding `value`."""
        return TreefyState(self.type, value, **self._metadata)

    def copy(self) -> TreefyState[T]:
        """A shallow copy (the same value object, a new metadata dict)."""
        return TreefyState(self.type, self.value, **self._metadata)

    def to_state(self) -> State[T]:
        """A new `State` of `type` holding `value`, with the name and tags."""
        state = self.type.__new__(self.type)
        State.__init__(
            state,
            self.value,
            self._metadata.get("_name"),
            tag=self._metadata.get("tag"),
            sharding=self._metadata.get("sharding"),
        )
        return state

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is TreefyState
            and other.type is self.type
            and other._metadata == self._metadata
            and _tree_equal(other.value, self.value)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        meta = "".join(f", {k}={v!r}" for k, v in self._metadata.items())
        return f"TreefyState(type={self.type.__name__}, value={describe_value(self.value)}{meta})"


def _tree_equal(a: Any, b: Any) -> bool:
    tree_a: Any = jax.tree.structure(a)
    if tree_a != jax.tree.structure(b):
        return False
    try:
        return all(
            x is y or bool(np.array_equal(np.asarray(x), np.asarray(y)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )
    except Exception:  # tracers: compare by identity only
        return False


def _flatten_ref(ref: TreefyState[Any]) -> tuple[tuple[Any], tuple[Any, tuple[Any, ...]]]:
    meta = tuple((k, frozenset(v) if isinstance(v, set) else v) for k, v in ref._metadata.items())
    return (ref.value,), (ref.type, meta)


def _unflatten_ref(aux: tuple[Any, tuple[Any, ...]], children: Iterable[Any]) -> TreefyState[Any]:
    cls, meta = aux
    (value,) = children
    return TreefyState(
        cls, value, **{k: set(v) if isinstance(v, frozenset) else v for k, v in meta}
    )


jax.tree_util.register_pytree_node(TreefyState, _flatten_ref, _unflatten_ref)

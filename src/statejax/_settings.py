"""The store behind `statejax.environ`, and the record of what a trace read from it.

An `EnvironmentState` holds process-wide settings (`settings`, changed by
`environ.set`) and context-local overrides (a `contextvars.ContextVar` per store,
pushed by `environ.context`), so threads and nested contexts never see each other's
temporary values.

Every change of any store gives `GENERATION.value` a new, never repeated value. While a
statejax pure core runs its user function, `recording(reads)` is active and every
lookup notes `(store, key) -> value` in `reads`; a cached call whose reads are not
empty and whose generation moved compares them (`changed`) and retraces when one
differs. Keys overridden by a context entered inside the recording are not noted: the
traced function sets them itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import jax

__all__ = [
    "GENERATION",
    "MISSING",
    "PRECISION",
    "EnvironmentState",
    "Recorder",
    "bump",
    "changed",
    "note",
    "recording",
    "resolve",
    "shadowing",
]

PRECISION: Final = "precision"


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


#: What `resolve` gives for a key that is not set.
MISSING: Final = _Missing()


class _Generation:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


#: Changes (to a value never seen before) whenever any store changes.
GENERATION: Final = _Generation()
_COUNTER = itertools.count(1)


def bump() -> None:
    """Record that some store changed (each call gives a fresh value)."""
    GENERATION.value = next(_COUNTER)


_EMPTY: Mapping[str, tuple[Any, ...]] = {}


class EnvironmentState:
    """A store of environment settings: process-wide values and context-local overrides.

    `environ`'s functions use the default store unless given `env=`; a store of your
    own keeps its settings apart from it (for tests, or a library's own settings).
    `settings` are the process-wide values (shared by every thread); the values of the
    `environ.context` blocks this thread (or asyncio task) is in are listed by
    `contexts`; `functions` are the callbacks registered with
    `environ.register_default_behavior`.

    Examples:
        >>> from statejax import environ
        >>> mine = environ.EnvironmentState()
        >>> environ.set(dt=0.5, env=mine)
        >>> environ.get_dt(env=mine), environ.get("dt", default=None) is None
        (0.5, True)
    """

    __slots__ = ("__weakref__", "_overrides", "functions", "lock", "settings")

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.functions: dict[str, Callable[[Any], None]] = {}
        self.lock = threading.RLock()
        self._overrides: contextvars.ContextVar[Mapping[str, tuple[Any, ...]]] = (
            contextvars.ContextVar(f"statejax.environ.{id(self):x}", default=_EMPTY)
        )

    @property
    def contexts(self) -> dict[str, list[Any]]:
        """The values of the enclosing `environ.context` blocks, per key, innermost last."""
        return {key: list(stack) for key, stack in self._overrides.get().items() if stack}

    def overrides(self) -> Mapping[str, tuple[Any, ...]]:
        """This context's override stacks (immutable; replace with `push`)."""
        return self._overrides.get()

    def push(self, values: Mapping[str, Any]) -> contextvars.Token[Mapping[str, tuple[Any, ...]]]:
        """Override `values` in this context; `pop_to(token)` undoes it."""
        current = self._overrides.get()
        new = dict(current)
        for key, value in values.items():
            new[key] = (*current.get(key, ()), value)
        token = self._overrides.set(new)
        bump()
        return token

    def pop_to(self, token: contextvars.Token[Mapping[str, tuple[Any, ...]]]) -> None:
        """Undo the `push` that returned `token`."""
        self._overrides.reset(token)
        bump()

    def clear_overrides(self) -> None:
        """Drop this context's overrides (the enclosing blocks restore theirs on exit)."""
        self._overrides.set(_EMPTY)
        bump()


def resolve(env: EnvironmentState, key: str) -> Any:
    """The value `key` has for this context in `env`, or `MISSING`.

    Precision never set follows JAX: 64 with `jax_enable_x64` on, else 32.
    """
    stack = env._overrides.get().get(key)
    if stack:
        return stack[-1]
    value = env.settings.get(key, MISSING)
    if value is MISSING and key == PRECISION:
        return 64 if jax.config.read("jax_enable_x64") else 32  # type: ignore[no-untyped-call]
    return value


class Recorder:
    """What one trace read: `reads[(store, key)] = value`, first read wins."""

    __slots__ = ("reads", "shadowed")

    def __init__(self, reads: dict[tuple[EnvironmentState, str], Any]) -> None:
        self.reads = reads
        # Keys set by a context entered inside this recording, with their depth.
        self.shadowed: dict[tuple[EnvironmentState, str], int] = {}


_RECORDERS: contextvars.ContextVar[tuple[Recorder, ...]] = contextvars.ContextVar(
    "statejax.environ.recorders", default=()
)


@contextlib.contextmanager
def recording(reads: dict[tuple[EnvironmentState, str], Any]) -> Iterator[None]:
    """Inside the block, note every lookup into `reads` (and into enclosing recordings)."""
    token = _RECORDERS.set((*_RECORDERS.get(), Recorder(reads)))
    try:
        yield
    finally:
        _RECORDERS.reset(token)


#: Noted in place of a tracer (a value of an enclosing trace): never the same again, and
#: no tracer is kept past its trace.
_UNSTABLE: Final = object()


def note(env: EnvironmentState, key: str, value: Any) -> None:
    """A lookup of `key` in `env` gave `value`: note it in the active recordings."""
    recorders = _RECORDERS.get()
    if recorders:
        if isinstance(value, jax.core.Tracer):
            value = _UNSTABLE
        item = (env, key)
        for recorder in recorders:
            if item not in recorder.shadowed:
                recorder.reads.setdefault(item, value)


@contextlib.contextmanager
def shadowing(env: EnvironmentState, keys: list[str]) -> Iterator[None]:
    """Inside the block, `keys` of `env` are the traced function's own: not noted."""
    recorders = _RECORDERS.get()
    if not recorders:
        yield
        return
    items = [(env, key) for key in keys]
    for recorder in recorders:
        for item in items:
            recorder.shadowed[item] = recorder.shadowed.get(item, 0) + 1
    try:
        yield
    finally:
        for recorder in recorders:
            for item in items:
                depth = recorder.shadowed[item] - 1
                if depth:
                    recorder.shadowed[item] = depth
                else:
                    del recorder.shadowed[item]


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # an array of several elements, an object that refuses ==
        return False


def changed(reads: Mapping[tuple[EnvironmentState, str], Any]) -> bool:
    """Whether any value in `reads` now resolves to something else."""
    return any(not _same(resolve(env, key), value) for (env, key), value in list(reads.items()))

"""Global settings, BrainState's `brainstate.environ`: `dt`, precision, platform, your own keys.

`set(...)` changes a setting for the whole process; `context(...)` changes it for a
block, and only for the thread (or asyncio task) running that block: settings are
context-local (`contextvars`), so threads and nested blocks never see each other's
temporary values. Some settings belong to JAX and are process-wide whatever you do: the
platform and the number of host devices (fixed once JAX has started), and
`jax_enable_x64`, which `set(precision=64)` turns on for the process (a
`context(precision=...)` block switches it for its thread only, with `jax.enable_x64`).

Under a statejax transform, a setting is read when the function is traced. statejax
notes the settings each trace read, and a later call retraces when one of them changed
(see the "Settings (environ)" page of the docs).

Examples:
    >>> from statejax import environ
    >>> environ.set(dt=0.1)
    >>> with environ.context(dt=0.01):
    ...     environ.get_dt()
    0.01
    >>> environ.get_dt()
    0.1
    >>> environ.get_precision(), environ.dftype().__name__
    (32, 'float32')
    >>> environ.reset()
"""

from __future__ import annotations

import contextlib
import numbers
import os
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Final

import jax
import numpy as np
from jax import config

from statejax._errors import EnvironError, EnvironKeyError, EnvironTypeError
from statejax._jax_compat import backends_initialized
from statejax._settings import (
    MISSING,
    EnvironmentState,
    bump,
    note,
    resolve,
    shadowing,
)

__all__ = [
    "DEFAULT_PRECISION",
    "DT",
    "FIT",
    "HOST_DEVICE_COUNT",
    "JIT_ERROR_CHECK",
    "PLATFORM",
    "PRECISION",
    "SUPPORTED_PLATFORMS",
    "SUPPORTED_PRECISIONS",
    "EnvironmentState",
    "I",
    "T",
    "all",
    "context",
    "dctype",
    "dftype",
    "ditype",
    "dutype",
    "get",
    "get_dt",
    "get_host_device_count",
    "get_platform",
    "get_precision",
    "list_registered_behaviors",
    "pop",
    "register_default_behavior",
    "reset",
    "set",
    "set_host_device_count",
    "set_platform",
    "set_precision",
    "tolerance",
    "unregister_default_behavior",
]

EnvironmentState.__module__ = "statejax.environ"

PrecisionType = int | str

I: Final = "i"  # noqa: E741 (BrainState's name) index of the current step
T: Final = "t"  # current time
DT: Final = "dt"  # time step of numerical integration
PRECISION: Final = "precision"
PLATFORM: Final = "platform"
HOST_DEVICE_COUNT: Final = "host_device_count"
JIT_ERROR_CHECK: Final = "jit_error_check"
FIT: Final = "fit"

DEFAULT_PRECISION: Final = 32
SUPPORTED_PLATFORMS: Final = ("cpu", "gpu", "tpu")
SUPPORTED_PRECISIONS: Final = (8, 16, 32, 64, "bf16")

_NOT_PROVIDED: Any = object()
_DEFAULT_ENV = EnvironmentState()
_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\S+)")


def _update_config(name: str, value: Any) -> None:
    config.update(name, value)  # type: ignore[no-untyped-call]


def _env(env: EnvironmentState | None) -> EnvironmentState:
    if env is None:
        return _DEFAULT_ENV
    if not isinstance(env, EnvironmentState):
        raise EnvironTypeError(
            f"environ: env={env!r} is a {type(env).__name__}, not an EnvironmentState; "
            "pass environ.EnvironmentState() or leave env out for the default settings."
        )
    return env


def _check_precision(where: str, precision: object) -> None:
    ok = (
        isinstance(precision, int)
        and not isinstance(precision, bool)
        and precision in (8, 16, 32, 64)
    ) or (isinstance(precision, str) and precision in ("8", "16", "32", "64", "bf16"))
    if not ok:
        raise EnvironError(
            f"{where}: precision={precision!r} is not supported; use one of "
            f"{SUPPORTED_PRECISIONS} (bits of the default float/int types; 'bf16' is bfloat16)."
        )


def _bits(precision: PrecisionType) -> int:
    return 16 if precision == "bf16" else int(precision)


def _check_dt(where: str, dt: object) -> None:
    scalar = isinstance(dt, numbers.Number) and not isinstance(dt, bool)
    if not scalar and not isinstance(dt, (str, bytes)) and getattr(dt, "shape", None) == ():
        scalar = True  # a 0-d array (or quantity)
    if not scalar:
        raise EnvironTypeError(
            f"{where}: dt must be a scalar number, got {type(dt).__name__} {dt!r:.60}; "
            "pass a float such as dt=0.1."
        )


def _check_not_traced(where: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)):
            raise EnvironError(
                f"{where}: {key!r} would hold a tracer for the whole process, after the "
                f"transform that made it returned; use `with environ.context({key}=...)` "
                "inside the transform instead. Nothing was changed."
            )


def _run_callbacks(env: EnvironmentState, values: dict[str, Any]) -> None:
    for key, value in values.items():
        behavior = env.functions.get(key)
        if behavior is not None:
            try:
                behavior(value)
            except Exception as exc:
                warnings.warn(
                    f"Callback for {key!r} raised an exception: {exc}", RuntimeWarning, stacklevel=3
                )


def get(
    key: str,
    default: Any = _NOT_PROVIDED,
    desc: str | None = None,
    *,
    env: EnvironmentState | None = None,
) -> Any:
    """The value of a setting: the innermost `context` block's, else the `set` one.

    `platform` and `host_device_count` are JAX's: `get_platform()` and
    `get_host_device_count()`. Read under a transform, the value is noted with the trace,
    and a later call retraces when it changed.

    Args:
        key: the setting's name.
        default: returned when the key is not set; without it, a missing key raises.
        desc: a description of the setting, for the error message.
        env: a store of your own; `None` for the default settings.

    Returns:
        The value.

    Raises:
        EnvironKeyError: the key is not set and no default is given (also a `KeyError`).

    Examples:
        >>> from statejax import environ
        >>> environ.set(learning_rate=0.001)
        >>> environ.get("learning_rate"), environ.get("batch_size", default=32)
        (0.001, 32)
        >>> environ.reset()
    """
    if key == PLATFORM:
        return get_platform()
    if key == HOST_DEVICE_COUNT:
        return get_host_device_count()
    store = _env(env)
    value = resolve(store, key)
    note(store, key, value)
    if value is not MISSING:
        return value
    if default is _NOT_PROVIDED:
        about = f" ({desc})" if desc else ""
        raise EnvironKeyError(
            f"environ: key {key!r}{about} not found in environment. Set it with "
            f"environ.set({key}=value) for the process, or environ.context({key}=value) "
            "for a block; or pass get(key, default=...)."
        )
    return default


def all(*, env: EnvironmentState | None = None) -> dict[str, Any]:
    """Every setting, as `get` would give it: a snapshot dict (changing it changes nothing).

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        A dict of every key set, `precision` included.

    Examples:
        >>> from statejax import environ
        >>> environ.set(dt=0.1)
        >>> with environ.context(dt=0.01, debug=True):
        ...     sorted(environ.all().items())
        [('debug', True), ('dt', 0.01), ('precision', 32)]
        >>> environ.reset()
    """
    store = _env(env)
    keys = dict.fromkeys([PRECISION, *store.settings, *store.overrides()])
    result: dict[str, Any] = {}
    for key in keys:
        value = resolve(store, key)
        note(store, key, value)
        if value is not MISSING:
            result[key] = value
    return result


def pop(key: str, default: Any = _NOT_PROVIDED, *, env: EnvironmentState | None = None) -> Any:
    """Remove a setting made with `set` and return its value.

    Refused while a `context` block of this thread overrides the key. Callbacks are not
    called.

    Args:
        key: the setting's name.
        default: returned when the key is not set; without it, a missing key raises.
        env: a store of your own; `None` for the default settings.

    Returns:
        The value removed, or `default`.

    Raises:
        EnvironError: the key is overridden by an enclosing `context` block.
        EnvironKeyError: the key is not set and no default is given (also a `KeyError`).

    Examples:
        >>> from statejax import environ
        >>> environ.set(seed_offset=3)
        >>> environ.pop("seed_offset"), environ.pop("seed_offset", None)
        (3, None)
    """
    store = _env(env)
    with store.lock:
        stack = store.overrides().get(key)
        if stack:
            raise EnvironError(
                f"environ.pop: Cannot pop key {key!r} while it is active in a context. "
                f"The key is currently overridden in {len(stack)} context(s); pop it after "
                "the `with environ.context(...)` block."
            )
        if key in store.settings:
            value = store.settings.pop(key)
            bump()
            return value
    if default is _NOT_PROVIDED:
        raise EnvironKeyError(
            f"environ.pop: key {key!r} not found in global environment settings; "
            "pass pop(key, default) to allow that."
        )
    return default


def set(
    platform: str | None = None,
    host_device_count: int | None = None,
    precision: PrecisionType | None = None,
    dt: float | None = None,
    *,
    env: EnvironmentState | None = None,
    **kwargs: Any,
) -> None:
    """Set settings for the whole process (every thread), until changed or `reset`.

    Everything is checked before anything changes. `precision=64` also turns
    `jax_enable_x64` on (any other precision turns it off), for the default store only.
    Registered callbacks are called with the new values.

    Args:
        platform: `'cpu'`, `'gpu'` or `'tpu'` (see `set_platform`).
        host_device_count: the number of CPU devices (see `set_host_device_count`).
        precision: 8, 16, 32, 64 or `'bf16'` (see `set_precision`).
        dt: the time step, a scalar.
        env: a store of your own; `None` for the default settings.
        **kwargs: any other settings.

    Raises:
        EnvironError: a precision or platform not supported, a platform or device
            count JAX can no longer take, a tracer as a value.
        EnvironTypeError: `dt` is not a scalar.

    Examples:
        >>> from statejax import environ
        >>> environ.set(dt=0.05, method="euler")
        >>> environ.get_dt(), environ.get("method")
        (0.05, 'euler')
        >>> environ.reset()
    """
    store = _env(env)
    if platform is not None:
        _check_platform(platform)
    if host_device_count is not None:
        _check_host_device_count(host_device_count)
    if precision is not None:
        _check_precision("environ.set", precision)
        kwargs[PRECISION] = precision
    if dt is not None:
        _check_dt("environ.set", dt)
        kwargs[DT] = dt
    _check_not_traced("environ.set", kwargs)
    if platform is not None:
        set_platform(platform)
    if host_device_count is not None:
        set_host_device_count(host_device_count)
    if precision is not None and store is _DEFAULT_ENV:
        _update_config("jax_enable_x64", _bits(precision) == 64)
    with store.lock:
        store.settings.update(kwargs)
        bump()
    _run_callbacks(store, kwargs)


@contextlib.contextmanager
def context(*, env: EnvironmentState | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Settings for a block: restored on exit (an exception included); blocks nest.

    The values are seen by this thread (or asyncio task) only. `precision` also switches
    `jax_enable_x64` for this thread for the block (default store only). Registered
    callbacks are called with the new values on entry and the restored ones on exit.
    `platform` and `host_device_count` are process-wide: use `set`.

    Args:
        env: a store of your own; `None` for the default settings.
        **kwargs: the settings for the block.

    Yields:
        All settings inside the block (as `all()`).

    Raises:
        EnvironError: `platform` or `host_device_count` given, or a bad precision.
        EnvironTypeError: `dt` is not a scalar.

    Examples:
        >>> from statejax import environ
        >>> with environ.context(precision=64):
        ...     environ.dftype().__name__
        'float64'
        >>> environ.dftype().__name__
        'float32'
    """
    store = _env(env)
    for key, fix in ((PLATFORM, "set_platform()"), (HOST_DEVICE_COUNT, "set_host_device_count()")):
        if key in kwargs:
            raise EnvironError(
                f"environ.context: Cannot set {key!r} in context: it is process-wide, "
                f"fixed when JAX starts. Use environ.{fix} or environ.set() before JAX "
                "starts."
            )
    if PRECISION in kwargs:
        _check_precision("environ.context", kwargs[PRECISION])
    if kwargs.get(DT) is not None:
        _check_dt("environ.context", kwargs[DT])
    with contextlib.ExitStack() as stack:
        if PRECISION in kwargs and store is _DEFAULT_ENV:
            stack.enter_context(jax.enable_x64(_bits(kwargs[PRECISION]) == 64))
        stack.enter_context(shadowing(store, list(kwargs)))
        token = store.push(kwargs)
        try:
            _run_callbacks(store, kwargs)
            yield all(env=store)
        finally:
            store.pop_to(token)
            restored = {k: v for k in kwargs if (v := resolve(store, k)) is not MISSING}
            _run_callbacks(store, {k: v for k, v in restored.items() if v is not None})


def reset(*, env: EnvironmentState | None = None) -> None:
    """Forget every setting and callback (and this context's overrides).

    For the default store, `jax_enable_x64` is turned off too (as BrainState does), so
    the precision is back to `DEFAULT_PRECISION`.

    Args:
        env: a store of your own; `None` for the default settings.

    Examples:
        >>> from statejax import environ
        >>> environ.set(dt=0.1)
        >>> environ.reset()
        >>> environ.get("dt", default=None) is None
        True
    """
    store = _env(env)
    with store.lock:
        store.settings.clear()
        store.functions.clear()
        store.clear_overrides()
    if store is _DEFAULT_ENV:
        _update_config("jax_enable_x64", False)
    bump()


def get_dt(*, env: EnvironmentState | None = None) -> Any:
    """The time step `dt` (`get('dt')`).

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        The time step.

    Raises:
        EnvironKeyError: `dt` is not set (also a `KeyError`).

    Examples:
        >>> from statejax import environ
        >>> with environ.context(dt=0.1):
        ...     environ.get_dt()
        0.1
    """
    return get(DT, env=env)


def get_platform() -> str:
    """The platform JAX computes on: `'cpu'`, `'gpu'` or `'tpu'` (starts JAX if needed).

    Returns:
        The platform of JAX's default device.

    Examples:
        >>> from statejax import environ
        >>> environ.get_platform() in environ.SUPPORTED_PLATFORMS
        True
    """
    platform: str = jax.devices()[0].platform
    return platform


def get_host_device_count() -> int:
    """The number of host (CPU) devices asked for in `XLA_FLAGS` (1 when not asked).

    Returns:
        The count of `--xla_force_host_platform_device_count`, else 1.

    Examples:
        >>> from statejax import environ
        >>> environ.get_host_device_count() >= 1
        True
    """
    match = _DEVICE_FLAG.search(os.environ.get("XLA_FLAGS", ""))
    return int(match.group(1)) if match else 1


def _check_platform(platform: object) -> None:
    if platform not in SUPPORTED_PLATFORMS:
        raise EnvironError(
            f"environ.set_platform: Platform must be one of {SUPPORTED_PLATFORMS}, got "
            f"{platform!r}."
        )
    if backends_initialized() and platform != get_platform():
        raise EnvironError(
            f"environ.set_platform({platform!r}): JAX has already started on "
            f"{get_platform()!r}, and its platform is fixed for the process. Call "
            "set_platform before anything uses JAX (or set JAX_PLATFORMS in the "
            "environment). Nothing was changed."
        )


def set_platform(platform: str) -> None:
    """Choose the platform JAX will use; only before JAX starts.

    Sets JAX's `jax_platforms`. Once JAX has started (an array was made, a function
    compiled), the platform is fixed: asking for another one raises.

    Args:
        platform: `'cpu'`, `'gpu'` or `'tpu'`.

    Raises:
        EnvironError: an unsupported platform, or JAX already started on another one.

    Examples:
        >>> from statejax import environ
        >>> environ.set_platform(environ.get_platform())  # the current one: accepted
    """
    _check_platform(platform)
    if not backends_initialized():
        _update_config("jax_platforms", platform)
    _run_callbacks(_DEFAULT_ENV, {PLATFORM: platform})


def _check_host_device_count(n: object) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise EnvironError(
            f"environ.set_host_device_count: Host device count must be a positive "
            f"integer, got {n!r}."
        )
    if backends_initialized():
        current = len(jax.devices("cpu"))
        if n != current:
            raise EnvironError(
                f"environ.set_host_device_count({n}): JAX has already started with "
                f"{current} CPU device(s), and that number is fixed for the process. Call "
                "set_host_device_count before anything uses JAX (or set XLA_FLAGS="
                f"--xla_force_host_platform_device_count={n} in the environment). Nothing "
                "was changed."
            )


def set_host_device_count(n: int) -> None:
    """Ask XLA for `n` CPU devices (for `pmap`/`shard_map` on CPU); only before JAX starts.

    Writes `--xla_force_host_platform_device_count=n` into `XLA_FLAGS`. Once JAX has
    started, the count is fixed: asking for another one raises.

    Args:
        n: the number of host devices, a positive int.

    Raises:
        EnvironError: `n` is not a positive int, or JAX already started with another count.

    Examples:
        >>> import jax
        >>> from statejax import environ
        >>> environ.set_host_device_count(len(jax.devices("cpu")))  # unchanged: accepted
    """
    _check_host_device_count(n)
    flags = _DEVICE_FLAG.sub("", os.environ.get("XLA_FLAGS", "")).split()
    os.environ["XLA_FLAGS"] = " ".join([f"--xla_force_host_platform_device_count={n}", *flags])
    bump()
    _run_callbacks(_DEFAULT_ENV, {HOST_DEVICE_COUNT: n})


def set_precision(precision: PrecisionType, *, env: EnvironmentState | None = None) -> None:
    """Set the precision for the process: the default dtypes and `jax_enable_x64`.

    `dftype()`, `ditype()`, `dutype()`, `dctype()` and `tolerance()` follow it, and so
    do `statejax.random`'s default dtypes. For the default store, 64 turns
    `jax_enable_x64` on and any other precision turns it off (process-wide).

    Args:
        precision: 8, 16, 32, 64, or `'bf16'` (bfloat16 floats, 16-bit ints).
        env: a store of your own; `None` for the default settings.

    Raises:
        EnvironError: an unsupported precision.

    Examples:
        >>> from statejax import environ
        >>> environ.set_precision(64)
        >>> environ.dftype().__name__, environ.ditype().__name__
        ('float64', 'int64')
        >>> environ.reset()
    """
    set(precision=precision, env=env)


def get_precision(*, env: EnvironmentState | None = None) -> int:
    """The precision in bits (`'bf16'` is 16).

    Never set, it follows JAX: 64 with `jax_enable_x64` on, else 32.

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        8, 16, 32 or 64.

    Examples:
        >>> from statejax import environ
        >>> with environ.context(precision="bf16"):
        ...     environ.get_precision()
        16
    """
    return _bits(get(PRECISION, env=env))


_FLOATS: dict[str, Any] = {
    "8": jax.numpy.float8_e5m2,
    "16": np.float16,
    "bf16": jax.numpy.bfloat16,
    "32": np.float32,
    "64": np.float64,
}
_INTS: dict[int, Any] = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}
_UINTS: dict[int, Any] = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def dftype(*, env: EnvironmentState | None = None) -> Any:
    """The default float type of the precision.

    8: `float8_e5m2`, 16: `float16`, `'bf16'`: `bfloat16`, 32: `float32`, 64: `float64`.

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        The dtype (a NumPy scalar type, or `jax.numpy.bfloat16`/`float8_e5m2`).

    Examples:
        >>> from statejax import environ
        >>> with environ.context(precision=16):
        ...     environ.dftype().__name__
        'float16'
    """
    return _FLOATS[str(get(PRECISION, env=env))]


def ditype(*, env: EnvironmentState | None = None) -> Any:
    """The default signed integer type of the precision (`'bf16'`: `int16`).

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        `int8`, `int16`, `int32` or `int64`.

    Examples:
        >>> from statejax import environ
        >>> environ.ditype().__name__
        'int32'
    """
    return _INTS[get_precision(env=env)]


def dutype(*, env: EnvironmentState | None = None) -> Any:
    """The default unsigned integer type of the precision (`'bf16'`: `uint16`).

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        `uint8`, `uint16`, `uint32` or `uint64`.

    Examples:
        >>> from statejax import environ
        >>> environ.dutype().__name__
        'uint32'
    """
    return _UINTS[get_precision(env=env)]


def dctype(*, env: EnvironmentState | None = None) -> Any:
    """The default complex type: `complex128` at precision 64, else `complex64`.

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        `complex64` or `complex128`.

    Examples:
        >>> from statejax import environ
        >>> environ.dctype().__name__
        'complex64'
    """
    return np.complex128 if get_precision(env=env) == 64 else np.complex64


def tolerance(*, env: EnvironmentState | None = None) -> np.ndarray[Any, Any]:
    """A tolerance for comparisons at the precision: 1e-12 (64), 1e-5 (32), else 1e-2.

    A NumPy scalar array of the precision's float type (float16 below 32 bits), whatever
    `jax_enable_x64` says.

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        The tolerance, a 0-d NumPy array.

    Examples:
        >>> from statejax import environ
        >>> float(environ.tolerance())
        9.999999747378752e-06
    """
    bits = get_precision(env=env)
    if bits == 64:
        return np.asarray(1e-12, dtype=np.float64)
    if bits == 32:
        return np.asarray(1e-5, dtype=np.float32)
    return np.asarray(1e-2, dtype=np.float16)


def register_default_behavior(
    key: str,
    behavior: Callable[[Any], None],
    replace_if_exist: bool = False,
    *,
    env: EnvironmentState | None = None,
) -> None:
    """Call `behavior(value)` whenever `key` is set (by `set` or on entering and leaving
    a `context` block).

    A callback that raises is reported as a `RuntimeWarning`; the setting still changes.

    Args:
        key: the setting to watch.
        behavior: the callback, given the new value.
        replace_if_exist: replace a callback already registered for `key`.
        env: a store of your own; `None` for the default settings.

    Raises:
        EnvironTypeError: `key` is not a string, or `behavior` not callable.
        EnvironError: `key` already has a callback and `replace_if_exist` is false.

    Examples:
        >>> from statejax import environ
        >>> environ.register_default_behavior("dt", lambda dt: print("dt is", dt))
        >>> environ.set(dt=0.5)
        dt is 0.5
        >>> environ.unregister_default_behavior("dt")
        True
        >>> environ.reset()
    """
    store = _env(env)
    if not isinstance(key, str):
        raise EnvironTypeError(
            f"environ.register_default_behavior: Key must be a string, got "
            f"{type(key).__name__} {key!r}."
        )
    if not callable(behavior):
        raise EnvironTypeError(
            f"environ.register_default_behavior: Behavior must be callable, got "
            f"{type(behavior).__name__} {behavior!r:.60}; pass a function of one value."
        )
    with store.lock:
        if key in store.functions and not replace_if_exist:
            raise EnvironError(
                f"environ.register_default_behavior: Behavior for key {key!r} already "
                "registered. Use replace_if_exist=True to override."
            )
        store.functions[key] = behavior


def unregister_default_behavior(key: str, *, env: EnvironmentState | None = None) -> bool:
    """Remove the callback of `key`; whether there was one.

    Args:
        key: the setting watched.
        env: a store of your own; `None` for the default settings.

    Returns:
        `True` if a callback was removed.

    Examples:
        >>> from statejax import environ
        >>> environ.unregister_default_behavior("nothing_registered")
        False
    """
    store = _env(env)
    with store.lock:
        return store.functions.pop(key, None) is not None


def list_registered_behaviors(*, env: EnvironmentState | None = None) -> list[str]:
    """The keys that have a callback.

    Args:
        env: a store of your own; `None` for the default settings.

    Returns:
        The keys, in the order registered.

    Examples:
        >>> from statejax import environ
        >>> mine = environ.EnvironmentState()
        >>> environ.register_default_behavior("fit", lambda v: None, env=mine)
        >>> environ.list_registered_behaviors(env=mine)
        ['fit']
    """
    return list(_env(env).functions)

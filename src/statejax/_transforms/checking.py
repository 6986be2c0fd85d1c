"""Run-time checks in stateful functions: `checkify`, `jit_error_if`, `debug_nan`, ...

All of them work inside `jit`, `vmap` and the loops, and keep the engine's
promise: a failed check leaves every state as it was.

* `checkify(fn, errors)` is `jax.experimental.checkify.checkify` for a
  function that reads and writes states: it returns `(error, out)`, and its
  writes are applied only when no check failed (under `jit` too: the new
  values are selected on the error flag), so `error.throw()` leaves the
  states as they were before the call. `check` and `check_error` are JAX's,
  and the `*_checks` sets choose what is checked.
* `jit_error_if(pred, error, *args)` raises when `pred` holds: at once outside
  a trace, otherwise from a host callback when the compiled code runs, which
  aborts the enclosing statejax transform before it stores anything.
* `debug_nan(fn, *args)` runs `fn` under checkify's float checks and raises
  `NaNError` naming the primitive and source line that produced a NaN or Inf
  reaching `fn`'s outputs or written states; it stores no state.
  `debug_nan_if(pred, fn, *args)` does so only when `pred` holds.
* `breakpoint_if(pred)` is `jax.debug.breakpoint` when `pred` holds.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
from jax.experimental import checkify as _checkify

from statejax._errors import NaNError
from statejax._transforms._common import is_traced, name_of, raise_when
from statejax.extend import (
    PureCore,
    Split,
    StatefulFunction,
    Transform,
    TransformSpec,
    hookimpl,
    parse_spec,
)

__all__ = [
    "CheckifySpec",
    "DebugNanSpec",
    "NaNError",
    "all_checks",
    "automatic_checks",
    "breakpoint_if",
    "check",
    "check_error",
    "checkify",
    "debug_nan",
    "debug_nan_if",
    "div_checks",
    "float_checks",
    "index_checks",
    "jit_error_if",
    "nan_checks",
    "user_checks",
]

R = TypeVar("R")

#: Every check checkify knows.
all_checks: Final[frozenset[Any]] = _checkify.all_checks
#: The checks written with `check`.
user_checks: Final[frozenset[Any]] = _checkify.user_checks
#: A primitive producing NaN.
nan_checks: Final[frozenset[Any]] = _checkify.nan_checks
#: Integer division by zero.
div_checks: Final[frozenset[Any]] = _checkify.div_checks
#: Out-of-bounds indexing.
index_checks: Final[frozenset[Any]] = _checkify.index_checks
#: NaN and division by zero.
float_checks: Final[frozenset[Any]] = _checkify.float_checks
#: Every check but the user's.
automatic_checks: Final[frozenset[Any]] = _checkify.automatic_checks


# --------------------------------------------------------------------------- raising


def _format(message: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    if args:
        try:
            message = message % tuple(args)
        except (TypeError, ValueError):
            message = message.format(*args)
    if kwargs:
        message = message.format(**kwargs)
    return message


def jit_error_if(
    pred: Any, error: Callable[..., Any] | str, *err_args: Any, **err_kwargs: Any
) -> None:
    """Raise an error when `pred` holds, also inside `jit`, `vmap` and loops.

    `error` is a message (formatted with `err_args` as `%` or `{}` fields, and
    with `err_kwargs` as `{name}` fields, then raised as a `ValueError`) or a
    function called with `err_args` and `err_kwargs` that raises. Inside a
    trace the error is raised when the compiled code runs; an enclosing
    statejax transform then stores nothing, so every state stays as it was.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import jit_error_if
        >>> jit_error_if(jnp.array(False), "x is {}", 1.0)
        >>> jit_error_if(jnp.array(True), "x is {}", 1.0)
        Traceback (most recent call last):
        ValueError: x is 1.0
    """
    keys = tuple(err_kwargs)

    def make(_: Any, *values: Any) -> BaseException | None:
        args, kwargs = (
            values[: len(err_args)],
            dict(zip(keys, values[len(err_args) :], strict=True)),
        )
        if isinstance(error, str):
            return ValueError(_format(error, args, kwargs))
        error(*args, **kwargs)
        return None

    raise_when(pred, make, *err_args, *err_kwargs.values())


def breakpoint_if(pred: Any, **breakpoint_kwargs: Any) -> Any:
    """`jax.debug.breakpoint(**breakpoint_kwargs)` when any element of `pred` holds.

    Returns the `token` keyword argument (`None` by default), as BrainState does.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import breakpoint_if
        >>> breakpoint_if(jnp.array(False)) is None
        True
    """
    token = breakpoint_kwargs.get("token")

    def stop() -> Any:
        jax.debug.breakpoint(**breakpoint_kwargs)
        return token

    return jax.lax.cond(jnp.any(jnp.asarray(pred)), stop, lambda: token)


def check(pred: Any, msg: str, *fmt_args: Any, debug: bool = False, **fmt_kwargs: Any) -> None:
    """`jax.experimental.checkify.check`: a condition that `checkify` turns into an error.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import check, checkify
        >>> err, out = checkify(lambda x: (check(x > 0, "x={x}", x=x), x)[1])(jnp.array(-1.0))
        >>> err.get()
        'x=-1.0 (`check` failed)'
    """
    _checkify.check(pred, msg, *fmt_args, debug=debug, **fmt_kwargs)


def check_error(error: Any) -> None:
    """`jax.experimental.checkify.check_error`: raise a returned `Error` in a checked function.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import check, check_error, checkify
        >>> inner = checkify(lambda x: (check(x > 0, "x <= 0"), x)[1])
        >>> def outer(x):
        ...     err, out = inner(x)
        ...     check_error(err)
        ...     return out
        >>> checkify(outer)(jnp.array(-1.0))[0].get()
        'x <= 0 (`check` failed)'
    """
    _checkify.check_error(error)


# --------------------------------------------------------------------------- checkify


#: The checkify error classes by name: a spec holds names, so that it has a JSON form.
_CHECKS_BY_NAME: Final[dict[str, Any]] = {e.__name__: e for e in all_checks}


def _check_names(value: Any) -> Any:
    if isinstance(value, (set, frozenset, list, tuple)):
        names = [getattr(e, "__name__", e) for e in value]
        if all(isinstance(n, str) and n in _CHECKS_BY_NAME for n in names):
            return frozenset(names)
    raise ValueError(
        f"{value!r} is not a set of checkify error classes; pass one of the *_checks sets "
        "(user_checks, float_checks, ...), or a union of them"
    )


class CheckifySpec(TransformSpec):
    """Options of `checkify`: `errors`, held as the names of the error classes."""

    errors: frozenset[str] = pydantic.Field(
        default=frozenset(e.__name__ for e in user_checks),
        description="the checks to run: a *_checks set (user_checks, float_checks, ...) or a "
        "union of them",
    )

    _errors = pydantic.field_validator("errors", mode="before")(lambda cls, v: _check_names(v))


class DebugNanSpec(TransformSpec):
    """Options of `debug_nan` and `debug_nan_if`."""

    phase: str = pydantic.Field(default="", description="a label shown in the error message")


def _failed(err: Any) -> Any:
    """Whether a checkify `Error` holds a failure, as a (possibly traced) bool."""
    preds = [jnp.any(p) for p in getattr(err, "_pred", {}).values()]
    return jnp.any(jnp.stack(preds)) if preds else jnp.array(False)


def _keep_if(failed: Any, old: Any, new: Any) -> Any:
    """`old` where a check failed, `new` otherwise (leaf by leaf, where the types agree)."""

    def choose(o: Any, n: Any) -> Any:
        if jnp.shape(o) != jnp.shape(n) or jnp.result_type(o) != jnp.result_type(n):
            return n
        return jnp.where(failed, o, n)

    return jax.tree.map(choose, old, new)


def checkify(fn: Callable[..., R], errors: Any = user_checks) -> Callable[..., tuple[Any, R]]:
    """Functionalize the run-time checks of a stateful function (`jax.experimental.checkify`).

    The returned function takes `fn`'s arguments and returns `(error, out)`:
    `error` is a checkify `Error` (`error.get()` is the message or `None`,
    `error.throw()` raises it). `errors` chooses the checks: `user_checks`
    (the `check` calls; the default), `nan_checks`, `div_checks`,
    `index_checks`, `float_checks`, `automatic_checks`, `all_checks`, or a
    union. `fn`'s writes are applied when no check failed; after a failed
    check every state keeps its value, under `jit` too.

    Raises:
        SpecError: `errors` is not a set of checkify error classes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import check, checkify
        >>> total = sj.State(jnp.array(0.0))
        >>> def add(x):
        ...     check(x > 0, "x must be positive")
        ...     total.value += x
        ...     return total.value
        >>> err, out = checkify(add)(jnp.array(2.0))
        >>> err.get(), float(total.value)
        (None, 2.0)
        >>> err, out = checkify(add)(jnp.array(-1.0))
        >>> err.get(), float(total.value)
        ('x must be positive (`check` failed)', 2.0)
    """
    spec = parse_spec(CheckifySpec, "checkify", errors=errors)

    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, Sequence[Any]]]:
        checked = _checkify.checkify(
            pure, errors=frozenset(_CHECKS_BY_NAME[name] for name in spec.errors)
        )

        def transformed(
            read_vals: Sequence[Any], write_vals: Sequence[Any], /, *args: Any, **kwargs: Any
        ) -> tuple[Any, Sequence[Any]]:
            err, (out, new_write_vals) = checked(read_vals, write_vals, *args, **kwargs)
            kept = _keep_if(_failed(err), list(write_vals), list(new_write_vals))
            return (err, out), kept

        return transformed

    stateful: StatefulFunction[tuple[Any, R]] = StatefulFunction(
        fn, f"statejax.checkify({name_of(fn)})", lift, staged=True
    )
    return stateful.as_function(fn)


# --------------------------------------------------------------------------- debug_nan


def _nan_or_inf(tree: Any) -> Any:
    flags = [
        jnp.any(~jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.any(jnp.stack(flags)) if flags else jnp.array(False)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_frame(tb: Any) -> str:
    """The innermost frame of the user's code in a JAX traceback, as Python prints it."""
    try:
        frames = traceback.format_tb(tb.as_python_traceback())
    except Exception:  # a traceback JAX could not convert: say so rather than fail
        return "<unknown source>"
    ours = ("site-packages", "dist-packages", _PACKAGE)
    user = [f for f in frames if not any(part in f.split("\n")[0] for part in ours)]
    chosen = user or frames
    return chosen[-1].strip().split("\n")[0] if chosen else "<unknown source>"


def _report(label: str, phase: str, err: Any) -> NaNError:
    lines = [
        f"{label}{f' [{phase}]' if phase else ''}: NaN/Inf detected in the output of the "
        "checked function (its return value or a state it writes); no state was changed."
    ]
    exc = None
    try:
        exc = err.get_exception()
    except Exception:  # a batched Error has no single exception
        exc = None
    if exc is not None:
        primitive = getattr(exc, "prim", None)
        if primitive is not None:
            lines.append(f"  Introduced by primitive : `{primitive}`")
        lines.append(f"  Source location         : {_user_frame(exc.traceback_info)}")
        lines.append(f"  Checkify report         : {err.get()}")
    else:
        lines.append(
            "  Source location         : not localized (an Inf from overflow, or a NaN given "
            "as input)"
        )
    return NaNError("\n".join(lines))


def _debug_nan(fn: Callable[..., Any], args: tuple[Any, ...], phase: str, when: Any) -> None:
    label = f"statejax.debug_nan({name_of(fn)})"

    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, Sequence[Any]]]:
        checked = _checkify.checkify(pure, errors=float_checks)

        def transformed(
            read_vals: Sequence[Any], write_vals: Sequence[Any], /, *args: Any
        ) -> tuple[Any, Sequence[Any]]:
            err, (out, new_write_vals) = checked(read_vals, write_vals, *args)
            bad = _nan_or_inf((out, new_write_vals))
            if when is not None:
                bad = bad & when
            raise_when(bad, lambda _, e: _report(label, phase, e), err)
            return None, write_vals  # a diagnosis: nothing is stored

        return transformed

    stateful: StatefulFunction[None] = StatefulFunction(fn, label, lift, staged=True)
    stateful(*args)


def debug_nan(fn: Callable[..., Any], *args: Any, phase: str = "") -> None:
    """Run `fn(*args)` and raise `NaNError` if a NaN or Inf reaches its outputs.

    The outputs are `fn`'s return value and the values it writes to states;
    a NaN computed and then masked away (`jnp.where`) is not reported. The
    message names the primitive and the source line that produced it (for
    NaN and division by zero, through checkify's float checks) and the
    `phase` label. No state is changed. Inside `jit` the error is raised when
    the compiled code runs.

    Raises:
        NaNError: a NaN or Inf reached an output.

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import debug_nan
        >>> debug_nan(jnp.log, jnp.array([1.0, 2.0]))
        >>> debug_nan(jnp.log, jnp.array([-1.0]))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        statejax.NaNError: statejax.debug_nan(log): NaN/Inf detected ...
    """
    parse_spec(DebugNanSpec, "debug_nan", phase=phase)
    _debug_nan(fn, args, phase, None)


def debug_nan_if(has_nan: Any, fn: Callable[..., Any], *args: Any, phase: str = "") -> None:
    """`debug_nan(fn, *args, phase=phase)` when any element of `has_nan` holds.

    Inside a trace the check runs only when the condition holds (per lane
    under `vmap`).

    Examples:
        >>> import jax.numpy as jnp
        >>> from statejax.transform import debug_nan_if
        >>> debug_nan_if(False, jnp.log, jnp.array([-1.0]))
        >>> debug_nan_if(True, jnp.log, jnp.array([-1.0]))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        statejax.NaNError: statejax.debug_nan(log): NaN/Inf detected ...
    """
    parse_spec(DebugNanSpec, "debug_nan_if", phase=phase)
    if not is_traced(has_nan):
        if np.any(np.asarray(has_nan)):
            _debug_nan(fn, args, phase, None)
        return
    when = jnp.asarray(has_nan)

    def run(w: Any) -> None:
        _debug_nan(fn, args, phase, jnp.any(w))

    jax.lax.cond(jnp.any(when), run, lambda w: None, when)


class _NoOptions(TransformSpec):
    """Options of `jit_error_if` and `breakpoint_if`: none."""


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    for name, function, spec, summary in (
        ("checkify", checkify, CheckifySpec, "jax checkify; writes kept only when checks pass"),
        ("jit_error_if", jit_error_if, _NoOptions, "raise when a (traced) condition holds"),
        ("debug_nan", debug_nan, DebugNanSpec, "raise NaNError where a NaN/Inf starts"),
        ("debug_nan_if", debug_nan_if, DebugNanSpec, "debug_nan when a condition holds"),
        ("breakpoint_if", breakpoint_if, _NoOptions, "jax.debug.breakpoint when a condition holds"),
    ):
        registry.register(Transform(name, function, spec, summary))

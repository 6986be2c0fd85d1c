"""`jit`: compile a function that reads and writes states.

The pure core is handed to `jax.jit`. On a cached call the wrapper gathers
the state values into two flat lists, calls the compiled core through JAX's C++
dispatch (which checks shapes and dtypes, and retraces when a state's shape or
dtype changed), and stores the written values back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, overload

import jax
import pydantic

from statejax.extend import (
    PureCore,
    Split,
    StatefulFunction,
    Transform,
    TransformSpec,
    hookimpl,
    parse_spec,
)
from statejax.transforms._common import Index, as_tuple, run_eagerly

__all__ = ["JitSpec", "jit"]

P = ParamSpec("P")
R = TypeVar("R")


class JitSpec(TransformSpec):
    """Options of `jit`."""

    static_argnums: tuple[Index, ...] = pydantic.Field(
        default=(),
        description="positions of arguments that are compile-time constants "
        "(hashable, non-negative; a new value recompiles)",
    )
    static_argnames: tuple[str, ...] = pydantic.Field(
        default=(), description="names of keyword arguments that are compile-time constants"
    )
    donate_states: bool = pydantic.Field(
        default=False,
        description="donate the buffers of written states to the computation "
        "(ignored on the CPU, which cannot reuse them)",
    )

    _normalise = pydantic.field_validator("static_argnums", "static_argnames", mode="before")(
        lambda cls, v: as_tuple(v)
    )


@overload
def jit(
    fn: Callable[P, R],
    /,
    *,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_states: bool = False,
) -> Callable[P, R]: ...
@overload
def jit(
    fn: None = None,
    /,
    *,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_states: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def jit(
    fn: Callable[P, R] | None = None, /, **options: Any
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Compile `fn` with `jax.jit`, threading the states it reads and writes.

    The first call traces `fn` to find its states; later calls go straight to
    the compiled code. Writes to states inside `fn` are visible after the call.
    Under `jax.disable_jit()` it runs `fn` eagerly instead, as `jax.jit` does
    (concrete values, so `float(x)` works), writes still applied after the call.
    The returned function has `clear_cache()`. Use it as `@jit`,
    `@jit(static_argnums=...)` or `jit(fn, ...)`, on functions or methods.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> total = sj.State(jnp.array(0.0))
        >>> @sj.jit
        ... def add(x):
        ...     total.value = total.value + x
        ...     return total.value * 2
        >>> float(add(1.5)), float(add(1.0)), float(total.value)
        (3.0, 5.0, 2.5)
    """
    # Options arrive as **options so a misspelled one becomes a SpecError with a
    # did-you-mean rather than Python's bare TypeError; the overloads type them.
    spec = parse_spec(JitSpec, "jit", **options)
    if fn is None:
        return functools.partial(_jit, spec=spec)
    return _jit(fn, spec=spec)


def _jit(fn: Callable[P, R], spec: JitSpec) -> Callable[P, R]:
    # The pure core takes (read_values, write_values, *args): shift static positions by two.
    static_argnums = tuple(i + 2 for i in spec.static_argnums)
    donate = (1,) if spec.donate_states and jax.default_backend() != "cpu" else ()

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        return jax.jit(
            pure,
            static_argnums=static_argnums,
            static_argnames=spec.static_argnames,
            donate_argnums=donate,
        )

    name = getattr(fn, "__qualname__", repr(fn))
    label = f"statejax.jit({name})"
    static_key = (
        functools.partial(_static_values, spec.static_argnums, spec.static_argnames)
        if spec.static_argnums or spec.static_argnames
        else None
    )
    stateful: StatefulFunction[R] = StatefulFunction(
        fn, label, lift, staged=True, static_key=static_key
    )
    call = stateful.__call__
    config = jax.config

    # Like stateful.as_function(fn), plus jax.disable_jit(): one config read per call.
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if config.jax_disable_jit:  # type: ignore[attr-defined]
            return run_eagerly(label, fn, *args, **kwargs)
        return call(*args, **kwargs)

    wrapper.clear_cache = stateful.clear_cache  # type: ignore[attr-defined]
    wrapper.stateful = stateful  # type: ignore[attr-defined]
    return wrapper


def _static_values(
    argnums: tuple[int, ...], argnames: tuple[str, ...], args: tuple[Any, ...], kwargs: Any
) -> Any:
    """The static arguments of a call: each combination is its own cache entry, whose
    split holds only the states that variant touches."""
    values = (
        tuple(args[i] for i in argnums if i < len(args)),
        tuple(kwargs.get(n) for n in argnames),
    )
    try:
        hash(values)
    except TypeError:  # jax.jit reports unhashable static arguments itself
        return None
    return values


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform("jit", jit, JitSpec, "compile with jax.jit; states threaded in and out")
    )

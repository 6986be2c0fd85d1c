"""Names for computations: `named_call` and `named_scope`.

`named_call` runs a function inside `jax.named_scope`: the operations it traces
carry the name in their name stack (`eqn.source_info.name_stack`), and the name
shows in profiles and in the compiled HLO's metadata. It traces nothing itself,
so it composes with every transform and leaves state reads and writes as they are.
`named_scope` is `jit` of a `named_call`: a compiled function under a name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ParamSpec, TypeVar, overload

import jax
import pydantic

from statejax._transforms._common import AS_TUPLE, SignedIndex
from statejax._transforms.jit import jit
from statejax.extend import SpecError, Transform, TransformSpec, hookimpl, parse_spec

__all__ = ["NamedCallSpec", "NamedScopeSpec", "named_call", "named_scope"]

P = ParamSpec("P")
R = TypeVar("R")


class NamedCallSpec(TransformSpec):
    """Options of `named_call`."""

    name: str | None = pydantic.Field(
        default=None, description="the scope name (default: the function's __name__)"
    )


class NamedScopeSpec(TransformSpec):
    """Options of `named_scope`."""

    name: str = pydantic.Field(description="the name of the compiled computation")
    static_argnums: Annotated[tuple[SignedIndex, ...], AS_TUPLE] = pydantic.Field(
        default=(),
        description="positions of arguments that are compile-time constants; a negative one "
        "counts from the end of the positional arguments of each call",
    )
    static_argnames: Annotated[tuple[str, ...], AS_TUPLE] = pydantic.Field(
        default=(), description="names of keyword arguments that are compile-time constants"
    )


def _named(fn: Callable[P, R], name: str) -> Callable[P, R]:
    @functools.wraps(fn)
    def named(*args: P.args, **kwargs: P.kwargs) -> R:
        with jax.named_scope(name):
            return fn(*args, **kwargs)

    return named


@overload
def named_call(fun: Callable[P, R], *, name: str | None = None) -> Callable[P, R]: ...
@overload
def named_call(
    fun: None = None, *, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def named_call(
    fun: Callable[P, R] | None = None, *, name: str | None = None
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Run `fun` inside `jax.named_scope(name)`, for traces and profiles.

    The operations `fun` traces carry `name` in their name stack, which profilers
    and the compiled HLO's metadata show. Nothing is compiled or traced by this
    wrapper: it composes inside `jit`, `grad`, `vmap` and the loops, and the
    states `fun` reads and writes behave as without it. Use it as `@named_call`
    (the name is the function's `__name__`), `@named_call(name="block")` or
    `named_call(fun, name="block")`.

    Args:
        fun: the function to name; omit it for a decorator.
        name: the scope name; defaults to `fun.__name__`.

    Returns:
        The named function, or a decorator when `fun` is omitted.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from statejax.transform import named_call
        >>> @named_call(name="encoder")
        ... def encode(x):
        ...     return jnp.sin(x) * 2.0
        >>> eqn = jax.make_jaxpr(encode)(1.0).eqns[0]
        >>> str(eqn.source_info.name_stack)
        'encoder'
    """
    spec = parse_spec(NamedCallSpec, "named_call", name=name)

    def wrap(f: Callable[P, R]) -> Callable[P, R]:
        return _named(f, spec.name if spec.name is not None else getattr(f, "__name__", "call"))

    return wrap if fun is None else wrap(fun)


def named_scope(
    name: str,
    static_argnums: int | Sequence[int] | None = None,
    static_argnames: str | Sequence[str] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: compile a function with `jit`, its computation named `name`.

    The function is `jit(named_call(fn, name=name), static_argnums=...,
    static_argnames=...)`: compiled (states threaded as by `jit`), and its
    operations carry `name` in their name stack, which profilers and the compiled
    HLO's metadata show. The original function is kept as `.fn`. On a method,
    `self` is argument 0; a `Module` needs no static marking (it is passed by
    reference). A negative position counts from the end of the positional
    arguments of each call, as in BrainState (`-1`: the last one given); each
    resolution compiles once.

    Args:
        name: the name of the computation.
        static_argnums: positions of the arguments that are compile-time constants.
        static_argnames: names of the keyword arguments that are.

    Returns:
        A decorator returning the compiled, named function.

    Raises:
        SpecError: a position is not an int, or (at a call) a negative position
            reaches before the first argument.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import named_scope
        >>> calls = sj.State(jnp.array(0))
        >>> @named_scope("scale", static_argnums=1)
        ... def scale(x, k):
        ...     calls.value += 1
        ...     return x * k
        >>> float(scale(jnp.array(2.0), 3)), int(calls.value), scale.fn.__name__
        (6.0, 1, 'scale')
        >>> @named_scope("last_static", static_argnums=-1)
        ... def shift(x, mode):
        ...     return x + 1 if mode == "up" else x - 1
        >>> float(shift(jnp.array(2.0), "up")), float(shift(jnp.array(2.0), "down"))
        (3.0, 1.0)
    """
    spec = parse_spec(
        NamedScopeSpec,
        "named_scope",
        name=name,
        static_argnums=static_argnums,
        static_argnames=static_argnames,
    )

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        named = _named(fn, spec.name)
        if all(i >= 0 for i in spec.static_argnums):
            compiled = jit(
                named, static_argnums=spec.static_argnums, static_argnames=spec.static_argnames
            )
        else:
            compiled = _counting_from_end(named, spec)
        compiled.fn = fn  # type: ignore[attr-defined]
        return compiled

    return decorator


def _counting_from_end(fn: Callable[P, R], spec: NamedScopeSpec) -> Callable[P, R]:
    """`jit` of `fn` whose negative static positions count from the end of each call's
    positional arguments: one `jit` per resolution."""
    by_positions: dict[tuple[int, ...], Callable[P, R]] = {}

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        n = len(args)
        positions = tuple(sorted({i + n if i < 0 else i for i in spec.static_argnums}))
        compiled = by_positions.get(positions)
        if compiled is None:
            if positions and positions[0] < 0:
                raise SpecError(
                    f"statejax.named_scope({spec.name}): static_argnums "
                    f"{spec.static_argnums} reaches before the first of the {n} positional "
                    "arguments of this call; pass the static arguments positionally, or "
                    "count from the start."
                )
            compiled = jit(fn, static_argnums=positions, static_argnames=spec.static_argnames)
            by_positions[positions] = compiled
        return compiled(*args, **kwargs)

    def clear_cache() -> None:
        for compiled in by_positions.values():
            compiled.clear_cache()  # type: ignore[attr-defined]

    wrapper.clear_cache = clear_cache  # type: ignore[attr-defined]
    return wrapper


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform("named_call", named_call, NamedCallSpec, "run under jax.named_scope(name)")
    )
    registry.register(Transform("named_scope", named_scope, NamedScopeSpec, "jit of a named_call"))

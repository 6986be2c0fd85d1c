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
from typing import Any, ParamSpec, TypeVar, overload

import jax
import pydantic

from statejax.extend import Transform, TransformSpec, hookimpl, parse_spec
from statejax.transforms.jit import jit

__all__ = ["NamedCallSpec", "NamedScopeSpec", "named_call", "named_scope"]

P = ParamSpec("P")
R = TypeVar("R")


class NamedCallSpec(TransformSpec):
    """Options of `named_call`."""

    name: str | None = pydantic.Field(
        default=None, description="the scope name (default: the function's __name__)"
    )


class NamedScopeSpec(TransformSpec):
    """Options of `named_scope` (the static arguments are `jit`'s)."""

    name: str = pydantic.Field(description="the name of the compiled computation")


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
    reference).

    Args:
        name: the name of the computation.
        static_argnums: positions of the arguments that are compile-time constants.
        static_argnames: names of the keyword arguments that are.

    Returns:
        A decorator returning the compiled, named function.

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
    """
    spec = parse_spec(NamedScopeSpec, "named_scope", name=name)

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        compiled = jit(
            _named(fn, spec.name),
            static_argnums=() if static_argnums is None else static_argnums,
            static_argnames=() if static_argnames is None else static_argnames,
        )
        compiled.fn = fn  # type: ignore[attr-defined]
        return compiled

    return decorator


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform("named_call", named_call, NamedCallSpec, "run under jax.named_scope(name)")
    )
    registry.register(Transform("named_scope", named_scope, NamedScopeSpec, "jit of a named_call"))

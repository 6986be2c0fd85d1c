"""Abstract evaluation of functions that read and write states: `eval_shape`, `make_jaxpr`.

Both are built on `StatefulFunction` (`statejax.transform.StatefulFunction`), so
they trace the engine's pure core, and neither runs the function nor changes a
state: the trace runs inside a private `statejax.extend.StateTrace`, so an
enclosing statejax transform does not see the states either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import pydantic

from statejax._transforms._common import name_of
from statejax._transforms.stateful import StatefulFunction, StatefulFunctionSpec
from statejax.extend import Transform, TransformSpec, hookimpl, parse_spec

__all__ = ["EvalShapeSpec", "MakeJaxprSpec", "eval_shape", "make_jaxpr"]


class EvalShapeSpec(TransformSpec):
    """Options of `eval_shape`."""

    return_state_shapes: bool = pydantic.Field(
        default=False,
        description="also return the shapes of every state the function touches, first",
    )


class MakeJaxprSpec(StatefulFunctionSpec):
    """Options of `make_jaxpr`: those of `StatefulFunction`, and `return_shape`."""

    return_only_write: bool = pydantic.Field(
        default=False, description="the jaxpr returns only the written states' values"
    )
    return_shape: bool = pydantic.Field(
        default=False, description="also return the output's `jax.ShapeDtypeStruct` tree"
    )


def eval_shape(
    f: Callable[..., Any], /, *args: Any, return_state_shapes: bool = False, **kwargs: Any
) -> Any:
    """Shapes and dtypes of `f(*args, **kwargs)`, without running it or changing a state.

    Returns the output as a pytree of `jax.ShapeDtypeStruct`, like
    `jax.eval_shape`; arguments may be arrays or `ShapeDtypeStruct`. With
    `return_state_shapes=True` (a keyword reserved by `eval_shape`) returns
    `(state_shapes, out_shapes)`, in that order, where `state_shapes` maps every
    state `f` touches to the shapes of the value it holds afterwards.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> h = sj.HiddenState(jnp.zeros(3))
        >>> def step(x):
        ...     h.value = h.value + x.sum()
        ...     return jnp.outer(x, h.value)
        >>> states, out = sj.transform.eval_shape(
        ...     step, jax.ShapeDtypeStruct((2,), jnp.float32), return_state_shapes=True)
        >>> out.shape, states[h].shape, h.value.tolist()
        ((2, 3), (3,), [0.0, 0.0, 0.0])
    """
    spec = parse_spec(EvalShapeSpec, "eval_shape", return_state_shapes=return_state_shapes)
    stateful = StatefulFunction(f, name=f"eval_shape({name_of(f)})", return_only_write=False)
    out_shapes, state_shapes = stateful.get_out_shapes(*args, **kwargs)
    if not spec.return_state_shapes:
        return out_shapes
    states = stateful.get_states(*args, **kwargs)
    return dict(zip(states, state_shapes, strict=True)), out_shapes


def make_jaxpr(
    fun: Callable[..., Any],
    /,
    static_argnums: int | Iterable[int] = (),
    static_argnames: str | Iterable[str] = (),
    axis_env: Sequence[tuple[Hashable, int]] | None = None,
    return_shape: bool = False,
    return_only_write: bool = False,
) -> Callable[..., tuple[Any, ...]]:
    """A function that returns the jaxpr of `fun` and the states it uses.

    `make_jaxpr(fun)(*args, **kwargs)` traces `fun` (arguments may be arrays or
    `jax.ShapeDtypeStruct`), changes no state, and returns `(jaxpr, states)`, or
    `(jaxpr, states, out_shapes)` with `return_shape=True`. `jaxpr` is a
    `ClosedJaxpr` whose inputs are the dynamic arguments, then the values of
    `states` (the read-only states, then the written ones); its outputs are
    `fun`'s output, then the states' new values (only the written ones with
    `return_only_write=True`). The options are those of `StatefulFunction`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> w = sj.ParamState(jnp.ones(2))
        >>> n = sj.ShortTermState(jnp.array(0))
        >>> def f(x):
        ...     n.value += 1
        ...     return x * w.value
        >>> jaxpr, states = sj.transform.make_jaxpr(f)(jnp.ones(2))
        >>> states == (w, n), len(jaxpr.jaxpr.invars), len(jaxpr.jaxpr.outvars)
        (True, 3, 3)
        >>> _, _, out = sj.transform.make_jaxpr(f, return_shape=True)(jnp.ones(2))
        >>> out.shape
        (2,)
    """
    spec = parse_spec(
        MakeJaxprSpec,
        "make_jaxpr",
        static_argnums=static_argnums,
        static_argnames=static_argnames,
        axis_env=axis_env,
        return_shape=return_shape,
        return_only_write=return_only_write,
    )
    stateful = StatefulFunction(
        fun,
        static_argnums=spec.static_argnums,
        static_argnames=spec.static_argnames,
        axis_env=spec.axis_env,
        name=f"make_jaxpr({name_of(fun)})",
        return_only_write=spec.return_only_write,
    )

    @functools.wraps(fun)
    def make_jaxpr_f(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        stateful.make_jaxpr(*args, **kwargs)
        key = stateful.get_arg_cache_key(*args, **kwargs)
        jaxpr = stateful.get_jaxpr_by_cache(key)
        states = stateful.get_states_by_cache(key)
        if spec.return_shape:
            return jaxpr, states, stateful.get_out_shapes_by_cache(key)[0]
        return jaxpr, states

    return make_jaxpr_f


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "eval_shape",
            eval_shape,
            EvalShapeSpec,
            "output (and state) shapes without running; no state changes",
        )
    )
    registry.register(
        Transform(
            "make_jaxpr",
            make_jaxpr,
            MakeJaxprSpec,
            "jaxpr of the function, with the states it reads and writes",
        )
    )

"""`unvmap`: reduce a value over every `vmap` lane, to one unbatched value.

Under `jax.vmap` a function sees one lane; `unvmap(x, "any")` sees all of them: it is
`jnp.any` over `x` *and* the batch axes, and the result is not batched (every lane
gets the same value). The bounded loops use it to skip a block of steps only when no
lane needs it, so a `lax.cond` on the result stays a real branch under `vmap`
(rather than becoming a select that runs both branches).

Each reduction is a JAX primitive with a batching rule (JAX has no public way to
reduce over a batch axis from inside the batched function); outside `vmap` it is
the plain reduction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import pydantic
from jax.extend.core import Primitive

from statejax._jax_compat import register_batch_rule, register_lowering_of
from statejax.extend import Transform, TransformSpec, hookimpl, parse_spec

__all__ = ["UnvmapSpec", "unvmap"]

UnvmapOp = Literal["any", "all", "max", "none"]


class UnvmapSpec(TransformSpec):
    """Options of `unvmap`."""

    op: UnvmapOp = pydantic.Field(
        default="any",
        description="the reduction over the value and every vmap lane: any, all, max, or "
        "none (the value of the first lane, for a value every lane agrees on)",
    )


def _first_lane(x: Any) -> Any:
    return x


def _define(
    name: str, impl: Callable[[Any], Any], out: Callable[[Any], jax.core.ShapedArray]
) -> Primitive:
    """A primitive computing `impl(x)`; under vmap, `impl` of the whole batched value."""
    prim = Primitive(f"statejax_unvmap_{name}")
    prim.def_impl(impl)  # type: ignore[no-untyped-call]
    prim.def_abstract_eval(out)  # type: ignore[no-untyped-call]

    def batch(args: tuple[Any, ...], dims: tuple[Any, ...]) -> tuple[Any, None]:
        (x,), (dim,) = args, dims
        if name == "none":  # keep the first lane: the value every lane agrees on
            x = jnp.take(x, 0, axis=dim)
        return prim.bind(x), None  # type: ignore[no-untyped-call]

    register_batch_rule(prim, batch)
    register_lowering_of(prim, impl)
    return prim


def _scalar(dtype: Any) -> Callable[[Any], jax.core.ShapedArray]:
    return lambda x: jax.core.ShapedArray((), x.dtype if dtype is None else dtype)


_PRIMITIVES: dict[str, Primitive] = {
    "any": _define("any", jnp.any, _scalar(jnp.bool_)),
    "all": _define("all", jnp.all, _scalar(jnp.bool_)),
    "max": _define("max", jnp.max, _scalar(None)),
    "none": _define("none", _first_lane, lambda x: jax.core.ShapedArray(x.shape, x.dtype)),
}


def unvmap(x: Any, op: UnvmapOp = "any") -> jax.Array:
    """Reduce `x` over its elements and every `vmap` lane; the result is not batched.

    `op="any"`, `"all"`, `"max"`: `jnp.any`/`jnp.all`/`jnp.max` of `x` over all its
    elements and, under `vmap` (at any depth), over every lane as well, so each
    lane gets the same scalar. `op="none"`: `x` itself outside `vmap`; under `vmap`,
    the value of the first lane, unbatched (for a value every lane agrees on, such
    as a step counter handed to a host callback). Use it to decide something for
    the whole batch, such as skipping work no lane needs. Not differentiable.

    Args:
        x: one array (not a pytree).
        op: the reduction: `"any"`, `"all"`, `"max"` or `"none"`.

    Returns:
        A scalar (`"any"`, `"all"`: boolean; `"max"`: `x`'s dtype), or an array
        shaped like `x` for `"none"`.

    Raises:
        SpecError: `op` is none of the four.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from statejax.transform import unvmap
        >>> bool(unvmap(jnp.array([False, True]), "any"))
        True
        >>> jax.vmap(lambda x: unvmap(x > 2.0, "any"))(jnp.arange(4.0)).tolist()
        [True, True, True, True]
        >>> jax.vmap(lambda x: unvmap(x, "max"))(jnp.arange(4.0)).tolist()
        [3.0, 3.0, 3.0, 3.0]
    """
    spec = parse_spec(UnvmapSpec, "unvmap", op=op)
    out: jax.Array = _PRIMITIVES[spec.op].bind(jnp.asarray(x))  # type: ignore[no-untyped-call]
    return out


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform("unvmap", unvmap, UnvmapSpec, "reduce a value over every vmap lane (unbatched)")
    )

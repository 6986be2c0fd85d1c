"""`checkpoint` / `remat`: trade compute for memory under differentiation.

The pure core is handed to `jax.checkpoint`: under `grad` the function's
intermediate values are recomputed on the backward pass instead of being stored
(a `policy` may name the ones worth saving). Values, gradients and state writes
are exactly those of the function without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Never

import jax
import pydantic

from statejax._transforms._common import Index, as_tuple, name_of
from statejax.extend import (
    PureCore,
    SpecError,
    Split,
    StatefulFunction,
    Transform,
    TransformSpec,
    hookimpl,
    parse_spec,
)

__all__ = ["CheckpointSpec", "checkpoint", "remat"]


class CheckpointSpec(TransformSpec):
    """Options of `checkpoint`."""

    policy: Callable[..., bool] | None = pydantic.Field(
        default=None,
        description="which intermediates to save rather than recompute, e.g. "
        "jax.checkpoint_policies.dots_saveable; None recomputes everything",
    )
    static_argnums: tuple[Index, ...] = pydantic.Field(
        default=(),
        description="positions of arguments that are Python constants (hashable, non-negative)",
    )
    prevent_cse: bool = pydantic.Field(
        default=True,
        description="stop XLA from merging the recomputation with the forward pass; "
        "False is safe (and faster) under scan",
    )

    _normalise = pydantic.field_validator("static_argnums", mode="before")(
        lambda cls, v: as_tuple(v)
    )


def checkpoint(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    policy: Callable[..., bool] | None = None,
    static_argnums: int | Sequence[int] = (),
    prevent_cse: bool = True,
    **misspelled: Never,
) -> Callable[..., Any]:
    """Recompute `fn`'s intermediates on the backward pass (`jax.checkpoint`).

    The states `fn` reads and writes are threaded through as with `jit`;
    gradients are those of `fn` itself. Use as `@checkpoint`,
    `@checkpoint(policy=...)` or `checkpoint(fn, ...)`. `remat` is the
    same function.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import grad
        >>> from statejax.transform import checkpoint
        >>> w = sj.ParamState(jnp.array(2.0))
        >>> plain = lambda x: jnp.sin(w.value * x)
        >>> layer = checkpoint(plain)
        >>> g = grad(lambda x: layer(layer(x)), w)(1.0)
        >>> bool(jnp.allclose(g, grad(lambda x: plain(plain(x)), w)(1.0)))
        True
    """
    spec = parse_spec(
        CheckpointSpec,
        "checkpoint",
        policy=policy,
        static_argnums=static_argnums,
        prevent_cse=prevent_cse,
        **misspelled,
    )
    if fn is None:
        return functools.partial(_checkpoint, spec=spec)
    return _checkpoint(fn, spec=spec)


remat = checkpoint


def _checkpoint(fn: Callable[..., Any], spec: CheckpointSpec) -> Callable[..., Any]:
    # The pure core takes (read_values, write_values, *args): shift static positions by two.
    static_argnums = tuple(i + 2 for i in spec.static_argnums)
    label = f"statejax.checkpoint({name_of(fn)})"

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        remat = jax.checkpoint(
            pure, prevent_cse=spec.prevent_cse, policy=spec.policy, static_argnums=static_argnums
        )
        if not static_argnums:
            return remat

        def transformed(read_vals: Any, write_vals: Any, /, *args: Any, **kwargs: Any) -> Any:
            if max(spec.static_argnums) >= len(args):
                raise SpecError(
                    f"{label}: static_argnums={spec.static_argnums!r} but the function was called "
                    f"with {len(args)} positional argument(s). Pass the static arguments "
                    "positionally, or fix static_argnums."
                )
            return remat(read_vals, write_vals, *args, **kwargs)

        return transformed

    stateful: StatefulFunction[Any] = StatefulFunction(fn, label, lift, staged=True)
    return stateful.as_function(fn)


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "checkpoint",
            checkpoint,
            CheckpointSpec,
            "recompute intermediates on the backward pass (jax.checkpoint)",
        )
    )
    registry.register(Transform("remat", remat, CheckpointSpec, "alias of checkpoint (jax.remat)"))

"""Abstract evaluation of functions that read and write states: `eval_shape`, `make_jaxpr`.

Both trace the function's pure core (see `statejax.extend`) without
running it and never change a state: the traces run inside a private
`statejax.extend.StateTrace` that puts every touched state back, so an
enclosing statejax transform does not see them either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import pydantic

from statejax.extend import (
    PureCore,
    Split,
    StatefulFunction,
    StateTrace,
    Transform,
    TransformSpec,
    hookimpl,
    parse_spec,
)
from statejax.transforms._common import Index, as_tuple, name_of

__all__ = ["EvalShapeSpec", "MakeJaxprSpec", "StatefulJaxpr", "eval_shape", "make_jaxpr"]


class EvalShapeSpec(TransformSpec):
    """Options of `eval_shape`."""

    return_states: bool = pydantic.Field(
        default=False,
        description="also return the shapes of the states the function writes",
    )


class MakeJaxprSpec(TransformSpec):
    """Options of `make_jaxpr`."""

    static_argnums: tuple[Index, ...] = pydantic.Field(
        default=(), description="positions of arguments that are compile-time constants"
    )

    _normalise = pydantic.field_validator("static_argnums", mode="before")(
        lambda cls, v: as_tuple(v)
    )


def _unchanged(
    abstract: Callable[..., Any],
) -> Callable[[Split, PureCore], Callable[..., tuple[Any, list[Any]]]]:
    """A lift that applies `abstract` to the pure core and leaves every state as it was."""

    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, list[Any]]]:
        def transformed(
            read_vals: list[Any], write_vals: list[Any], *args: Any, **kwargs: Any
        ) -> tuple[Any, list[Any]]:
            result = abstract(split, pure, read_vals, write_vals, *args, **kwargs)
            return result, list(write_vals)

        return transformed

    return lift


def _isolated(stateful: StatefulFunction[Any], name: str, *args: Any, **kwargs: Any) -> Any:
    # The private trace records the gather and the (no-op) merge and restores every state,
    # so abstract evaluation is invisible to states and to any enclosing transform.
    with StateTrace(name):
        return stateful(*args, **kwargs)


def eval_shape(
    fn: Callable[..., Any], /, *args: Any, return_states: bool = False, **kwargs: Any
) -> Any:
    """Shapes and dtypes of `fn(*args, **kwargs)`, without running it or changing a state.

    Returns the output as a pytree of `jax.ShapeDtypeStruct`, like
    `jax.eval_shape`; arguments may be arrays or `ShapeDtypeStruct`.
    With `return_states=True` (a keyword reserved by `eval_shape`) returns
    `(out_shapes, state_shapes)` where `state_shapes` is a dict from each
    state `fn` writes (in first-write order) to the shapes of the value it would
    hold afterwards.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.abstract import eval_shape
        >>> h = sj.HiddenState(jnp.zeros(3))
        >>> def step(x):
        ...     h.value = h.value + x.sum()
        ...     return jnp.outer(x, h.value)
        >>> out, states = eval_shape(step, jax.ShapeDtypeStruct((2,), jnp.float32),
        ...                          return_states=True)
        >>> out.shape, states[h].shape, h.value.tolist()
        ((2, 3), (3,), [0.0, 0.0, 0.0])
    """
    spec = parse_spec(EvalShapeSpec, "eval_shape", return_states=return_states)

    def abstract(
        split: Split, pure: PureCore, rv: list[Any], wv: list[Any], *a: Any, **kw: Any
    ) -> Any:
        out, new_wv = jax.eval_shape(pure, rv, wv, *a, **kw)
        return out, dict(zip(split.write_states, new_wv, strict=True))

    name = f"statejax.eval_shape({name_of(fn)})"
    stateful: StatefulFunction[Any] = StatefulFunction(fn, name, _unchanged(abstract), staged=True)
    out, states = _isolated(stateful, name, *args, **kwargs)
    return (out, states) if spec.return_states else out


class StatefulJaxpr(NamedTuple):
    """What `make_jaxpr` returns; unpacks as `jaxpr, read_states, write_states`.

    `jaxpr` is the `jax.extend.core.ClosedJaxpr` of the pure core. Its
    inputs are, in order: the values of `read_states` (states only read), the
    values of `write_states` (states written), then the arguments. Its outputs
    are the function's outputs, then the new values of `write_states`. Each
    state contributes one input (and output) per leaf of its value, in
    `jax.tree.leaves` order. Both state lists are in first-touch order.
    """

    jaxpr: Any
    read_states: tuple[Any, ...]
    write_states: tuple[Any, ...]

    @property
    def states(self) -> tuple[Any, ...]:
        """Every state, in the order of the jaxpr's inputs: read ones, then written ones."""
        return self.read_states + self.write_states


def make_jaxpr(
    fn: Callable[..., Any], /, static_argnums: int | Sequence[int] = ()
) -> Callable[..., StatefulJaxpr]:
    """A function that returns the jaxpr of `fn`'s pure core and the states it uses.

    `make_jaxpr(fn)(*args, **kwargs)` traces `fn` (arguments may be arrays or
    `jax.ShapeDtypeStruct`), changes no state, and returns a
    `StatefulJaxpr` `(jaxpr, read_states, write_states)`. The jaxpr's
    inputs are the read states' values, the written states' values, then the
    arguments; its outputs are `fn`'s outputs, then the written states' new values.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.abstract import make_jaxpr
        >>> w = sj.ParamState(jnp.ones(2))
        >>> n = sj.ShortTermState(jnp.array(0))
        >>> def f(x):
        ...     n.value += 1
        ...     return x * w.value
        >>> jaxpr, reads, writes = make_jaxpr(f)(jnp.ones(2))
        >>> reads == (w,), writes == (n,), len(jaxpr.jaxpr.invars), len(jaxpr.jaxpr.outvars)
        (True, True, 3, 2)
    """
    spec = parse_spec(MakeJaxprSpec, "make_jaxpr", static_argnums=static_argnums)
    # The pure core takes (read_values, write_values, *args): shift static positions by two.
    shifted = tuple(i + 2 for i in spec.static_argnums)
    name = f"statejax.make_jaxpr({name_of(fn)})"

    def abstract(
        split: Split, pure: PureCore, rv: list[Any], wv: list[Any], *a: Any, **kw: Any
    ) -> StatefulJaxpr:
        jaxpr = jax.make_jaxpr(pure, static_argnums=shifted)(rv, wv, *a, **kw)
        return StatefulJaxpr(jaxpr, split.read_states, split.write_states)

    stateful: StatefulFunction[StatefulJaxpr] = StatefulFunction(
        fn, name, _unchanged(abstract), staged=True
    )

    @functools.wraps(fn)
    def trace(*args: Any, **kwargs: Any) -> StatefulJaxpr:
        return _isolated(stateful, name, *args, **kwargs)  # type: ignore[no-any-return]

    return trace


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "eval_shape",
            eval_shape,
            EvalShapeSpec,
            "output (and written-state) shapes without running; no state changes",
        )
    )
    registry.register(
        Transform(
            "make_jaxpr",
            make_jaxpr,
            MakeJaxprSpec,
            "jaxpr of the pure core, with the states it reads and writes",
        )
    )

"""The static types of the gradient family: what mypy sees `grad(...)` return.

Private to `statejax._transforms.autodiff`, which re-exports `GradFunction`. The
runtime objects are plain functions; these types only describe them.

Why a generic class rather than one overload per combination: the result type
depends on three independent choices (the structure of `grad_states`, whether
`argnums` is given, and the two flags `return_value`/`has_aux`). The overloads
of `grad` cover the first two; the flags travel as literal type arguments of
`GradFunction`, whose `__call__` overloads turn them into the result's shape.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, ParamSpec, overload

from typing_extensions import TypeVar

__all__ = ["GradFunction"]

P = ParamSpec("P")
R = TypeVar("R")
K = TypeVar("K")
#: The type of the derivative `g`.
G = TypeVar("G")
#: `Literal[True]` / `Literal[False]` when `return_value` / `has_aux` is a literal; `bool` when
#: only known at run time (the result is then `Any`).
RV = TypeVar("RV", Literal[False], Literal[True], bool, default=Literal[False])
AX = TypeVar("AX", Literal[False], Literal[True], bool, default=Literal[False])


class GradFunction(Generic[P, R, G, RV, AX]):
    """The static type of the function a gradient transform returns.

    Called with the wrapped function's arguments (`P`), it returns the derivative
    `g` (of type `G`), or `(g, value)` with `return_value=True` (`value` has the
    wrapped function's return type `R`), `(g, aux)` with `has_aux=True`, or
    `(g, value, aux)` with both. `g` is `jax.Array` for one state,
    `Mapping[K, jax.Array]` for a mapping of states (such as
    `model.states(ParamState)`), `Sequence[jax.Array]` for a list or tuple of
    states, `(state_part, arg_part)` with `argnums` as well, and `Any` for
    argument derivatives alone. That is for `grad` and `vector_grad`; `jacrev`,
    `jacfwd` and `hessian` type `g` as `Any`, since its structure also depends
    on the output's. Only a type: at run time the transform returns a plain
    function.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> w = sj.ParamState(jnp.array(2.0))
        >>> g, value = sj.grad(lambda: w.value**2, w, return_value=True)()
        >>> float(g), float(value)
        (4.0, 4.0)
    """

    @overload
    def __call__(
        self: GradFunction[P, R, G, Literal[False], Literal[False]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> G: ...
    @overload
    def __call__(
        self: GradFunction[P, R, G, Literal[True], Literal[False]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> tuple[G, R]: ...
    @overload
    def __call__(
        self: GradFunction[P, R, G, Literal[False], Literal[True]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> tuple[G, Any]: ...
    @overload
    def __call__(
        self: GradFunction[P, R, G, Literal[True], Literal[True]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> tuple[G, R, Any]: ...
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("GradFunction is a static type; the gradient transforms return functions")

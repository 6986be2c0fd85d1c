"""Automatic differentiation over states and arguments: `grad` and its family.

Every transform here differentiates a function that reads (and may write) states
with respect to a chosen set of states, `grad_states`, and/or some positional
arguments, `argnums`. They share one set of rules:

* **Structure.** Derivatives with respect to states come back in the structure
  `grad_states` was given in: a single state gives an array, a list a list, a
  tuple a tuple, a mapping (such as `model.states(ParamState)`) a mapping with
  the same keys, a nested container (`{"layer": {"w": w}}`) the same nesting.
  With `argnums` as well, the result is `(state_part, arg_part)`; with no
  states, only the argument part, and `argnums` defaults to `0`. An `int`
  `argnums` gives one derivative, a tuple a tuple.
* **Extras.** `return_value=True` and `has_aux=True` append the function's
  value and its auxiliary output, in that order: `(g, value)`, `(g, aux)`,
  `(g, value, aux)`.
* **States.** Differentiation is with respect to each state's value on entry;
  writes made by the function are applied after the call (as with `jit`).
* **Errors.** A grad state the function never reads is a `SpecError`
  (pass `check_states=False` to get zeros instead); a grad state holding
  integers is a `TraceError` (unless `allow_int=True`), and so is
  `has_aux=True` with a function that does not return a pair. A negative
  `argnums`, an empty one (`()`), and `grad_states` that select no state
  (`[]`, `{}`) are a `SpecError` at decoration, for every transform here
  alike; `argnums` one past the arguments actually passed is a `SpecError`
  at the call. `debug_nan=True` raises a `NaNError` naming the entry whose
  derivative is NaN or infinite, and then no state changes.

The gradient transforms return a `GradientTransform`, a callable that binds
as a method when stored on a class. They compose with every other transform:
`jit(grad(f))` compiles the whole step into one executable, `grad(jit(f))` and
`grad(grad(f))` work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Never, overload

import jax
import jax.numpy as jnp
import numpy as np

from statejax._transforms._autodiff_types import AX, RV, GradFunction, K, P, R
from statejax._transforms._common import SpecTypeError as _SpecTypeError
from statejax._transforms._common import TraceTypeError as _TraceTypeError
from statejax._transforms._common import cached_call, name_of
from statejax._transforms._grad_core import (
    Apply,
    Core,
    DiffSpec,
    FwdGradSpec,
    GradientTransform,
    GradSpec,
    GradStates,
    JacFwdSpec,
    JvpSpec,
    Plan,
    VectorGradSpec,
    VjpSpec,
    fwd_grad_apply,
    grad_targets,
    jacobian_apply,
    kind_of,
    make_stateful,
    unit_autograd,
    vector_grad_apply,
)
from statejax.extend import (
    Lift,
    PureCore,
    SpecError,
    Split,
    State,
    StatefulFunction,
    Transform,
    hookimpl,
    parse_spec,
)

__all__ = [
    "DiffSpec",
    "FwdGradSpec",
    "GradFunction",
    "GradSpec",
    "GradientTransform",
    "JacFwdSpec",
    "JvpSpec",
    "VectorGradSpec",
    "VjpSpec",
    "fwd_grad",
    "grad",
    "hessian",
    "jacfwd",
    "jacobian",
    "jacrev",
    "jvp",
    "vector_grad",
    "vjp",
]


# --------------------------------------------------------------------------- public API


#: Why unit_aware=True cannot carry units: brainunit is missing, or the transform has none.
_NO_BRAINUNIT = (
    "brainunit is not installed, so the units cannot be carried. Install it (pip install "
    "'statejax[units]'), or differentiate the mantissas (x.mantissa) and put the units back."
)
_FWD_GRAD_NO_UNITS = (
    "fwd_grad does not carry units (BrainState's fwd_grad has no unit_aware). Use "
    "grad(..., unit_aware=True), or differentiate the mantissas (x.mantissa)."
)


def _gradient(
    name: str,
    spec_type: type[VectorGradSpec],
    apply: Apply,
    fn: Callable[..., Any] | None,
    grad_states: GradStates,
    key: Any = None,
    units: Callable[[Any], Apply] | None = None,
    **options: Any,
) -> Callable[..., Any]:
    """Validate the options once, then wrap `fn` (or return a decorator that does).

    `units(autograd)` makes the `apply` of `unit_aware=True` from brainunit's
    `autograd` module (as BrainState swaps `jax.grad` for `brainunit.autograd.grad`).
    Without brainunit, or without `units`, the JAX `apply` runs, refusing quantities.
    """
    spec = parse_spec(spec_type, name, **options)
    grad_targets(grad_states, name)  # validated at decoration, even when used as a decorator
    no_units = None
    if spec.unit_aware:
        autograd = unit_autograd() if units is not None else None
        if units is not None and autograd is not None:
            apply = units(autograd)
        else:
            no_units = _NO_BRAINUNIT if units is not None else _FWD_GRAD_NO_UNITS

    def make(f: Callable[..., Any]) -> GradientTransform:
        return GradientTransform._make(name, spec, apply, f, grad_states, key, no_units)

    return make if fn is None else make(fn)


def _jax_options(**options: Any) -> dict[str, Any]:
    """The options passed on to the JAX transform, only where they differ from its default."""
    return {k: v for k, v in options.items() if v}


@overload
def grad(
    fn: Callable[P, R],
    grad_states: None = None,
    argnums: int | Sequence[int] | None = None,
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Any, RV, AX]: ...
@overload
def grad(
    fn: Callable[P, R],
    grad_states: State[Any],
    argnums: None = None,
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, jax.Array, RV, AX]: ...
@overload
def grad(
    fn: Callable[P, R],
    grad_states: State[Any],
    argnums: int | Sequence[int],
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, tuple[jax.Array, Any], RV, AX]: ...
@overload
def grad(  # type: ignore[overload-overlap]  # a Mapping of States to States is both
    fn: Callable[P, R],
    grad_states: Mapping[K, State[Any]],
    argnums: None = None,
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Mapping[K, jax.Array], RV, AX]: ...
@overload
def grad(  # type: ignore[overload-overlap]  # a Mapping of States to States is both
    fn: Callable[P, R],
    grad_states: Mapping[K, State[Any]],
    argnums: int | Sequence[int],
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, tuple[Mapping[K, jax.Array], Any], RV, AX]: ...
@overload
def grad(
    fn: Callable[P, R],
    grad_states: Iterable[State[Any]],
    argnums: None = None,
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Sequence[jax.Array], RV, AX]: ...
@overload
def grad(
    fn: Callable[P, R],
    grad_states: Iterable[State[Any]],
    argnums: int | Sequence[int],
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, tuple[Sequence[jax.Array], Any], RV, AX]: ...
@overload
def grad(
    fn: None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: AX = ...,
    return_value: RV = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> Callable[[Callable[P, R]], GradFunction[P, R, Any, RV, AX]]: ...
def grad(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    holomorphic: bool = False,
    allow_int: bool = False,
    has_aux: bool = False,
    return_value: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """The gradient of a scalar function with respect to states and/or arguments.

    Returns a `GradientTransform`: a function with `fn`'s arguments that
    returns `g` (see the module docs for its structure), or `(g, value)`,
    `(g, aux)`, `(g, value, aux)` when `return_value` / `has_aux` ask for
    them. Writes made by `fn` are applied after the call. Called without
    `fn`, returns a decorator. `holomorphic` and `allow_int` are passed to
    `jax.grad`; `check_states=False` gives zeros for grad states `fn` never
    reads; `debug_nan=True` raises `NaNError` (and changes no state) when a
    derivative holds NaN or Inf. `unit_aware=True` differentiates brainunit
    quantities with `brainunit.autograd` (the `statejax[units]` extra), so the
    derivatives carry units, as in BrainState; on plain arrays it changes nothing,
    and without brainunit a quantity is a `TraceTypeError`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import grad
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> def loss(x):
        ...     return jnp.sum(w.value * x) ** 2
        >>> grad(loss, w)(jnp.array([1.0, 1.0])).tolist()
        [6.0, 6.0]
        >>> gw, gx = grad(loss, [w], argnums=0)(jnp.array([1.0, 1.0]))
        >>> gw[0].tolist(), gx.tolist()
        ([6.0, 6.0], [6.0, 12.0])
        >>> g, value = grad(loss, {"w": w}, return_value=True)(jnp.array([1.0, 1.0]))
        >>> g["w"].tolist(), float(value)
        ([6.0, 6.0], 9.0)
    """
    options = _jax_options(holomorphic=holomorphic, allow_int=allow_int)
    return _gradient(
        "grad",
        GradSpec,
        jacobian_apply(functools.partial(jax.grad, **options)),
        fn,
        grad_states,
        units=lambda autograd: jacobian_apply(functools.partial(autograd.grad, **options)),
        argnums=argnums,
        holomorphic=holomorphic,
        allow_int=allow_int,
        has_aux=has_aux,
        return_value=return_value,
        unit_aware=unit_aware,
        check_states=check_states,
        debug_nan=debug_nan,
        **misspelled,
    )


@overload
def vector_grad(
    fn: Callable[P, R],
    grad_states: None = None,
    argnums: int | Sequence[int] | None = None,
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Any, RV, AX]: ...
@overload
def vector_grad(
    fn: Callable[P, R],
    grad_states: State[Any],
    argnums: None = None,
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, jax.Array, RV, AX]: ...
@overload
def vector_grad(
    fn: Callable[P, R],
    grad_states: State[Any],
    argnums: int | Sequence[int],
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, tuple[jax.Array, Any], RV, AX]: ...
@overload
def vector_grad(  # type: ignore[overload-overlap]  # a Mapping of States to States is both
    fn: Callable[P, R],
    grad_states: Mapping[K, State[Any]],
    argnums: None = None,
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Mapping[K, jax.Array], RV, AX]: ...
@overload
def vector_grad(  # type: ignore[overload-overlap]  # a Mapping of States to States is both
    fn: Callable[P, R],
    grad_states: Mapping[K, State[Any]],
    argnums: int | Sequence[int],
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, tuple[Mapping[K, jax.Array], Any], RV, AX]: ...
@overload
def vector_grad(
    fn: Callable[P, R],
    grad_states: Iterable[State[Any]],
    argnums: None = None,
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Sequence[jax.Array], RV, AX]: ...
@overload
def vector_grad(
    fn: Callable[P, R],
    grad_states: Iterable[State[Any]],
    argnums: int | Sequence[int],
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, tuple[Sequence[jax.Array], Any], RV, AX]: ...
@overload
def vector_grad(
    fn: None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    return_value: RV = ...,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> Callable[[Callable[P, R]], GradFunction[P, R, Any, RV, AX]]: ...
def vector_grad(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    return_value: bool = False,
    has_aux: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """The gradient of `sum(fn(...))` for a function with a non-scalar output.

    A vector-Jacobian product with a cotangent of ones: for elementwise
    functions, the elementwise derivative. Same arguments and result structure
    as `grad`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import vector_grad
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> vector_grad(lambda: w.value ** 2, w)().tolist()
        [2.0, 4.0]
    """
    return _gradient(
        "vector_grad",
        VectorGradSpec,
        vector_grad_apply,
        fn,
        grad_states,
        units=lambda autograd: jacobian_apply(
            functools.partial(autograd.vector_grad, unit_aware=True)
        ),
        argnums=argnums,
        return_value=return_value,
        has_aux=has_aux,
        unit_aware=unit_aware,
        check_states=check_states,
        debug_nan=debug_nan,
        **misspelled,
    )


def fwd_grad(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    return_value: bool = False,
    has_aux: bool = False,
    tangent_size: int | None = None,
    drct_der_clip: float | None = None,
    key: Any = None,
    check_states: bool = True,
    debug_nan: bool = False,
    unit_aware: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """A forward-mode estimate of the gradient of a scalar function.

    Draws a random normal tangent `v` for the differentiated values and
    returns `v * (J v)`, an unbiased estimate of the gradient computed in
    forward mode; `tangent_size=n` averages `n` directions. `drct_der_clip`
    clips each directional derivative `J v`. `key` (an int seed or a PRNG
    key) fixes the directions; without it, each call draws a key from
    `statejax.random`'s default state. Same result structure as `grad`;
    `unit_aware=True` changes nothing on plain arrays; fwd_grad carries no
    units, so a brainunit quantity is then a `TraceTypeError`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import fwd_grad
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> g = fwd_grad(lambda: jnp.sum(w.value ** 2), w, tangent_size=4096, key=0)()
        >>> bool(jnp.allclose(g, jnp.array([2.0, 4.0]), atol=0.3))
        True
    """
    return _gradient(
        "fwd_grad",
        FwdGradSpec,
        fwd_grad_apply,
        fn,
        grad_states,
        _as_key(key),
        argnums=argnums,
        return_value=return_value,
        has_aux=has_aux,
        tangent_size=tangent_size,
        drct_der_clip=drct_der_clip,
        check_states=check_states,
        debug_nan=debug_nan,
        unit_aware=unit_aware,
        **misspelled,
    )


def _as_key(key: Any) -> Any:
    """A PRNG key from `key`: an int seed, a size-1 integer array seed, or a key."""
    if key is None:
        return None
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.PRNGKey(int(key))
    array = key if isinstance(key, jax.Array) else np.asarray(key)
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
        return array
    if jnp.issubdtype(array.dtype, jnp.integer) and array.size == 1:
        return jax.random.PRNGKey(int(np.asarray(array).reshape(())))
    if array.dtype == jnp.uint32 and array.shape == (2,):
        return array
    raise SpecError(
        f"statejax.fwd_grad: option key: {key!r} is neither an int seed nor a PRNG key. Pass "
        "an int, jax.random.PRNGKey(seed), or None to draw from statejax.random."
    )


@overload
def jacrev(
    fn: Callable[P, R],
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: AX = ...,
    return_value: RV = ...,
    holomorphic: bool = False,
    allow_int: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Any, RV, AX]: ...
@overload
def jacrev(
    fn: None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: AX = ...,
    return_value: RV = ...,
    holomorphic: bool = False,
    allow_int: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> Callable[[Callable[P, R]], GradFunction[P, R, Any, RV, AX]]: ...
def jacrev(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """The Jacobian by reverse mode (`jax.jacrev`) over states and/or arguments.

    Same arguments and result structure as `grad`; each derivative leaf has
    the output's shape followed by the input's shape. `jacobian` is this
    function.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import jacrev
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> jacrev(lambda x: w.value * x, w)(jnp.array(3.0)).tolist()
        [[3.0, 0.0], [0.0, 3.0]]
    """
    options = _jax_options(holomorphic=holomorphic, allow_int=allow_int)
    return _gradient(
        "jacrev",
        GradSpec,
        jacobian_apply(functools.partial(jax.jacrev, **options)),
        fn,
        grad_states,
        units=lambda autograd: jacobian_apply(functools.partial(autograd.jacrev, **options)),
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        holomorphic=holomorphic,
        allow_int=allow_int,
        unit_aware=unit_aware,
        check_states=check_states,
        debug_nan=debug_nan,
        **misspelled,
    )


#: BrainState's name for `jacrev`.
jacobian = jacrev


@overload
def jacfwd(
    fn: Callable[P, R],
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: AX = ...,
    return_value: RV = ...,
    holomorphic: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Any, RV, AX]: ...
@overload
def jacfwd(
    fn: None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: AX = ...,
    return_value: RV = ...,
    holomorphic: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> Callable[[Callable[P, R]], GradFunction[P, R, Any, RV, AX]]: ...
def jacfwd(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    holomorphic: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """The Jacobian by forward mode (`jax.jacfwd`) over states and/or arguments.

    Same arguments and result structure as `jacrev`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import jacfwd
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> jac, value = jacfwd(lambda x: w.value * x, w, return_value=True)(jnp.array(3.0))
        >>> jac.tolist(), value.tolist()
        ([[3.0, 0.0], [0.0, 3.0]], [3.0, 6.0])
    """
    options = _jax_options(holomorphic=holomorphic)
    return _gradient(
        "jacfwd",
        JacFwdSpec,
        jacobian_apply(functools.partial(jax.jacfwd, **options)),
        fn,
        grad_states,
        units=lambda autograd: jacobian_apply(functools.partial(autograd.jacfwd, **options)),
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        holomorphic=holomorphic,
        unit_aware=unit_aware,
        check_states=check_states,
        debug_nan=debug_nan,
        **misspelled,
    )


@overload
def hessian(
    fn: Callable[P, R],
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    return_value: RV = ...,
    holomorphic: bool = False,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> GradFunction[P, R, Any, RV, AX]: ...
@overload
def hessian(
    fn: None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    return_value: RV = ...,
    holomorphic: bool = False,
    has_aux: AX = ...,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
) -> Callable[[Callable[P, R]], GradFunction[P, R, Any, RV, AX]]: ...
def hessian(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    return_value: bool = False,
    holomorphic: bool = False,
    has_aux: bool = False,
    unit_aware: bool = False,
    check_states: bool = True,
    debug_nan: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """The Hessian of a scalar function (`jax.hessian`) over states and/or arguments.

    Same arguments as `grad`. The result nests the input structure twice,
    as `jax.hessian` does: each leaf of the input structure holds the input
    structure again. For one state, an array of shape `w.shape + w.shape`; for
    a mapping of states, `h[k1][k2]`; with states and `argnums`, the input is
    the pair `(states, args)`, so `h[0]` has the structure of the states with
    a pair `(d/d states, d/d args)` at each leaf, and `h[1]` that of the args.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import hessian
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> hessian(lambda: jnp.sum(w.value ** 3), w)().tolist()
        [[6.0, 0.0], [0.0, 12.0]]
        >>> h = hessian(lambda: jnp.sum(w.value ** 3), {"w": w})()
        >>> h["w"]["w"].tolist()
        [[6.0, 0.0], [0.0, 12.0]]
    """
    options = _jax_options(holomorphic=holomorphic)
    return _gradient(
        "hessian",
        JacFwdSpec,
        jacobian_apply(functools.partial(jax.hessian, **options)),
        fn,
        grad_states,
        units=lambda autograd: jacobian_apply(functools.partial(autograd.hessian, **options)),
        argnums=argnums,
        return_value=return_value,
        holomorphic=holomorphic,
        has_aux=has_aux,
        unit_aware=unit_aware,
        check_states=check_states,
        debug_nan=debug_nan,
        **misspelled,
    )


def _vjp_argnums(argnums: Any, n_primals: int, label: str) -> Any:
    """`argnums` against the primals given: negative positions count from the end."""
    if argnums is None or n_primals == 0:
        return None
    single = isinstance(argnums, (int, np.integer)) and not isinstance(argnums, bool)
    items = [argnums] if single else argnums
    if not isinstance(items, (list, tuple)):
        return argnums  # not ints: the spec names the problem
    resolved = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not -n_primals <= item < n_primals:
                raise SpecError(
                    f"{label}: option argnums: {item} is out of range for {n_primals} "
                    "positional argument(s). Count from 0 (or from -1 at the end)."
                )
            item = int(item) % n_primals
        resolved.append(item)
    return resolved[0] if single else tuple(resolved)


def vjp(
    fn: Callable[..., Any],
    *primals: Any,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = 0,
    has_aux: bool = False,
) -> tuple[Any, ...]:
    """A vector-Jacobian product (`jax.vjp`) over states and/or arguments.

    Runs `fn(*primals)` once (its writes are applied) and returns `(out,
    vjp_fn)`, or `(out, vjp_fn, aux)` with `has_aux`. `vjp_fn(cotangent)`
    takes a cotangent shaped like `out` and returns the cotangents: of the
    `argnums` arguments without `grad_states`; `(state_cotangents,
    arg_cotangents)` with both; the state cotangents only when `argnums` is
    `None` or no primals are given. State cotangents come in the structure
    of `grad_states`; a negative `argnums` counts from the end. Call `vjp_fn`
    inside the same transform that called `vjp`.

    Raises:
        SpecError: `argnums` out of range or repeated, a grad state `fn`
            never reads, or nothing to differentiate (no primals and no
            `grad_states`).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import vjp
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> out, vjp_fn = vjp(lambda x: w.value * x, jnp.array(3.0), grad_states=w)
        >>> gw, gx = vjp_fn(jnp.array([1.0, 1.0]))
        >>> out.tolist(), gw.tolist(), float(gx)
        ([3.0, 6.0], [3.0, 3.0], 3.0)
    """
    label = f"statejax.vjp({name_of(fn)})"
    targets = grad_targets(grad_states, "vjp")
    resolved = _vjp_argnums(argnums, len(primals), label)
    if resolved is None and targets.kind == "none":
        raise SpecError(
            f"{label}: nothing to differentiate: no positional primals (or argnums=None) and "
            "no grad_states. Pass the arguments to differentiate, or grad_states."
        )
    spec = parse_spec(VjpSpec, "vjp", argnums=resolved, has_aux=has_aux)
    plan = Plan(label, targets, spec)
    result: tuple[Any, ...] = make_stateful(label, fn, plan, _vjp_apply)(*primals)
    return result


def _vjp_apply(core: Core, primals: tuple[Any, ...], plan: Plan) -> Any:
    out, raw_pullback, (_, aux, new_write_vals) = jax.vjp(core, *primals, has_aux=True)

    def vjp_fn(cotangent: Any) -> Any:
        return plan.select(raw_pullback(cotangent))

    result = (out, vjp_fn, aux) if plan.spec.has_aux else (out, vjp_fn)
    return result, new_write_vals


def jvp(
    fn: Callable[..., Any],
    primals: Sequence[Any],
    tangents: Sequence[Any],
    *,
    has_aux: bool = False,
) -> tuple[Any, ...]:
    """A Jacobian-vector product (`jax.jvp`) of a function that may use states.

    Runs `fn(*primals)` once (its writes are applied) and returns `(out,
    out_tangent)`, or `(out, out_tangent, aux)` with `has_aux`, as
    `jax.jvp(fn, primals, tangents)` does. States are constants here (zero
    tangent); for derivatives with respect to states use `jacfwd` or `grad`.

    Raises:
        TypeError: `primals` or `tangents` is not a tuple or list.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import jvp
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> out, tangent = jvp(lambda x: w.value * x, (jnp.array(3.0),), (jnp.array(1.0),))
        >>> out.tolist(), tangent.tolist()
        ([3.0, 6.0], [1.0, 2.0])
    """
    label = f"statejax.jvp({name_of(fn)})"
    for what, value in (("primals", primals), ("tangents", tangents)):
        if not isinstance(value, (tuple, list)):
            raise _SpecTypeError(
                f"{label}: {what} must be a tuple or list (one entry per positional argument "
                f"of the function), got {type(value).__name__}."
            )
    spec = parse_spec(JvpSpec, "jvp", has_aux=has_aux)
    n = len(primals)

    def build(fns: Sequence[Callable[..., Any]]) -> tuple[Callable[..., Any], str, Lift]:
        return _first_args(fns[0], n), label, _jvp_lift(spec, n, label)

    # At the top level, one compiled jvp per function and options: a repeated call with
    # the same shapes traces nothing. Not with an aux, which may be any Python value.
    stateful = None if spec.has_aux else cached_call("jvp", (fn,), (spec, n), build)
    if stateful is None:
        stateful = StatefulFunction(_first_args(fn, n), label, _jvp_lift(spec, n, label))
    out: tuple[Any, ...] = stateful(*primals, *tangents)
    return out


def _first_args(fn: Callable[..., Any], n: int) -> Callable[..., Any]:
    """`fn` of the first `n` arguments (the primals; the tangents follow them)."""

    def user_fn(*args: Any) -> Any:
        return fn(*args[:n])

    return user_fn


def _jvp_lift(spec: JvpSpec, n: int, label: str) -> Lift:
    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, Sequence[Any]]]:
        def transformed(
            read_vals: Sequence[Any], write_vals: Sequence[Any], /, *args: Any
        ) -> tuple[Any, Sequence[Any]]:
            prim, tang = args[:n], args[n:]

            def core(*values: Any) -> tuple[Any, tuple[Any, list[Any]]]:
                out, new_write_vals = pure(read_vals, write_vals, *values)
                aux = None
                if spec.has_aux:
                    if not (isinstance(out, (tuple, list)) and len(out) == 2):
                        raise _TraceTypeError(
                            f"{label}: has_aux=True but the function returned {kind_of(out)}, "
                            "not a pair (output, aux). Return a 2-tuple, or drop has_aux."
                        )
                    out, aux = out
                return out, (aux, new_write_vals)

            out, out_tangent, (aux, new_write_vals) = jax.jvp(core, prim, tang, has_aux=True)
            result = (out, out_tangent, aux) if spec.has_aux else (out, out_tangent)
            return result, new_write_vals

        return transformed

    return lift


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    for name, function, spec, summary in (
        ("grad", grad, GradSpec, "gradient over states and arguments (jax.grad)"),
        ("vector_grad", vector_grad, VectorGradSpec, "gradient of a vector output's sum"),
        ("fwd_grad", fwd_grad, FwdGradSpec, "forward-mode gradient estimate (random tangents)"),
        ("jacrev", jacrev, GradSpec, "reverse-mode Jacobian over states and arguments"),
        ("jacobian", jacobian, GradSpec, "BrainState's name for jacrev"),
        ("jacfwd", jacfwd, JacFwdSpec, "forward-mode Jacobian over states and arguments"),
        ("hessian", hessian, JacFwdSpec, "Hessian over states and arguments (jax.hessian)"),
        ("vjp", vjp, VjpSpec, "vector-Jacobian product over states and arguments (jax.vjp)"),
        ("jvp", jvp, JvpSpec, "Jacobian-vector product; states are constants (jax.jvp)"),
    ):
        registry.register(Transform(name, function, spec, summary))

"""Automatic differentiation over states and arguments: ``grad`` and its family.

Every transform here differentiates a function that reads (and may write) states
with respect to a chosen set of states, ``grad_states``, and/or some positional
arguments, ``argnums``. They share one set of rules:

* **Structure.** Derivatives with respect to states come back in the structure
  ``grad_states`` was given in: a single state gives an array, a list a list, a
  tuple a tuple, a mapping (such as ``model.states(ParamState)``) a mapping with
  the same keys. With ``argnums`` as well, the result is ``(state_part,
  arg_part)``; with no states, only the argument part, and ``argnums`` defaults
  to ``0``. An ``int`` ``argnums`` gives one derivative, a tuple a tuple.
* **Extras.** ``return_value=True`` and ``has_aux=True`` append the function's
  value and its auxiliary output, in that order: ``(g, value)``, ``(g, aux)``,
  ``(g, value, aux)``.
* **States.** Differentiation is with respect to each state's value on entry;
  writes made by the function are applied after the call (as with ``jit``).
* **Errors.** A grad state the function never reads is a :class:`TraceError`
  (pass ``allow_unused=True`` to get zeros instead); so is a grad state holding
  integers, and ``has_aux=True`` with a function that does not return a pair.
  A negative ``argnums`` is a :class:`SpecError` at decoration, one past the
  arguments actually passed a :class:`SpecError` at the call.

They compose with every other transform: ``jit(grad(f))`` compiles the whole
step into one executable, ``grad(jit(f))`` and ``grad(grad(f))`` work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import pydantic

from statejax._errors import SpecError, TraceError
from statejax._state import State
from statejax.extend import (
    PureCore,
    Split,
    StatefulFunction,
    Transform,
    TransformSpec,
    describe_state,
    hookimpl,
    parse_spec,
)
from statejax.graph import StateMapping, StateTree

__all__ = [
    "DiffSpec",
    "GradSpec",
    "grad",
    "hessian",
    "jacfwd",
    "jacrev",
    "jvp",
    "vector_grad",
    "vjp",
]

#: What ``grad_states`` may be: one state, a list, tuple or other iterable of states, or a mapping.
GradStates = State[Any] | Iterable[State[Any]] | Mapping[Any, State[Any]] | None


def _check_argnums(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise ValueError(f"argnums must be an int or a tuple of ints, got {value!r}")
    items = [value] if isinstance(value, int) else list(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"argnums must be an int or a tuple of ints, got {value!r}")
        if item < 0:
            raise ValueError(
                f"argnums must be non-negative, got {value!r}; count positions from the "
                "first positional argument (0)"
            )
    if len(set(items)) != len(items):
        raise ValueError(f"argnums has a repeated position: {value!r}")
    return value if isinstance(value, int) else tuple(items)


class DiffSpec(TransformSpec):
    """Options shared by every differentiation transform (:func:`vjp`, :func:`jvp`)."""

    argnums: int | tuple[int, ...] | None = pydantic.Field(
        default=None,
        description="positional arguments to differentiate (an int or a tuple of non-negative "
        "ints); defaults to 0 when no grad_states are given",
    )
    has_aux: bool = pydantic.Field(
        default=False, description="the function returns (output, aux); aux is passed through"
    )
    allow_unused: bool = pydantic.Field(
        default=False,
        description="allow grad states the function never reads (their derivative is zero)",
    )

    _argnums = pydantic.field_validator("argnums", mode="before")(lambda cls, v: _check_argnums(v))


class GradSpec(DiffSpec):
    """Options of the gradient family: ``grad``, ``vector_grad``, ``jac*``, ``hessian``."""

    return_value: bool = pydantic.Field(
        default=False, description="also return the function's value: (g, value[, aux])"
    )


# --------------------------------------------------------------------------- targets


class _Targets:
    """The normalised ``grad_states``: a flat tuple of states and how to rebuild the structure."""

    __slots__ = ("keys", "kind", "states")

    def __init__(
        self,
        kind: Literal["none", "single", "list", "tuple", "mapping", "dict"],
        states: tuple[State[Any], ...],
        keys: tuple[Any, ...] = (),
    ) -> None:
        self.kind = kind
        self.states = states
        self.keys = keys

    def path(self, index: int) -> tuple[Any, ...] | None:
        if self.kind in ("mapping", "dict"):
            key = self.keys[index]
            return key if isinstance(key, tuple) else (key,)
        return None

    def pack(self, values: Sequence[Any]) -> Any:
        """Values in the user's structure (mappings as an order-keeping StateTree)."""
        kind = self.kind
        if kind == "single":
            return values[0]
        if kind == "list":
            return list(values)
        if kind == "tuple":
            return tuple(values)
        return StateTree(zip(self.keys, values, strict=True))

    def unpack(self, packed: Any) -> list[Any]:
        """The flat values of ``packed`` (the user's structure, or a StateTree)."""
        kind = self.kind
        if kind == "single":
            return [packed]
        if kind in ("list", "tuple"):
            if not isinstance(packed, (list, tuple)) or len(packed) != len(self.states):
                raise TypeError(
                    f"expected a {kind} of {len(self.states)} values (one per grad state), "
                    f"got {type(packed).__name__}"
                )
            return list(packed)
        if not isinstance(packed, Mapping) or set(packed) != set(self.keys):
            raise TypeError(
                f"expected a mapping with the keys of grad_states {list(self.keys)!r}, got "
                f"{packed!r}"
            )
        return [packed[k] for k in self.keys]

    def restore(self, tree: Any) -> Any:
        """Turn the StateTrees in a result back into dicts when the user gave a dict."""
        if self.kind != "dict":
            return tree
        return _to_dicts(tree)


def _to_dicts(tree: Any) -> Any:
    if isinstance(tree, StateTree):
        return {k: _to_dicts(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and type(tree) is tuple:
        return tuple(_to_dicts(v) for v in tree)
    if isinstance(tree, list):
        return [_to_dicts(v) for v in tree]
    if isinstance(tree, dict):
        return {k: _to_dicts(v) for k, v in tree.items()}
    return tree


def _targets(grad_states: Any, transform: str) -> _Targets:
    def bad(what: object) -> SpecError:
        return SpecError(
            f"statejax.{transform}: option grad_states: {what!r} is not a State. Pass a State, "
            "a list or tuple of States, or a mapping whose values are States (such as "
            "model.states(ParamState))."
        )

    if grad_states is None:
        return _Targets("none", ())
    if isinstance(grad_states, State):
        return _Targets("single", (grad_states,))
    if isinstance(grad_states, Mapping):
        keys = tuple(grad_states)
        states = tuple(grad_states[k] for k in keys)
        for s in states:
            if not isinstance(s, State):
                raise bad(s)
        if len({id(s) for s in states}) != len(states):
            raise SpecError(f"statejax.{transform}: option grad_states: a state appears twice.")
        kind: Literal["mapping", "dict"] = (
            "mapping" if isinstance(grad_states, StateMapping) else "dict"
        )
        return _Targets(kind, states, keys)
    if not isinstance(grad_states, (list, tuple, str, bytes)) and isinstance(grad_states, Iterable):
        grad_states = list(grad_states)  # any other iterable of states: gradients as a list
    if isinstance(grad_states, (list, tuple)):
        for s in grad_states:
            if not isinstance(s, State):
                raise bad(s)
        if len({id(s) for s in grad_states}) != len(grad_states):
            raise SpecError(f"statejax.{transform}: option grad_states: a state appears twice.")
        return _Targets("list" if isinstance(grad_states, list) else "tuple", tuple(grad_states))
    raise bad(grad_states)


# --------------------------------------------------------------------------- the shared core

#: ``apply(core, primals, plan) -> result``: run one JAX transform over the core.
_Apply = Callable[["_Core", tuple[Any, ...], "_Plan"], Any]


class _Plan:
    """What is differentiated: ``with_states`` / ``argnums``, and how to call the core."""

    __slots__ = ("argnums", "name", "spec", "targets", "transform", "with_states")

    def __init__(self, transform: str, name: str, targets: _Targets, spec: DiffSpec) -> None:
        self.transform = transform
        self.name = name
        self.targets = targets
        self.spec = spec
        self.with_states = targets.kind != "none"
        argnums = spec.argnums
        self.argnums: int | tuple[int, ...] | None = (
            0 if argnums is None and not self.with_states else argnums
        )

    @property
    def n_primals(self) -> int:
        return int(self.with_states) + int(self.argnums is not None)

    def select(self, per_primal: Sequence[Any]) -> Any:
        """The derivative ``g`` from one entry per primal: ``(states, args)`` or the one part."""
        if self.n_primals == 2:
            return (self.targets.restore(per_primal[0]), per_primal[1])
        return self.targets.restore(per_primal[0]) if self.with_states else per_primal[0]

    def split_primals(self, structured: Any) -> tuple[Any, ...]:
        """The inverse of :meth:`select`, for tangents given by the user."""
        if self.n_primals == 2:
            if not isinstance(structured, (tuple, list)) or len(structured) != 2:
                raise TypeError(
                    f"statejax.{self.transform}({self.name}): with grad_states and argnums the "
                    "tangents are a pair (state_tangents, arg_tangents)"
                )
            return (self._states_in(structured[0]), structured[1])
        return (self._states_in(structured),) if self.with_states else (structured,)

    def _states_in(self, structured: Any) -> Any:
        return self.targets.pack(self.targets.unpack(structured))


class _Core:
    """The pure core as a function of the differentiated values only.

    ``core(*primals) -> (out, (out, aux, new_write_vals))``, where the primals are
    the grad-state values in the user's structure and/or the differentiated
    arguments (one, or a tuple for a tuple ``argnums``).
    """

    __slots__ = ("args", "kwargs", "locs", "plan", "pure", "read_vals", "write_vals")

    def __init__(
        self,
        plan: _Plan,
        pure: PureCore,
        locs: list[tuple[bool, int]],
        read_vals: Sequence[Any],
        write_vals: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.plan = plan
        self.pure = pure
        self.locs = locs
        self.read_vals = read_vals
        self.write_vals = write_vals
        self.args = args
        self.kwargs = kwargs

    def __call__(self, *primals: Any) -> tuple[Any, tuple[Any, Any, list[Any]]]:
        plan = self.plan
        read_vals = list(self.read_vals)
        write_vals = list(self.write_vals)
        args = list(self.args)
        rest = list(primals)
        if plan.with_states:
            values = plan.targets.unpack(rest.pop(0))
            for (written, index), value in zip(self.locs, values, strict=True):
                (write_vals if written else read_vals)[index] = value
        argnums = plan.argnums
        if isinstance(argnums, int):
            args[argnums] = rest.pop(0)
        elif argnums is not None:
            for position, value in zip(argnums, rest.pop(0), strict=True):
                args[position] = value
        out, new_write_vals = self.pure(read_vals, write_vals, *args, **self.kwargs)
        if not plan.spec.allow_unused and plan.with_states:
            self._check_used()
        aux = None
        if plan.spec.has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TraceError(
                    f"statejax.{plan.transform}({plan.name}): has_aux=True but the function "
                    f"returned {_kind(out)}, not a pair (output, aux). Return a 2-tuple, or "
                    "drop has_aux."
                )
            out, aux = out
        return out, (out, aux, new_write_vals)

    def _check_used(self) -> None:
        record = self.pure.record
        if record is None:
            return
        reads = record.reads
        plan = self.plan
        for index, state in enumerate(plan.targets.states):
            if id(state) not in reads:
                raise TraceError(
                    f"statejax.{plan.transform}({plan.name}): the grad state "
                    f"{describe_state(state, plan.targets.path(index))} is never read by the "
                    "function, so its derivative is always zero. Remove it from grad_states, "
                    "or pass allow_unused=True to get zeros."
                )


def _kind(out: object) -> str:
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of length {len(out)}"
    if hasattr(out, "shape") and hasattr(out, "dtype"):
        return f"an array of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}"


def _check_float(plan: _Plan, values: Sequence[Any]) -> None:
    for index, (state, value) in enumerate(zip(plan.targets.states, values, strict=True)):
        for leaf in jax.tree.leaves(value):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
                raise TraceError(
                    f"statejax.{plan.transform}({plan.name}): cannot differentiate with respect "
                    f"to the grad state {describe_state(state, plan.targets.path(index))}: its "
                    f"value has dtype {jnp.result_type(leaf)}, not a float. Store a float "
                    "array in it (for example jnp.asarray(x, jnp.float32)) or remove it from "
                    "grad_states."
                )


def _build(
    fn: Callable[..., Any],
    transform: str,
    targets: _Targets,
    spec: DiffSpec,
    apply: _Apply,
) -> Callable[..., Any]:
    name = getattr(fn, "__qualname__", repr(fn))
    plan = _Plan(transform, name, targets, spec)
    argnums = plan.argnums
    needed = 0 if argnums is None else 1 + (argnums if isinstance(argnums, int) else max(argnums))

    def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, Sequence[Any]]]:
        locs: list[tuple[bool, int]] = []
        for state in targets.states:
            loc = split.locate(state)
            assert loc is not None, "grad states are always in the seed split"
            locs.append(loc)

        def transformed(
            read_vals: Sequence[Any], write_vals: Sequence[Any], /, *args: Any, **kwargs: Any
        ) -> tuple[Any, Sequence[Any]]:
            if len(args) < needed:
                raise SpecError(
                    f"statejax.{transform}({name}): argnums={argnums!r} but the function was "
                    f"called with {len(args)} positional argument(s). Pass the differentiated "
                    "arguments positionally, or fix argnums."
                )
            values = [(write_vals if w else read_vals)[i] for w, i in locs]
            _check_float(plan, values)
            primals: list[Any] = []
            if plan.with_states:
                primals.append(targets.pack(values))
            if isinstance(argnums, int):
                primals.append(args[argnums])
            elif argnums is not None:
                primals.append(tuple(args[i] for i in argnums))
            core = _Core(plan, pure, locs, read_vals, write_vals, args, kwargs)
            return apply(core, tuple(primals), plan)  # type: ignore[no-any-return]

        return transformed

    stateful: StatefulFunction[Any] = StatefulFunction(
        fn, f"statejax.{transform}({name})", lift, seed=Split(read_states=targets.states)
    )
    call = stateful.__call__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs)

    wrapper.clear_cache = stateful.clear_cache  # type: ignore[attr-defined]
    wrapper.stateful = stateful  # type: ignore[attr-defined]
    return wrapper


def _jax_argnums(plan: _Plan) -> int | tuple[int, ...]:
    return (0, 1) if plan.n_primals == 2 else 0


def _extras(plan: _Plan, spec: GradSpec, g: Any, value: Any, aux: Any) -> Any:
    if not (spec.return_value or spec.has_aux):
        return g
    out: tuple[Any, ...] = (g,)
    if spec.return_value:
        out += (value,)
    if spec.has_aux:
        out += (aux,)
    return out


def _jacobian_apply(jax_transform: Callable[..., Any], spec: GradSpec) -> _Apply:
    """``apply`` for transforms shaped like jax.grad: ``T(f, argnums, has_aux=True)``."""

    def apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
        raw, (value, aux, new_write_vals) = jax_transform(
            core, argnums=_jax_argnums(plan), has_aux=True
        )(*primals)
        per_primal = raw if plan.n_primals == 2 else (raw,)
        g = plan.select(per_primal)
        return _extras(plan, spec, g, value, aux), new_write_vals

    return apply


def _decorate(
    fn: Callable[..., Any] | None, make: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> Callable[..., Any]:
    return make if fn is None else make(fn)


# --------------------------------------------------------------------------- public API


def grad(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
) -> Callable[..., Any]:
    """The gradient of a scalar function with respect to states and/or arguments.

    Returns a function with ``fn``'s arguments that returns ``g`` (see the module
    docs for its structure), or ``(g, value)``, ``(g, aux)``, ``(g, value, aux)``
    when ``return_value`` / ``has_aux`` ask for them. Writes made by ``fn`` are
    applied after the call. Called without ``fn``, returns a decorator.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import grad
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
    spec = parse_spec(
        GradSpec,
        "grad",
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
    )
    targets = _targets(grad_states, "grad")
    apply = _jacobian_apply(jax.grad, spec)
    return _decorate(fn, lambda f: _build(f, "grad", targets, spec, apply))


def jacrev(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
) -> Callable[..., Any]:
    """The Jacobian by reverse mode (:func:`jax.jacrev`) over states and/or arguments.

    Same arguments and result structure as :func:`grad`; each derivative leaf has
    the output's shape followed by the input's shape.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import jacrev
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> jacrev(lambda x: w.value * x, w)(jnp.array(3.0)).tolist()
        [[3.0, 0.0], [0.0, 3.0]]
    """
    spec = parse_spec(
        GradSpec,
        "jacrev",
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
    )
    targets = _targets(grad_states, "jacrev")
    apply = _jacobian_apply(jax.jacrev, spec)
    return _decorate(fn, lambda f: _build(f, "jacrev", targets, spec, apply))


def jacfwd(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
) -> Callable[..., Any]:
    """The Jacobian by forward mode (:func:`jax.jacfwd`) over states and/or arguments.

    Same arguments and result structure as :func:`jacrev`.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import jacfwd
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> jac, value = jacfwd(lambda x: w.value * x, w, return_value=True)(jnp.array(3.0))
        >>> jac.tolist(), value.tolist()
        ([[3.0, 0.0], [0.0, 3.0]], [3.0, 6.0])
    """
    spec = parse_spec(
        GradSpec,
        "jacfwd",
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
    )
    targets = _targets(grad_states, "jacfwd")
    apply = _jacobian_apply(jax.jacfwd, spec)
    return _decorate(fn, lambda f: _build(f, "jacfwd", targets, spec, apply))


def hessian(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
) -> Callable[..., Any]:
    """The Hessian of a scalar function (:func:`jax.hessian`) over states and/or arguments.

    Same arguments as :func:`grad`. The result nests the input structure twice,
    as :func:`jax.hessian` does: for a mapping of states ``h[k1][k2]``; with
    states and ``argnums``, ``((h_ss, h_sa), (h_as, h_aa))``.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import hessian
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> hessian(lambda: jnp.sum(w.value ** 3), w)().tolist()
        [[6.0, 0.0], [0.0, 12.0]]
    """
    spec = parse_spec(
        GradSpec,
        "hessian",
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
    )
    targets = _targets(grad_states, "hessian")
    apply = _jacobian_apply(jax.hessian, spec)
    return _decorate(fn, lambda f: _build(f, "hessian", targets, spec, apply))


def vector_grad(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
) -> Callable[..., Any]:
    """The gradient of ``sum(fn(...))`` for a function with a non-scalar output.

    A vector-Jacobian product with a cotangent of ones: for elementwise
    functions, the elementwise derivative. Same arguments and result structure
    as :func:`grad`.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import vector_grad
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> vector_grad(lambda: w.value ** 2, w)().tolist()
        [2.0, 4.0]
    """
    spec = parse_spec(
        GradSpec,
        "vector_grad",
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
    )
    targets = _targets(grad_states, "vector_grad")

    def apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
        out, pullback, (value, aux, new_write_vals) = jax.vjp(core, *primals, has_aux=True)
        per_primal = pullback(jax.tree.map(jnp.ones_like, out))
        g = plan.select(per_primal)
        return _extras(plan, spec, g, value, aux), new_write_vals

    return _decorate(fn, lambda f: _build(f, "vector_grad", targets, spec, apply))


def vjp(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    allow_unused: bool = False,
) -> Callable[..., Any]:
    """A vector-Jacobian product (:func:`jax.vjp`) over states and/or arguments.

    ``vjp(fn, grad_states, argnums)(*args)`` runs ``fn`` once (its writes are
    applied) and returns ``(out, pullback)``, or ``(out, pullback, aux)`` with
    ``has_aux``. ``pullback(cotangent)`` takes a cotangent shaped like ``out``
    and returns ``g`` in the structure :func:`grad` uses. Call ``pullback``
    inside the same transform that called the vjp'd function.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import vjp
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> out, pullback = vjp(lambda x: w.value * x, w, argnums=0)(jnp.array(3.0))
        >>> gw, gx = pullback(jnp.array([1.0, 1.0]))
        >>> out.tolist(), gw.tolist(), float(gx)
        ([3.0, 6.0], [3.0, 3.0], 3.0)
    """
    spec = parse_spec(DiffSpec, "vjp", argnums=argnums, has_aux=has_aux, allow_unused=allow_unused)
    targets = _targets(grad_states, "vjp")

    def apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
        out, raw_pullback, (_, aux, new_write_vals) = jax.vjp(core, *primals, has_aux=True)

        def pullback(cotangent: Any) -> Any:
            return plan.select(raw_pullback(cotangent))

        result = (out, pullback, aux) if spec.has_aux else (out, pullback)
        return result, new_write_vals

    return _decorate(fn, lambda f: _build(f, "vjp", targets, spec, apply))


def jvp(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    allow_unused: bool = False,
) -> Callable[..., Any]:
    """A Jacobian-vector product (:func:`jax.jvp`) over states and/or arguments.

    ``jvp(fn, grad_states, argnums)(tangents, *args)`` runs ``fn`` once (its
    writes are applied) and returns ``(out, out_tangent)``, or ``(out,
    out_tangent, aux)`` with ``has_aux``. ``tangents`` has the structure
    :func:`grad` would return: tangents of the grad states in their structure,
    of the arguments, or the pair ``(state_tangents, arg_tangents)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import jvp
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> out, tangent = jvp(lambda x: w.value * x, w)(jnp.array([1.0, 0.0]), jnp.array(3.0))
        >>> out.tolist(), tangent.tolist()
        ([3.0, 6.0], [3.0, 0.0])
    """
    spec = parse_spec(DiffSpec, "jvp", argnums=argnums, has_aux=has_aux, allow_unused=allow_unused)
    targets = _targets(grad_states, "jvp")

    def apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
        # Position 0 of the call is the tangents; the user's function ignores it.
        tangents = core.args[0]
        out, out_tangent, (_, aux, new_write_vals) = jax.jvp(
            core, primals, plan.split_primals(tangents), has_aux=True
        )
        result = (out, out_tangent, aux) if spec.has_aux else (out, out_tangent)
        return result, new_write_vals

    argnums = spec.argnums
    if argnums is None and targets.kind == "none":
        argnums = 0
    # The wrapper's positions are the user's shifted by one (the tangents come first).
    shifted = spec.model_copy(
        update={
            "argnums": None
            if argnums is None
            else argnums + 1
            if isinstance(argnums, int)
            else tuple(a + 1 for a in argnums)
        }
    )

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def with_tangents(tangents: Any, /, *args: Any, **kwargs: Any) -> Any:
            return f(*args, **kwargs)

        return _build(with_tangents, "jvp", targets, shifted, apply)

    return _decorate(fn, make)


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    for name, function, spec, summary in (
        ("grad", grad, GradSpec, "gradient over states and arguments (jax.grad)"),
        ("vector_grad", vector_grad, GradSpec, "gradient of a vector output's sum (jax.vjp)"),
        ("jacrev", jacrev, GradSpec, "reverse-mode Jacobian over states and arguments"),
        ("jacfwd", jacfwd, GradSpec, "forward-mode Jacobian over states and arguments"),
        ("hessian", hessian, GradSpec, "Hessian over states and arguments (jax.hessian)"),
        ("vjp", vjp, DiffSpec, "vector-Jacobian product over states and arguments"),
        ("jvp", jvp, DiffSpec, "Jacobian-vector product over states and arguments"),
    ):
        registry.register(Transform(name, function, spec, summary))

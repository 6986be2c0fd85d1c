"""Automatic differentiation over states and arguments: `grad` and its family.

Every transform here differentiates a function that reads (and may write) states
with respect to a chosen set of states, `grad_states`, and/or some positional
arguments, `argnums`. They share one set of rules:

* **Structure.** Derivatives with respect to states come back in the structure
  `grad_states` was given in: a single state gives an array, a list a list, a
  tuple a tuple, a mapping (such as `model.states(ParamState)`) a mapping with
  the same keys. With `argnums` as well, the result is `(state_part,
  arg_part)`; with no states, only the argument part, and `argnums` defaults
  to `0`. An `int` `argnums` gives one derivative, a tuple a tuple.
* **Extras.** `return_value=True` and `has_aux=True` append the function's
  value and its auxiliary output, in that order: `(g, value)`, `(g, aux)`,
  `(g, value, aux)`.
* **States.** Differentiation is with respect to each state's value on entry;
  writes made by the function are applied after the call (as with `jit`).
* **Errors.** A grad state the function never reads is a `TraceError`
  (pass `allow_unused=True` to get zeros instead); so is a grad state holding
  integers, and `has_aux=True` with a function that does not return a pair.
  A negative `argnums`, an empty one (`()`), and `grad_states` that select
  no state (`[]`, `{}`) are a `SpecError` at decoration, for every
  transform here alike; `argnums` one past the arguments actually passed is a
  `SpecError` at the call.

They compose with every other transform: `jit(grad(f))` compiles the whole
step into one executable, `grad(jit(f))` and `grad(grad(f))` work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Never, overload

import jax
import jax.numpy as jnp
import numpy as np
import pydantic

from statejax.extend import (
    PureCore,
    SpecError,
    Split,
    State,
    StatefulFunction,
    TraceError,
    Transform,
    TransformSpec,
    describe_state,
    hookimpl,
    parse_spec,
)
from statejax.graph import StateMapping, StateTree
from statejax.transforms._autodiff_types import AX, RV, GradFunction, K, P, R
from statejax.transforms._common import MAX_INT32, name_of

__all__ = [
    "DiffSpec",
    "GradFunction",
    "GradSpec",
    "grad",
    "hessian",
    "jacfwd",
    "jacrev",
    "jvp",
    "vector_grad",
    "vjp",
]

#: What `grad_states` may be: one state, a list, tuple or other iterable of states, or a mapping.
GradStates = State[Any] | Iterable[State[Any]] | Mapping[Any, State[Any]] | None


def _check_argnums(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise ValueError(f"argnums must be an int or a tuple of ints, got {value!r}")
    items = [value] if isinstance(value, int) else list(value)
    if not items:
        raise ValueError(
            f"argnums={value!r} selects no argument; give an int or a non-empty tuple of "
            "ints, or argnums=None with grad_states to differentiate with respect to states only"
        )
    for i, item in enumerate(items):
        if isinstance(item, np.integer):
            items[i] = item = int(item)
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"argnums must be an int or a tuple of ints, got {value!r}")
        if item < 0:
            raise ValueError(
                f"argnums must be non-negative, got {value!r}; count positions from the "
                "first positional argument (0)"
            )
        if item > MAX_INT32:
            raise ValueError(f"argnums must be at most {MAX_INT32}, got {value!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"argnums has a repeated position: {value!r}")
    return items[0] if isinstance(value, int) else tuple(items)


class DiffSpec(TransformSpec):
    """Options shared by every differentiation transform (`vjp`, `jvp`)."""

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
    """Options of the gradient family: `grad`, `vector_grad`, `jac*`, `hessian`."""

    return_value: bool = pydantic.Field(
        default=False, description="also return the function's value: (g, value[, aux])"
    )


# --------------------------------------------------------------------------- targets


class _Dict(dict[Any, Any]):
    """A plain dict of grad-state values, flattened by JAX in insertion order.

    JAX sorts the keys of a `dict` (and fails on keys that do not sort), so the
    values of a user's dict travel through the JAX transform in this private
    node, which `_Targets.restore` turns back into dicts in the result.
    """

    __slots__ = ()


jax.tree_util.register_pytree_node(
    _Dict,
    lambda d: (tuple(d.values()), tuple(d)),
    lambda keys, values: _Dict(zip(keys, values, strict=True)),
)


def _plain_dicts(tree: Any) -> Any:
    def convert(node: Any) -> Any:
        return {k: _plain_dicts(v) for k, v in node.items()} if type(node) is _Dict else node

    return jax.tree.map(convert, tree, is_leaf=lambda node: type(node) is _Dict)


class _Targets:
    """The normalised `grad_states`: a flat tuple of states and how to rebuild the structure."""

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
        """Values in the user's structure (a StateMapping as a StateTree, a dict as a _Dict)."""
        kind = self.kind
        if kind == "single":
            return values[0]
        if kind == "list":
            return list(values)
        if kind == "tuple":
            return tuple(values)
        pairs = zip(self.keys, values, strict=True)
        return StateTree(pairs) if kind == "mapping" else _Dict(pairs)

    def unpack(self, packed: Any, what: str) -> list[Any]:
        """The flat values of `packed`, which has the user's structure; `what` names it."""
        kind = self.kind
        if kind == "single":
            return [packed]
        if kind in ("list", "tuple"):
            if not isinstance(packed, (list, tuple)) or len(packed) != len(self.states):
                raise TypeError(
                    f"{what}: expected a {kind} of {len(self.states)} values (one per grad "
                    f"state), got {type(packed).__name__}"
                )
            return list(packed)
        if not isinstance(packed, Mapping) or set(packed) != set(self.keys):
            raise TypeError(
                f"{what}: expected a mapping with the keys of grad_states {list(self.keys)!r}, "
                f"got {packed!r}"
            )
        return [packed[k] for k in self.keys]

    def restore(self, tree: Any) -> Any:
        """`tree` with the packed dicts of grad states in it turned back into plain dicts."""
        return _plain_dicts(tree) if self.kind == "dict" else tree


def _targets(grad_states: Any, transform: str) -> _Targets:
    def bad(what: object) -> SpecError:
        return SpecError(
            f"statejax.{transform}: option grad_states: {what!r} is not a State. Pass a State, "
            "a list or tuple of States, or a mapping whose values are States (such as "
            "model.states(ParamState))."
        )

    def check(states: Sequence[Any]) -> None:
        for s in states:
            if not isinstance(s, State):
                raise bad(s)
        seen: set[int] = set()
        for s in states:
            if id(s) in seen:
                raise SpecError(
                    f"statejax.{transform}: option grad_states: the {describe_state(s)} appears "
                    "twice. List each state once."
                )
            seen.add(id(s))

    def none_selected(what: object) -> SpecError:
        return SpecError(
            f"statejax.{transform}: option grad_states: {what!r} selects no state. Pass at "
            "least one State, or grad_states=None to differentiate with respect to the "
            "arguments only (argnums)."
        )

    if grad_states is None:
        return _Targets("none", ())
    if isinstance(grad_states, State):
        return _Targets("single", (grad_states,))
    if isinstance(grad_states, Mapping):
        keys = tuple(grad_states)
        states = tuple(grad_states[k] for k in keys)
        if not states:
            raise none_selected(grad_states)
        check(states)
        return _Targets(
            "mapping" if isinstance(grad_states, StateMapping) else "dict", states, keys
        )
    if isinstance(grad_states, (jax.Array, np.ndarray, np.generic)):
        raise bad(grad_states)  # iterable, but an array is not a collection of states
    if not isinstance(grad_states, (list, tuple, str, bytes)) and isinstance(grad_states, Iterable):
        grad_states = list(grad_states)  # any other iterable of states: gradients as a list
    if isinstance(grad_states, (list, tuple)):
        if not grad_states:
            raise none_selected(grad_states)
        check(grad_states)
        return _Targets("list" if isinstance(grad_states, list) else "tuple", tuple(grad_states))
    raise bad(grad_states)


# --------------------------------------------------------------------------- the shared core

#: `apply(core, primals, plan) -> result`: run one JAX transform over the core.
_Apply = Callable[["_Core", tuple[Any, ...], "_Plan"], Any]


class _Plan:
    """What is differentiated: `with_states` / `argnums`, and how to call the core."""

    __slots__ = ("argnums", "label", "spec", "targets", "with_states")

    def __init__(self, label: str, targets: _Targets, spec: DiffSpec) -> None:
        self.label = label  # "statejax.grad(loss)", how errors name the call
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
        """The derivative `g` from one entry per primal: `(states, args)` or the one part."""
        g = tuple(per_primal) if self.n_primals == 2 else per_primal[0]
        return self.targets.restore(g)

    def split_primals(self, structured: Any) -> tuple[Any, ...]:
        """The inverse of `select`, for tangents given by the user."""
        if self.n_primals == 2:
            if not isinstance(structured, (tuple, list)) or len(structured) != 2:
                raise TypeError(
                    f"{self.label}: with grad_states and argnums the tangents are a pair "
                    f"(state_tangents, arg_tangents), got {type(structured).__name__}"
                )
            return (self._states_in(structured[0]), structured[1])
        return (self._states_in(structured),) if self.with_states else (structured,)

    def _states_in(self, structured: Any) -> Any:
        targets = self.targets
        return targets.pack(targets.unpack(structured, f"{self.label}: state tangents"))


class _Core:
    """The pure core as a function of the differentiated values only.

    `core(*primals) -> (out, (out, aux, new_write_vals))`, where the primals are
    the grad-state values in the user's structure and/or the differentiated
    arguments (one, or a tuple for a tuple `argnums`). `leading` holds the
    call's positional arguments before the user's (jvp's tangents).
    """

    __slots__ = ("args", "kwargs", "leading", "locs", "plan", "pure", "read_vals", "write_vals")

    def __init__(
        self,
        plan: _Plan,
        pure: PureCore,
        locs: list[tuple[bool, int]],
        read_vals: Sequence[Any],
        write_vals: Sequence[Any],
        leading: tuple[Any, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.plan = plan
        self.pure = pure
        self.locs = locs
        self.read_vals = read_vals
        self.write_vals = write_vals
        self.leading = leading
        self.args = args
        self.kwargs = kwargs

    def __call__(self, *primals: Any) -> tuple[Any, tuple[Any, Any, list[Any]]]:
        plan = self.plan
        read_vals = list(self.read_vals)
        write_vals = list(self.write_vals)
        args = list(self.args)
        rest = list(primals)
        if plan.with_states:
            values = plan.targets.unpack(rest.pop(0), plan.label)
            for (written, index), value in zip(self.locs, values, strict=True):
                (write_vals if written else read_vals)[index] = value
        argnums = plan.argnums
        if isinstance(argnums, int):
            args[argnums] = rest.pop(0)
        elif argnums is not None:
            for position, value in zip(argnums, rest.pop(0), strict=True):
                args[position] = value
        out, new_write_vals = self.pure(read_vals, write_vals, *self.leading, *args, **self.kwargs)
        if not plan.spec.allow_unused and plan.with_states:
            self._check_used()
        aux = None
        if plan.spec.has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TraceError(
                    f"{plan.label}: has_aux=True but the function returned {_kind(out)}, not a "
                    "pair (output, aux). Return a 2-tuple, or drop has_aux."
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
                    f"{plan.label}: the grad state "
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
                    f"{plan.label}: cannot differentiate with respect to the grad state "
                    f"{describe_state(state, plan.targets.path(index))}: its value has dtype "
                    f"{jnp.result_type(leaf)}, not a float. Store a float array in it (for "
                    "example jnp.asarray(x, jnp.float32)) or remove it from grad_states."
                )


def _family(
    transform: str,
    spec_type: type[DiffSpec],
    apply: _Apply,
    fn: Callable[..., Any] | None,
    grad_states: GradStates,
    leading: int = 0,
    **options: Any,
) -> Callable[..., Any]:
    """Validate the options once, then wrap `fn` (or return a decorator that does).

    `leading` positional arguments of the call come before the user's (jvp's
    tangents): the function does not receive them, and `argnums` counts after them.
    """
    spec = parse_spec(spec_type, transform, **options)
    targets = _targets(grad_states, transform)

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        label = f"statejax.{transform}({name_of(f)})"
        plan = _Plan(label, targets, spec)
        argnums = plan.argnums
        needed = (
            0 if argnums is None else 1 + (argnums if isinstance(argnums, int) else max(argnums))
        )

        def user_fn(*args: Any, **kwargs: Any) -> Any:
            return f(*args[leading:], **kwargs)

        def lift(split: Split, pure: PureCore) -> Callable[..., tuple[Any, Sequence[Any]]]:
            locs: list[tuple[bool, int]] = []
            for state in targets.states:
                loc = split.locate(state)
                assert loc is not None, "grad states are always in the seed split"
                locs.append(loc)

            def transformed(
                read_vals: Sequence[Any], write_vals: Sequence[Any], /, *args: Any, **kwargs: Any
            ) -> tuple[Any, Sequence[Any]]:
                head, args = args[:leading], args[leading:]
                if len(args) < needed:
                    raise SpecError(
                        f"{label}: argnums={argnums!r} but the function was called with "
                        f"{len(args)} positional argument(s). Pass the differentiated arguments "
                        "positionally, or fix argnums."
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
                core = _Core(plan, pure, locs, read_vals, write_vals, head, args, kwargs)
                return apply(core, tuple(primals), plan)  # type: ignore[no-any-return]

            return transformed

        stateful: StatefulFunction[Any] = StatefulFunction(
            user_fn if leading else f, label, lift, seed=Split(read_states=targets.states)
        )
        return stateful.as_function(f)

    return make if fn is None else make(fn)


def _extras(plan: _Plan, g: Any, value: Any, aux: Any) -> Any:
    """`g`, then the value and the aux when the spec asks for them, in that order."""
    return_value = isinstance(plan.spec, GradSpec) and plan.spec.return_value
    if not (return_value or plan.spec.has_aux):
        return g
    out: tuple[Any, ...] = (g,)
    if return_value:
        out += (value,)
    if plan.spec.has_aux:
        out += (aux,)
    return out


def _jacobian_apply(jax_transform: Callable[..., Any]) -> _Apply:
    """`apply` for transforms shaped like jax.grad: `T(f, argnums, has_aux=True)`."""

    def apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
        argnums = (0, 1) if plan.n_primals == 2 else 0
        raw, (value, aux, new_write_vals) = jax_transform(core, argnums=argnums, has_aux=True)(
            *primals
        )
        g = plan.select(raw if plan.n_primals == 2 else (raw,))
        return _extras(plan, g, value, aux), new_write_vals

    return apply


def _vector_grad_apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
    out, pullback, (value, aux, new_write_vals) = jax.vjp(core, *primals, has_aux=True)
    g = plan.select(pullback(jax.tree.map(jnp.ones_like, out)))
    return _extras(plan, g, value, aux), new_write_vals


def _vjp_apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
    out, raw_pullback, (_, aux, new_write_vals) = jax.vjp(core, *primals, has_aux=True)

    def pullback(cotangent: Any) -> Any:
        return plan.select(raw_pullback(cotangent))

    result = (out, pullback, aux) if plan.spec.has_aux else (out, pullback)
    return result, new_write_vals


def _jvp_apply(core: _Core, primals: tuple[Any, ...], plan: _Plan) -> Any:
    (tangents,) = core.leading
    out, out_tangent, (_, aux, new_write_vals) = jax.jvp(
        core, primals, plan.split_primals(tangents), has_aux=True
    )
    result = (out, out_tangent, aux) if plan.spec.has_aux else (out, out_tangent)
    return result, new_write_vals


# --------------------------------------------------------------------------- public API


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
def grad(  # type: ignore[misc]  # until the issue 9 parameter list lands here
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
    **misspelled: Any,
) -> Callable[..., Any]:
    """The gradient of a scalar function with respect to states and/or arguments.

    Returns a function with `fn`'s arguments that returns `g` (see the module
    docs for its structure), or `(g, value)`, `(g, aux)`, `(g, value, aux)`
    when `return_value` / `has_aux` ask for them. Writes made by `fn` are
    applied after the call. Called without `fn`, returns a decorator.

    Examples:
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
    return _family(
        "grad",
        GradSpec,
        _jacobian_apply(jax.grad),
        fn,
        grad_states,
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
        **misspelled,
    )


@overload
def jacrev(
    fn: Callable[P, R],
    grad_states: GradStates = None,
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
def jacrev(
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
def jacrev(  # type: ignore[misc]  # until the issue 9 parameter list lands here
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
    **misspelled: Any,
) -> Callable[..., Any]:
    """The Jacobian by reverse mode (`jax.jacrev`) over states and/or arguments.

    Same arguments and result structure as `grad`; each derivative leaf has
    the output's shape followed by the input's shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import jacrev
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> jacrev(lambda x: w.value * x, w)(jnp.array(3.0)).tolist()
        [[3.0, 0.0], [0.0, 3.0]]
    """
    return _family(
        "jacrev",
        GradSpec,
        _jacobian_apply(jax.jacrev),
        fn,
        grad_states,
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
        **misspelled,
    )


@overload
def jacfwd(
    fn: Callable[P, R],
    grad_states: GradStates = None,
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
def jacfwd(
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
def jacfwd(  # type: ignore[misc]  # until the issue 9 parameter list lands here
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
    **misspelled: Any,
) -> Callable[..., Any]:
    """The Jacobian by forward mode (`jax.jacfwd`) over states and/or arguments.

    Same arguments and result structure as `jacrev`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import jacfwd
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> jac, value = jacfwd(lambda x: w.value * x, w, return_value=True)(jnp.array(3.0))
        >>> jac.tolist(), value.tolist()
        ([[3.0, 0.0], [0.0, 3.0]], [3.0, 6.0])
    """
    return _family(
        "jacfwd",
        GradSpec,
        _jacobian_apply(jax.jacfwd),
        fn,
        grad_states,
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
        **misspelled,
    )


@overload
def hessian(
    fn: Callable[P, R],
    grad_states: GradStates = None,
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
def hessian(
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
def hessian(  # type: ignore[misc]  # until the issue 9 parameter list lands here
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
    **misspelled: Any,
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
        >>> from statejax.transforms.autodiff import hessian
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> hessian(lambda: jnp.sum(w.value ** 3), w)().tolist()
        [[6.0, 0.0], [0.0, 12.0]]
        >>> h = hessian(lambda: jnp.sum(w.value ** 3), {"w": w})()
        >>> h["w"]["w"].tolist()
        [[6.0, 0.0], [0.0, 12.0]]
    """
    return _family(
        "hessian",
        GradSpec,
        _jacobian_apply(jax.hessian),
        fn,
        grad_states,
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
        **misspelled,
    )


@overload
def vector_grad(
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
def vector_grad(
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
def vector_grad(
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
def vector_grad(  # type: ignore[overload-overlap]  # a Mapping of States to States is both
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
def vector_grad(  # type: ignore[overload-overlap]  # a Mapping of States to States is both
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
def vector_grad(
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
def vector_grad(
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
def vector_grad(
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
def vector_grad(  # type: ignore[misc]  # until the issue 9 parameter list lands here
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    return_value: bool = False,
    allow_unused: bool = False,
    **misspelled: Any,
) -> Callable[..., Any]:
    """The gradient of `sum(fn(...))` for a function with a non-scalar output.

    A vector-Jacobian product with a cotangent of ones: for elementwise
    functions, the elementwise derivative. Same arguments and result structure
    as `grad`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import vector_grad
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> vector_grad(lambda: w.value ** 2, w)().tolist()
        [2.0, 4.0]
    """
    return _family(
        "vector_grad",
        GradSpec,
        _vector_grad_apply,
        fn,
        grad_states,
        argnums=argnums,
        has_aux=has_aux,
        return_value=return_value,
        allow_unused=allow_unused,
        **misspelled,
    )


def vjp(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    allow_unused: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """A vector-Jacobian product (`jax.vjp`) over states and/or arguments.

    `vjp(fn, grad_states, argnums)(*args)` runs `fn` once (its writes are
    applied) and returns `(out, pullback)`, or `(out, pullback, aux)` with
    `has_aux`. `pullback(cotangent)` takes a cotangent shaped like `out`
    and returns `g` in the structure `grad` uses. Call `pullback`
    inside the same transform that called the vjp'd function.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import vjp
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> out, pullback = vjp(lambda x: w.value * x, w, argnums=0)(jnp.array(3.0))
        >>> gw, gx = pullback(jnp.array([1.0, 1.0]))
        >>> out.tolist(), gw.tolist(), float(gx)
        ([3.0, 6.0], [3.0, 3.0], 3.0)
    """
    return _family(
        "vjp",
        DiffSpec,
        _vjp_apply,
        fn,
        grad_states,
        argnums=argnums,
        has_aux=has_aux,
        allow_unused=allow_unused,
        **misspelled,
    )


def jvp(
    fn: Callable[..., Any] | None = None,
    grad_states: GradStates = None,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    allow_unused: bool = False,
    **misspelled: Never,
) -> Callable[..., Any]:
    """A Jacobian-vector product (`jax.jvp`) over states and/or arguments.

    `jvp(fn, grad_states, argnums)(tangents, *args)` runs `fn(*args)` once (its
    writes are applied) and returns `(out, out_tangent)`, or `(out,
    out_tangent, aux)` with `has_aux`. `tangents` has the structure
    `grad` would return: tangents of the grad states in their structure,
    of the arguments, or the pair `(state_tangents, arg_tangents)`. `argnums`
    counts the arguments of `fn`, after `tangents`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.autodiff import jvp
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> out, tangent = jvp(lambda x: w.value * x, w)(jnp.array([1.0, 0.0]), jnp.array(3.0))
        >>> out.tolist(), tangent.tolist()
        ([3.0, 6.0], [3.0, 0.0])
    """
    return _family(
        "jvp",
        DiffSpec,
        _jvp_apply,
        fn,
        grad_states,
        leading=1,
        argnums=argnums,
        has_aux=has_aux,
        allow_unused=allow_unused,
        **misspelled,
    )


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

"""The shared core of the differentiation transforms (`grad` and its family).

Private to the built-in plugins; `autodiff.py` defines the public transforms on it
and re-exports the names here that are public (the specs, `GradientTransform`,
`GradStates`). Three parts: the options (the specs, validated at decoration); the
*targets* (`grad_states` normalised to a flat tuple of states, and rebuilt into the
user's structure in the result); and the *core*: a `StatefulFunction` whose lifted
pure core hands the function of the target values to a JAX transform (`jax.grad`,
`jax.jacrev`, ...), with the checks every transform makes (unread and integer grad
states, the aux pair, `debug_nan`).
"""

from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import pydantic

from statejax import random as _random
from statejax._errors import NaNError
from statejax._transforms._common import MAX_INT32, PositiveCount, name_of, raise_when
from statejax._transforms._common import SpecTypeError as _SpecTypeError
from statejax._transforms._common import TraceTypeError as _TraceTypeError
from statejax._transforms._common import TraceValueError as _TraceValueError
from statejax.extend import (
    PureCore,
    SpecError,
    Split,
    State,
    StatefulFunction,
    TraceError,
    TransformSpec,
    describe_state,
    parse_spec,
)
from statejax.graph import StateMapping, StateTree

__all__ = [
    "Apply",
    "Core",
    "DiffSpec",
    "FwdGradSpec",
    "GradSpec",
    "GradStates",
    "GradientTransform",
    "JacFwdSpec",
    "JvpSpec",
    "Plan",
    "VectorGradSpec",
    "VjpSpec",
    "fwd_grad_apply",
    "grad_targets",
    "jacobian_apply",
    "unit_autograd",
    "kind_of",
    "make_stateful",
    "vector_grad_apply",
]


# --------------------------------------------------------------------------- options


#: What `grad_states` may be: one state, a list, tuple or other iterable of states, a
#: mapping, or a nested container of these.
_StateTree: TypeAlias = "State[Any] | Iterable[_StateTree] | Mapping[Any, _StateTree]"
GradStates: TypeAlias = "_StateTree | None"


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
    """Options shared by every differentiation transform."""

    argnums: int | tuple[int, ...] | None = pydantic.Field(
        default=None,
        description="positional arguments to differentiate (an int or a tuple of non-negative "
        "ints); defaults to 0 when no grad_states are given",
    )
    has_aux: bool = pydantic.Field(
        default=False, description="the function returns (output, aux); aux is passed through"
    )

    _argnums = pydantic.field_validator("argnums", mode="before")(lambda cls, v: _check_argnums(v))


class VjpSpec(DiffSpec):
    """Options of `vjp` (its `argnums` are resolved against the primals first).

    A grad state the function never reads is always an error here, as in BrainState.
    """

    argnums: int | tuple[int, ...] | None = pydantic.Field(
        default=0,
        description="positional arguments to differentiate (an int or a tuple of ints; a "
        "negative one counts from the last primal); None: with respect to grad_states only",
    )


class JvpSpec(TransformSpec):
    """Options of `jvp`."""

    has_aux: bool = pydantic.Field(
        default=False, description="the function returns (output, aux); aux is passed through"
    )


class VectorGradSpec(DiffSpec):
    """Options of `vector_grad`, and the base of the other gradient transforms."""

    return_value: bool = pydantic.Field(
        default=False, description="also return the function's value: (g, value[, aux])"
    )
    check_states: bool = pydantic.Field(
        default=True,
        description="refuse grad states the function never reads (False: their derivative is zero)",
    )
    unit_aware: bool = pydantic.Field(
        default=False,
        description="derivatives of brainunit quantities carry their units (needs "
        "statejax[units]); a no-op on plain arrays",
    )
    debug_nan: bool = pydantic.Field(
        default=False,
        description="raise NaNError, changing no state, when a derivative holds NaN or Inf",
    )


class JacFwdSpec(VectorGradSpec):
    """Options of `jacfwd` and `hessian`."""

    holomorphic: bool = pydantic.Field(
        default=False, description="the function is holomorphic (complex inputs and outputs)"
    )


class GradSpec(JacFwdSpec):
    """Options of `grad` and `jacrev`."""

    allow_int: bool = pydantic.Field(
        default=False,
        description="allow integer inputs; their derivative has JAX's trivial float0 dtype",
    )


class FwdGradSpec(VectorGradSpec):
    """Options of `fwd_grad`."""

    tangent_size: PositiveCount | None = pydantic.Field(
        default=None,
        description="number of random directions averaged (None: one direction, no batch axis)",
    )
    drct_der_clip: float | None = pydantic.Field(
        default=None,
        description="clip each directional derivative to [-clip, clip] (a positive float)",
    )

    @pydantic.field_validator("drct_der_clip")
    @classmethod
    def _positive_clip(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"drct_der_clip must be a positive float, got {value!r}")
        return value


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

    __slots__ = ("keys", "kind", "states", "treedef")

    def __init__(
        self,
        kind: Literal["none", "single", "list", "tuple", "mapping", "dict", "tree"],
        states: tuple[State[Any], ...],
        keys: tuple[Any, ...] = (),
        treedef: Any = None,
    ) -> None:
        self.kind = kind
        self.states = states
        self.keys = keys  # mapping keys, or for a "tree" the path of each state
        self.treedef = treedef

    def path(self, index: int) -> tuple[Any, ...] | None:
        if self.kind in ("mapping", "dict", "tree"):
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
        if kind == "tree":
            return self.treedef.unflatten(values)
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
        if kind == "tree":
            try:
                return list(self.treedef.flatten_up_to(packed))
            except (TypeError, ValueError):
                raise TypeError(
                    f"{what}: expected the structure of grad_states {self.treedef}, got {packed!r}"
                ) from None
        if not isinstance(packed, Mapping) or set(packed) != set(self.keys):
            raise TypeError(
                f"{what}: expected a mapping with the keys of grad_states {list(self.keys)!r}, "
                f"got {packed!r}"
            )
        return [packed[k] for k in self.keys]

    def restore(self, tree: Any) -> Any:
        """`tree` with the packed dicts of grad states in it turned back into plain dicts."""
        return _plain_dicts(tree) if self.kind == "dict" else tree


def grad_targets(grad_states: Any, transform: str) -> _Targets:
    def bad(what: object) -> SpecError:
        return _SpecTypeError(
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

    def tree(container: Any) -> _Targets:
        # A nested container of states: the structure is kept as JAX sees it.
        try:
            pairs, treedef = jax.tree_util.tree_flatten_with_path(
                container, is_leaf=lambda node: isinstance(node, State)
            )
        except (TypeError, ValueError):
            keys = _unsortable_keys(container)
            if keys is None:
                raise
            raise SpecError(
                f"statejax.{transform}: option grad_states: the keys "
                f"{', '.join(map(repr, keys))} of a mapping in {container!r:.80} do not sort "
                "against each other, and JAX orders the keys of a mapping nested in "
                "grad_states. Give its keys one type (all strings, say), or pass a flat "
                "mapping of States (whose keys are kept in their order, whatever their type)."
            ) from None
        if not pairs:
            raise none_selected(container)
        states = tuple(state for _, state in pairs)
        check(states)
        paths = tuple(tuple(_key_of(entry) for entry in path) for path, _ in pairs)
        return _Targets("tree", states, paths, treedef)

    def nested(values: Iterable[Any]) -> bool:
        return any(isinstance(v, (Mapping, list, tuple)) for v in values)

    if grad_states is None:
        return _Targets("none", ())
    if isinstance(grad_states, State):
        return _Targets("single", (grad_states,))
    if isinstance(grad_states, Mapping):
        keys = tuple(grad_states)
        states = tuple(grad_states[k] for k in keys)
        if not states:
            raise none_selected(grad_states)
        if nested(states):
            return tree(grad_states)
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
        if nested(grad_states):
            return tree(grad_states)
        check(grad_states)
        return _Targets("list" if isinstance(grad_states, list) else "tuple", tuple(grad_states))
    raise bad(grad_states)


def _unsortable_keys(tree: Any) -> list[Any] | None:
    """The keys of the first mapping in `tree` (walked as JAX does) that do not sort."""
    if isinstance(tree, State):
        return None
    if isinstance(tree, Mapping):
        try:
            sorted(tree)
        except TypeError:
            return list(tree)
        children: Iterable[Any] = tree.values()
    elif isinstance(tree, (list, tuple)):
        children = tree
    else:
        return None
    for child in children:
        keys = _unsortable_keys(child)
        if keys is not None:
            return keys
    return None


def _key_of(entry: Any) -> Any:
    """The plain key of one entry of a JAX key path (a dict key, a list index, ...)."""
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    return entry


# --------------------------------------------------------------------------- the shared core

#: `apply(core, primals, plan) -> result`: run one JAX transform over the core.
Apply = Callable[["Core", tuple[Any, ...], "Plan"], Any]


class Plan:
    """What is differentiated: `with_states` / `argnums`, and how to call the core."""

    __slots__ = ("argnums", "label", "no_units", "spec", "targets", "with_states")

    def __init__(
        self, label: str, targets: _Targets, spec: Any, no_units: str | None = None
    ) -> None:
        self.label = label  # "statejax.grad(loss)", how errors name the call
        self.targets = targets
        self.spec = spec
        # unit_aware=True that cannot carry units: why (a quantity is then refused).
        self.no_units = no_units
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


class Core:
    """The pure core as a function of the differentiated values only.

    `core(*primals) -> (out, (out, aux, new_write_vals))`, where the primals are
    the grad-state values in the user's structure and/or the differentiated
    arguments (one, or a tuple for a tuple `argnums`). `leading` holds the
    call's positional arguments before the user's (jvp's tangents).
    """

    __slots__ = ("args", "kwargs", "leading", "locs", "plan", "pure", "read_vals", "write_vals")

    def __init__(
        self,
        plan: Plan,
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
        if plan.no_units is not None:
            _refuse_quantities(plan, primals, "a differentiated value")
        out, new_write_vals = self.pure(read_vals, write_vals, *self.leading, *args, **self.kwargs)
        if plan.no_units is not None:
            _refuse_quantities(plan, (out,), "the output")
        if getattr(plan.spec, "check_states", True) and plan.with_states:
            self._check_used()
        aux = None
        if plan.spec.has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise _TraceTypeError(
                    f"{plan.label}: has_aux=True but the function returned {kind_of(out)}, not a "
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
                raise SpecError(
                    f"{plan.label}: option grad_states: the "
                    f"{describe_state(state, plan.targets.path(index))} is never read by the "
                    "function, so its derivative is always zero. Remove it from grad_states, "
                    "or pass check_states=False to get zeros."
                )


def unit_autograd() -> Any:
    """brainunit's `autograd` module (the `statejax[units]` extra), or `None` without it."""
    try:
        return importlib.import_module("brainunit.autograd")
    except ImportError:
        return None


def _is_quantity(value: object) -> bool:
    """Whether `value` is a brainunit (saiunit) `Quantity`, known without importing either."""
    return any(
        cls.__name__ == "Quantity" and cls.__module__.partition(".")[0] in ("brainunit", "saiunit")
        for cls in type(value).__mro__
    )


def _refuse_quantities(plan: Plan, values: Sequence[Any], what: str) -> None:
    """A `TraceTypeError` for a quantity in `values` when unit_aware=True cannot carry units."""
    for value in values:
        for leaf in jax.tree.leaves(value, is_leaf=_is_quantity):
            if _is_quantity(leaf):
                raise _TraceTypeError(
                    f"{plan.label}: unit_aware=True and {what} is a brainunit "
                    f"{type(leaf).__name__} (unit {getattr(leaf, 'unit', '?')}), but "
                    f"{plan.no_units}"
                )


def kind_of(out: object) -> str:
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of length {len(out)}"
    if hasattr(out, "shape") and hasattr(out, "dtype"):
        return f"an array of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}"


def _check_float(plan: Plan, values: Sequence[Any]) -> None:
    if getattr(plan.spec, "allow_int", False):
        return
    for index, (state, value) in enumerate(zip(plan.targets.states, values, strict=True)):
        for leaf in jax.tree.leaves(value):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
                raise TraceError(
                    f"{plan.label}: cannot differentiate with respect to the grad state "
                    f"{describe_state(state, plan.targets.path(index))}: its value has dtype "
                    f"{jnp.result_type(leaf)}, not a float. Store a float array in it (for "
                    "example jnp.asarray(x, jnp.float32)), remove it from grad_states, or pass "
                    "allow_int=True (grad and jacrev) for a float0 derivative."
                )


def make_stateful(
    label: str,
    f: Callable[..., Any],
    plan: Plan,
    apply: Apply,
    leading: int = 0,
) -> StatefulFunction[Any]:
    """Wrap `f` in the engine, with `apply` running one JAX transform over the core.

    `leading` positional arguments of the call come before the user's (jvp's
    tangents, fwd_grad's key): the function does not receive them, and
    `argnums` counts after them.
    """
    targets = plan.targets
    argnums = plan.argnums
    needed = 0 if argnums is None else 1 + (argnums if isinstance(argnums, int) else max(argnums))

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
            core = Core(plan, pure, locs, read_vals, write_vals, head, args, kwargs)
            return apply(core, tuple(primals), plan)  # type: ignore[no-any-return]

        return transformed

    return StatefulFunction(
        user_fn if leading else f, label, lift, seed=Split(read_states=targets.states)
    )


class GradientTransform:
    """A function differentiated over states and arguments by a JAX transform.

    `grad`, `vector_grad`, `jacrev`, `jacfwd`, `hessian` and `fwd_grad`
    return one; construct it directly to differentiate with another transform
    shaped like `jax.grad`: `transform(f, argnums=..., has_aux=True,
    **transform_params)` returning `(derivative, aux)`. Calling it returns the
    derivative in the structure described in the module docs, with the value
    and aux appended as asked. Stored on a class, it binds as a method.

    Args:
        target: the function to differentiate; it may read and write states.
        transform: the JAX transform, such as `jax.grad` or `jax.jacrev`.
        grad_states: the states to differentiate with respect to (a State, a
            list, tuple, mapping or nested container of States), or `None`.
        argnums: positional arguments to differentiate; `0` when no states.
        return_value: also return the function's value.
        has_aux: the function returns `(output, aux)`.
        transform_params: more keyword arguments for `transform`.
        check_states: refuse grad states the function never reads.
        debug_nan: raise `NaNError`, changing no state, when a derivative
            holds NaN or Inf.

    Raises:
        SpecError: invalid options (also a `TypeError` for a non-State in
            `grad_states`), at construction.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import GradientTransform
        >>> w = sj.ParamState(jnp.array([1.0, 2.0]))
        >>> g = GradientTransform(lambda: jnp.sum(w.value ** 2), jax.grad, grad_states=w)
        >>> g().tolist()
        [2.0, 4.0]
    """

    _name: str
    _plan: Plan
    _stateful_fn: StatefulFunction[Any]
    _target: Callable[..., Any]
    _fwd: bool
    _key: Any

    def __init__(
        self,
        target: Callable[..., Any],
        transform: Callable[..., Any],
        grad_states: GradStates = None,
        argnums: int | Sequence[int] | None = None,
        return_value: bool = False,
        has_aux: bool = False,
        transform_params: Mapping[str, Any] | None = None,
        check_states: bool = True,
        debug_nan: bool = False,
    ) -> None:
        name = "GradientTransform"
        if not callable(transform):
            raise _SpecTypeError(
                f"statejax.{name}: option transform: {transform!r} is not callable. Pass a JAX "
                "transform shaped like jax.grad, such as jax.grad or jax.jacrev."
            )
        if transform_params is not None and not isinstance(transform_params, Mapping):
            raise _SpecTypeError(
                f"statejax.{name}: option transform_params: {transform_params!r} is not a "
                "mapping. Pass a dict of keyword arguments for the transform, or None."
            )
        spec = parse_spec(
            VectorGradSpec,
            name,
            argnums=argnums,
            return_value=return_value,
            has_aux=has_aux,
            check_states=check_states,
            debug_nan=debug_nan,
        )
        params = dict(transform_params or {})
        self._setup(
            name,
            spec,
            jacobian_apply(functools.partial(transform, **params)),
            target,
            grad_targets(grad_states, name),
        )

    @classmethod
    def _make(
        cls,
        name: str,
        spec: VectorGradSpec,
        apply: Apply,
        target: Callable[..., Any],
        grad_states: GradStates,
        key: Any = None,
        no_units: str | None = None,
    ) -> GradientTransform:
        self = cls.__new__(cls)
        self._setup(name, spec, apply, target, grad_targets(grad_states, name), key, no_units)
        return self

    def _setup(
        self,
        name: str,
        spec: VectorGradSpec,
        apply: Apply,
        target: Callable[..., Any],
        targets: _Targets,
        key: Any = None,
        no_units: str | None = None,
    ) -> None:
        if not callable(target):
            raise _SpecTypeError(f"statejax.{name}: {target!r} is not callable.")
        label = f"statejax.{name}({name_of(target)})"
        self._name = name
        self._target = target
        self._plan = Plan(label, targets, spec, no_units)
        if spec.debug_nan:
            apply = _checking_nan(apply)
        # fwd_grad's key goes ahead of the arguments: the given one, or one drawn per call.
        self._fwd = isinstance(spec, FwdGradSpec)
        self._key = key
        self._stateful_fn = make_stateful(label, target, self._plan, apply, int(self._fwd))
        functools.update_wrapper(self, target, updated=())

    @property
    def stateful(self) -> StatefulFunction[Any]:
        """The engine's `StatefulFunction` behind this transform."""
        return self._stateful_fn

    def clear_cache(self) -> None:
        """Forget every traced split; the next call discovers the states again."""
        self._stateful_fn.clear_cache()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._fwd:
            key = self._key if self._key is not None else _random.split_key()
            return self._stateful_fn(key, *args, **kwargs)
        return self._stateful_fn(*args, **kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return self if instance is None else types.MethodType(self, instance)

    def __repr__(self) -> str:
        plan = self._plan
        spec = plan.spec
        options = ", ".join(
            f"{field}={getattr(spec, field)!r}"
            for field in ("argnums", "return_value", "has_aux", "check_states", "debug_nan")
        )
        states = [
            describe_state(s, plan.targets.path(i)) for i, s in enumerate(plan.targets.states)
        ]
        return (
            f"GradientTransform({self._name}, target={name_of(self._target)}, "
            f"grad_states=[{', '.join(states)}], {options})"
        )


def _extras(plan: Plan, g: Any, value: Any, aux: Any) -> Any:
    """`g`, then the value and the aux when the spec asks for them, in that order."""
    return_value = getattr(plan.spec, "return_value", False)
    if not (return_value or plan.spec.has_aux):
        return g
    out: tuple[Any, ...] = (g,)
    if return_value:
        out += (value,)
    if plan.spec.has_aux:
        out += (aux,)
    return out


def jacobian_apply(jax_transform: Callable[..., Any]) -> Apply:
    """`apply` for transforms shaped like jax.grad: `T(f, argnums, has_aux=True)`."""

    def apply(core: Core, primals: tuple[Any, ...], plan: Plan) -> Any:
        argnums = (0, 1) if plan.n_primals == 2 else 0
        raw, (value, aux, new_write_vals) = jax_transform(core, argnums=argnums, has_aux=True)(
            *primals
        )
        g = plan.select(raw if plan.n_primals == 2 else (raw,))
        return _extras(plan, g, value, aux), new_write_vals

    return apply


def vector_grad_apply(core: Core, primals: tuple[Any, ...], plan: Plan) -> Any:
    out, pullback, (value, aux, new_write_vals) = jax.vjp(core, *primals, has_aux=True)
    g = plan.select(pullback(jax.tree.map(jnp.ones_like, out)))
    return _extras(plan, g, value, aux), new_write_vals


def fwd_grad_apply(core: Core, primals: tuple[Any, ...], plan: Plan) -> Any:
    """Forward-mode estimate: random tangents `v`, then `v * (J v)`, averaged over `v`."""
    spec = plan.spec
    assert isinstance(spec, FwdGradSpec)
    (key,) = core.leading
    leaves, treedef = jax.tree.flatten(primals)
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise _TraceTypeError(
                f"{plan.label}: fwd_grad needs inexact (float or complex) inputs to draw "
                f"tangents for, got dtype {dtype}. Cast the input to a float dtype first."
            )
    batch = () if spec.tangent_size is None else (spec.tangent_size,)
    keys = jax.random.split(key, len(leaves))
    tangents = jax.tree.unflatten(
        treedef,
        [
            jax.random.normal(k, batch + jnp.shape(leaf), jnp.result_type(leaf))
            for k, leaf in zip(keys, leaves, strict=True)
        ],
    )
    # linearize runs the function once; its linear map is then batched over directions.
    out, linear, (value, aux, new_write_vals) = jax.linearize(core, *primals, has_aux=True)
    if jnp.ndim(out) != 0:
        raise _TraceValueError(
            f"{plan.label}: fwd_grad estimates the gradient of a scalar function, but the "
            f"output has shape {jnp.shape(out)}. Return a scalar, or use vector_grad, jacfwd "
            "or jacrev for a non-scalar output."
        )
    clip = spec.drct_der_clip

    def estimate(direction: Any) -> Any:
        derivative = linear(*direction)
        if clip is not None:
            derivative = jnp.clip(derivative, -clip, clip)
        return jax.tree.map(lambda t: t * derivative, direction)

    g = estimate(tangents) if not batch else jax.vmap(estimate)(tangents)
    if batch:
        g = jax.tree.map(lambda x: jnp.mean(x, axis=0), g)
    return _extras(plan, plan.select(g), value, aux), new_write_vals


def _checking_nan(apply: Apply) -> Apply:
    """`apply`, then a `NaNError` naming each derivative entry that holds NaN or Inf."""

    def checked(core: Core, primals: tuple[Any, ...], plan: Plan) -> Any:
        result, new_write_vals = apply(core, primals, plan)
        g = _extras_g(plan, result)
        entries = _named_entries(plan, g)
        flags = [_has_nan_or_inf(value) for _, value in entries]
        names = [name for name, _ in entries]

        def error(bad: Any) -> NaNError:
            which = [
                name for name, flag in zip(names, np.asarray(bad).tolist(), strict=True) if flag
            ]
            return NaNError(
                f"{plan.label}: NaN/Inf in the derivative with respect to {', '.join(which)} "
                "(debug_nan=True). No state was changed. Find where it starts with "
                "statejax.transform.debug_nan(fn, *args)."
            )

        if flags:
            raise_when(jnp.stack(flags), error)
        return result, new_write_vals

    return checked


def _extras_g(plan: Plan, result: Any) -> Any:
    """The derivative `g` out of `_extras`' result."""
    extra = getattr(plan.spec, "return_value", False) or plan.spec.has_aux
    return result[0] if extra else result


def _named_entries(plan: Plan, g: Any) -> list[tuple[str, Any]]:
    """The parts of `g` with a name each: grad states by path, arguments by position."""
    targets = plan.targets
    parts: list[tuple[str, Any]] = []
    state_part: Any = None
    arg_part: Any = g
    if plan.n_primals == 2:
        state_part, arg_part = g
    elif plan.with_states:
        state_part, arg_part = g, None
    if plan.with_states:
        values = targets.unpack(_as_user_structure(targets, state_part), plan.label)
        for index, (state, value) in enumerate(zip(targets.states, values, strict=True)):
            parts.append((describe_state(state, targets.path(index)), value))
    argnums = plan.argnums
    if isinstance(argnums, int):
        parts.append((f"argument {argnums}", arg_part))
    elif argnums is not None:
        for position, value in zip(argnums, arg_part, strict=True):
            parts.append((f"argument {position}", value))
    return parts


def _as_user_structure(targets: _Targets, packed: Any) -> Any:
    return _Dict(packed) if targets.kind == "dict" else packed


def _has_nan_or_inf(tree: Any) -> jax.Array:
    flags = [
        jnp.any(~jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.any(jnp.stack(flags)) if flags else jnp.array(False)

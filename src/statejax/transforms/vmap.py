"""``vmap`` and ``map``: vectorise a function that reads and writes states.

The pure core is handed to :func:`jax.vmap`. States selected by ``in_states``
are mapped on their axis (their value carries the batch dimension) and written
back batched; states selected by ``out_states`` are written back batched on
their axis; every other state is broadcast: one shared copy, which the lanes may
read, and may overwrite only with an unbatched value. A state type can take over
its own batching through the ``statejax_batch_state`` hook (that is how every
lane gets its own :class:`~statejax.random.RandomState` key). States the
function *creates* come out stacked on a leading axis, which is how an ensemble
is initialised.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar, overload

import jax
import jax.numpy as jnp
import pydantic

from statejax._errors import BatchAxisError, SpecError
from statejax._state import State
from statejax.extend import (
    PureCore,
    Split,
    StateBatching,
    StatefulFunction,
    Transform,
    TransformSpec,
    adopt_created,
    batch_rule,
    describe_state,
    hookimpl,
    parse_spec,
)
from statejax.filters import Filter, Path, to_filter
from statejax.graph import Module, iter_states

__all__ = ["MapSpec", "StateSelector", "VmapSpec", "map", "vmap"]

P = ParamSpec("P")
R = TypeVar("R")


# --- the selector language of in_states / out_states -------------------------------------


@dataclass(frozen=True)
class StateSelector:
    """One normalised selector of ``in_states``/``out_states``.

    ``states`` are explicit states (``paths`` holds the path of each, when the
    user gave a mapping such as ``model.states(...)``, else ``None``);
    ``filter`` selects further states among those the function touches.
    """

    states: tuple[State[Any], ...] = ()
    paths: tuple[Path | None, ...] = ()
    filter: Filter[Any] | None = None

    def matches(self, state: State[Any], path: Path) -> bool:
        """Whether this selector selects ``state`` (found at ``path``)."""
        if any(s is state for s in self.states):
            return True
        return self.filter is not None and self.filter(path, state)

    def path_of(self, state: State[Any]) -> Path | None:
        for s, p in zip(self.states, self.paths, strict=True):
            if s is state:
                return p
        return None

    def __repr__(self) -> str:
        parts = [
            describe_state(s, p) if p is not None else describe_state(s)
            for s, p in zip(self.states, self.paths, strict=True)
        ]
        if self.filter is not None:
            parts.append(repr(self.filter))
        return " | ".join(parts) if parts else "<nothing>"


StateAxes = tuple[tuple[int, StateSelector], ...]

_STATE_AXES_SCHEMA = pydantic.WithJsonSchema(
    {
        "description": "a selector (a filter, a State type, a State, an iterable or mapping of "
        "States) meaning axis 0, or {axis: selector} with integer axes",
        "anyOf": [
            {"type": "object", "additionalProperties": {"description": "selector"}},
            {"type": "array"},
            {"type": "string", "description": "a State type or filter, e.g. ParamState"},
            {"type": "null"},
        ],
    }
)


def _is_axis_key(key: object) -> bool:
    return isinstance(key, int) and not isinstance(key, bool)


def _is_filter_like(item: object) -> bool:
    if isinstance(item, Filter) or item is ... or item is True:
        return True
    if isinstance(item, type):
        return issubclass(item, State)
    return callable(item) and not isinstance(item, (State, Module))


def _selector(value: object, where: str) -> StateSelector:
    states: list[State[Any]] = []
    paths: list[Path | None] = []
    filters: list[Filter[Any]] = []

    def add(item: object, top: bool) -> None:
        if isinstance(item, State):
            states.append(item)
            paths.append(None)
        elif isinstance(item, Mapping):
            for key, state in item.items():
                if not isinstance(state, State):
                    raise ValueError(
                        f"{where}: the mapping maps {key!r} to {type(state).__name__} "
                        f"{state!r}, which is not a State. Pass a mapping of States (such as "
                        "model.states(sj.ParamState)), or {axis: selector} with integer keys"
                    )
                states.append(state)
                paths.append(key if isinstance(key, tuple) else (key,))
        elif _is_filter_like(item):
            filters.append(to_filter(item))  # type: ignore[call-overload]
        elif top and isinstance(item, (list, tuple, set, frozenset)):
            for element in item:
                add(element, False)
        else:
            raise ValueError(
                f"{where}: {item!r} ({type(item).__name__}) is neither a State, a filter "
                "(a State type, a predicate, ..., statejax.filters.*), nor an iterable or "
                "mapping of States. Select states with one of those, or {axis: selector}"
            )

    add(value, True)
    if not states and not filters:
        raise ValueError(f"{where}: {value!r} selects nothing; remove it or select some states")
    filt: Filter[Any] | None = None
    if len(filters) == 1:
        filt = filters[0]
    elif filters:
        filt = to_filter(tuple(filters))
    return StateSelector(tuple(states), tuple(paths), filt)


def _parse_state_axes(value: object, field: str) -> StateAxes:
    if value is None or value is False or (isinstance(value, tuple) and not value):
        return ()
    if isinstance(value, Mapping) and value:
        keys = list(value)
        if all(_is_axis_key(k) for k in keys):
            pairs = [(k, _selector(v, f"{field}[{k}]")) for k, v in value.items()]
        else:
            numeric = [
                k for k in keys if isinstance(k, (int, float, complex)) and not (_is_axis_key(k))
            ]
            bad = numeric[0] if numeric else next(k for k in keys if not _is_axis_key(k))
            values_are_states = all(isinstance(v, State) for v in value.values())
            if numeric or (not values_are_states and any(_is_axis_key(k) for k in keys)):
                raise ValueError(
                    f"axis key {bad!r} ({type(bad).__name__}) is not an integer. In "
                    f"{{axis: selector}} every key is an int axis, e.g. {{1: states}}; "
                    "negative axes count from the end"
                )
            if not values_are_states:
                raise ValueError(
                    f"key {bad!r} ({type(bad).__name__}) is not an integer axis, and the mapping "
                    "is not a mapping of States either. Use {axis: selector} with int keys, "
                    "e.g. {0: model.states(sj.ParamState)}, or a path -> State mapping"
                )
            pairs = [(0, _selector(value, field))]
    else:
        pairs = [(0, _selector(value, field))]
    seen: dict[int, tuple[int, Path | None]] = {}
    for axis, sel in pairs:
        for state, path in zip(sel.states, sel.paths, strict=True):
            prev = seen.get(id(state))
            if prev is not None and prev[0] != axis:
                name = describe_state(state, path if path is not None else prev[1])
                raise ValueError(
                    f"{name} is selected under axes {prev[0]} and {axis}; a state is mapped "
                    "on one axis only: remove it from one of the selectors"
                )
            seen[id(state)] = (axis, path)
    return tuple(pairs)


def _check_axes(value: object) -> object:
    if isinstance(value, list):
        value = tuple(value)
    for leaf in jax.tree.leaves(value, is_leaf=lambda x: x is None):
        if leaf is not None and not _is_axis_key(leaf):
            raise ValueError(
                f"{leaf!r} ({type(leaf).__name__}) is not an axis; use an int, None, or a "
                "tuple (one entry per positional argument) or pytree of them"
            )
    return value


class VmapSpec(TransformSpec):
    """Options of :func:`vmap`."""

    in_axes: Any = pydantic.Field(
        default=0,
        description="axis of each positional argument to map over (int, None, or a tuple of "
        "them, one per argument); keyword arguments follow an int/None in_axes, else axis 0",
    )
    out_axes: Any = pydantic.Field(default=0, description="where the batch axis goes in the result")
    in_states: Annotated[StateAxes, _STATE_AXES_SCHEMA] = pydantic.Field(
        default=(),
        description="states mapped on an axis and written back batched: a selector (a filter, "
        "a State, an iterable or mapping of States) for axis 0, or {axis: selector}",
    )
    out_states: Annotated[StateAxes, _STATE_AXES_SCHEMA] = pydantic.Field(
        default=(),
        description="states written back batched (same forms as in_states); their input is "
        "broadcast unless in_states maps them too",
    )
    axis_size: pydantic.NonNegativeInt | None = pydantic.Field(
        default=None,
        description="the batch size, needed when nothing is mapped; a non-negative int or None",
    )
    axis_name: Hashable | None = pydantic.Field(
        default=None, description="name of the batch axis, for collectives such as lax.psum"
    )
    split_keys: bool = pydantic.Field(
        default=True,
        description="give each lane its own key from every RandomState the function touches "
        "(False: broadcast the key, so every lane draws the same numbers)",
    )

    _axes = pydantic.field_validator("in_axes", "out_axes", mode="before")(
        lambda cls, v: _check_axes(v)
    )

    @pydantic.field_validator("in_states", "out_states", mode="before")
    @classmethod
    def _states(cls, value: object, info: pydantic.ValidationInfo) -> StateAxes:
        return _parse_state_axes(value, str(info.field_name))


class MapSpec(TransformSpec):
    """Options of :func:`map`."""

    batch_size: pydantic.PositiveInt | None = pydantic.Field(
        default=None,
        description="run this many elements at a time under vmap (None: one at a time)",
    )


# --- vmap ---------------------------------------------------------------------------------


@overload
def vmap(
    fn: Callable[P, R],
    /,
    in_axes: Any = 0,
    out_axes: Any = 0,
    in_states: Any = None,
    out_states: Any = None,
    axis_size: int | None = None,
    axis_name: Hashable | None = None,
    *,
    split_keys: bool = True,
) -> Callable[P, R]: ...
@overload
def vmap(
    fn: None = None,
    /,
    in_axes: Any = 0,
    out_axes: Any = 0,
    in_states: Any = None,
    out_states: Any = None,
    axis_size: int | None = None,
    axis_name: Hashable | None = None,
    *,
    split_keys: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def vmap(
    fn: Callable[P, R] | None = None,
    /,
    in_axes: Any = 0,
    out_axes: Any = 0,
    in_states: Any = None,
    out_states: Any = None,
    axis_size: int | None = None,
    axis_name: Hashable | None = None,
    *,
    split_keys: bool = True,
    **options: Any,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Vectorise ``fn`` with :func:`jax.vmap`, threading the states it reads and writes.

    Arguments (and keyword arguments) are mapped as ``in_axes`` says. States
    selected by ``in_states`` (a filter, a State, an iterable or mapping of
    States, meaning axis 0, or ``{axis: selector}``) are mapped on their axis
    and written back batched; ``out_states`` are written back batched. Every
    other state is broadcast: writing a batched value into it raises
    :class:`statejax.BatchAxisError`. Each lane draws from its own random key
    unless ``split_keys=False``. States created by ``fn`` come out stacked on a
    leading axis (initialise an ensemble this way). Use it as ``@vmap``,
    ``@vmap(in_states=...)`` or ``vmap(fn, ...)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.vmap import vmap
        >>> w = sj.ParamState(jnp.array([1.0, 2.0, 3.0]))     # one weight per lane
        >>> total = sj.State(jnp.array(0.0))                  # shared, broadcast
        >>> @vmap(in_states={0: w})
        ... def scale(x):
        ...     w.value = w.value + 1.0                       # written back batched
        ...     return w.value * x + total.value
        >>> scale(jnp.array([1.0, 1.0, 2.0])).tolist(), w.value.tolist()
        ([2.0, 3.0, 8.0], [2.0, 3.0, 4.0])
    """
    spec = parse_spec(
        VmapSpec,
        "vmap",
        in_axes=in_axes,
        out_axes=out_axes,
        in_states=in_states,
        out_states=out_states,
        axis_size=axis_size,
        axis_name=axis_name,
        split_keys=split_keys,
        **options,
    )
    if fn is None:
        return functools.partial(_vmap, spec=spec)
    return _vmap(fn, spec=spec)


def _vmap(fn: Callable[P, R], spec: VmapSpec) -> Callable[P, R]:
    name = f"statejax.vmap({getattr(fn, '__qualname__', repr(fn))})"

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        return _Batched(split, pure, spec, name)

    stateful: StatefulFunction[R] = StatefulFunction(fn, name, lift)
    call = stateful.__call__

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return call(*args, **kwargs)

    wrapper.clear_cache = stateful.clear_cache  # type: ignore[attr-defined]
    wrapper.stateful = stateful  # type: ignore[attr-defined]
    return wrapper


@dataclass
class _Plan:
    vmapped: Callable[..., Any]
    rules: list[tuple[bool, int, StateBatching]]
    read_axes: list[int | None]
    write_axes: list[int | None]
    write_out: list[int | None]
    in_axes: tuple[Any, ...]
    inner: Callable[..., Any]
    paths: dict[int, Path]


_OUT_AXIS_ERROR = re.compile(r"at vmap out_axes\[0\]\[(\d+)\]")


class _Batched:
    """The lifted pure core of one split: ``(read_vals, write_vals, *args) -> (out, writes)``."""

    def __init__(self, split: Split, pure: PureCore, spec: VmapSpec, name: str) -> None:
        self.split = split
        self.pure = pure
        self.spec = spec
        self.name = name
        self.plan: _Plan | None = None
        self.checked = False
        self.known_paths: dict[int, Path] = {}

    # The plan is made on the first call, when the arguments (whose modules give the
    # paths filters see) and the state values (which normalise negative axes) are known.
    def _make_plan(
        self, rv: Sequence[Any], wv: Sequence[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Plan:
        split, spec = self.split, self.spec
        paths = self._paths(args, kwargs)
        values = {id(s): v for s, v in zip(split.states, [*rv, *wv], strict=True)}
        in_ax = self._assign(spec.in_states, "in_states", paths, values)
        out_ax = self._assign(spec.out_states, "out_states", paths, values)
        rules: list[tuple[bool, int, StateBatching]] = []
        read_axes: list[int | None] = []
        for i, s in enumerate(split.read_states):
            if id(s) in in_ax or id(s) in out_ax:
                read_axes.append(in_ax.get(id(s)))
                continue
            rule = batch_rule(s, spec)
            if rule is not None:
                rules.append((False, i, rule))
            read_axes.append(rule.in_axis if rule is not None else None)
        write_in: list[int | None] = []
        write_out: list[int | None] = []
        for i, s in enumerate(split.write_states):
            if id(s) in in_ax or id(s) in out_ax:
                write_in.append(in_ax.get(id(s)))
                write_out.append(out_ax.get(id(s), in_ax.get(id(s))))
                continue
            rule = batch_rule(s, spec)
            if rule is not None:
                rules.append((True, i, rule))
            write_in.append(rule.in_axis if rule is not None else None)
            write_out.append(rule.out_axis if rule is not None else None)

        if isinstance(spec.in_axes, tuple):
            if len(spec.in_axes) != len(args):
                raise ValueError(
                    f"{self.name}: in_axes {spec.in_axes!r} has {len(spec.in_axes)} entries but "
                    f"the function got {len(args)} positional arguments; give one per argument."
                )
            args_axes: Any = spec.in_axes
            kwargs_axes: Any = 0
        else:
            args_axes = kwargs_axes = spec.in_axes
        pure = self.pure

        def inner(
            rv: list[Any], wv: list[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[list[Any], list[Any], Any]:
            # The written values come first, so a batched-into-broadcast error's path
            # (out_axes[0][i]) names the state, whatever the result's structure.
            out, new_w = pure(rv, wv, *args, **kwargs)
            return new_w, pure.created_values, out

        in_axes = (read_axes, write_in, args_axes, kwargs_axes)
        vmapped = jax.vmap(
            inner,
            in_axes=in_axes,
            out_axes=(write_out, 0, spec.out_axes),
            axis_size=spec.axis_size,
            axis_name=spec.axis_name,
        )
        return _Plan(
            vmapped=vmapped,
            rules=rules,
            read_axes=read_axes,
            write_axes=write_in,
            write_out=write_out,
            in_axes=in_axes,
            inner=inner,
            paths=paths,
        )

    def _paths(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[int, Path]:
        """The path of each state: in a mapping the user gave, in a module argument, or
        (for filters only) the attribute name it was stored under."""
        paths: dict[int, Path] = {}
        for arg in [*args, *kwargs.values()]:
            if isinstance(arg, (Module, State)):
                for p, s in iter_states(arg):
                    paths[id(s)] = p
        for _, sel in (*self.spec.in_states, *self.spec.out_states):
            for s, path in zip(sel.states, sel.paths, strict=True):
                if path is not None:
                    paths[id(s)] = path
        self.known_paths = dict(paths)
        for s in self.split.states:
            if s._name and id(s) not in paths:
                paths[id(s)] = tuple(s._name.split(".")[1:])
        return paths

    def _assign(
        self, axes: StateAxes, field: str, paths: dict[int, Path], values: dict[int, Any]
    ) -> dict[int, int]:
        found: dict[int, tuple[int, int]] = {}
        for axis, sel in axes:
            for s in self.split.states:
                if not sel.matches(s, paths.get(id(s), ())):
                    continue
                norm = _normalise(axis, values[id(s)])
                prev = found.get(id(s))
                if prev is not None and prev[0] != norm:
                    raise SpecError(
                        f"{self.name}: {self._describe(s, paths)} is selected by {field} under "
                        f"axes {prev[1]} and {axis}; a state is mapped on one axis only: narrow "
                        "one of the selectors."
                    )
                found[id(s)] = (norm, axis)
        return {k: v[0] for k, v in found.items()}

    def _describe(self, state: State[Any], paths: dict[int, Path]) -> str:
        path = self.known_paths.get(id(state))
        if path is None:
            for _, sel in (*self.spec.in_states, *self.spec.out_states):
                path = sel.path_of(state)
                if path is not None:
                    break
        return describe_state(state, path) if path is not None else describe_state(state)

    def __call__(
        self, rv: Sequence[Any], wv: Sequence[Any], /, *args: Any, **kwargs: Any
    ) -> tuple[Any, list[Any]]:
        plan = self.plan
        if plan is None:
            plan = self.plan = self._make_plan(rv, wv, args, kwargs)
        carries: list[Any] = []
        if plan.rules:
            size = self._batch_size(plan, rv, wv, args, kwargs)
            rv, wv = list(rv), list(wv)
            for written, i, rule in plan.rules:
                vals = wv if written else rv
                vals[i], carry = rule.prepare(vals[i], size)
                carries.append(carry)
        try:
            new_w, created, out = plan.vmapped(list(rv), list(wv), args, kwargs)
        except ValueError as exc:
            self._diagnose(exc, plan, rv, wv, args, kwargs)
            raise
        for (written, i, rule), carry in zip(plan.rules, carries, strict=True):
            if written:
                new_w[i] = rule.finish(new_w[i], carry)
        if created:
            record = self.pure.record
            assert record is not None
            for state, value in zip(record.created, created, strict=True):
                adopt_created(state, value)
        if not self.checked:
            self._check_selectors(plan)
            self.checked = True
        return out, new_w

    def _check_selectors(self, plan: _Plan) -> None:
        touched = self.split.states
        for field, axes in (
            ("in_states", self.spec.in_states),
            ("out_states", self.spec.out_states),
        ):
            for axis, sel in axes:
                if any(sel.matches(s, plan.paths.get(id(s), ())) for s in touched):
                    continue
                names = ", ".join(self._describe(s, plan.paths) for s in touched) or "none"
                raise SpecError(
                    f"{self.name}: {field}[{axis}] = {sel!r} matches none of the states the "
                    f"function touches (it touches: {names}). Fix the selector so it names a "
                    "state the function reads or writes, or remove it."
                )

    def _batch_size(
        self,
        plan: _Plan,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> int:
        found = self._arg_size(args, kwargs)
        if found is not None:
            return found[0]
        for _state, v, axis in self._mapped_states(plan, rv, wv):
            for leaf in jax.tree.leaves(v):
                if axis < jnp.ndim(leaf):
                    return int(jnp.shape(leaf)[axis])
        raise ValueError(
            f"{self.name}: cannot tell the batch size (no argument or state is mapped); "
            "pass axis_size=..."
        )

    def _arg_size(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, str] | None:
        spec = self.spec
        if spec.axis_size is not None:
            return spec.axis_size, "axis_size"
        sizes: list[int] = []

        def visit(axis: int | None, sub: Any) -> None:
            if axis is None:
                return
            for leaf in jax.tree.leaves(sub):
                shape = jnp.shape(leaf)
                if -len(shape) <= axis < len(shape):
                    sizes.append(int(shape[axis]))

        kw_axes = 0 if isinstance(spec.in_axes, tuple) else spec.in_axes
        try:
            jax.tree.map(visit, spec.in_axes, args, is_leaf=lambda x: x is None)
            jax.tree.map(visit, kw_axes, kwargs, is_leaf=lambda x: x is None)
        except (ValueError, TypeError):
            pass
        return (sizes[0], "the mapped arguments") if sizes else None

    def _mapped_states(
        self, plan: _Plan, rv: Sequence[Any], wv: Sequence[Any]
    ) -> list[tuple[State[Any], Any, int]]:
        ruled = {(w, i) for w, i, _ in plan.rules}
        out = []
        for written, states, axes, vals in (
            (False, self.split.read_states, plan.read_axes, rv),
            (True, self.split.write_states, plan.write_axes, wv),
        ):
            for i, (s, axis, v) in enumerate(zip(states, axes, vals, strict=True)):
                if axis is not None and (written, i) not in ruled:
                    out.append((s, v, axis))
        return out

    def _find_batched_write(
        self,
        plan: _Plan,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> int | None:
        """Which broadcast state got a batched value: trace each one alone (error path only)."""
        for i, axis in enumerate(plan.write_out):
            if axis is not None:
                continue

            def probe(*a: Any, i: int = i) -> Any:
                return plan.inner(*a)[0][i]

            probed = jax.vmap(
                probe,
                in_axes=plan.in_axes,
                out_axes=None,
                axis_size=self.spec.axis_size,
                axis_name=self.spec.axis_name,
            )
            try:
                jax.eval_shape(probed, list(rv), list(wv), args, kwargs)
            except ValueError:
                return i
        return None

    def _diagnose(
        self,
        exc: ValueError,
        plan: _Plan,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        msg = str(exc)
        if "but output was batched" in msg:
            match = _OUT_AXIS_ERROR.match(msg)
            index = int(match.group(1)) if match else None
            if index is None or index >= len(plan.write_out) or plan.write_out[index] is not None:
                index = self._find_batched_write(plan, rv, wv, args, kwargs)
            if index is None:
                return
            state = self.split.write_states[index]
            raise BatchAxisError(
                f"{self.name}: the function wrote a value batched over the vmap axis into "
                f"{self._describe(state, plan.paths)}, which is broadcast (not in in_states or "
                "out_states). Select it with in_states/out_states (e.g. out_states={0: state}) "
                "to keep one value per lane, or write an unbatched value."
            ) from None
        if "inconsistent sizes" not in msg and "requested to map its argument" not in msg:
            return
        expected = self._arg_size(args, kwargs)
        for s, v, axis in self._mapped_states(plan, rv, wv):
            for leaf in jax.tree.leaves(v):
                shape = tuple(jnp.shape(leaf))
                name = self._describe(s, plan.paths)
                if not -len(shape) <= axis < len(shape):
                    raise BatchAxisError(
                        f"{self.name}: {name} is mapped on axis {axis}, but its value has only "
                        f"{len(shape)} axes (shape {shape}). Map it on an existing axis "
                        "({axis: state} in in_states) or give its value a batch axis."
                    ) from None
                size = int(shape[axis])
                if expected is None:
                    expected = (size, f"axis {axis} of {name}")
                    continue
                if size != expected[0]:
                    raise BatchAxisError(
                        f"{self.name}: {name} is mapped on axis {axis}, which has size {size}, "
                        f"but the batch size is {expected[0]} (from {expected[1]}). Give the "
                        f"state's value size {expected[0]} on axis {axis}, or map it on "
                        "another axis ({axis: state} in in_states)."
                    ) from None


def _normalise(axis: int, value: Any) -> int:
    """A negative axis counted from the end of the value's rank (when all leaves agree)."""
    if axis >= 0:
        return axis
    ranks = {jnp.ndim(leaf) for leaf in jax.tree.leaves(value)}
    if len(ranks) == 1:
        rank = ranks.pop()
        if axis + rank >= 0:
            return axis + rank
    return axis


# --- map ----------------------------------------------------------------------------------


def map(f: Callable[..., R], *xs: Any, batch_size: int | None = None) -> R:
    """Apply ``f`` to each slice of ``xs`` along axis 0 and stack the results.

    Like :func:`jax.lax.map` but state-aware: by default one element at a time
    (a ``lax.scan``, so states ``f`` writes are carried from one element to the
    next, and each element draws fresh random numbers); with ``batch_size``,
    ``batch_size`` elements at a time under :func:`vmap` (states are then
    broadcast within a batch).

    Example:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.vmap import map
        >>> seen = sj.State(jnp.array(0))
        >>> def f(x):
        ...     seen.value += 1
        ...     return x * 2
        >>> map(f, jnp.arange(5.0)).tolist(), int(seen.value)
        ([0.0, 2.0, 4.0, 6.0, 8.0], 5)
        >>> map(lambda x: x + 1, jnp.arange(5.0), batch_size=2).tolist()
        [1.0, 2.0, 3.0, 4.0, 5.0]
    """
    spec = parse_spec(MapSpec, "map", batch_size=batch_size)
    if not xs:
        raise TypeError("statejax.map: give at least one array to map over")
    name = f"statejax.map({getattr(f, '__qualname__', repr(f))})"
    if spec.batch_size is None:
        return _scan_map(f, xs, name)
    bs = spec.batch_size
    n = int(jnp.shape(jax.tree.leaves(xs)[0])[0])
    full, rem = divmod(n, bs)
    batched = vmap(f)
    outs: list[Any] = []
    if full:
        main = jax.tree.map(lambda a: a[: full * bs].reshape(full, bs, *a.shape[1:]), xs)
        out = _scan_map(batched, main, name)
        outs.append(jax.tree.map(lambda a: a.reshape(full * bs, *a.shape[2:]), out))
    if rem:
        outs.append(batched(*jax.tree.map(lambda a: a[full * bs :], xs)))
    if len(outs) == 1:
        only: R = outs[0]
        return only
    result: R = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outs[0], outs[1])
    return result


def _scan_map(f: Callable[..., R], xs: tuple[Any, ...], name: str) -> R:
    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        def transformed(rv: list[Any], wv: list[Any], *xs: Any) -> tuple[Any, list[Any]]:
            def body(carry: list[Any], x: tuple[Any, ...]) -> tuple[list[Any], Any]:
                out, new_w = pure(rv, carry, *x)
                return new_w, out

            init = jax.tree.map(jnp.asarray, list(wv))
            new_w, outs = jax.lax.scan(body, init, xs)
            return outs, new_w

        return transformed

    stateful: StatefulFunction[R] = StatefulFunction(f, name, lift)
    return stateful(*xs)


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "vmap",
            vmap,
            VmapSpec,
            "vectorise with jax.vmap; states mapped on chosen axes or broadcast",
        )
    )
    registry.register(
        Transform(
            "map",
            map,
            MapSpec,
            "map over axis 0 one element (lax.scan) or one batch (vmap) at a time",
        )
    )

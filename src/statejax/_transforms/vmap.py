"""`vmap` and `map`: vectorise a function that reads and writes states.

The pure core is handed to `jax.vmap`. States selected by `in_states`
are mapped on their axis (their value carries the batch dimension) and written
back batched; states selected by `out_states` are written back batched on
their axis; every other state is broadcast: one shared copy, which the lanes may
read, and may overwrite only with an unbatched value. A state type can take over
its own batching through the `statejax_batch_state` hook (that is how every
lane gets its own `statejax.random.RandomState` key). States the
function *creates* come out stacked on a leading axis, which is how an ensemble
is initialised.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, ParamSpec, TypeAlias, TypeVar, cast, overload

import jax
import jax.numpy as jnp
import pydantic

from statejax._transforms._common import (
    AxisName,
    Count,
    PositiveCount,
    SpecTypeError,
    jit_disabled,
    name_of,
    run_eagerly,
)
from statejax._transforms.loops import ForLoopSpec, _scan
from statejax.extend import (
    BatchAxisError,
    PureCore,
    SpecError,
    Split,
    State,
    StateBatching,
    StatefulFunction,
    Transform,
    TransformSpec,
    adopt_created,
    batch_rule,
    current_trace,
    describe_state,
    hookimpl,
    parse_spec,
)
from statejax.filters import Filter, FilterLike, Path, to_filter
from statejax.graph import Module, StateMapping, iter_states

__all__ = [
    "MapSpec",
    "SelectorItem",
    "SelectorLike",
    "StateAxesLike",
    "StateSelector",
    "VmapNewStatesSpec",
    "VmapSpec",
    "map",
    "vmap",
    "vmap_new_states",
]

P = ParamSpec("P")
R = TypeVar("R")


# --- the selector language of in_states / out_states -------------------------------------


@dataclass(frozen=True)
class StateSelector:
    """One normalised selector of `in_states`/`out_states`.

    `states` are explicit states (`paths` holds the path of each, when the
    user gave a mapping such as `model.states(...)`, else `None`);
    `filter` selects further states among those the function touches.
    """

    states: tuple[State[Any], ...] = ()
    paths: tuple[Path | None, ...] = ()
    filter: Filter[Any] | None = None

    def matches(self, state: State[Any], path: Path) -> bool:
        """Whether this selector selects `state` (found at `path`)."""
        if any(s is state for s in self.states):
            return True
        return self.filter is not None and self.filter(path, state)

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


# Iterable, but never an iterable of selectors.
_NOT_SELECTORS = (str, bytes, Module, jax.Array)


def _is_filter_like(item: object) -> bool:
    if isinstance(item, Filter) or item is ... or item is True:
        return True
    if isinstance(item, type):
        return issubclass(item, State)
    return callable(item) and not isinstance(item, (State, Module))


def _selector(value: object, where: str = "") -> StateSelector:
    """Normalise one selector; `where` locates it in error messages (`in_states[1]: `)."""
    states: list[State[Any]] = []
    paths: list[Path | None] = []
    filters: list[Filter[Any]] = []

    def add(item: object, top: bool) -> None:
        if isinstance(item, StateSelector):  # already normalised (StatefulMapping, vmap2)
            states.extend(item.states)
            paths.extend(item.paths)
            if item.filter is not None:
                filters.append(item.filter)
        elif isinstance(item, State):
            states.append(item)
            paths.append(None)
        elif isinstance(item, Mapping):
            if item and all(_is_axis_key(k) for k in item):
                raise ValueError(
                    f"{where}{item!r} is an {{axis: selector}} mapping nested inside a selector; "
                    "give every axis at the top level instead, e.g. {0: params, 1: [state]}"
                )
            for key, state in item.items():
                if not isinstance(state, State):
                    raise ValueError(
                        f"{where}the mapping maps {key!r} to {type(state).__name__} "
                        f"{state!r}, which is not a State. Pass a mapping of States (such as "
                        "model.states(sj.ParamState)), or {axis: selector} with integer keys"
                    )
                states.append(state)
                paths.append(key if isinstance(key, tuple) else (key,))
        elif _is_filter_like(item):
            filters.append(to_filter(item))  # type: ignore[call-overload]
        elif top and isinstance(item, Iterable) and not isinstance(item, _NOT_SELECTORS):
            for element in item:
                add(element, False)
        else:
            hint = (
                " (for all of a module's states, pass module.states())"
                if isinstance(item, Module)
                else ""
            )
            raise ValueError(
                f"{where}{item!r} ({type(item).__name__}) is neither a State, a filter "
                "(a State type, a predicate, ..., statejax.filters.*), nor an iterable or "
                f"mapping of States{hint}. Select states with one of those, or {{axis: selector}}"
            )

    add(value, True)
    if not states and not filters:
        raise ValueError(f"{where}{value!r} selects nothing; remove it or select some states")
    filt: Filter[Any] | None = None
    if len(filters) == 1:
        filt = filters[0]
    elif filters:
        filt = to_filter(tuple(filters))
    return StateSelector(tuple(states), tuple(paths), filt)


def _parse_state_axes(value: object, field: str) -> StateAxes:
    if value is None or value is False or (isinstance(value, tuple) and not value):
        return ()
    if isinstance(value, Mapping) and value and all(_is_axis_key(k) for k in value):
        pairs = [(k, _selector(v, f"{field}[{k}]: ")) for k, v in value.items()]
    else:
        # Otherwise a mapping is a selector (path -> State, as model.states() gives): any
        # number among its keys means a mistyped {axis: selector}.
        if isinstance(value, Mapping) and any(isinstance(k, (int, float, complex)) for k in value):
            bad = next(k for k in value if not _is_axis_key(k))
            raise ValueError(
                f"key {bad!r} ({type(bad).__name__}) is not an integer axis. Give "
                "{axis: selector} with int keys only (negative axes count from the end), e.g. "
                "{0: model.states(sj.ParamState), 1: state}"
            )
        pairs = [(0, _selector(value))]
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


class LaneSpec(TransformSpec):
    """The options of a state-aware map over lanes: `vmap`'s and `pmap`'s in common."""

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
    axis_size: Count | None = pydantic.Field(
        default=None,
        description="the batch size, needed when nothing is mapped; a non-negative int or None",
    )
    axis_name: AxisName | None = pydantic.Field(
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


class VmapSpec(LaneSpec):
    """Options of `vmap`."""

    spmd_axis_name: AxisName | None = pydantic.Field(
        default=None,
        description="mesh axis name(s) the batch axis is sharded over inside sharded code "
        "(jax.vmap's spmd_axis_name): a name or a tuple of names",
    )


class MapSpec(TransformSpec):
    """Options of `map`."""

    batch_size: PositiveCount | None = pydantic.Field(
        default=None,
        description="run this many elements at a time under vmap (None: one at a time)",
    )


class VmapNewStatesSpec(TransformSpec):
    """Options of `vmap_new_states`."""

    in_axes: Any = VmapSpec.model_fields["in_axes"]
    out_axes: Any = VmapSpec.model_fields["out_axes"]
    axis_name: AxisName | None = VmapSpec.model_fields["axis_name"]
    spmd_axis_name: AxisName | None = VmapSpec.model_fields["spmd_axis_name"]
    axis_size: PositiveCount | None = pydantic.Field(
        default=None, description="the batch size, when no argument is mapped; a positive int"
    )
    state_tag: str | None = pydantic.Field(
        default=None, description="tag given to the new states that have no tag of their own"
    )

    _axes = pydantic.field_validator("in_axes", "out_axes", mode="before")(
        lambda cls, v: _check_axes(v)
    )


# --- vmap ---------------------------------------------------------------------------------

#: One item of a selector: a State, the states of a module (`model.states(ParamState)`), or a
#: filter (a State type, a predicate, `...`, a `statejax.filters` filter).
SelectorItem: TypeAlias = "State[Any] | StateMapping[Any] | FilterLike"
#: One selector of `in_states`/`out_states`: an item, or a list, tuple or set of items. For
#: the type checker a mapping of States is a `StateMapping` (what `model.states()` returns):
#: a plain `Mapping` here would make every `{axis: selector}` literal ambiguous to mypy.
SelectorLike: TypeAlias = "SelectorItem | Sequence[SelectorItem] | AbstractSet[SelectorItem]"
#: What `in_states`/`out_states` take: a selector (axis 0), `{axis: selector}` with int
#: axes, or `None` (no state).
StateAxesLike: TypeAlias = "SelectorLike | Mapping[int, SelectorLike] | None"


@overload
def vmap(
    fn: Callable[P, R],
    /,
    in_axes: Any = 0,
    out_axes: Any = 0,
    in_states: StateAxesLike = None,
    out_states: StateAxesLike = None,
    axis_size: int | None = None,
    axis_name: Hashable | None = None,
    *,
    split_keys: bool = True,
    spmd_axis_name: Hashable | None = None,
) -> Callable[P, R]: ...
@overload
def vmap(
    fn: None = None,
    /,
    in_axes: Any = 0,
    out_axes: Any = 0,
    in_states: StateAxesLike = None,
    out_states: StateAxesLike = None,
    axis_size: int | None = None,
    axis_name: Hashable | None = None,
    *,
    split_keys: bool = True,
    spmd_axis_name: Hashable | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def vmap(
    fn: Callable[P, R] | None = None,
    /,
    in_axes: Any = 0,
    out_axes: Any = 0,
    in_states: StateAxesLike = None,
    out_states: StateAxesLike = None,
    axis_size: int | None = None,
    axis_name: Hashable | None = None,
    *,
    split_keys: bool = True,
    spmd_axis_name: Hashable | None = None,
    **options: Any,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Vectorise `fn` with `jax.vmap`, threading the states it reads and writes.

    Arguments (and keyword arguments) are mapped as `in_axes` says. States
    selected by `in_states` (a filter, a State, an iterable or mapping of
    States, meaning axis 0, or `{axis: selector}`) are mapped on their axis
    and written back batched; `out_states` are written back batched. Every
    other state is broadcast: writing a batched value into it raises
    `statejax.BatchAxisError`. Each lane draws from its own random key
    unless `split_keys=False`. `spmd_axis_name` is `jax.vmap`'s: inside
    sharded code, the batch axis is sharded over those mesh axes. States
    created by `fn` come out stacked on a leading axis (initialise an ensemble
    this way). Use it as `@vmap`,
    `@vmap(in_states=...)` or `vmap(fn, ...)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import vmap
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
        spmd_axis_name=spmd_axis_name,
        **options,
    )
    if fn is None:
        return functools.partial(_vmap, spec=spec)
    return _vmap(fn, spec=spec)


def vmap_new_states(
    fun: Callable[P, R] | None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    spmd_axis_name: Hashable | None = None,
    state_tag: str | None = None,
    state_to_exclude: Any = None,
    in_states: Any = None,
    out_states: Any = None,
) -> Any:
    """Vectorise `fun` over the states it creates: each lane gets its own copy.

    For initialising an ensemble: every state `fun` creates (a module built
    inside it, say) comes out stacked on a leading axis of the batch size, and
    each lane draws from its own random key. `state_tag` is added to the tags of every new
    state (so `statejax.filters.WithTag` finds them later). States that
    existed before are broadcast, as in `vmap` without `in_states`; to map those,
    use `vmap` with `in_states`/`out_states`. Use it as `@vmap_new_states(...)` or
    `vmap_new_states(fun, ...)`.

    Args:
        fun: the function to vectorise; omit it for a decorator.
        in_axes: the axis of each positional argument to map over (as `vmap`).
        out_axes: where the batch axis goes in the result.
        axis_name: the name of the batch axis, for collectives.
        axis_size: the batch size, when no argument is mapped (a positive int).
        spmd_axis_name: mesh axis name(s) to shard the batch axis over (as `jax.vmap`).
        state_tag: a tag added to every new state.
        state_to_exclude: not offered: must be `None` (see the porting page).
        in_states: must be `None`: pre-existing states are mapped by `vmap`.
        out_states: must be `None`, as `in_states`.

    Returns:
        The vectorised function, or a decorator when `fun` is omitted.

    Raises:
        SpecError: an option is invalid, or `in_states`, `out_states` or
            `state_to_exclude` is given.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import vmap_new_states
        >>> made = []
        >>> @vmap_new_states(axis_size=3, state_tag="ensemble")
        ... def build(x):
        ...     made.append(sj.ParamState(x * 10.0))
        ...     return x
        >>> build(jnp.arange(3.0)).tolist(), made[-1].value.tolist(), made[-1].tag
        ([0.0, 1.0, 2.0], [0.0, 10.0, 20.0], {'ensemble'})
    """
    for option, value, fix in (
        ("in_states", in_states, "use statejax.vmap(..., in_states=...) to map existing states"),
        ("out_states", out_states, "use statejax.vmap(..., out_states=...)"),
        (
            "state_to_exclude",
            state_to_exclude,
            "create the state outside the function, or return its value instead",
        ),
    ):
        if value is not None:
            raise SpecError(
                f"statejax.vmap_new_states: option {option} is not offered: this transform "
                f"maps the states the function creates; {fix}."
            )
    spec = parse_spec(
        VmapNewStatesSpec,
        "vmap_new_states",
        in_axes=in_axes,
        out_axes=out_axes,
        axis_name=axis_name,
        axis_size=axis_size,
        spmd_axis_name=spmd_axis_name,
        state_tag=state_tag,
    )
    vspec = VmapSpec(
        in_axes=spec.in_axes,
        out_axes=spec.out_axes,
        axis_name=spec.axis_name,
        axis_size=spec.axis_size,
        spmd_axis_name=spec.spmd_axis_name,
    )

    def transform(f: Callable[P, R]) -> Callable[P, R]:
        tag = spec.state_tag
        if tag is None:
            return _vmap(f, vspec)

        @functools.wraps(f)
        def tagging(*args: P.args, **kwargs: P.kwargs) -> R:
            trace = current_trace()
            before = len(trace.created) if trace is not None else 0
            out = f(*args, **kwargs)
            for state in trace.created[before:] if trace is not None else ():
                state.add_tag(tag)
            return out

        return _vmap(tagging, vspec)

    return transform if fun is None else transform(fun)


def _vmap(fn: Callable[P, R], spec: VmapSpec, map_batch: int | None = None) -> Callable[P, R]:
    """`map_batch`: this vmap runs the batches of `map(fn, batch_size=map_batch)`,
    whose errors name map and give fixes that apply to it."""
    name = f"statejax.{'vmap' if map_batch is None else 'map'}({name_of(fn)})"

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        pure.hands_out_created = True  # created states come out stacked (ensembles)
        return _Batched(split, pure, spec, name, map_batch)

    stateful: StatefulFunction[R] = StatefulFunction(fn, name, lift)
    return stateful.as_function(fn)


@dataclass
class _Plan:
    vmapped: Callable[..., Any]
    rules: list[tuple[bool, int, StateBatching]]
    read_axes: list[int | None]
    write_in: list[int | None]
    write_out: list[int | None]
    in_axes: tuple[Any, ...]
    inner: Callable[..., Any]
    paths: dict[int, Path]
    # The states selected on a negative axis (indices into read values + written values)
    # and the ranks of their leaves this plan normalised the axes against.
    ranked: tuple[int, ...] = ()
    ranks: tuple[int, ...] = ()
    # The written states only out_states selects (read broadcast, written back batched):
    # indices into the written values, checked for a second batch axis (see _restacked).
    out_only: tuple[int, ...] = ()


_OUT_AXIS_ERROR = re.compile(r"at vmap out_axes\[0\]\[(\d+)\]")


class _Batched:
    """The lifted pure core of one split: `(read_vals, write_vals, *args) -> (out, writes)`."""

    def __init__(
        self, split: Split, pure: PureCore, spec: LaneSpec, name: str, map_batch: int | None
    ) -> None:
        self.split = split
        self.pure = pure
        self.spec = spec
        self.name = name
        self.map_batch = map_batch
        self.plan: _Plan | None = None
        # Plans by the ranks of the states selected on a negative axis (see _ranks).
        self.plans: dict[tuple[int, ...], _Plan] = {}
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
        negative: set[int] = set()
        in_ax = self._assign(spec.in_states, "in_states", paths, values, set(), negative)
        # A state only in out_states gets its batch axis on the way out: a negative axis
        # counts from the end of the batched value, one rank more than the current one.
        unbatched = {id(s) for s in split.states if id(s) not in in_ax}
        out_ax = self._assign(spec.out_states, "out_states", paths, values, unbatched, negative)
        ranked = tuple(k for k, s in enumerate(split.states) if id(s) in negative)

        def place(state: State[Any]) -> tuple[int | None, int | None, StateBatching | None]:
            """`(in_axis, out_axis, rule)`: selected, batched by a hook, or broadcast."""
            key = id(state)
            if key in in_ax or key in out_ax:
                return in_ax.get(key), out_ax.get(key, in_ax.get(key)), None
            rule = batch_rule(state, spec)
            return (rule.in_axis, rule.out_axis, rule) if rule is not None else (None, None, None)

        n_reads = len(split.read_states)
        placed = [place(s) for s in split.states]  # the read-only states, then the written
        read_axes = [in_axis for in_axis, _, _ in placed[:n_reads]]
        write_in = [in_axis for in_axis, _, _ in placed[n_reads:]]
        write_out = [out_axis for _, out_axis, _ in placed[n_reads:]]
        rules = [
            (k >= n_reads, k - n_reads if k >= n_reads else k, rule)
            for k, (_, _, rule) in enumerate(placed)
            if rule is not None
        ]

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
            return new_w, pure.take_created_values(), out

        in_axes = (read_axes, write_in, args_axes, kwargs_axes)
        vmapped = self._map(inner, in_axes, (write_out, 0, spec.out_axes))
        out_only = tuple(
            i for i, s in enumerate(split.write_states) if id(s) in out_ax and id(s) not in in_ax
        )
        return _Plan(
            vmapped=vmapped,
            rules=rules,
            read_axes=read_axes,
            write_in=write_in,
            write_out=write_out,
            in_axes=in_axes,
            inner=inner,
            paths=paths,
            ranked=ranked,
            ranks=_ranks(ranked, rv, wv),
            out_only=out_only,
        )

    def _map(self, inner: Callable[..., Any], in_axes: Any, out_axes: Any) -> Callable[..., Any]:
        """Map `inner` over the lanes: `jax.vmap` here; `pmap` maps over devices."""
        spec = self.spec
        return jax.vmap(
            inner,
            in_axes=in_axes,
            out_axes=out_axes,
            axis_size=spec.axis_size,
            axis_name=spec.axis_name,
            spmd_axis_name=_spmd_axis_name(spec),
        )

    def _plan_for(
        self,
        current: _Plan | None,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _Plan:
        """The plan for these values: a negative axis counts from the end of the current
        rank, so states selected on one get a plan per tuple of their ranks."""
        if current is not None:
            cached = self.plans.get(_ranks(current.ranked, rv, wv))
            if cached is not None:
                return cached
        plan = self._make_plan(rv, wv, args, kwargs)
        if plan.ranked:
            self.plans[plan.ranks] = plan
        return plan

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
            if s._where and id(s) not in paths:
                paths[id(s)] = tuple(s._where.split(".")[1:])
        return paths

    def _assign(
        self,
        axes: StateAxes,
        field: str,
        paths: dict[int, Path],
        values: dict[int, Any],
        unbatched: set[int],
        negative: set[int],
    ) -> dict[int, int]:
        """The normalised axis of each state `axes` selects, by state id; the ids of
        those selected on a negative axis are added to `negative`."""
        found: dict[int, tuple[int, int]] = {}
        for axis, sel in axes:
            for s in self.split.states:
                if not sel.matches(s, paths.get(id(s), ())):
                    continue
                if axis < 0:
                    negative.add(id(s))
                norm = _normalise(axis, values[id(s)], int(id(s) in unbatched))
                prev = found.get(id(s))
                if prev is not None and prev[0] != norm:
                    raise SpecError(
                        f"{self.name}: {self._describe(s)} is selected by {field} under "
                        f"axes {prev[1]} and {axis}; a state is mapped on one axis only: narrow "
                        "one of the selectors."
                    )
                found[id(s)] = (norm, axis)
        return {k: v[0] for k, v in found.items()}

    def _describe(self, state: State[Any]) -> str:
        # Only paths the user can see (a mapping they gave, a module argument); otherwise
        # describe_state names the state by the attribute it was stored under.
        return describe_state(state, self.known_paths.get(id(state)))

    def __call__(
        self, rv: Sequence[Any], wv: Sequence[Any], /, *args: Any, **kwargs: Any
    ) -> tuple[Any, list[Any]]:
        plan = self.plan
        if plan is None or (plan.ranked and _ranks(plan.ranked, rv, wv) != plan.ranks):
            plan = self.plan = self._plan_for(plan, rv, wv, args, kwargs)
        lanes_rv, lanes_wv, carries = list(rv), list(wv), list[Any]()
        if plan.rules:
            size = self._batch_size(plan, rv, wv, args, kwargs)
            if size is None:
                self._no_batch_size(plan, rv, wv, args, kwargs)
            lanes_rv, lanes_wv, carries = self._prepare(plan, rv, wv, size)
        try:
            new_w, created, out = plan.vmapped(lanes_rv, lanes_wv, args, kwargs)
        except ValueError as exc:
            if "axis_size must be specified" in str(exc):
                self._no_batch_size(plan, rv, wv, args, kwargs)
            self._diagnose(exc, plan, lanes_rv, lanes_wv, args, kwargs)
            raise
        if not self.checked:
            self._check_selectors(plan)
            self.checked = True
        if plan.out_only:
            self._restacked(plan, lanes_wv, new_w)
        for (written, i, rule), carry in zip(plan.rules, carries, strict=True):
            if written:
                new_w[i] = rule.finish(new_w[i], carry)
        if created:
            record = self.pure.record
            assert record is not None
            for state, value in zip(record.created, created, strict=True):
                adopt_created(state, value)
            # Handed out: the record must not keep the ensemble's states alive.
            record.created = []
        return out, new_w

    @staticmethod
    def _prepare(
        plan: _Plan, rv: Sequence[Any], wv: Sequence[Any], size: int
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """The lanes' values of the hook-batched states, and each rule's carry."""
        rv, wv = list(rv), list(wv)
        carries = []
        for written, i, rule in plan.rules:
            vals = wv if written else rv
            vals[i], carry = rule.prepare(vals[i], size)
            carries.append(carry)
        return rv, wv, carries

    def _no_batch_size(
        self,
        plan: _Plan,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> NoReturn:
        """Nothing gives the batch size. The split may be incomplete (the first call starts
        from no states, so in_states have not been seen yet): trace one lane, which makes
        the engine retry with the states found; if there are none, the error stands."""
        lanes_rv, lanes_wv, _ = self._prepare(plan, rv, wv, 1)
        self._trace_lanes(plan, lambda *a: None, lanes_rv, lanes_wv, args, kwargs, axis_size=1)
        raise ValueError(
            f"{self.name}: cannot tell the batch size: no argument and no state is mapped. "
            "Pass axis_size=..., or map an argument (in_axes) or a state (in_states)."
        ) from None

    def _check_selectors(self, plan: _Plan) -> None:
        touched = self.split.states
        for field, axes in (
            ("in_states", self.spec.in_states),
            ("out_states", self.spec.out_states),
        ):
            for axis, sel in axes:
                if any(sel.matches(s, plan.paths.get(id(s), ())) for s in touched):
                    continue
                names = ", ".join(self._describe(s) for s in touched) or "none"
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
    ) -> int | None:
        """The batch size, from axis_size, the mapped arguments or a mapped state."""
        found = self._arg_size(args, kwargs)
        if found is not None:
            return found[0]
        for _state, v, axis in self._mapped_states(plan, rv, wv):
            for leaf in jax.tree.leaves(v):
                if axis < jnp.ndim(leaf):
                    return int(jnp.shape(leaf)[axis])
        return None

    def _arg_size(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], use_axis_size: bool = True
    ) -> tuple[int, str] | None:
        spec = self.spec
        if spec.axis_size is not None and use_axis_size:
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
            (True, self.split.write_states, plan.write_in, wv),
        ):
            for i, (s, axis, v) in enumerate(zip(states, axes, vals, strict=True)):
                if axis is not None and (written, i) not in ruled:
                    out.append((s, v, axis))
        return out

    def _trace_lanes(
        self,
        plan: _Plan,
        pick: Callable[[list[Any], list[Any], Any], Any],
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out_axes: Any = 0,
        axis_size: int | None = None,
    ) -> Any:
        """Trace the lanes abstractly and return the shapes of `pick(writes, created, out)`
        collected on `out_axes` (for diagnosing errors, never on the call path)."""

        def lane(*a: Any) -> Any:
            return pick(*plan.inner(*a))

        lanes = jax.vmap(
            lane,
            in_axes=plan.in_axes,
            out_axes=out_axes,
            axis_size=axis_size if axis_size is not None else self.spec.axis_size,
            axis_name=self.spec.axis_name,
            spmd_axis_name=_spmd_axis_name(self.spec),
        )
        return jax.eval_shape(lambda: lanes(list(rv), list(wv), args, kwargs))

    def _find_batched_write(
        self,
        plan: _Plan,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> int | None:
        """Which broadcast state got a batched value: trace each one alone."""
        for i, axis in enumerate(plan.write_out):
            if axis is None:
                try:
                    pick = functools.partial(_pick_write, i)
                    self._trace_lanes(plan, pick, rv, wv, args, kwargs, out_axes=None)
                except ValueError:
                    return i
        return None

    def _find_bad_out_axis(
        self,
        plan: _Plan,
        rv: Sequence[Any],
        wv: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Raise if a state is written back on an axis its batched value does not have."""
        written = self._trace_lanes(plan, lambda w, *_: w, rv, wv, args, kwargs)
        for state, axis, value in zip(
            self.split.write_states, plan.write_out, written, strict=True
        ):
            for leaf in jax.tree.leaves(value):
                if axis is not None and not -leaf.ndim <= axis < leaf.ndim:
                    raise BatchAxisError(
                        f"{self.name}: {self._describe(state)} is written back batched on axis "
                        f"{axis}, but the lanes' value stacked has only {leaf.ndim} axes (shape "
                        f"{leaf.shape}). Select it in out_states/in_states on an axis from "
                        f"{-leaf.ndim} to {leaf.ndim - 1}."
                    ) from None

    def _batched_write_error(self, state: State[Any]) -> BatchAxisError:
        """The error for a lane-varying value written into a broadcast `state`."""
        if self.map_batch is not None:
            return BatchAxisError(
                f"{self.name}: the function wrote a value that differs between the "
                f"elements of a batch into {self._describe(state)}; with batch_size="
                f"{self.map_batch}, map runs each batch under vmap and broadcasts states "
                "within a batch (one value shared by its elements). Write a value that "
                "is the same for every element, use batch_size=None (one element at a "
                "time, states carried from one to the next), or call "
                f"statejax.vmap({name_of(self.pure.fn)}, out_states=...) yourself to keep "
                "one value per element."
            )
        return BatchAxisError(
            f"{self.name}: the function wrote a value batched over the vmap axis into "
            f"{self._describe(state)}, which is broadcast (not in in_states or "
            "out_states). Select it with in_states/out_states (e.g. out_states={0: state}) "
            "to keep one value per lane, or write an unbatched value."
        )

    def _stacked_write_error(
        self, state: State[Any], stacked: list[str], value: Any, size: int | None
    ) -> BatchAxisError:
        """A lane-varying value written into a broadcast `state` whose value already has
        the batch size on axis 0: the state is most likely stacked per lane already (an
        ensemble's), and out_states={0: state} would stack it a second time."""
        unstacked = [
            f"{_leaf_name(path)}: {_shape_of(leaf)}"
            for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]
            if _leaf_name(path) not in {s.split(":")[0] for s in stacked}
        ]
        if unstacked:
            fix = (
                f"Not every leaf has that axis ({', '.join(unstacked[:3])}), so create the "
                "state under vmap, where it comes out stacked per lane (for an ensemble's "
                "optimizer: `vmap(lambda: Optimizer(tx, params), in_states={0: params})()`, "
                "see the ensembles page), then map it with in_states={0: state}."
            )
        else:
            fix = "Map it with in_states={0: state}: each lane then reads and writes its slice."
        return BatchAxisError(
            f"{self.name}: the function wrote a value batched over the vmap axis into "
            f"{self._describe(state)}, which is broadcast (not in in_states or out_states): "
            "every lane read its whole value. That value already has the batch size "
            f"{size} on axis 0 ({', '.join(stacked[:3])}), so it looks stacked per lane "
            "already; out_states={0: state} would stack it a second time "
            f"({stacked[0].split(': ')[1]} -> {_with_axis(stacked[0].split(': ')[1], size)}). "
            f"{fix} If it is shared by the lanes, write an unbatched value."
        )

    def _restacked(self, plan: _Plan, wv: Sequence[Any], new_w: Sequence[Any]) -> None:
        """Refuse a second batch axis: a state only out_states selects is read whole by
        every lane; if that value already has the batch size on the out axis and each lane
        wrote back a value of its whole shape, storing it would stack it again (and again
        on every call). Checked before any state is written."""
        for i in plan.out_only:
            axis = plan.write_out[i]
            assert axis is not None
            old, new = wv[i], new_w[i]
            old_leaves, old_tree = jax.tree_util.tree_flatten_with_path(old)
            new_leaves, new_tree = jax.tree.flatten(new)
            old_tree, new_tree = cast(Any, old_tree), cast(Any, new_tree)
            if old_tree != new_tree:
                continue
            for (path, before), after in zip(old_leaves, new_leaves, strict=True):
                shape, stacked = tuple(jnp.shape(before)), tuple(jnp.shape(after))
                if len(stacked) != len(shape) + 1 or not axis < len(shape):
                    continue
                size = stacked[axis]
                if shape[axis] != size or stacked[:axis] + stacked[axis + 1 :] != shape:
                    continue
                state = self.split.write_states[i]
                raise BatchAxisError(
                    f"{self.name}: {self._describe(state)} is in out_states (axis {axis}) "
                    "but not in in_states, so every lane reads its whole value, which already "
                    f"has the batch size {size} on axis {axis} ({_leaf_name(path)}: "
                    f"{_shape_of(before)}); storing what the lanes wrote would give it a "
                    f"second batch axis ({_shape_of(after)}), and another on every call. No "
                    "state was changed. If the state holds one value per lane, select it with "
                    f"in_states={{{axis}: state}} instead of out_states (each lane then reads "
                    "and writes its own slice; see the ensembles page for an optimizer). To "
                    "stack a shared value per lane on purpose, give it the batch axis first "
                    f"(jnp.stack([value] * {size})) and select it with in_states."
                ) from None

    def _unlocated_batched_output(self) -> None:
        """A batched output with `out_axes` None that is no state: JAX's message stands."""

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
        # Without an axis name "... but output was batched"; with one, "vmap has mapped
        # output (axis_name=...) but out_axes is None" (no index: found by tracing).
        if "but output was batched" in msg or "has mapped output" in msg:
            match = _OUT_AXIS_ERROR.match(msg)
            index = int(match.group(1)) if match else None
            if index is None or index >= len(plan.write_out) or plan.write_out[index] is not None:
                index = self._find_batched_write(plan, rv, wv, args, kwargs)
            if index is None:
                self._unlocated_batched_output()
                return
            state = self.split.write_states[index]
            size = self._batch_size(plan, rv, wv, args, kwargs)
            stacked = _stacked_leaves(wv[index], size, 0) if size is not None else []
            if stacked and self.map_batch is None:
                raise self._stacked_write_error(state, stacked, wv[index], size) from None
            raise self._batched_write_error(state) from None
        if "is out of bounds for array of dimension" in msg:
            self._find_bad_out_axis(plan, rv, wv, args, kwargs)
            return
        if "inconsistent sizes" not in msg and "requested to map its argument" not in msg:
            return
        if self.spec.axis_size is not None:
            mapped = self._arg_size(args, kwargs, use_axis_size=False)
            if mapped is not None and mapped[0] != self.spec.axis_size:
                raise BatchAxisError(
                    f"{self.name}: axis_size={self.spec.axis_size} conflicts with the mapped "
                    f"size {mapped[0]} of {mapped[1]}. Give axis_size={mapped[0]}, or leave "
                    "axis_size out (the mapped arguments give the batch size)."
                ) from None
        expected = self._arg_size(args, kwargs)
        for s, v, axis in self._mapped_states(plan, rv, wv):
            for leaf in jax.tree.leaves(v):
                shape = tuple(jnp.shape(leaf))
                name = self._describe(s)
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


def _leaf_name(path: Any) -> str:
    """A leaf's place in a state's value (`[0].mu[0]`), or `value` for an array value."""
    return f"value{jax.tree_util.keystr(path)}" if path else "value"


def _shape_of(leaf: Any) -> str:
    dtype = getattr(leaf, "dtype", None)
    shape = ",".join(str(d) for d in jnp.shape(leaf))
    return f"{dtype}[{shape}]" if dtype is not None else f"[{shape}]"


def _with_axis(shown: str, size: int | None) -> str:
    """`float32[8,1,32]` with a leading axis of `size`: `float32[8,8,1,32]`."""
    head, _, dims = shown.partition("[")
    return f"{head}[{size},{dims}" if dims != "]" else f"{head}[{size}]"


def _stacked_leaves(value: Any, size: int, axis: int) -> list[str]:
    """The leaves of `value` that have `size` on `axis` (as `name: dtype[shape]`)."""
    return [
        f"{_leaf_name(path)}: {_shape_of(leaf)}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]
        if axis < jnp.ndim(leaf) and jnp.shape(leaf)[axis] == size
    ]


def _spmd_axis_name(spec: LaneSpec) -> Any:
    """`vmap`'s `spmd_axis_name` (other maps over lanes have none)."""
    return spec.spmd_axis_name if isinstance(spec, VmapSpec) else None


def _pick_write(i: int, writes: list[Any], *_: Any) -> Any:
    return writes[i]


def _ranks(ranked: tuple[int, ...], rv: Sequence[Any], wv: Sequence[Any]) -> tuple[int, ...]:
    """The ranks of the leaves of the values at `ranked` (indices into `[*rv, *wv]`)."""
    n = len(rv)
    return tuple(
        jnp.ndim(leaf) for k in ranked for leaf in jax.tree.leaves(rv[k] if k < n else wv[k - n])
    )


def _normalise(axis: int, value: Any, added: int = 0) -> int:
    """A negative axis counted from the end of the value's rank plus `added` (when all
    leaves agree; otherwise left negative, for jax.vmap to count per leaf)."""
    if axis >= 0:
        return axis
    ranks = {jnp.ndim(leaf) + added for leaf in jax.tree.leaves(value)}
    if len(ranks) == 1:
        rank = ranks.pop()
        if axis + rank >= 0:
            return axis + rank
    return axis


# --- map ----------------------------------------------------------------------------------


def map(f: Callable[..., R], *xs: Any, batch_size: int | None = None) -> R:
    """Apply `f` to each slice of `xs` along axis 0 and stack the results.

    Like `jax.lax.map` but state-aware. By default one element at a time (a
    `for_loop`, so the states `f` writes are carried from one element to the next,
    and each element draws fresh random numbers). With `batch_size`, `batch_size`
    elements at a time under `vmap`, then the remainder as one smaller batch; states
    are broadcast within a batch, so `f` may write a state only with a value that is
    the same for every element of the batch.

    The call is atomic: the states are written after every element has run, so if
    any element (or batch) raises, no state changes. Under `jax.disable_jit()` the
    one-at-a-time map runs as a Python loop, as `for_loop` does.

    Args:
        f: the function to apply; it takes one slice of each of `xs`.
        *xs: arrays (or pytrees of arrays) with the same leading axis to map over.
        batch_size: how many elements to run at a time under `vmap`; `None` for one
            at a time.

    Returns:
        The outputs of `f`, stacked on a leading axis.

    Raises:
        TypeError: no `xs` were given (to call `f` `n` times without inputs, use
            `statejax.for_loop(f, length=n)`).
        ValueError: the `xs` have different leading sizes, or one is a scalar.
        SpecError: `batch_size` is not a positive int.
        BatchAxisError: with `batch_size`, `f` wrote a value that differs between the
            elements of a batch into a state.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import map
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
    fn_name = name_of(f)
    name = f"statejax.map({fn_name})"
    if not xs:
        # A TypeError (a missing argument) that is also the ValueError BrainState raises.
        raise SpecTypeError(
            f"{name}: give at least one array to map over, as map(f, xs); to call the "
            "function n times without inputs, use statejax.for_loop(f, length=n)"
        )
    sizes = {int(jnp.shape(leaf)[0]) if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(xs)}
    if None in sizes:
        raise ValueError(
            f"{name}: an input is a 0-d array (a scalar), which has no leading axis to map "
            "over; give arrays with the mapped elements along axis 0"
        )
    if len(sizes) != 1:
        raise ValueError(
            f"{name}: every input must have the same leading axis to map over; their leading "
            f"sizes are {sorted(s for s in sizes if s is not None)}"
        )
    n = sizes.pop()
    assert n is not None
    bs = spec.batch_size

    def one_at_a_time(g: Callable[..., Any], *xs: Any) -> Any:
        def body(carry: None, x: tuple[Any, ...]) -> tuple[None, Any]:
            return carry, g(*x)

        return _scan(body, None, xs, ForLoopSpec(), "map", fn_name)[1]

    def run(*xs: Any) -> R:
        if bs is None or n == 0:
            out: R = one_at_a_time(f, *xs)
            return out
        full, rem = divmod(n, bs)
        batched = _vmap(f, VmapSpec(), map_batch=bs)
        parts: list[Any] = []
        if full:  # the full batches one after the other, then the remainder as one batch
            main = jax.tree.map(lambda a: a[: full * bs].reshape(full, bs, *a.shape[1:]), xs)
            out = one_at_a_time(batched, *main)
            parts.append(jax.tree.map(lambda a: a.reshape(full * bs, *a.shape[2:]), out))
        if rem:
            parts.append(batched(*jax.tree.map(lambda a: a[full * bs :], xs)))
        result: R = (
            jax.tree.map(lambda *a: jnp.concatenate(a), *parts) if full and rem else parts[0]
        )
        return result

    # One stateful call around the whole map: the engine merges the writes of every
    # batch only after the last one ran, so an error anywhere changes no state.
    if jit_disabled():
        return run_eagerly(name, run, *xs)
    stateful: StatefulFunction[R] = StatefulFunction(run, name, lambda split, pure: pure)
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
    registry.register(
        Transform(
            "vmap_new_states",
            vmap_new_states,
            VmapNewStatesSpec,
            "vmap whose new states come out stacked per lane (ensemble initialisation)",
        )
    )

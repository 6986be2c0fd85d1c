"""The state-selector language of the mapping transforms, and the options they share.

Private to the built-in plugins (`vmap`, `map`, `vmap2`, `pmap`, `pmap2`, the
`*_new_states` forms, and the state rules of `jit`/`shard_map`): a *selector* (a
filter, a State, an iterable or mapping of States) normalised to a `StateSelector`;
`vmap`'s `in_states`/`out_states` (`{axis: selector}`, parsed by
`parse_mapped_states`); BrainState's `state_in_axes`/`state_out_axes` (axis `None`
too, parsed by `parse_state_axes`); the `in_axes`/`out_axes` check; and the pydantic
fields those transforms' specs share, written once here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias

import jax
import pydantic

from statejax.extend import State, describe_state
from statejax.filters import Filter, FilterLike, Path, to_filter
from statejax.graph import Module, StateMapping

__all__ = [
    "AXIS_NAME",
    "AXIS_SIZE",
    "IN_AXES",
    "IN_STATES",
    "NEW_STATE_OUT_AXES",
    "OUT_AXES",
    "OUT_STATES",
    "SPMD_AXIS_NAME",
    "STATE_AXES_SCHEMA",
    "STATE_IN_AXES",
    "STATE_OUT_AXES",
    "UNEXPECTED",
    "Axes",
    "MappedStates",
    "MappingStateAxes",
    "NewStateAxes",
    "SelectorItem",
    "SelectorLike",
    "StateAxes",
    "StateAxesLike",
    "StateSelector",
    "StateAxesField",
    "check_axes",
    "is_axis_key",
    "parse_mapped_states",
    "parse_selector",
    "parse_state_axes",
    "vmap_state_axes",
]


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

STATE_AXES_SCHEMA = pydantic.WithJsonSchema(
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


def is_axis_key(key: object) -> bool:
    return isinstance(key, int) and not isinstance(key, bool)


# Iterable, but never an iterable of selectors.
_NOT_SELECTORS = (str, bytes, Module, jax.Array)


def _is_filter_like(item: object) -> bool:
    if isinstance(item, Filter) or item is ... or item is True:
        return True
    if isinstance(item, type):
        return issubclass(item, State)
    return callable(item) and not isinstance(item, (State, Module))


def parse_selector(value: object, where: str = "") -> StateSelector:
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
            if item and all(is_axis_key(k) for k in item):
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


def parse_mapped_states(value: object, field: str) -> StateAxes:
    if value is None or value is False or (isinstance(value, tuple) and not value):
        return ()
    if isinstance(value, Mapping) and value and all(is_axis_key(k) for k in value):
        pairs = [(k, parse_selector(v, f"{field}[{k}]: ")) for k, v in value.items()]
    else:
        # Otherwise a mapping is a selector (path -> State, as model.states() gives): any
        # number among its keys means a mistyped {axis: selector}.
        if isinstance(value, Mapping) and any(isinstance(k, (int, float, complex)) for k in value):
            bad = next(k for k in value if not is_axis_key(k))
            raise ValueError(
                f"key {bad!r} ({type(bad).__name__}) is not an integer axis. Give "
                "{axis: selector} with int keys only (negative axes count from the end), e.g. "
                "{0: model.states(sj.ParamState), 1: state}"
            )
        pairs = [(0, parse_selector(value))]
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


def check_axes(value: object) -> object:
    if isinstance(value, list):
        value = tuple(value)
    for leaf in jax.tree.leaves(value, is_leaf=lambda x: x is None):
        if leaf is not None and not is_axis_key(leaf):
            raise ValueError(
                f"{leaf!r} ({type(leaf).__name__}) is not an axis; use an int, None, or a "
                "tuple (one entry per positional argument) or pytree of them"
            )
    return value


# --- type aliases for signatures ------------------------------------------------------------

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


# --- BrainState's state_in_axes / state_out_axes ------------------------------------------

#: `state_in_axes`/`state_out_axes` parsed: `(axis, selector)` pairs, axis `None` for
#: the states kept whole (broadcast, which every unselected state is anyway).
MappingStateAxes: TypeAlias = tuple[tuple[int | None, StateSelector], ...]


def parse_state_axes(value: object, field: str) -> MappingStateAxes:
    """Parse BrainState's `state_in_axes`/`state_out_axes` into `(axis, selector)` pairs.

    `value` is `None` (no state), a selector (a filter, a State, an iterable or
    mapping of States) meaning axis 0, or `{axis: selector}` whose keys are ints
    or `None` (the states kept whole: broadcast). An already parsed value (or
    `{axis: StateSelector}`) parses to itself. For use in pydantic validators.

    Args:
        value: the option's value.
        field: the option's name, for error messages.

    Returns:
        The pairs, the `None` entry (if any) first.

    Raises:
        ValueError: `value` is not one of those forms, or a State is selected under
            two axes; the message says which and how to fix it.
    """
    if (
        isinstance(value, tuple)
        and value
        and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], StateSelector) for p in value
        )
    ):
        value = dict(value)
    if not (isinstance(value, Mapping) and value and None in value):
        return parse_mapped_states(value, field)
    rest = {k: v for k, v in value.items() if k is not None}
    for key in rest:
        if not is_axis_key(key):
            raise ValueError(
                f"key {key!r} ({type(key).__name__}) is not an integer axis or None. Give "
                "{axis: selector} with int keys (None: states kept whole, broadcast)"
            )
    whole = parse_selector(value[None], f"{field}[None]: ")
    pairs: StateAxes = parse_mapped_states(rest, field) if rest else ()
    for axis, sel in pairs:
        for state, path in zip(sel.states, sel.paths, strict=True):
            if any(s is state for s in whole.states):
                raise ValueError(
                    f"{describe_state(state, path)} is selected under axes None and {axis}; "
                    "a state is either mapped on one axis or kept whole: remove it from one "
                    "of the selectors"
                )
    return ((None, whole), *pairs)


def vmap_state_axes(axes: MappingStateAxes) -> dict[int, StateSelector] | None:
    """`vmap`'s `in_states`/`out_states` for parsed axes: the mapped ones (`None`: none).

    The `None` entry is dropped: `vmap` broadcasts every state it does not map.
    """
    mapped = {axis: sel for axis, sel in axes if axis is not None}
    return mapped or None


# --- the fields the specs share -----------------------------------------------------------


#: `in_axes`/`out_axes`: an int, `None`, or a tuple (one per argument) or pytree of them.
Axes = Annotated[Any, pydantic.BeforeValidator(check_axes)]

IN_AXES: Any = pydantic.Field(
    default=0,
    description="axis of each positional argument to map over (int, None, or a tuple of "
    "them, one per argument); keyword arguments follow an int/None in_axes, else axis 0",
)
OUT_AXES: Any = pydantic.Field(default=0, description="where the batch axis goes in the result")
AXIS_SIZE: Any = pydantic.Field(
    default=None,
    description="the batch size, needed when nothing is mapped; a non-negative int or None",
)
AXIS_NAME: Any = pydantic.Field(
    default=None, description="name of the batch axis, for collectives such as lax.psum"
)
SPMD_AXIS_NAME: Any = pydantic.Field(
    default=None,
    description="mesh axis name(s) the batch axis is sharded over inside sharded code "
    "(jax.vmap's spmd_axis_name): a name or a tuple of names",
)


def _mapped_states(value: object, info: pydantic.ValidationInfo) -> StateAxes:
    return parse_mapped_states(value, str(info.field_name))


#: `vmap`'s `in_states`/`out_states`, parsed.
MappedStates = Annotated[StateAxes, STATE_AXES_SCHEMA, pydantic.BeforeValidator(_mapped_states)]

IN_STATES: Any = pydantic.Field(
    default=(),
    description="states mapped on an axis and written back batched: a selector (a filter, "
    "a State, an iterable or mapping of States) for axis 0, or {axis: selector}",
)
OUT_STATES: Any = pydantic.Field(
    default=(),
    description="states written back batched (same forms as in_states); their input is "
    "broadcast unless in_states maps them too",
)


def _state_axes(value: object, info: pydantic.ValidationInfo) -> MappingStateAxes:
    return parse_state_axes(value, str(info.field_name))


#: BrainState's `state_in_axes`/`state_out_axes`, parsed.
StateAxesField = Annotated[
    MappingStateAxes, STATE_AXES_SCHEMA, pydantic.BeforeValidator(_state_axes)
]

STATE_IN_AXES: Any = pydantic.Field(
    default=(),
    description="states mapped on an axis and written back batched: a selector (a filter, a "
    "State, an iterable or mapping of States) for axis 0, or {axis: selector} (None: kept whole)",
)
STATE_OUT_AXES: Any = pydantic.Field(
    default=(),
    description="states written back batched (same forms as state_in_axes); their input is "
    "broadcast unless state_in_axes maps them too",
)
UNEXPECTED: Any = pydantic.Field(
    default="raise",
    description="the policy for a batched write into a state outside state_out_axes: "
    "'raise' (BatchAxisError naming the state; declare it in state_in_axes/state_out_axes)",
)


def _new_state_axes(value: object, info: pydantic.ValidationInfo) -> MappingStateAxes:
    axes = parse_state_axes(value, str(info.field_name))
    for axis, sel in axes:
        if sel.states:
            raise ValueError(
                f"[{axis}] selects existing states ({sel!r}); vmap2_new_states places the "
                "states init_all_states creates, which do not exist yet. Select them with a "
                "filter: a State type, statejax.filters.WithTag(...), PathContains(...)"
            )
    return axes


NEW_STATE_OUT_AXES: Any = pydantic.Field(
    default=(),
    description="where each new state's batch axis goes: a filter for axis 0, or "
    "{axis: filter} (None: kept whole, the same in every lane); unselected: axis 0",
)


#: The `state_out_axes` of the `*_new_states` transforms: filters only (the states do not
#: exist yet), parsed.
NewStateAxes = Annotated[
    MappingStateAxes, STATE_AXES_SCHEMA, pydantic.BeforeValidator(_new_state_axes)
]

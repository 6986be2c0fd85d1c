"""`StatefulMapping`, `vmap2` and `vmap2_new_states`: BrainState's mapping forms.

A thin layer over `statejax.transform.vmap` (and so over the engine).
`StatefulMapping` adds BrainState's `static_argnums`/`static_argnames`, which are
closed over per call (as `jax.jit` closes over static arguments) and are neither
traced nor mapped; `vmap2` is its function form. `vmap2_new_states` initialises a
module's states per lane, through `vmap_new_states`.

BrainState's `state_in_axes`/`state_out_axes` (`{axis or None: selector}` or a bare
selector) are parsed and translated into `vmap`'s `in_states`/`out_states` by the
shared selector language (`_selectors.py`), which `pmap2` uses too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Annotated, Any, Literal, overload

import pydantic

from statejax._transforms._common import AS_TUPLE, AxisName, Count, Index, PositiveCount
from statejax._transforms._lanes import map_new_states, module_initializer
from statejax._transforms._selectors import (
    AXIS_NAME,
    AXIS_SIZE,
    IN_AXES,
    NEW_STATE_OUT_AXES,
    OUT_AXES,
    SPMD_AXIS_NAME,
    STATE_IN_AXES,
    STATE_OUT_AXES,
    UNEXPECTED,
    Axes,
    NewStateAxes,
    StateAxesField,
    vmap_state_axes,
)
from statejax._transforms.vmap import vmap, vmap_new_states
from statejax.extend import (
    SpecError,
    State,
    Transform,
    TransformSpec,
    hookimpl,
    parse_spec,
)
from statejax.graph import Module

__all__ = [
    "StatefulMapping",
    "StatefulMappingSpec",
    "Vmap2NewStatesSpec",
    "Vmap2Spec",
    "vmap2",
    "vmap2_new_states",
]

# Mapped functions kept per combination of static values; then the cache starts over.
_MAX_VARIANTS = 64


class StatefulMappingSpec(TransformSpec):
    """Options of `StatefulMapping` beyond those of `vmap`."""

    static_argnums: Annotated[tuple[Index, ...], AS_TUPLE] = pydantic.Field(
        default=(), description="positions of arguments closed over per call, not mapped"
    )
    static_argnames: Annotated[tuple[str, ...], AS_TUPLE] = pydantic.Field(
        default=(), description="names of keyword arguments closed over per call, not mapped"
    )
    state_in_axes: StateAxesField = STATE_IN_AXES
    state_out_axes: StateAxesField = STATE_OUT_AXES
    unexpected_out_state_mapping: Literal["raise"] = UNEXPECTED


# The options of vmap that StatefulMapping's mapping_kwargs may carry (BrainState hands
# them to its mapping_fn; statejax maps with vmap).
_MAPPING_KWARGS = ("spmd_axis_name", "split_keys")


class StatefulMapping:
    """Vectorise `fun` over a batch axis, threading the states it reads and writes.

    Calls `statejax.transform.vmap` with `state_in_axes` as its `in_states` and
    `state_out_axes` as its `out_states` (a selector for axis 0, or
    `{axis: selector}`; the entry of axis `None` names states kept whole, which
    every unselected state is); every other state is broadcast, and writing a
    batched value into one raises `statejax.BatchAxisError`. Arguments named by
    `static_argnums`/`static_argnames` are closed over per call, so they may be
    any hashable Python value; their `in_axes` entries are dropped.

    Args:
        fun: the function to vectorise.
        in_axes: as `jax.vmap`'s, one entry per positional argument (static ones included).
        out_axes: as `jax.vmap`'s.
        state_in_axes: the states mapped on an axis and written back batched.
        state_out_axes: the states written back batched.
        unexpected_out_state_mapping: only `"raise"` (see `docs/porting.md`).
        static_argnums: positions of arguments closed over, not mapped.
        static_argnames: names of keyword arguments closed over, not mapped.
        axis_size: the batch size, needed when nothing is mapped.
        axis_name: the name of the batch axis, for collectives.
        name: a name for the object's `repr`.
        mapping_kwargs: further options of `vmap`: `spmd_axis_name`, `split_keys`.

    Raises:
        SpecError: an option is invalid.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> counter = sj.ShortTermState(jnp.zeros(3))
        >>> def accumulate(x, scale):
        ...     counter.value = counter.value + x * scale
        ...     return counter.value
        >>> batched = sj.transform.StatefulMapping(
        ...     accumulate, state_in_axes={0: sj.ShortTermState}, static_argnums=1)
        >>> batched(jnp.asarray([1.0, 2.0, 3.0]), 2).tolist(), counter.value.tolist()
        ([2.0, 4.0, 6.0], [2.0, 4.0, 6.0])
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        in_axes: Any = 0,
        out_axes: Any = 0,
        state_in_axes: Any = None,
        state_out_axes: Any = None,
        unexpected_out_state_mapping: str = "raise",
        static_argnums: int | Iterable[int] | None = (),
        static_argnames: str | Iterable[str] | None = (),
        axis_size: int | None = None,
        axis_name: Hashable | None = None,
        name: str | None = None,
        *,
        mapping_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        spec = parse_spec(
            StatefulMappingSpec,
            "StatefulMapping",
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            state_in_axes=state_in_axes,
            state_out_axes=state_out_axes,
            unexpected_out_state_mapping=unexpected_out_state_mapping,
        )
        extra = dict(mapping_kwargs or {})
        unknown = sorted(set(extra) - set(_MAPPING_KWARGS))
        if unknown:
            raise SpecError(
                f"statejax.StatefulMapping: option mapping_kwargs: {unknown} are not options "
                f"statejax passes on; it maps with statejax.vmap, whose further options are "
                f"{list(_MAPPING_KWARGS)}. Give the others as StatefulMapping's own arguments."
            )
        self.origin_fun = fun
        self.name = name
        self.in_axes = in_axes
        self.out_axes = out_axes
        self.state_in_axes = state_in_axes
        self.state_out_axes = state_out_axes
        self.axis_size = axis_size
        self.axis_name = axis_name
        self.unexpected_out_state_mapping = spec.unexpected_out_state_mapping
        self.static_argnums: tuple[int, ...] = spec.static_argnums
        self.static_argnames: tuple[str, ...] = spec.static_argnames
        self.mapping_kwargs = extra
        self._options = {
            "out_axes": out_axes,
            "in_states": vmap_state_axes(spec.state_in_axes),
            "out_states": vmap_state_axes(spec.state_out_axes),
            "axis_size": axis_size,
            "axis_name": axis_name,
            **extra,
        }
        dyn_in_axes = self._dynamic_in_axes()
        # Validated once, here: a bad option is a SpecError at construction.
        self._mapped = self._map(fun, dyn_in_axes)
        self._variants: dict[Hashable, Callable[..., Any]] = {}

    def _map(self, fun: Callable[..., Any], in_axes: Any) -> Callable[..., Any]:
        """The mapped function for `fun`'s dynamic arguments (`pmap2` maps over devices)."""
        return vmap(fun, in_axes=in_axes, **self._options)

    def _dynamic_in_axes(self) -> Any:
        """`in_axes` without the entries of static positions (a per-argument tuple)."""
        if isinstance(self.in_axes, (tuple, list)) and self.static_argnums:
            return tuple(a for i, a in enumerate(self.in_axes) if i not in self.static_argnums)
        return self.in_axes

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the mapped function; the selected states come back batched."""
        if not (self.static_argnums or self.static_argnames):
            return self._mapped(*args, **kwargs)
        if self.static_argnums and max(self.static_argnums) >= len(args):
            raise ValueError(
                f"{self!r}: static_argnums contains index {max(self.static_argnums)}, but only "
                f"{len(args)} positional arguments were given."
            )
        statics = tuple(args[i] for i in self.static_argnums)
        static_kw = tuple((k, kwargs[k]) for k in self.static_argnames if k in kwargs)
        dyn_args = [a for i, a in enumerate(args) if i not in self.static_argnums]
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        return self._variant(statics, static_kw)(*dyn_args, **dyn_kwargs)

    def _variant(
        self, statics: tuple[Any, ...], static_kw: tuple[tuple[str, Any], ...]
    ) -> Callable[..., Any]:
        key = (statics, static_kw)
        try:
            found = self._variants.get(key)
        except TypeError:
            raise TypeError(
                f"{self!r}: static arguments must be hashable; got {key!r}. Pass arrays as "
                "mapped (or broadcast, in_axes=None) arguments."
            ) from None
        if found is not None:
            return found
        positions, fun = self.static_argnums, self.origin_fun

        @functools.wraps(fun)
        def bound(*dyn_args: Any, **dyn_kwargs: Any) -> Any:
            dynamic = iter(dyn_args)
            n = len(dyn_args) + len(positions)
            full = [
                statics[positions.index(i)] if i in positions else next(dynamic) for i in range(n)
            ]
            return fun(*full, **dict(static_kw), **dyn_kwargs)

        mapped = self._map(bound, self._dynamic_in_axes())
        # A module or state among the static values (at any depth of a container) would
        # be kept alive by the cache: such a variant is used once and not kept.
        if not _holds_state_or_module((statics, static_kw)):
            if len(self._variants) >= _MAX_VARIANTS:
                self._variants.clear()
            self._variants[key] = mapped
        return mapped

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """As a method: bind the instance as the first argument (as a function would)."""
        return self if obj is None else functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"StatefulMapping({self.name or getattr(self.origin_fun, '__qualname__', '?')})"


def _holds_state_or_module(value: Any) -> bool:
    """Whether `value` is, or a tuple/list/dict/set/dataclass inside it holds, one."""
    todo, seen = [value], set()
    while todo:
        v = todo.pop()
        if isinstance(v, (Module, State)):
            return True
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, (tuple, list, set, frozenset)):
            todo.extend(v)
        elif isinstance(v, dict):
            todo.extend(v.values())
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            todo.extend(getattr(v, f.name) for f in dataclasses.fields(v))
    return False


# --- vmap2: the function form ---------------------------------------------------------------


class Vmap2Spec(TransformSpec):
    """Options of `vmap2`."""

    in_axes: Axes = IN_AXES
    out_axes: Axes = OUT_AXES
    axis_name: AxisName | None = AXIS_NAME
    axis_size: Count | None = AXIS_SIZE
    spmd_axis_name: AxisName | None = SPMD_AXIS_NAME
    state_in_axes: StateAxesField = STATE_IN_AXES
    state_out_axes: StateAxesField = STATE_OUT_AXES
    unexpected_out_state_mapping: Literal["raise"] = UNEXPECTED


@overload
def vmap2(
    fn: Callable[..., Any],
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    spmd_axis_name: Hashable | None = None,
    state_in_axes: Any = None,
    state_out_axes: Any = None,
    unexpected_out_state_mapping: str = "raise",
) -> StatefulMapping: ...
@overload
def vmap2(
    fn: None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    spmd_axis_name: Hashable | None = None,
    state_in_axes: Any = None,
    state_out_axes: Any = None,
    unexpected_out_state_mapping: str = "raise",
) -> Callable[[Callable[..., Any]], StatefulMapping]: ...
def vmap2(
    fn: Callable[..., Any] | None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    spmd_axis_name: Hashable | None = None,
    state_in_axes: Any = None,
    state_out_axes: Any = None,
    unexpected_out_state_mapping: str = "raise",
) -> StatefulMapping | Callable[[Callable[..., Any]], StatefulMapping]:
    """Vectorise `fn` as `jax.vmap` does, threading the states it reads and writes.

    BrainState's function form of `StatefulMapping`: the options are
    `jax.vmap`'s (`in_axes`, `out_axes`, `axis_name`, `axis_size`,
    `spmd_axis_name`) and the state selectors: `state_in_axes` states are mapped
    on their axis and written back batched, `state_out_axes` states are written
    back batched; each is a selector (a filter, a State, an iterable or mapping of
    States) meaning axis 0, or `{axis: selector}` (axis `None`: kept whole).
    Every other state is broadcast: writing a batched value into one raises
    `statejax.BatchAxisError`. Keyword arguments of the call are mapped on axis 0,
    as in `jax.vmap`; each lane draws from its own random key. Use it as
    `vmap2(fn, ...)`, `@vmap2` or `@vmap2(...)`.

    Args:
        fn: the function to vectorise; omit it for a decorator.
        in_axes: as `jax.vmap`'s, one entry per positional argument (or one for all).
        out_axes: as `jax.vmap`'s.
        axis_name: the name of the batch axis, for collectives such as `jax.lax.psum`.
        axis_size: the batch size, needed when nothing is mapped.
        spmd_axis_name: mesh axis name(s) the batch axis is sharded over inside
            sharded code (as `jax.vmap`'s).
        state_in_axes: the states mapped on an axis and written back batched.
        state_out_axes: the states written back batched.
        unexpected_out_state_mapping: only `"raise"` (see `docs/porting.md`).

    Returns:
        A `StatefulMapping`, or a decorator making one when `fn` is omitted.

    Raises:
        SpecError: an option is invalid (at decoration).
        BatchAxisError: at the call, a batched value was written into a broadcast
            state, or sizes disagree (`axis_size` against the mapped arguments).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import vmap2
        >>> counter = sj.ShortTermState(jnp.zeros(3))
        >>> @vmap2(state_in_axes={0: sj.ShortTermState}, state_out_axes=sj.ShortTermState)
        ... def accumulate(x):
        ...     counter.value = counter.value + x
        ...     return counter.value
        >>> accumulate(jnp.asarray([1.0, 2.0, 3.0])).tolist(), counter.value.tolist()
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
        >>> vmap2(lambda x, y: x + y, in_axes=(0, None))(jnp.arange(3.0), 1.0).tolist()
        [1.0, 2.0, 3.0]
    """
    spec = parse_spec(
        Vmap2Spec,
        "vmap2",
        in_axes=in_axes,
        out_axes=out_axes,
        axis_name=axis_name,
        axis_size=axis_size,
        spmd_axis_name=spmd_axis_name,
        state_in_axes=state_in_axes,
        state_out_axes=state_out_axes,
        unexpected_out_state_mapping=unexpected_out_state_mapping,
    )
    if fn is None:
        return functools.partial(
            vmap2,
            in_axes=in_axes,
            out_axes=out_axes,
            axis_name=axis_name,
            axis_size=axis_size,
            spmd_axis_name=spmd_axis_name,
            state_in_axes=state_in_axes,
            state_out_axes=state_out_axes,
            unexpected_out_state_mapping=unexpected_out_state_mapping,
        )
    return StatefulMapping(
        fn,
        in_axes=spec.in_axes,
        out_axes=spec.out_axes,
        state_in_axes=state_in_axes,
        state_out_axes=state_out_axes,
        unexpected_out_state_mapping=spec.unexpected_out_state_mapping,
        axis_size=spec.axis_size,
        axis_name=spec.axis_name,
        name="vmap2",
        mapping_kwargs={"spmd_axis_name": spec.spmd_axis_name},
    )


# --- vmap2_new_states -------------------------------------------------------------------------


class Vmap2NewStatesSpec(TransformSpec):
    """Options of `vmap2_new_states`."""

    state_tag: str | None = pydantic.Field(
        default=None, description="tag added to every state init_all_states creates"
    )
    axis_size: PositiveCount | None = pydantic.Field(
        default=None, description="the number of lanes (required): a positive int"
    )
    state_out_axes: NewStateAxes = NEW_STATE_OUT_AXES
    spmd_axis_name: AxisName | None = SPMD_AXIS_NAME


def vmap2_new_states(
    module: Any,
    init_kwargs: Mapping[str, Any],
    state_tag: str | None = None,
    axis_size: int | None = None,
    state_out_axes: Any = None,
    spmd_axis_name: Hashable | None = None,
) -> dict[int | None, list[State[Any]]]:
    """Run `module.init_all_states(**init_kwargs)` once per lane: its new states come out batched.

    For initialising an ensemble: `init_all_states` runs under `vmap_new_states`
    with `axis_size` lanes, each drawing from its own random key, and every state
    it creates gets a batch axis of size `axis_size`: axis 0 unless
    `state_out_axes` places it elsewhere (`{axis: filter}`; axis `None` keeps a
    state whole, which its value must then be, the same in every lane). A filter
    sees a state's path in `module`. `state_tag` is added to the tags of every new
    state. States that existed before are read broadcast. The first call traces
    `init_all_states` twice (an abstract discovery, then the mapped pass).

    Args:
        module: an object with an `init_all_states(**init_kwargs)` method that creates
            states (stored on the module, usually).
        init_kwargs: keyword arguments for `init_all_states`.
        state_tag: a tag added to every new state.
        axis_size: the number of lanes (required).
        state_out_axes: where new states' batch axes go: a filter for axis 0, or
            `{axis: filter}` with int axes or `None`; unselected states go on axis 0.
        spmd_axis_name: mesh axis name(s) to shard the batch axis over (as `jax.vmap`).

    Returns:
        The new states by axis (`None`: kept whole), in BrainState's order: axis
        `None`, the other axes as given, axis 0; axes without states are left out.

    Raises:
        SpecError: `axis_size` is missing, an option is invalid, `module` has no
            `init_all_states`, or a selector of `state_out_axes` matches no new state.
        BatchAxisError: a state kept whole got a value that differs between lanes,
            or a new state's value has no axis where `state_out_axes` puts it.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transform import vmap2_new_states
        >>> class Member(sj.Module):
        ...     def init_all_states(self, n):
        ...         self.w = sj.ParamState(sj.random.normal(size=(n,)))
        ...         self.count = sj.ShortTermState(jnp.zeros(()))
        >>> m = Member()
        >>> groups = vmap2_new_states(m, {"n": 3}, axis_size=4, state_out_axes={1: sj.ParamState})
        >>> m.w.value.shape, m.count.value.shape
        ((3, 4), (4,))
        >>> {axis: len(states) for axis, states in groups.items()}
        {1: 1, 0: 1}
    """
    name = "statejax.vmap2_new_states"
    spec = parse_spec(
        Vmap2NewStatesSpec,
        "vmap2_new_states",
        state_tag=state_tag,
        axis_size=axis_size,
        state_out_axes=state_out_axes,
        spmd_axis_name=spmd_axis_name,
    )
    if spec.axis_size is None:
        raise SpecError(
            f"{name}: option axis_size is required: give the number of lanes (ensemble "
            "members) to initialise, e.g. axis_size=8."
        )
    init = module_initializer(name, module, init_kwargs, "vmap_new_states(fn, axis_size=...)")

    def run(init_lane: Callable[[], Any], out_axes: tuple[int | None, ...]) -> Any:
        return vmap_new_states(
            init_lane,
            in_axes=(),
            out_axes=out_axes,
            axis_size=spec.axis_size,
            spmd_axis_name=spec.spmd_axis_name,
        )()

    return map_new_states(name, module, init, init_kwargs, spec.state_tag, spec.state_out_axes, run)


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "vmap2",
            vmap2,
            Vmap2Spec,
            "BrainState's vmap2: a StatefulMapping with jax.vmap's options and state selectors",
        )
    )
    registry.register(
        Transform(
            "vmap2_new_states",
            vmap2_new_states,
            Vmap2NewStatesSpec,
            "run module.init_all_states per lane: new states batched (ensemble initialisation)",
        )
    )

"""`pmap`, `pmap2` and `pmap2_new_states`: map a function over devices, threading states.

Built on `jax.shard_map` inside `jax.jit`, not on `jax.pmap`: since JAX 0.8
`jax.pmap` is itself implemented as `jit(shard_map(...))`, and its docstring (JAX
0.10) recommends `jax.shard_map` instead ("While `jax.pmap` works, you should
probably use `jax.shard_map`"; see JAX's pmap migration guide). Built directly,
statejax places the states' values itself (so a state that comes back sharded over
the devices does not make the next call retrace) and checks what may differ across
devices before anything runs. Like `jax.pmap`, `shard_map` runs with
`check_vma=False`: each device's values, gradients included, are its own (no
automatic `psum` of the gradients of replicated values). Which values differ across
devices is checked as `vmap` checks it, by an abstract `jax.vmap` trace of the lanes
when the function is traced (never on a cached call).

The state rules are `vmap`'s, with the mapped axis laid over devices: states
selected by `in_states` are split over the devices on their axis and written back
stacked; `out_states` are written back stacked; every other state is replicated
(broadcast), and writing a device-varying value into one is a `BatchAxisError`
naming the state. A `RandomState` gives each device its own key. States the
function creates come out stacked, one slice per device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, ParamSpec, TypeVar, overload

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from statejax._transforms._common import (
    AS_TUPLE,
    AxisName,
    Count,
    Index,
    PositiveCount,
    name_of,
    wait_for_results,
)
from statejax._transforms._lanes import Batched, LaneSpec, map_new_states, module_initializer
from statejax._transforms._selectors import (
    AXIS_NAME,
    IN_AXES,
    NEW_STATE_OUT_AXES,
    OUT_AXES,
    STATE_IN_AXES,
    STATE_OUT_AXES,
    UNEXPECTED,
    Axes,
    NewStateAxes,
    StateAxesField,
    StateAxesLike,
    vmap_state_axes,
)
from statejax._transforms.mapping import StatefulMapping
from statejax.extend import (
    BatchAxisError,
    PureCore,
    SpecError,
    Split,
    State,
    StatefulFunction,
    Transform,
    TransformSpec,
    hookimpl,
    parse_spec,
)

__all__ = ["Pmap2NewStatesSpec", "Pmap2Spec", "PmapSpec", "pmap", "pmap2", "pmap2_new_states"]

P = ParamSpec("P")
R = TypeVar("R")

#: The mesh axis name when the user gives none (collectives need a name to refer to).
_DEFAULT_AXIS = "_statejax_pmap"


def _check_devices(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        raise ValueError(
            f"{value!r} ({type(value).__name__}) is not a sequence of devices; give e.g. "
            "jax.devices()[:4], or None for the first local devices"
        )
    devices = tuple(value)
    if not devices:
        raise ValueError("devices is empty; give at least one device, or None")
    for d in devices:
        if not isinstance(d, jax.Device):
            raise ValueError(
                f"{d!r} ({type(d).__name__}) is not a jax.Device; take devices from jax.devices()"
            )
    if len(set(devices)) != len(devices):
        raise ValueError("devices lists a device twice; give each device once")
    return devices


def _check_backend(value: str | None) -> str | None:
    if value is not None:
        try:
            jax.local_devices(backend=value)
        except RuntimeError as exc:
            raise ValueError(f"backend {value!r} is not available here: {exc}") from None
    return value


_DEVICES = pydantic.Field(
    default=None,
    description="the devices to map over, one per element of the mapped axis "
    "(None: the first local devices of `backend`)",
)
_BACKEND = pydantic.Field(
    default=None, description="the backend whose local devices are used ('cpu', 'gpu', ...)"
)


class _DeviceOptions(TransformSpec):
    """The options `pmap` and `pmap2` share beyond the mapping: devices, statics, donation."""

    devices: tuple[Any, ...] | None = _DEVICES
    backend: str | None = _BACKEND
    static_broadcasted_argnums: Annotated[tuple[Index, ...], AS_TUPLE] = pydantic.Field(
        default=(),
        description="positions of hashable arguments closed over per call (one compilation "
        "per value), broadcast to every device and not mapped",
    )
    donate_argnums: Annotated[tuple[Index, ...], AS_TUPLE] = pydantic.Field(
        default=(),
        description="positions of arguments whose buffers the call may reuse for its outputs",
    )

    _devices = pydantic.field_validator("devices", mode="before")(lambda cls, v: _check_devices(v))
    _backend = pydantic.field_validator("backend", mode="after")(lambda cls, v: _check_backend(v))

    @pydantic.model_validator(mode="after")
    def _donated_not_static(self) -> Any:
        both = sorted(set(self.static_broadcasted_argnums) & set(self.donate_argnums))
        if both:
            raise ValueError(
                f"arguments {both} are both static and donated; a static argument is a "
                "Python value, not a buffer: drop it from donate_argnums"
            )
        return self


class PmapSpec(LaneSpec, _DeviceOptions):
    """Options of `pmap`: `vmap`'s, plus the devices to run on, static and donated arguments."""


class Pmap2NewStatesSpec(TransformSpec):
    """Options of `pmap2_new_states`."""

    state_tag: str | None = pydantic.Field(default=None, description="tag added to every new state")
    axis_size: PositiveCount | None = pydantic.Field(
        default=None, description="the number of devices (None: jax.local_device_count())"
    )
    axis_name: AxisName | None = pydantic.Field(
        default=None, description="name of the device axis, for collectives"
    )
    state_out_axes: NewStateAxes = NEW_STATE_OUT_AXES


class Pmap2Spec(_DeviceOptions):
    """Options of `pmap2`: `pmap`'s, with BrainState's names for the state selectors."""

    in_axes: Axes = IN_AXES
    out_axes: Axes = OUT_AXES
    axis_name: AxisName | None = AXIS_NAME
    axis_size: Count | None = pydantic.Field(
        default=None, description="the number of devices, needed when nothing is mapped"
    )
    state_in_axes: StateAxesField = STATE_IN_AXES
    state_out_axes: StateAxesField = STATE_OUT_AXES
    unexpected_out_state_mapping: Literal["raise"] = UNEXPECTED


# --- the device map: jax.vmap's calling convention, run by jit(shard_map) -----------------


class _Parallel(Batched):
    """vmap's lifted pure core with the lanes laid over devices (`_map` below)."""

    spec: PmapSpec

    def _map(self, inner: Callable[..., Any], in_axes: Any, out_axes: Any) -> Callable[..., Any]:
        return _DeviceMap(self, inner, in_axes, out_axes)

    def _batched_write_error(self, state: State[Any]) -> BatchAxisError:
        name = self.spec.axis_name
        reduce = (
            f"jax.lax.pmean(value, {name!r})"
            if name is not None
            else "give pmap an axis_name, then jax.lax.pmean(value, axis_name)"
        )
        return BatchAxisError(
            f"{self.name}: the function wrote a value that differs across devices into "
            f"{self._describe(state)}, which is replicated (not in in_states or out_states). "
            "Select it with in_states/out_states (e.g. out_states={0: state}) to keep one "
            f"value per device, or reduce the value first ({reduce})."
        )

    def _unlocated_batched_output(self) -> None:
        raise ValueError(
            f"{self.name}: out_axes is None for an output that differs across devices; "
            "give it a mapped axis (out_axes=0) or reduce it first (jax.lax.pmean / psum)"
        ) from None


class _DeviceMap:
    """`jax.vmap(inner, in_axes, out_axes)`'s behaviour, each lane on its own device.

    One `jax.jit(jax.shard_map(...))` per argument structure, mapped axes and size: a
    mapped leaf has its axis moved to the front and is split over a 1-D mesh; inside,
    each device sees its slice without the axis; outputs are stacked on axis 0 and moved
    to their `out_axes`. A cached call goes straight to the compiled code.
    """

    def __init__(
        self, owner: _Parallel, inner: Callable[..., Any], in_axes: Any, out_axes: Any
    ) -> None:
        self.owner = owner
        self.inner = inner
        self.in_axes = in_axes
        self.out_axes = out_axes
        self.compiled: dict[Hashable, Callable[..., Any]] = {}
        # Per argument structure: each leaf's mapped axis (a cached call skips the walk).
        self.axes_by_tree: dict[Any, list[int | None]] = {}

    def _flat_axes(self, args: tuple[Any, ...], treedef: Any) -> list[int | None]:
        found = self.axes_by_tree.get(treedef)
        if found is not None:
            return found
        axes: list[int | None] = []

        def visit(axis: int | None, sub: Any) -> None:
            axes.extend([axis] * len(jax.tree.leaves(sub)))

        jax.tree.map(visit, self.in_axes, args, is_leaf=lambda x: x is None)
        self.axes_by_tree[treedef] = axes
        return axes

    def _size(self, leaves: Sequence[Any], axes: list[int | None]) -> tuple[list[int | None], int]:
        label, spec = self.owner.name, self.owner.spec
        normalised: list[int | None] = []
        sizes: list[int] = []
        for leaf, axis in zip(leaves, axes, strict=True):
            if axis is None:
                normalised.append(None)
                continue
            rank = jnp.ndim(leaf)
            if not -rank <= axis < rank:
                raise ValueError(
                    f"{label}: pmap was requested to map its argument along axis {axis}, which "
                    f"implies that its rank should be at least {max(axis + 1, -axis)}, but is "
                    f"only {rank}"
                )
            axis %= rank
            normalised.append(axis)
            sizes.append(int(jnp.shape(leaf)[axis]))
        if len(set(sizes)) > 1:
            raise ValueError(
                f"{label}: pmap got inconsistent sizes for array axes to be mapped: "
                f"{sorted(set(sizes))}; every mapped argument and state needs the same size "
                "on its mapped axis (one slice per device)"
            )
        if not sizes:
            if spec.axis_size is None:
                raise ValueError(
                    f"{label}: axis_size must be specified when no argument or state is mapped"
                )
            return normalised, spec.axis_size
        if spec.axis_size is not None and spec.axis_size != sizes[0]:
            raise BatchAxisError(
                f"{label}: axis_size={spec.axis_size} conflicts with the mapped size "
                f"{sizes[0]} of the arguments and states. Give axis_size={sizes[0]}, or leave "
                "axis_size out (the mapped arguments give the number of devices)."
            )
        return normalised, sizes[0]

    def _devices(self, size: int) -> tuple[Any, ...]:
        label, spec = self.owner.name, self.owner.spec
        if spec.devices is not None:
            if len(spec.devices) != size:
                raise ValueError(
                    f"{label}: the mapped axis has size {size}, but devices lists "
                    f"{len(spec.devices)} devices; pmap runs one slice per device, so give "
                    f"{size} devices or map an axis of size {len(spec.devices)}"
                )
            return spec.devices
        local = jax.local_devices(backend=spec.backend)
        if not 0 < size <= len(local):
            raise ValueError(
                f"{label}: the mapped axis has size {size}, but pmap runs one slice per device "
                f"and {len(local)} local devices are available; map an axis of size 1 to "
                f"{len(local)} (use vmap inside pmap for more elements per device)"
            )
        return tuple(local[:size])

    def __call__(self, *args: Any) -> Any:
        context = jax.sharding.get_abstract_mesh()
        if not context.empty and context.manual_axes:
            raise ValueError(
                f"{self.owner.name}: pmap inside another pmap or shard_map is not supported; "
                "map the inner level with vmap, or use one shard_map over a 2-D mesh"
            )
        leaves, treedef = jax.tree.flatten(args)
        axes, size = self._size(leaves, self._flat_axes(args, treedef))
        devices = self._devices(size)
        key = (treedef, tuple(axes), devices)
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self.compiled[key] = self._build(treedef, axes, devices)
        out = compiled(*leaves)
        if out[1]:
            # The function creates states: they are new objects on every run, so every
            # call traces it again (as vmap does) instead of reusing compiled code.
            self.compiled.pop(key, None)
        if out[0] or out[1]:
            # A run-time error on the devices (a jax.debug.callback that raises) poisons
            # the results instead of failing the dispatch: wait for the written and
            # created states' values so that it raises here, before any state changes.
            wait_for_results((*out[0], *out[1]))
        return out

    def _build(
        self, treedef: Any, axes: list[int | None], devices: tuple[Any, ...]
    ) -> Callable[..., Any]:
        owner, inner, out_axes = self.owner, self.inner, self.out_axes
        name = owner.spec.axis_name if owner.spec.axis_name is not None else _DEFAULT_AXIS
        mesh = Mesh(np.array(devices), (name,))
        mapped, replicated = PartitionSpec(name), PartitionSpec()  # type: ignore[no-untyped-call]
        size = len(devices)
        # What may differ across devices is checked as vmap checks it, by an abstract
        # trace of the lanes when this is traced (never on a cached call): a lane's value
        # written into a replicated state or returned with out_axes None is an error.
        # (Stacked on axis 0 there: an out of range out_axes is reported below.)
        stacked = jax.tree.map(lambda a: a if a is None else 0, out_axes, is_leaf=_is_none)
        lanes = jax.vmap(
            inner, in_axes=self.in_axes, out_axes=stacked, axis_size=size, axis_name=name
        )

        def per_device(*leaves: Any) -> Any:
            values = [
                x if a is None else jnp.squeeze(x, 0) for x, a in zip(leaves, axes, strict=True)
            ]
            result = inner(*jax.tree.unflatten(treedef, values))
            return jax.tree.map(
                lambda a, sub: sub if a is None else jax.tree.map(lambda x: x[None], sub),
                out_axes,
                result,
                is_leaf=lambda x: x is None,
            )

        out_specs = jax.tree.map(
            lambda a: replicated if a is None else mapped, out_axes, is_leaf=lambda x: x is None
        )
        sharded = jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=tuple(replicated if a is None else mapped for a in axes),
            out_specs=out_specs,
            # As jax.pmap: each device's values are its own (no automatic psum of the
            # gradients of replicated values, which check_vma=True would insert).
            check_vma=False,
        )

        def run(*leaves: Any) -> Any:
            jax.eval_shape(lanes, *jax.tree.unflatten(treedef, leaves))
            front = [
                x if a is None else jnp.moveaxis(x, a, 0) for x, a in zip(leaves, axes, strict=True)
            ]
            result = sharded(*front)
            _check_out_axes(owner.name, out_axes[2], result[2])
            return jax.tree.map(
                lambda a, sub: (
                    sub if a is None else jax.tree.map(lambda x: jnp.moveaxis(x, 0, a), sub)
                ),
                out_axes,
                result,
                is_leaf=lambda x: x is None,
            )

        # inner's arguments are (read values, written values, args, kwargs): the leaves
        # of the donated positional arguments are the ones to donate.
        positions = jax.tree.unflatten(treedef, range(treedef.num_leaves))
        donated = sorted(
            leaf
            for i in owner.spec.donate_argnums
            if i < len(positions[2])
            for leaf in jax.tree.leaves(positions[2][i])
        )
        # Every input enters with its place on the mesh (`in_shardings`). A state's value
        # is put there in Python unless it already is (it came back from the last call),
        # so a fresh state and a returned one give jit the same input type and a cached
        # call never retraces. A fresh argument is left to jit's C++ dispatch to place
        # (as jax.pmap does); one committed elsewhere, which jit would refuse, is moved.
        shardings = tuple(
            NamedSharding(mesh, replicated if a is None else _spec_at(name, a)) for a in axes
        )
        n_state_leaves = len(jax.tree.leaves(positions[:2]))
        jitted = jax.jit(run, in_shardings=shardings, donate_argnums=donated)
        jitted.__name__ = owner.name  # type: ignore[attr-defined]

        # Which state each state leaf belongs to (split.states: the read, then the written).
        state_of_leaf = {
            i: k
            for k, sub in enumerate([*positions[0], *positions[1]])
            for i in jax.tree.leaves(sub)
        }

        def call(*leaves: Any) -> Any:
            if donated:
                _refuse_donated_states(owner, leaves, donated, state_of_leaf)
            placed = [
                x if _in_place(x, s, fresh_ok=i >= n_state_leaves) else jax.device_put(x, s)
                for i, (x, s) in enumerate(zip(leaves, shardings, strict=True))
            ]
            return jitted(*placed)

        return call


def _refuse_donated_states(
    owner: _Parallel, leaves: Sequence[Any], donated: Sequence[int], state_of_leaf: dict[int, int]
) -> None:
    """A donated argument that is also a state's value: XLA cannot donate a buffer the
    call also reads (on several devices the process may crash), so refuse it first."""
    ids = {id(leaves[i]) for i in donated}
    for i, k in state_of_leaf.items():
        if id(leaves[i]) in ids:
            raise SpecError(
                f"{owner.name}: an argument is donated (donate_argnums) but its array is also "
                f"the value of {owner._describe(owner.split.states[k])}, which the call reads; "
                "XLA cannot donate a buffer the call also reads, and the state would lose its "
                "value. Pass a copy (jnp.copy(x)), or stop donating that argument."
            )


def _in_place(x: Any, sharding: NamedSharding, fresh_ok: bool) -> bool:
    """Whether `x` can go to the compiled call as it is (no `device_put` first)."""
    if isinstance(x, jax.core.Tracer):
        return True
    if not isinstance(x, jax.Array):
        return fresh_ok
    if x.committed:
        return bool(x.sharding == sharding)
    return fresh_ok


def _is_none(x: object) -> bool:
    return x is None


def _check_out_axes(label: str, out_axes: Any, out: Any) -> None:
    """Each result's `out_axes` entry must be an axis of the stacked result."""

    def check(axis: int | None, sub: Any) -> None:
        for leaf in jax.tree.leaves(sub):
            if axis is not None and not -leaf.ndim <= axis < leaf.ndim:
                raise ValueError(
                    f"{label}: out_axes={axis} puts the device axis outside a result of "
                    f"{leaf.ndim - 1} axes per device; give an axis from {-leaf.ndim} to "
                    f"{leaf.ndim - 1}"
                )

    jax.tree.map(check, out_axes, out, is_leaf=lambda x: x is None)


def _spec_at(name: Any, axis: int) -> PartitionSpec:
    """The spec that splits axis `axis` over mesh axis `name`."""
    return PartitionSpec(*([None] * axis), name)  # type: ignore[no-untyped-call]


# --- pmap ---------------------------------------------------------------------------------


@overload
def pmap(
    fn: Callable[P, R],
    /,
    axis_name: Hashable | None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    static_broadcasted_argnums: int | Iterable[int] = (),
    devices: Sequence[Any] | None = None,
    backend: str | None = None,
    axis_size: int | None = None,
    donate_argnums: int | Iterable[int] = (),
    in_states: StateAxesLike = None,
    out_states: StateAxesLike = None,
    split_keys: bool = True,
) -> Callable[P, R]: ...
@overload
def pmap(
    fn: None = None,
    /,
    axis_name: Hashable | None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    static_broadcasted_argnums: int | Iterable[int] = (),
    devices: Sequence[Any] | None = None,
    backend: str | None = None,
    axis_size: int | None = None,
    donate_argnums: int | Iterable[int] = (),
    in_states: StateAxesLike = None,
    out_states: StateAxesLike = None,
    split_keys: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def pmap(
    fn: Callable[P, R] | None = None,
    /,
    axis_name: Hashable | None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    static_broadcasted_argnums: int | Iterable[int] = (),
    devices: Sequence[Any] | None = None,
    backend: str | None = None,
    axis_size: int | None = None,
    donate_argnums: int | Iterable[int] = (),
    in_states: StateAxesLike = None,
    out_states: StateAxesLike = None,
    split_keys: bool = True,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Map `fn` over devices (SPMD), as `jax.pmap`, threading the states it reads and writes.

    Each element of the mapped axis runs on its own device; the arguments are
    mapped as `in_axes` says (`jax.pmap`'s rules) and the result is stacked on
    `out_axes`. Collectives (`jax.lax.psum(x, axis_name)`, `pmean`) work across the
    devices. States follow `vmap`'s rules, with one lane per device:

    - `in_states` (a filter, a State, an iterable or mapping of States, meaning
      axis 0, or `{axis: selector}`): split over the devices on that axis and
      written back stacked;
    - `out_states`: replicated on the way in, written back stacked (one value per
      device);
    - every other state is replicated; writing a value that differs across
      devices into it is a `BatchAxisError` naming the state (reduce it with
      `jax.lax.pmean` first, or select it in `out_states`).

    Each device draws from its own random key (`split_keys=False`: the same key on
    every device). States `fn` creates come out stacked, one slice per device.
    Runs as `jax.jit(jax.shard_map(...))` on a one-axis mesh, compiled once per
    argument signature: a cached call does not retrace (the states' values are placed
    on the devices first; inside an enclosing `jit`, which places nothing, the second
    call traces once more, as the written states now live on the devices). Gradients
    are per device, as under `jax.pmap`: `jax.lax.pmean` them. If `fn` raises, no
    state changes.

    Args:
        fn: the function to map; omit it for a decorator.
        axis_name: the name of the device axis, for collectives.
        in_axes: the axis of each positional argument to map (int, None, or a tuple
            of them, one per argument); keyword arguments are mapped on axis 0.
        out_axes: where the device axis goes in the result.
        static_broadcasted_argnums: positions of hashable arguments that are passed
            to every device as they are (not mapped; their `in_axes` entries are
            dropped); each new value compiles anew, as `jax.pmap`'s.
        devices: the devices to run on, one per element of the mapped axis (None:
            the first local devices).
        backend: the backend whose devices are used (`'cpu'`, `'gpu'`, ...).
        axis_size: the number of devices, needed when nothing is mapped.
        donate_argnums: positions of arguments whose buffers the call may reuse for
            its outputs (as `jax.pmap`'s; the arrays given are unusable afterwards
            where the backend donates).
        in_states: the states split over the devices and written back stacked.
        out_states: the states written back stacked.
        split_keys: give each device its own key from every `RandomState`.

    Returns:
        The mapped function, or a decorator when `fn` is omitted.

    Raises:
        SpecError: an option is invalid (a selector that is neither a filter nor
            States, a device that is not a `jax.Device`, ...).
        BatchAxisError: (when called) a device-varying value was written into a
            replicated state, or a mapped state's size does not match.
        ValueError: (when called) the mapped axis is larger than the number of
            devices, the mapped sizes disagree, or the call is inside another `pmap`
            or `shard_map`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> n = jax.local_device_count()
        >>> w = sj.ParamState(jnp.ones(3))                    # replicated on every device
        >>> seen = sj.State(jnp.zeros(n))                    # one slot per device
        >>> @sj.transform.pmap(axis_name="d", in_states={0: seen})
        ... def step(x):
        ...     seen.value = seen.value + x.sum()
        ...     return jax.lax.psum(x @ w.value, "d")
        >>> out = step(jnp.ones((n, 3)))
        >>> out.tolist() == [3.0 * n] * n, seen.value.tolist() == [3.0] * n
        (True, True)
    """
    spec = parse_spec(
        PmapSpec,
        "pmap",
        in_axes=in_axes,
        out_axes=out_axes,
        in_states=in_states,
        out_states=out_states,
        axis_size=axis_size,
        axis_name=axis_name,
        split_keys=split_keys,
        devices=devices,
        backend=backend,
        static_broadcasted_argnums=static_broadcasted_argnums,
        donate_argnums=donate_argnums,
    )
    if fn is None:
        return functools.partial(_pmap, spec=spec)
    return _pmap(fn, spec=spec)


def _pmap(fn: Callable[P, R], spec: PmapSpec) -> Callable[P, R]:
    if spec.static_broadcasted_argnums:
        # Static arguments are closed over per call, one mapped variant per value, as
        # StatefulMapping does for its static_argnums.
        return _PmapMapping(
            fn,
            spec,
            "pmap",
            in_axes=spec.in_axes,
            out_axes=spec.out_axes,
            axis_size=spec.axis_size,
            axis_name=spec.axis_name,
            static_argnums=spec.static_broadcasted_argnums,
        )
    name = f"statejax.pmap({name_of(fn)})"

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        pure.hands_out_created = True  # created states come out stacked per device
        return _Parallel(split, pure, spec, name, None)

    stateful: StatefulFunction[R] = StatefulFunction(fn, name, lift, staged=True)
    return stateful.as_function(fn)


# --- pmap2 (BrainState) -------------------------------------------------------------------


class _PmapMapping(StatefulMapping):
    """A `StatefulMapping` mapped by `pmap`: `pmap2`'s result, and `pmap`'s with statics.

    `StatefulMapping` closes over the static arguments (one variant per value); each
    variant is `pmap` of the rest, with `donate_argnums` shifted past the statics.
    """

    def __init__(self, fun: Callable[..., Any], spec: PmapSpec, name: str, **options: Any):
        self._pmap_spec = spec
        super().__init__(fun, **options, name=name)

    def _map(self, fun: Callable[..., Any], in_axes: Any) -> Callable[..., Any]:
        spec, statics = self._pmap_spec, self.static_argnums
        donate = tuple(i - sum(s < i for s in statics) for i in spec.donate_argnums)
        update = {"in_axes": in_axes, "static_broadcasted_argnums": (), "donate_argnums": donate}
        return _pmap(fun, spec.model_copy(update=update))


def pmap2(
    fn: Callable[..., Any] | None = None,
    axis_name: Hashable | None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    static_broadcasted_argnums: int | Iterable[int] = (),
    devices: Sequence[Any] | None = None,
    backend: str | None = None,
    axis_size: int | None = None,
    donate_argnums: int | Iterable[int] = (),
    global_arg_shapes: tuple[tuple[int, ...], ...] | None = None,
    state_in_axes: Any = None,
    state_out_axes: Any = None,
    unexpected_out_state_mapping: str = "raise",
) -> Any:
    """BrainState's `pmap2`: `pmap` with `state_in_axes`/`state_out_axes`, as a `StatefulMapping`.

    `state_in_axes` are `pmap`'s `in_states` (a selector for axis 0, or `{axis:
    selector}`, where the key `None` marks states kept whole) and `state_out_axes`
    its `out_states`; every other state is replicated on the devices, and writing a
    device-varying value into one raises `statejax.BatchAxisError` naming the state.
    Each device draws from its own random key. Without `fn`, returns a
    `functools.partial` to apply to the function.

    Args:
        fn: the function to map; omit it for a decorator.
        axis_name: the name of the device axis, for collectives.
        in_axes: as `pmap`'s.
        out_axes: as `pmap`'s.
        static_broadcasted_argnums: positions of hashable arguments closed over per
            call, not mapped (BrainState raises `NotImplementedError`).
        devices: the devices to run on (None: the first local devices).
        backend: the backend whose devices are used.
        axis_size: the number of devices, needed when nothing is mapped.
        donate_argnums: positions of arguments whose buffers may be reused (BrainState
            raises `NotImplementedError`).
        global_arg_shapes: only `None` (JAX removed it from `jax.pmap`).
        state_in_axes: the states split over devices and written back stacked.
        state_out_axes: the states written back stacked.
        unexpected_out_state_mapping: only `"raise"` (see `docs/porting.md`).

    Returns:
        A `StatefulMapping` running `fn` on the devices, or a decorator.

    Raises:
        SpecError: an option is invalid (an argument both static and donated, a
            selector that is neither a filter nor States, ...).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> n = jax.local_device_count()
        >>> param = sj.ParamState(jnp.ones(2))
        >>> @sj.transform.pmap2(axis_name="d", state_out_axes={0: sj.ParamState})
        ... def update(delta):
        ...     param.value = param.value + delta     # one value per device
        ...     return jax.lax.pmean(delta, "d")
        >>> _ = update(jnp.ones((n, 2)))
        >>> param.value.shape == (n, 2), param.value.tolist()[0]
        (True, [2.0, 2.0])
    """
    if fn is None:
        return functools.partial(
            pmap2,
            axis_name=axis_name,
            in_axes=in_axes,
            out_axes=out_axes,
            static_broadcasted_argnums=static_broadcasted_argnums,
            devices=devices,
            backend=backend,
            axis_size=axis_size,
            donate_argnums=donate_argnums,
            global_arg_shapes=global_arg_shapes,
            state_in_axes=state_in_axes,
            state_out_axes=state_out_axes,
            unexpected_out_state_mapping=unexpected_out_state_mapping,
        )
    if global_arg_shapes is not None:
        raise SpecError(
            f"statejax.pmap2: global_arg_shapes={global_arg_shapes!r} is not offered: JAX "
            "removed it from jax.pmap; pass None and give each process its local arrays."
        )
    options = parse_spec(
        Pmap2Spec,
        "pmap2",
        in_axes=in_axes,
        out_axes=out_axes,
        axis_name=axis_name,
        axis_size=axis_size,
        devices=devices,
        backend=backend,
        state_in_axes=state_in_axes,
        state_out_axes=state_out_axes,
        unexpected_out_state_mapping=unexpected_out_state_mapping,
        static_broadcasted_argnums=static_broadcasted_argnums,
        donate_argnums=donate_argnums,
    )
    spec = parse_spec(
        PmapSpec,
        "pmap2",
        in_axes=in_axes,
        out_axes=out_axes,
        in_states=vmap_state_axes(options.state_in_axes),
        out_states=vmap_state_axes(options.state_out_axes),
        axis_size=axis_size,
        axis_name=axis_name,
        devices=devices,
        backend=backend,
        donate_argnums=donate_argnums,
    )
    return _PmapMapping(
        fn,
        spec,
        "pmap2",
        in_axes=in_axes,
        out_axes=out_axes,
        state_in_axes=state_in_axes,
        state_out_axes=state_out_axes,
        unexpected_out_state_mapping=unexpected_out_state_mapping,
        axis_size=axis_size,
        axis_name=axis_name,
        static_argnums=static_broadcasted_argnums,
    )


def pmap2_new_states(
    module: Any,
    init_kwargs: Mapping[str, Any],
    state_tag: str | None = None,
    axis_size: int | None = None,
    state_out_axes: Any = None,
    axis_name: Hashable | None = None,
) -> dict[int | None, list[State[Any]]]:
    """Create `module`'s states once per device: each comes out stacked, one slice per device.

    Runs `module.init_all_states(**init_kwargs)` (on a `statejax.Module`: every
    sub-module's `init_state`) under `pmap` over `axis_size`
    devices (default: `jax.local_device_count()`). Every state it creates is
    stacked on an axis of that size (axis 0 unless `state_out_axes` says otherwise);
    each device draws from its own random key, so random initialisations differ per
    device. `state_tag` is added to the tags of every new state.

    Args:
        module: the module whose states to create.
        init_kwargs: keyword arguments of the init method.
        state_tag: a tag added to every new state.
        axis_size: the number of devices (a positive int; None: all local ones).
        state_out_axes: where each new state's device axis goes: a filter for axis
            0, or `{axis: filter}` (`None`: kept whole, the same on every device);
            unselected states: axis 0 (as `vmap2_new_states`).
        axis_name: the name of the device axis, for collectives in the init.

    Returns:
        `{axis: [the new states on it]}`, as BrainState's; an axis with no state is left
            out.

    Raises:
        SpecError: an option is invalid, a selector of `state_out_axes` matches no new
            state, or the module has no `init_all_states` method.
        BatchAxisError: a state kept whole differs between devices, or its axis is out
            of range.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> class Counter(sj.Module):
        ...     def init_state(self):
        ...         self.count = sj.ShortTermState(jnp.zeros(()))
        >>> m = Counter()
        >>> new = sj.transform.pmap2_new_states(m, {})
        >>> m.count.value.shape == (jax.local_device_count(),), new[0][0] is m.count
        (True, True)
    """
    name = "statejax.pmap2_new_states"
    spec = parse_spec(
        Pmap2NewStatesSpec,
        "pmap2_new_states",
        state_tag=state_tag,
        axis_size=axis_size,
        state_out_axes=state_out_axes,
        axis_name=axis_name,
    )
    init = module_initializer(name, module, init_kwargs, "statejax.transform.pmap")
    size = spec.axis_size if spec.axis_size is not None else jax.local_device_count()

    def run(init_lane: Callable[[], Any], out_axes: tuple[int | None, ...]) -> Any:
        return pmap(init_lane, spec.axis_name, axis_size=size, out_axes=out_axes)()

    return map_new_states(name, module, init, init_kwargs, spec.state_tag, spec.state_out_axes, run)


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "pmap",
            pmap,
            PmapSpec,
            "map over devices (jit of shard_map); states split, stacked or replicated",
        )
    )
    registry.register(
        Transform(
            "pmap2",
            pmap2,
            Pmap2Spec,
            "BrainState's pmap2: pmap with state_in_axes/state_out_axes (a StatefulMapping)",
        )
    )
    registry.register(
        Transform(
            "pmap2_new_states",
            pmap2_new_states,
            Pmap2NewStatesSpec,
            "create a module's states once per device, stacked (ensembles over devices)",
        )
    )

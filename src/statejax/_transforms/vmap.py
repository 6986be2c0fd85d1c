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
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ParamSpec, TypeVar, overload

import jax
import jax.numpy as jnp
import pydantic

from statejax._transforms._common import (
    AxisName,
    PositiveCount,
    SpecTypeError,
    cached_call,
    jit_disabled,
    name_of,
    run_eagerly,
)
from statejax._transforms._lanes import Batched, LaneSpec
from statejax._transforms._loop_core import ScanSpec, scan_states
from statejax._transforms._selectors import (
    AXIS_NAME,
    IN_AXES,
    OUT_AXES,
    SPMD_AXIS_NAME,
    Axes,
    StateAxesLike,
)
from statejax.extend import (
    Lift,
    PureCore,
    SpecError,
    Split,
    StatefulFunction,
    Transform,
    TransformSpec,
    current_trace,
    hookimpl,
    parse_spec,
)

__all__ = [
    "MapSpec",
    "VmapNewStatesSpec",
    "VmapSpec",
    "map",
    "vmap",
    "vmap_new_states",
]

P = ParamSpec("P")
R = TypeVar("R")


class VmapSpec(LaneSpec):
    """Options of `vmap`."""

    spmd_axis_name: AxisName | None = SPMD_AXIS_NAME

    def spmd_axis(self) -> Any:
        """`jax.vmap`'s `spmd_axis_name`."""
        return self.spmd_axis_name


class MapSpec(TransformSpec):
    """Options of `map`."""

    batch_size: PositiveCount | None = pydantic.Field(
        default=None,
        description="run this many elements at a time under vmap (None: one at a time)",
    )


class VmapNewStatesSpec(TransformSpec):
    """Options of `vmap_new_states`."""

    in_axes: Axes = IN_AXES
    out_axes: Axes = OUT_AXES
    axis_name: AxisName | None = AXIS_NAME
    spmd_axis_name: AxisName | None = SPMD_AXIS_NAME
    axis_size: PositiveCount | None = pydantic.Field(
        default=None, description="the batch size, when no argument is mapped; a positive int"
    )
    state_tag: str | None = pydantic.Field(
        default=None, description="tag given to the new states that have no tag of their own"
    )


# --- vmap ---------------------------------------------------------------------------------


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
        return Batched(split, pure, spec, name, map_batch)

    stateful: StatefulFunction[R] = StatefulFunction(fn, name, lift)
    return stateful.as_function(fn)


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
    # One stateful call around the whole map: the engine merges the writes of every
    # batch only after the last one ran, so an error anywhere changes no state.
    if jit_disabled():
        eager: R = run_eagerly(name, _map_runner(f, n, bs, fn_name), *xs)
        return eager

    def build(fns: Sequence[Callable[..., Any]]) -> tuple[Callable[..., Any], str, Lift]:
        return _map_runner(fns[0], n, bs, fn_name), name, _pure

    # At the top level, one compiled map per function, size and batch size: a repeated
    # call with the same shapes traces nothing.
    stateful = cached_call("map", (f,), (n, bs), build)
    if stateful is None:
        stateful = StatefulFunction(_map_runner(f, n, bs, fn_name), name, _pure)
    out: R = stateful(*xs)
    return out


def _pure(split: Split, pure: PureCore) -> Callable[..., Any]:
    return pure


def _map_runner(f: Callable[..., Any], n: int, bs: int | None, fn_name: str) -> Callable[..., Any]:
    """The function `map(f, xs, batch_size=bs)` runs on `xs` of leading size `n`."""

    def one_at_a_time(g: Callable[..., Any], *xs: Any) -> Any:
        def body(carry: None, x: tuple[Any, ...]) -> tuple[None, Any]:
            return carry, g(*x)

        return scan_states(body, None, xs, ScanSpec(), "map", fn_name)[1]

    def run(*xs: Any) -> Any:
        if bs is None or n == 0:
            return one_at_a_time(f, *xs)
        full, rem = divmod(n, bs)
        batched = _vmap(f, VmapSpec(), map_batch=bs)
        parts: list[Any] = []
        if full:  # the full batches one after the other, then the remainder as one batch
            main = jax.tree.map(lambda a: a[: full * bs].reshape(full, bs, *a.shape[1:]), xs)
            out = one_at_a_time(batched, *main)
            parts.append(jax.tree.map(lambda a: a.reshape(full * bs, *a.shape[2:]), out))
        if rem:
            parts.append(batched(*jax.tree.map(lambda a: a[full * bs :], xs)))
        return jax.tree.map(lambda *a: jnp.concatenate(a), *parts) if full and rem else parts[0]

    return run


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

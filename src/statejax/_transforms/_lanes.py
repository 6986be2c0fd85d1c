"""The lane core of the mapping transforms: `vmap`'s lifted pure core and its diagnosis.

Private to the built-in plugins. `Batched` is the pure core of one split lifted
over lanes: it places each state (mapped on its axis, batched by a
`statejax_batch_state` hook, or broadcast), runs `jax.vmap` (or, in `pmap`, a map
over devices: a subclass overrides `_map`), and turns JAX's batching errors into
messages that name the state and the fix. `LaneSpec` holds the options every map
over lanes takes. `map_new_states` and `module_initializer` are the body of the
`*_new_states` transforms (`vmap2_new_states`, `pmap2_new_states`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import jax
import jax.numpy as jnp
import pydantic

from statejax._transforms._common import AxisName, Count, name_of
from statejax._transforms._selectors import (
    AXIS_NAME,
    AXIS_SIZE,
    IN_AXES,
    IN_STATES,
    OUT_AXES,
    OUT_STATES,
    Axes,
    MappedStates,
    MappingStateAxes,
    StateAxes,
    StateSelector,
)
from statejax.extend import (
    BatchAxisError,
    PureCore,
    SpecError,
    Split,
    State,
    StateBatching,
    TransformSpec,
    adopt_created,
    batch_rule,
    current_trace,
    describe_state,
)
from statejax.filters import Path
from statejax.graph import Module, iter_states

__all__ = ["Batched", "LaneSpec", "map_new_states", "module_initializer"]


class LaneSpec(TransformSpec):
    """The options of a state-aware map over lanes: `vmap`'s and `pmap`'s in common."""

    in_axes: Axes = IN_AXES
    out_axes: Axes = OUT_AXES
    in_states: MappedStates = IN_STATES
    out_states: MappedStates = OUT_STATES
    axis_size: Count | None = AXIS_SIZE
    axis_name: AxisName | None = AXIS_NAME
    split_keys: bool = pydantic.Field(
        default=True,
        description="give each lane its own key from every RandomState the function touches "
        "(False: broadcast the key, so every lane draws the same numbers)",
    )

    def spmd_axis(self) -> Any:
        """`jax.vmap`'s `spmd_axis_name` (`vmap` has one; other maps over lanes none)."""
        return None


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


class Batched:
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
        self._refuse_moved_axes(in_ax, out_ax)
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
            spmd_axis_name=spec.spmd_axis(),
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

    def _refuse_moved_axes(self, in_ax: dict[int, int], out_ax: dict[int, int]) -> None:
        """A state mapped in on one axis and out on another would come back with its batch
        axis moved (a (4, 3) value stored as (3, 4)), and the next call would map it on
        the wrong axis: refused, as BrainState's `vmap2` refuses it."""
        for state in self.split.states:
            key = id(state)
            if key in in_ax and key in out_ax and in_ax[key] != out_ax[key]:
                raise BatchAxisError(
                    f"{self.name}: {self._describe(state)} is mapped on input axis "
                    f"{in_ax[key]} (in_states, vmap2's state_in_axes) but written back on "
                    f"axis {out_ax[key]} (out_states, state_out_axes), which would move its "
                    "batch axis. No state was changed. Select it on the same axis in both "
                    "(or only in in_states, whose axis it is written back on); to move the "
                    "axis, return the value and store it with jnp.moveaxis outside the map."
                )

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
            spmd_axis_name=self.spec.spmd_axis(),
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


# --- the states the *_new_states transforms create ---------------------------------------


def _new_state_order(axes: MappingStateAxes) -> list[tuple[int | None, StateSelector]]:
    """BrainState's priority: axis None first, then the other axes as given, axis 0 last."""
    return sorted(axes, key=lambda pair: 0 if pair[0] is None else 2 if pair[0] == 0 else 1)


def map_new_states(
    name: str,
    module: Any,
    init: Callable[..., Any],
    init_kwargs: Mapping[str, Any],
    tag: str | None,
    state_out_axes: MappingStateAxes,
    run: Callable[[Callable[[], Any], tuple[int | None, ...]], Any],
) -> dict[int | None, list[State[Any]]]:
    """The body of `vmap2_new_states` and `pmap2_new_states`: `run(init_lane, out_axes)`
    maps `init_lane` (creating the new states stacked on axis 0) and returns its result,
    the values of the states routed to another axis, placed by `out_axes`."""
    ordered = _new_state_order(state_out_axes)
    axes = list(dict.fromkeys([a for a, _ in ordered if a != 0] + [0]))
    routed_axes = tuple(a for a in axes if a != 0)
    kwargs = dict(init_kwargs)
    # The new states of the last run of init_lane (the mapped pass), by axis, with their
    # path in the module and the rank of their value in one lane.
    groups: dict[int | None, list[tuple[State[Any], Path | None, int]]] = {}

    def init_lane() -> tuple[list[Any], ...]:
        trace = current_trace()
        if trace is None:  # pragma: no cover - the mapping runs its function in a trace
            raise RuntimeError(f"{name}: init_all_states ran outside the mapping's trace")
        before = len(trace.created)
        init(**kwargs)
        paths = {id(s): p for p, s in iter_states(module)}
        found: dict[int | None, list[tuple[State[Any], Path | None, int]]] = {a: [] for a in axes}
        hits = [False] * len(ordered)
        for state in trace.created[before:]:
            if tag is not None:
                state.add_tag(tag)
            path = paths.get(id(state))
            axis: int | None = 0
            for k, (a, sel) in reversed(list(enumerate(ordered))):
                if sel.matches(state, path or ()):
                    hits[k], axis = True, a
            rank = min((jax.numpy.ndim(leaf) for leaf in jax.tree.leaves(state.value)), default=0)
            found[axis].append((state, path, rank))
        for hit, (a, sel) in zip(hits, ordered, strict=True):
            if not hit:
                made = ", ".join(_new_name(s, p) for g in found.values() for s, p, _ in g)
                raise SpecError(
                    f"{name}: state_out_axes[{a}] = {sel!r} matches none of the states "
                    f"init_all_states creates (it creates: {made or 'none'}). Fix the selector "
                    "or remove it."
                )
        groups.clear()
        groups.update(found)
        return tuple([s.value for s, _, _ in found[a]] for a in routed_axes)

    try:
        routed = run(init_lane, routed_axes)
    except ValueError as exc:
        _explain_new_state_error(exc, name, groups)
        raise
    for axis, values in zip(routed_axes, routed, strict=True):
        for (state, _, _), value in zip(groups[axis], values, strict=True):
            state.value = value
    return {a: [s for s, _, _ in groups[a]] for a in axes if groups.get(a)}


def _new_name(state: State[Any], path: Path | None) -> str:
    """A new state in messages: its type and its path in the module (its value is a lane's)."""
    where = f"module.{'.'.join(map(str, path))}" if path else "not stored on the module"
    return f"{type(state).__name__} ({where})"


def _explain_new_state_error(
    exc: ValueError, name: str, groups: dict[int | None, list[tuple[State[Any], Path | None, int]]]
) -> None:
    """Name the new states behind JAX's error about `state_out_axes` (else leave it)."""
    if isinstance(exc, (SpecError, BatchAxisError)):
        return
    msg = str(exc)
    if "but output was batched" in msg and groups.get(None):
        names = ", ".join(_new_name(s, p) for s, p, _ in groups[None])
        raise BatchAxisError(
            f"{name}: state_out_axes keeps {names} whole (axis None), but the value "
            "init_all_states gives it differs between lanes (it depends on a random draw or "
            "on another new state). Put it on an axis instead, or compute its value from "
            "values that are the same in every lane."
        ) from None
    if "out of bounds" in msg:
        for axis, states in groups.items():
            for state, path, rank in states:
                if axis is not None and not -(rank + 1) <= axis <= rank:
                    raise BatchAxisError(
                        f"{name}: state_out_axes puts {_new_name(state, path)} on axis "
                        f"{axis}, but its value in one lane has {rank} axes, so its batched "
                        f"value has {rank + 1}: choose an axis from {-(rank + 1)} to {rank}."
                    ) from None


def module_initializer(
    name: str, module: Any, init_kwargs: Any, instead: str
) -> Callable[..., Any]:
    """`module.init_all_states`, checked, for the `*_new_states` transforms.

    Raises:
        SpecError: the module has no `init_all_states`, or `init_kwargs` is not a mapping.
    """
    init = getattr(module, "init_all_states", None)
    if not callable(init):
        raise SpecError(
            f"{name}: {type(module).__name__} has no init_all_states method; it calls "
            "module.init_all_states(**init_kwargs). Subclass statejax.Module (whose "
            f"init_all_states calls every init_state), or use {instead} on a function "
            "that creates the states."
        )
    if not isinstance(init_kwargs, Mapping):
        raise SpecError(
            f"{name}: init_kwargs must be a mapping of keyword arguments for init_all_states; "
            f"got {type(init_kwargs).__name__}. Give a dict, e.g. {{}}."
        )
    return init  # type: ignore[no-any-return]

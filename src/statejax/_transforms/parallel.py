"""`shard_map`: run a function that reads and writes states on every device of a mesh.

The pure core is handed to `jax.shard_map` inside `jax.jit`, so a cached call
goes straight to the compiled code. Each state enters with the `PartitionSpec`
its `state_in_specs` rule gives (replicated, `P()`, when no rule matches) and a
written state leaves with its `state_out_specs` rule (else its input spec).
Writing a value that varies across a mesh axis into a state whose spec does not
shard it on that axis is a `ShardingError` naming the state: reduce it first
(`lax.pmean`, `lax.psum`) or give the state a spec that shards it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ParamSpec, TypeVar

import jax
import pydantic
from jax.sharding import PartitionSpec

from statejax._errors import ShardingError
from statejax._transforms._common import name_of, run_eagerly, wait_for_results
from statejax._transforms._state_specs import (
    RESHAPED,
    StateRules,
    check_fits,
    parse_rules,
    resolve,
    state_paths,
)
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
from statejax.filters import Path

__all__ = ["ShardMapSpec", "shard_map"]

P = ParamSpec("P")
R = TypeVar("R")

_RULES_SCHEMA = pydantic.WithJsonSchema(
    {"description": "a PartitionSpec for every state, or {State or filter: PartitionSpec}"}
)


def _rules(value: object) -> StateRules:
    return parse_rules(value, (PartitionSpec,), "a PartitionSpec")


class ShardMapSpec(TransformSpec):
    """Options of `shard_map`."""

    mesh: Any = pydantic.Field(description="the jax.sharding.Mesh to run on")
    in_specs: Any = pydantic.Field(
        description="a PartitionSpec for every positional argument, or a tuple of them, one "
        "per positional argument (keyword arguments are replicated)"
    )
    out_specs: Any = pydantic.Field(description="a PartitionSpec or pytree of them for the result")
    state_in_specs: Annotated[StateRules, _RULES_SCHEMA] = pydantic.Field(
        default=(),
        description="how states enter: a PartitionSpec for every state the function touches, "
        "or {State, State type or filter: PartitionSpec} (first match wins; others replicated)",
    )
    state_out_specs: Annotated[StateRules, _RULES_SCHEMA] = pydantic.Field(
        default=(),
        description="how written states leave (same forms; unmatched: as they entered)",
    )
    check_vma: bool = pydantic.Field(
        default=True,
        description="let JAX check which values vary across devices (needed to catch a "
        "device-varying write into a replicated state)",
    )

    @pydantic.field_validator("mesh", mode="before")
    @classmethod
    def _mesh(cls, value: object) -> object:
        if not isinstance(value, (jax.sharding.Mesh, jax.sharding.AbstractMesh)):
            raise ValueError(
                f"{value!r} ({type(value).__name__}) is not a jax.sharding.Mesh; make one with "
                "jax.make_mesh((n,), ('data',))"
            )
        return value

    @pydantic.field_validator("in_specs", "out_specs", mode="before")
    @classmethod
    def _specs(cls, value: object) -> object:
        if isinstance(value, list):
            value = tuple(value)
        for leaf in jax.tree.leaves(value, is_leaf=lambda x: isinstance(x, PartitionSpec)):
            if not isinstance(leaf, PartitionSpec):
                raise ValueError(
                    f"{leaf!r} ({type(leaf).__name__}) is not a PartitionSpec; give "
                    "jax.sharding.PartitionSpec(...) (P() for replicated) or a pytree of them"
                )
        return value

    _states = pydantic.field_validator("state_in_specs", "state_out_specs", mode="before")(
        lambda cls, v: _rules(v)
    )


def shard_map(
    fn: Callable[P, R],
    mesh: Any,
    in_specs: Any,
    out_specs: Any,
    *,
    state_in_specs: PartitionSpec | Mapping[Any, PartitionSpec | None] | None = None,
    state_out_specs: PartitionSpec | Mapping[Any, PartitionSpec | None] | None = None,
    check_vma: bool = True,
) -> Callable[P, R]:
    """Run `fn` once per device of `mesh` on its shard of the arguments and states (SPMD).

    As `jax.shard_map`, inside `jax.jit`: positional arguments are split by
    `in_specs` (one `PartitionSpec` per positional argument, or one for all;
    keyword arguments are replicated) and the result is assembled by `out_specs`.
    States are threaded like arguments: `state_in_specs` is a `PartitionSpec` for
    every state the function touches, or `{State, State type or filter:
    PartitionSpec}` (first match wins); unmatched states are replicated. A written
    state leaves with its `state_out_specs` spec, else as it entered. The specs are
    checked against the states on the first call (`SpecError` naming the state).
    A cached call does not retrace. Inside, use collectives on the mesh's axis names
    (`lax.pmean(grads, "data")`).

    Writing a value that varies across devices into a state that is replicated on
    that axis raises `ShardingError` naming the state (with `check_vma=True`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from jax.sharding import PartitionSpec as P
        >>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        >>> total = sj.State(jnp.array(0.0))
        >>> def step(x):
        ...     total.value = total.value + jax.lax.psum(x.sum(), "data")
        ...     return x * 2
        >>> f = sj.shard_map(step, mesh, in_specs=P("data"), out_specs=P("data"))
        >>> f(jnp.arange(4.0)).tolist(), float(total.value)
        ([0.0, 2.0, 4.0, 6.0], 6.0)
    """
    spec = parse_spec(
        ShardMapSpec,
        "shard_map",
        mesh=mesh,
        in_specs=in_specs,
        out_specs=out_specs,
        state_in_specs=state_in_specs,
        state_out_specs=state_out_specs,
        check_vma=check_vma,
    )
    label = f"statejax.shard_map({name_of(fn)})"

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        return _ShardMapped(split, pure, spec, label)

    stateful: StatefulFunction[R] = StatefulFunction(fn, label, lift, staged=True)
    call = stateful.__call__
    config = jax.config

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if config.jax_disable_jit:  # type: ignore[attr-defined]
            return run_eagerly(label, fn, *args, **kwargs)
        return call(*args, **kwargs)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(fn, "__name__", "shard_map")
    wrapper.__qualname__ = getattr(fn, "__qualname__", wrapper.__name__)
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    wrapper.clear_cache = stateful.clear_cache  # type: ignore[attr-defined]
    wrapper.stateful = stateful  # type: ignore[attr-defined]
    return wrapper


def varying_axes(value: Any) -> frozenset[Any]:
    """The mesh axes across which a value traced inside `jax.shard_map` varies.

    Examples:
        >>> import jax.numpy as jnp
        >>> varying_axes(jnp.ones(2))
        frozenset()
    """
    aval = jax.typeof(value)
    vma: Any = getattr(aval, "vma", None)
    if vma is None:  # jax >= 0.10 keeps it in the manual axis type
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
    return frozenset(vma or ())


def _spec_axes(spec: PartitionSpec) -> set[Any]:
    axes: set[Any] = set()
    for entry in spec:
        if entry is None:
            continue
        axes.update(entry if isinstance(entry, tuple) else (entry,))
    return axes


class _ShardMapped:
    """The lifted pure core of one split: `jax.jit(jax.shard_map(...))`, one per number of
    positional arguments; specs resolved on the first call, when paths are known."""

    def __init__(self, split: Split, pure: PureCore, spec: ShardMapSpec, label: str) -> None:
        self.split = split
        self.pure = pure
        self.spec = spec
        self.label = label
        self.by_arity: dict[int, Any] = {}
        self.specs: tuple[list[Any], list[Any], list[Any]] | None = None
        self.paths: dict[int, Path] = {}

    def _state_specs(
        self, rv: Sequence[Any], wv: Sequence[Any], args: tuple[Any, ...], kwargs: Any
    ) -> tuple[list[Any], list[Any], list[Any]]:
        spec, split = self.spec, self.split
        rules = spec.state_in_specs + spec.state_out_specs
        self.paths = paths = state_paths(split, rules, args, kwargs)
        replicated = PartitionSpec()  # type: ignore[no-untyped-call]
        ins = resolve(spec.state_in_specs, split.states, paths, replicated)
        for state, value, placement in zip(split.states, [*rv, *wv], ins, strict=True):
            check_fits(self.label, state, paths.get(id(state)), value, placement, spec.mesh)
        n_reads = len(split.read_states)
        write_in = ins[n_reads:]
        outs = resolve(spec.state_out_specs, split.write_states, paths, None)
        write_out = [o if o is not None else i for o, i in zip(outs, write_in, strict=True)]
        for state, value, placement in zip(split.write_states, wv, write_out, strict=True):
            check_fits(self.label, state, paths.get(id(state)), value, placement, spec.mesh)
        return ins[:n_reads], write_in, write_out

    def _build(
        self, rv: Sequence[Any], wv: Sequence[Any], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        if self.specs is None:
            self.specs = self._state_specs(rv, wv, args, kwargs)
        read_specs, write_in, write_out = self.specs
        spec = self.spec
        if isinstance(spec.in_specs, tuple) and not isinstance(spec.in_specs, PartitionSpec):
            if len(spec.in_specs) != len(args):
                raise ValueError(
                    f"{self.label}: in_specs has {len(spec.in_specs)} entries but the function "
                    f"got {len(args)} positional arguments; give one PartitionSpec per "
                    "positional argument, or one for all"
                )
            arg_specs: tuple[Any, ...] = spec.in_specs
        else:
            arg_specs = (spec.in_specs,) * len(args)
        pure, label, states = self.pure, self.label, self.split.write_states
        check = spec.check_vma

        def core(rv: Any, wv: Any, kw: Any, *args: Any) -> Any:
            out, new_wv = pure(rv, wv, *args, **kw)
            if check:
                self._check_replicated(states, new_wv, write_out)
            return out, new_wv

        mapped = jax.shard_map(
            core,
            mesh=spec.mesh,
            in_specs=(read_specs, write_in, PartitionSpec(), *arg_specs),  # type: ignore[no-untyped-call]
            out_specs=(spec.out_specs, write_out),
            check_vma=check,
        )
        jitted = jax.jit(mapped)
        jitted.__name__ = label  # type: ignore[attr-defined]
        self.by_arity[len(args)] = jitted
        return jitted

    def _check_replicated(
        self, states: Sequence[Any], values: Sequence[Any], specs: Sequence[PartitionSpec]
    ) -> None:
        for state, value, spec in zip(states, values, specs, strict=True):
            allowed = _spec_axes(spec)
            for leaf in jax.tree.leaves(value):
                extra = varying_axes(leaf) - allowed
                if extra:
                    axes = ", ".join(repr(a) for a in sorted(extra, key=str))
                    raise ShardingError(
                        f"{self.label}: {describe_state(state, self.paths.get(id(state)))} is "
                        f"written with a value that differs across mesh axis {axes}, but its "
                        f"spec {spec} keeps one copy on that axis. Reduce the value first "
                        f"(jax.lax.pmean(value, {axes})), or shard the state: "
                        "state_out_specs={state: PartitionSpec(...)}."
                    )

    def __call__(self, rv: Sequence[Any], wv: Sequence[Any], /, *args: Any, **kwargs: Any) -> Any:
        jitted = self.by_arity.get(len(args))
        if jitted is None:
            jitted = self._build(rv, wv, args, kwargs)
        try:
            out, new_wv = jitted(rv, wv, kwargs, *args)
        except ValueError:
            self._explain(rv, wv)
            raise
        if new_wv:
            # A run-time error on the devices (a jax.debug.callback that raises) poisons
            # the results instead of failing the dispatch: wait for the written values so
            # that it raises here, while the states still hold their last good values.
            wait_for_results(new_wv)
        return out, new_wv

    def _explain(self, rv: Sequence[Any], wv: Sequence[Any]) -> None:
        """JAX refused the call: if a state's value is to blame, say which state.

        A value whose shape changed so that its spec no longer divides it is a
        `SpecError`; one committed to devices outside the mesh a `ShardingError`.
        """
        if self.specs is None:
            return
        read_specs, write_in, write_out = self.specs
        mesh, split, paths = self.spec.mesh, self.split, self.paths
        values = [*rv, *wv]
        for state, value, spec in zip(split.states, values, [*read_specs, *write_in], strict=True):
            check_fits(self.label, state, paths.get(id(state)), value, spec, mesh, RESHAPED)
        for state, value, spec in zip(split.write_states, wv, write_out, strict=True):
            check_fits(self.label, state, paths.get(id(state)), value, spec, mesh, RESHAPED)
        devices = set(mesh.devices.flat) if isinstance(mesh, jax.sharding.Mesh) else None
        if devices is None:
            return
        for state, value in zip(split.states, values, strict=True):
            for leaf in jax.tree.leaves(value):
                if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
                    continue
                if not leaf.committed or leaf.sharding.device_set == devices:
                    continue
                raise ShardingError(
                    f"{self.label}: {describe_state(state, paths.get(id(state)))} holds a "
                    f"value committed to devices {_ids(leaf.sharding.device_set)}, but the "
                    f"mesh runs on devices {_ids(devices)}; statejax does not move it "
                    "silently. Put it on the mesh with jax.device_put(state.value, "
                    "NamedSharding(mesh, spec)) (or statejax.sharding.shard_states(states, "
                    "mesh, ...))."
                ) from None


def _ids(devices: Any) -> list[int]:
    return sorted(d.id for d in devices)


@hookimpl
def statejax_register_transforms(registry: Any) -> None:
    registry.register(
        Transform(
            "shard_map",
            shard_map,
            ShardMapSpec,
            "run on every device of a mesh (jax.shard_map); states split by spec",
        )
    )

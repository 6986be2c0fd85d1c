"""Place states on a device mesh, read their placement back, and constrain it in a transform.

Everything is `jax.sharding`: a state's value is a `jax.Array` with a
`NamedSharding`; `shard_states` only chooses it, by rules, as
`jit(state_shardings=...)` and `shard_map(state_in_specs=...)` do, and checks
each choice against the state's shape first (a `SpecError` naming the state's
path; then no state moves). A state may name the logical axis of each
dimension, `State(value, sharding=("embed", None))`; `logical_axis_rules` maps
those names to mesh axes, as Flax's logical partitioning does.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> import statejax as sj
    >>> from jax.sharding import PartitionSpec as P
    >>> class Linear(sj.Module):
    ...     def __init__(self):
    ...         self.w = sj.ParamState(jnp.zeros((4, 2)), sharding=("embed", None))
    ...         self.b = sj.ParamState(jnp.zeros(2))
    >>> model = Linear()
    >>> mesh = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> shard_states(model, mesh, logical_axis_rules={"embed": "model"})
    >>> get_partition_spec(model)
    {('w',): P('model', None), ('b',): P()}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from statejax._errors import SpecError
from statejax._state import State
from statejax._tracing import describe_state
from statejax._transforms._state_specs import check_fits, parse_rules, resolve
from statejax.filters import Path
from statejax.registry._paths import state_items

__all__ = [
    "get_partition_spec",
    "get_sharding",
    "logical_to_mesh_axes",
    "shard_states",
    "with_sharding_constraint",
]

LogicalRules = Mapping[str, str | tuple[str, ...] | None] | Iterable[tuple[str, Any]]


def logical_to_mesh_axes(names: Iterable[Any], rules: LogicalRules) -> PartitionSpec:
    """The `PartitionSpec` of logical axis names: each name becomes its rule's mesh axis.

    A name without a rule (and `None`) is not sharded. `rules` is a mapping or a
    sequence of `(logical name, mesh axis or None)` pairs (the first pair wins).

    Examples:
        >>> logical_to_mesh_axes(("batch", "embed", None), {"batch": "data"})
        P('data', None, None)
    """
    table: dict[str, Any] = {}
    for name, axis in rules.items() if isinstance(rules, Mapping) else rules:
        table.setdefault(name, axis)
    return PartitionSpec(*(None if n is None else table.get(n) for n in names))  # type: ignore[no-untyped-call]


def shard_states(
    states_or_module: object,
    mesh: Mesh,
    rules: PartitionSpec | Mapping[Any, PartitionSpec | None] | None = None,
    *,
    logical_axis_rules: LogicalRules = (),
) -> None:
    """Place every state of a module (or a state, or a mapping or list of states) on `mesh`.

    A state's `PartitionSpec` is the first rule of `rules` that matches it
    (`{State, State type or filter: PartitionSpec}`, or one spec for all), else
    the one its logical axis names give through `logical_axis_rules`, else
    replicated (`P()`). Every spec is checked against its state's shape first: a
    `SpecError` names the state's path, and then no state moves. Call it outside
    transforms.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from jax.sharding import PartitionSpec as P
        >>> w = sj.ParamState(jnp.zeros((2, 2)))
        >>> shard_states({"w": w}, jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)), {sj.ParamState: P("data")})
        >>> w.value.sharding.spec
        P('data',)
    """
    items = state_items(states_or_module)
    table = parse_rules(rules, (PartitionSpec,), "a PartitionSpec")
    paths = {id(s): p for p, s in items}
    states = [s for _, s in items]
    chosen = resolve(table, states, paths, None)
    placed = []
    for (path, state), spec in zip(items, chosen, strict=True):
        if spec is None:
            names = state.sharding
            spec = (
                PartitionSpec()  # type: ignore[no-untyped-call]
                if names is None
                else logical_to_mesh_axes(names, logical_axis_rules)
            )
        check_fits("statejax.sharding.shard_states", state, path, state.value, spec, mesh)
        placed.append(jax.device_put(state.value, NamedSharding(mesh, spec)))
    for state, value in zip(states, placed, strict=True):
        state.value = value


def get_sharding(states_or_module: object) -> dict[Path, Any]:
    """The sharding of each state's value, by path (a pytree value gives a pytree).

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> shardings = get_sharding({"w": sj.State(jnp.zeros(2))})
        >>> list(shardings)
        [('w',)]
    """
    return {
        path: jax.tree.map(lambda leaf: getattr(leaf, "sharding", None), state.value)
        for path, state in state_items(states_or_module)
    }


def get_partition_spec(states_or_module: object) -> dict[Path, Any]:
    """The `PartitionSpec` of each state's value, by path (`None` if not a `NamedSharding`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from jax.sharding import NamedSharding, PartitionSpec as P
        >>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        >>> w = sj.State(jax.device_put(jnp.zeros(2), NamedSharding(mesh, P("data"))))
        >>> get_partition_spec([w])
        {(0,): P('data',)}
    """
    return {
        path: jax.tree.map(lambda s: s.spec if isinstance(s, NamedSharding) else None, sharding)
        for path, sharding in get_sharding(states_or_module).items()
    }


def with_sharding_constraint(
    states: State[Any] | Iterable[State[Any]] | Mapping[Any, State[Any]],
    sharding: Sharding | PartitionSpec,
) -> None:
    """Constrain the value of each state to `sharding`, inside a transform.

    The state's value becomes `jax.lax.with_sharding_constraint(value, sharding)`
    (a write, threaded out as any other). A `PartitionSpec` needs a mesh in context
    (`jax.sharding.use_mesh`), as in JAX.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from jax.sharding import NamedSharding, PartitionSpec as P
        >>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        >>> h = sj.State(jnp.zeros(4))
        >>> @sj.jit
        ... def step():
        ...     h.value = h.value + 1
        ...     with_sharding_constraint(h, NamedSharding(mesh, P("data")))
        >>> step(); h.value.tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    if isinstance(states, State):
        items: list[State[Any]] = [states]
    elif isinstance(states, Mapping):
        items = list(states.values())
    else:
        items = list(states)
    for state in items:
        try:
            state.value = jax.lax.with_sharding_constraint(state.value, sharding)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"with_sharding_constraint: {describe_state(state)} cannot take {sharding}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc

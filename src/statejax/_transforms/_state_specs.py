"""Per-state placement rules shared by `jit(state_shardings=)` and `shard_map(state_in_specs=)`.

Private to the built-in plugins. A rule set is an ordered tuple of
`(selector, value)` pairs: the first selector that matches a state gives its
value (a `Sharding` or a `PartitionSpec`); an unmatched state gets the
transform's default. Rules are parsed once, at decoration, and resolved once
per split, on its first call, when the arguments show the states' paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec

from statejax._transforms._selectors import StateSelector, parse_selector
from statejax.extend import SpecError, Split, State, describe_state
from statejax.filters import Everything, Path
from statejax.graph import Module, iter_states

__all__ = [
    "RESHAPED",
    "StateRules",
    "check_donated",
    "check_fits",
    "parse_rules",
    "resolve",
    "state_paths",
]

#: `((selector, sharding or spec), ...)`: the first match wins.
StateRules = tuple[tuple[StateSelector, Any], ...]


def parse_rules(value: object, kinds: tuple[type, ...], what: str) -> StateRules:
    """Normalise a state spec option: `None`, one `kinds` value for every state, or a
    mapping `{State, State type or filter: value}` (a `None` value means the default).

    Examples:
        >>> import statejax as sj
        >>> from jax.sharding import PartitionSpec as P
        >>> rules = parse_rules({sj.ParamState: P("d")}, (P,), "a PartitionSpec")
        >>> rules[0][1]
        P('d',)
    """
    if value is None or (isinstance(value, tuple) and not value):
        return ()
    if isinstance(value, kinds):
        return ((StateSelector(filter=Everything()), value),)
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{value!r} ({type(value).__name__}) is neither {what} nor a mapping "
            f"{{State or filter: {what}}}; give one of those"
        )
    rules = []
    for key, item in value.items():
        if item is not None and not isinstance(item, kinds):
            hint = (
                " (wrap a PartitionSpec as jax.sharding.NamedSharding(mesh, spec))"
                if isinstance(item, PartitionSpec)
                else ""
            )
            raise ValueError(
                f"the entry for {key!r} is {item!r} ({type(item).__name__}), not {what}; "
                f"map each State or filter to {what}{hint} (or None for the default)"
            )
        rules.append((parse_selector(key, f"key {key!r}: "), item))
    return tuple(rules)


def state_paths(
    split: Split, rules: StateRules, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[int, Path]:
    """The path of each state of `split`, by id: in a module or state passed as an
    argument, in a mapping given in the rules, else the attribute it was stored under."""
    paths: dict[int, Path] = {}
    for arg in [*args, *kwargs.values()]:
        if isinstance(arg, (Module, State)):
            for p, s in iter_states(arg):
                paths[id(s)] = p
    for sel, _ in rules:
        for s, path in zip(sel.states, sel.paths, strict=True):
            if path is not None:
                paths.setdefault(id(s), path)
    for s in split.states:
        if s._where and id(s) not in paths:
            paths[id(s)] = tuple(s._where.split(".")[1:])
    return paths


def resolve(
    rules: StateRules, states: Sequence[State[Any]], paths: Mapping[int, Path], default: Any
) -> list[Any]:
    """The value of each state: the first matching rule's, else `default`."""
    out = []
    for state in states:
        path = paths.get(id(state), ())
        found = next((v for sel, v in rules if sel.matches(state, path)), default)
        out.append(default if found is None else found)
    return out


def check_fits(
    where: str,
    state: State[Any],
    path: Path | None,
    value: Any,
    placement: Any,
    mesh: Any = None,
    fix: str | None = None,
) -> None:
    """Raise a `SpecError` naming the state when `placement` (a `Sharding`, or a
    `PartitionSpec` on `mesh`) cannot hold `value`: too many dimensions, an axis the
    mesh lacks, or a dimension not divisible by its mesh axes. `fix` replaces the
    message's advice (about the spec) when the value is to blame."""
    if placement is None:
        return
    spec: PartitionSpec | None
    if isinstance(placement, PartitionSpec):
        spec = placement
    else:
        named = isinstance(placement, jax.sharding.NamedSharding)
        spec, mesh = (placement.spec, placement.mesh) if named else (None, None)
    for leaf in jax.tree.leaves(value):
        shape = np.shape(leaf)
        try:
            if spec is not None:
                _check_spec(spec, shape, mesh)
            sharding = (
                jax.sharding.NamedSharding(mesh, placement)
                if isinstance(placement, PartitionSpec)
                else placement
            )
            sharding.shard_shape(shape)
        except (ValueError, KeyError, TypeError) as exc:
            advice = fix or (
                f"Give it a spec with at most {len(shape)} entries whose mesh axes divide its "
                "dimensions, or leave it out (replicated)."
            )
            raise SpecError(
                f"{where}: {describe_state(state, path)} cannot be placed as {placement}: "
                f"{str(exc).splitlines()[0]}. {advice}"
            ) from None


def _check_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Any) -> None:
    if len(spec) > len(shape):
        raise ValueError(f"the spec has {len(spec)} entries for {len(shape)} dimensions")
    for dim, entry in zip(shape, spec, strict=False):
        names = () if entry is None else entry if isinstance(entry, tuple) else (entry,)
        size = 1
        for name in names:
            if name not in mesh.shape:
                raise ValueError(f"the mesh has no axis {name!r} (it has {tuple(mesh.shape)})")
            size *= mesh.shape[name]
        if dim % size:
            raise ValueError(f"dimension {dim} is not divisible by {size} ({entry!r})")


def check_donated(
    where: str,
    split: Split,
    rv: Sequence[Any],
    wv: Sequence[Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    argnums: Sequence[int],
    argnames: Sequence[str],
) -> None:
    """Raise a `SpecError` naming the state when a donated argument is a state's value.

    XLA cannot donate a buffer that the same call also reads (one device: an error
    about a "flattened argument"; several: the process may crash), so this runs
    before the call. Arrays are compared by identity: `f(state.value)` is caught.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.extend import Split
        >>> w = sj.State(jnp.ones(2))
        >>> check_donated("jit(f)", Split((w,), ()), [w.value], [], (jnp.ones(2),), {}, (0,), ())
        >>> check_donated("jit(f)", Split((w,), ()), [w.value], [], (w.value,), {}, (0,), ())
        Traceback (most recent call last):
        ...
        statejax._errors.SpecError: jit(f): argument 0 is donated (donate_argnums) but ...
    """
    donated: dict[int, str] = {}
    for i in argnums:
        if i < len(args):
            for leaf in _leaves(args[i]):
                donated[id(leaf)] = f"argument {i} is donated (donate_argnums)"
    for name in argnames:
        if name in kwargs:
            for leaf in _leaves(kwargs[name]):
                donated[id(leaf)] = f"keyword argument {name!r} is donated (donate_argnames)"
    if not donated:
        return
    values = [*rv, *wv]
    # Usually every state holds one array, its own only leaf: two passes in C.
    if set(map(type, values)) <= _ARRAY_CLASSES and donated.keys().isdisjoint(map(id, values)):
        return
    for state, value in zip(split.states, values, strict=True):
        for leaf in _leaves(value):
            what = donated.get(id(leaf))
            if what is None:
                continue
            path = state_paths(split, (), args, kwargs).get(id(state))
            raise SpecError(
                f"{where}: {what} but its array is also the value of "
                f"{describe_state(state, path)}, which the call reads; XLA cannot donate a "
                "buffer the call also reads, and the state would lose its value. Pass a copy "
                "(jnp.copy(x)), or stop donating that argument."
            )


# The concrete array classes met so far: `isinstance(x, jax.Array)` (an abstract base
# class) costs more than the rest of the donation check, so it runs once per class.
_ARRAY_CLASSES: set[type] = set()


def _leaves(value: Any) -> Sequence[Any]:
    # Called per state on every call of a donating jit: an array is its own only leaf.
    kind = type(value)
    if kind in _ARRAY_CLASSES:
        return (value,)
    if isinstance(value, jax.Array):
        _ARRAY_CLASSES.add(kind)
        return (value,)
    return jax.tree.leaves(value)


#: The advice of `check_fits` when a state's value changed shape after the first call.
RESHAPED = (
    "Its value changed shape since the first call, and the new shape does not divide "
    "over the mesh: give the state a value whose sharded dimensions the mesh axes divide, "
    "or change the rule that places it."
)

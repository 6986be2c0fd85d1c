"""Save and restore states, sharded or not, with orbax-checkpoint.

A checkpoint is keyed by state path, one numbered step per `save`, kept in
`directory` by an orbax `CheckpointManager`: a save is written aside and renamed
into place when complete (a crash mid-save leaves the previous step readable),
and only the last `max_to_keep` steps are kept. A save is one snapshot: all
states are read together, as a transformed call reads them, so it holds all of
one call's writes or none. Every value a state can hold round-trips: arrays
(NumPy or JAX, of any dtype, zero-size too), Python and NumPy scalars, typed
random keys, and pytrees of these; each comes back as the kind the target state
holds. Sharded arrays are written by the processes that own them and restored
onto each state's current sharding (another mesh than the saved one reshards);
an uncommitted value stays uncommitted. orbax-checkpoint is an optional extra:
`pip install statejax[checkpoint]`.

Paths are stored unambiguously: `('layers', 0, 'w')` is `layers/0/w`, while a
key holding `/` or another character outside `[A-Za-z0-9_-]` is percent-escaped
and a string key that looks like an integer is quoted, so `{"a/b": s1, "a":
{"b": s2}}` and the keys `0` and `"0"` are distinct entries.

Examples:
    >>> import tempfile, jax.numpy as jnp
    >>> import statejax as sj
    >>> from statejax import checkpoints
    >>> class Net(sj.Module):
    ...     def __init__(self):
    ...         self.w = sj.ParamState(jnp.ones(2))
    >>> net, directory = Net(), tempfile.mkdtemp()
    >>> checkpoints.save(directory, net, step=1)
    1
    >>> net.w.value = jnp.zeros(2)
    >>> checkpoints.restore(directory, net)
    1
    >>> net.w.value.tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Sharding

from statejax._errors import SpecError, StatejaxError
from statejax._jax_compat import is_top_level
from statejax._state import State
from statejax._tracing import describe_state
from statejax._transforms._state_specs import check_fits, parse_rules, resolve
from statejax.extend import Split, current_trace
from statejax.filters import Path
from statejax.registry._paths import state_items as _items

__all__ = ["CheckpointError", "restore", "save"]


class CheckpointError(StatejaxError, ValueError):
    """A checkpoint cannot be written, or does not fit the states it is restored into."""


_SAVE = "statejax.checkpoints.save"
_RESTORE = "statejax.checkpoints.restore"
# Bytes a path element keeps as they are; every other one is written %XX.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_INT = re.compile(r"-?[0-9]+")
# orbax finds the files of a save with glob patterns on the directory's path, and
# tensorstore reads a backslash as a separator: a save there reports success but its
# arrays can never be read back.
_BAD_DIRECTORY_CHARS = "[]*?\\"
# The entry written when no state has data to store (orbax refuses an empty tree).
_EMPTY_MARKER = ":empty"
_MANIFEST = "statejax"
# A leaf's record in the manifest: (shape, dtype name, whether its data was stored).
_Record = tuple[tuple[int, ...], str, bool]


def _escape(text: str) -> str:
    out = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode())
    # A quote (never produced by escaping) marks a string that would read as an int.
    return "'" + out if not out or _INT.fullmatch(out) else out


def _element(part: object) -> str:
    if isinstance(part, int):
        return str(int(part))
    return _escape(part if isinstance(part, str) else str(part))


def _key(path: Sequence[object]) -> str:
    """The entry name of a path: elements joined by `/` (`~` for the empty path)."""
    return "/".join(_element(p) for p in path) if path else "~"


def _decode(key: str) -> tuple[Any, ...]:
    """The path an entry name stands for (the inverse of `_key` for str and int elements)."""
    if key == "~":
        return ()
    parts: list[Any] = []
    for part in key.split("/"):
        if part.startswith("'"):
            parts.append(unquote(part[1:]))
        elif _INT.fullmatch(part):
            parts.append(int(part))
        else:
            parts.append(unquote(part))
    return tuple(parts)


def _entry_part(entry: Any) -> object:
    for attr in ("key", "idx", "name"):  # DictKey, FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _full_key(state_key: str, leaf_key: str) -> str:
    # ':' is never part of an escaped element, so it separates the state from the leaf.
    return state_key if not leaf_key else f"{state_key}:{leaf_key}"


def _show(shape: Sequence[int], dtype: str) -> str:
    return f"{dtype}[{','.join(map(str, shape))}]"


def _show_path(path: Sequence[object]) -> str:
    return repr(tuple(path))


def _refuse_in_transform(where: str) -> None:
    trace = current_trace()
    if trace is not None or not is_top_level():
        inside = trace.name if trace is not None else "a JAX transform (jax.jit, jax.grad, ...)"
        raise CheckpointError(
            f"{where} was called inside {inside}, where state values are tracers that "
            "cannot be written to or read from disk; call it outside transforms, after the "
            "transformed step returns"
        )


def _state_keys(items: Sequence[tuple[Path, State[Any]]], where: str) -> list[str]:
    """The entry name of each state; two paths that would share one are refused."""
    seen: dict[str, Path] = {}
    keys = []
    for path, _ in items:
        key = _key(path)
        if key in seen:
            raise CheckpointError(
                f"{where}: the paths {_show_path(seen[key])} and {_show_path(path)} would be "
                f"stored under one name ({key!r}), and one of them would be lost; rename one "
                "of the keys (path elements are best strings or ints)"
            )
        seen[key] = path
        keys.append(key)
    return keys


def _snapshot(states: Sequence[State[Any]]) -> list[Any]:
    """The stored values of `states`, read together under the lock a merge takes: a
    transformed call running on another thread is seen whole or not at all."""
    split = Split(read_states=states)
    values = dict(zip(map(id, split.read_states), split.gather(top_level=True)[0], strict=True))
    return [values[id(s)] for s in states]


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _leaves(value: Any, state: State[Any], path: Path, where: str) -> list[tuple[str, Any]]:
    """`(leaf name, leaf)` of a state's value; two leaves that would share a name are refused."""
    flat, _ = jax.tree_util.tree_flatten_with_path(value)
    seen: dict[str, Any] = {}
    out = []
    for keypath, leaf in flat:
        parts = [_entry_part(e) for e in keypath]
        name = "/".join(_element(p) for p in parts)
        if name in seen:
            raise CheckpointError(
                f"{where}: {describe_state(state, path)} holds a pytree whose leaves "
                f"{_show_path(seen[name])} and {_show_path(parts)} would be stored under one "
                "name; use distinct string or int keys"
            )
        seen[name] = parts
        out.append((name, leaf))
    return out


def _to_store(leaf: Any, state: State[Any], path: Path, where: str) -> tuple[_Record, Any]:
    """A leaf's record and the array to write (`None`: nothing to write, it is empty)."""
    data: Any
    if _is_key(leaf):
        shape, dtype, data = tuple(leaf.shape), str(leaf.dtype), jax.random.key_data(leaf)
    elif isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex)):
        try:
            data = leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
        except OverflowError:
            data = np.asarray(leaf, dtype=object)
        shape, dtype = tuple(data.shape), str(data.dtype)
        if data.dtype.kind not in "biufcV":
            raise CheckpointError(
                f"{where}: {describe_state(state, path)} holds a {_show(shape, dtype)} value, "
                "which a checkpoint cannot store (only numeric, bool and random key arrays "
                "and scalars); convert it, or leave the state out"
            )
    else:
        state.value  # noqa: B018 (a state that leaked out of its trace raises its own error)
        raise CheckpointError(
            f"{where}: {describe_state(state, path)} holds a {type(leaf).__name__}, which a "
            "checkpoint cannot store (only arrays, scalars, random keys and pytrees of "
            "these); convert it, or leave the state out"
        )
    stored = int(np.prod(shape, dtype=np.int64)) > 0
    return (shape, dtype, stored), data if stored else None


def _manager(directory: str | os.PathLike[str], max_to_keep: int | None, *, read: bool) -> Any:
    ocp = _orbax()
    # Reading creates nothing (orbax's read_only mode would warn on every restore).
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read)
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def _orbax() -> Any:
    try:
        # An optional extra: imported on first use.
        import orbax.checkpoint as ocp  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "statejax.checkpoints needs orbax-checkpoint, an optional extra: "
            "pip install 'statejax[checkpoint]'"
        ) from exc
    return ocp


def save(
    directory: str | os.PathLike[str],
    states_or_module: object,
    *,
    step: int | None = None,
    max_to_keep: int | None = None,
) -> int:
    """Save the value of every state of a module (or of a state, mapping or list of states).

    All values are read together, as one transformed call reads them, so a
    training thread running meanwhile is saved before or after one of its
    steps, never half-way. `step` numbers the checkpoint (default: one more than
    the latest in `directory`, or 0); saving a step that exists is an error.
    `max_to_keep` keeps only that many of the latest steps. Call it from every
    process of a multi-process run, outside transforms: each process writes the
    shards it owns. Returns the step.

    Everything is checked before anything is written: a `CheckpointError` names
    the path of a value a checkpoint cannot hold (a string, an object array), two
    paths that would share one name, a directory whose path orbax cannot read
    back (it holds one of `[ ] * ? \\`), and a call inside a transform.

    Examples:
        >>> import tempfile, jax.numpy as jnp
        >>> import statejax as sj
        >>> directory = tempfile.mkdtemp()
        >>> [save(directory, [sj.State(jnp.ones(2))], max_to_keep=2) for _ in range(3)]
        [0, 1, 2]
        >>> sorted(os.listdir(directory))
        ['1', '2']
    """
    _refuse_in_transform(_SAVE)
    absolute = os.path.abspath(directory)
    bad = sorted({c for c in absolute if c in _BAD_DIRECTORY_CHARS})
    if bad:
        raise CheckpointError(
            f"{_SAVE}: cannot save to {absolute}: its path holds {' '.join(map(repr, bad))}, "
            "which orbax reads as a file pattern, so the save would seem to succeed and "
            "never restore; choose a directory without [ ] * ? or backslashes"
        )
    items = _items(states_or_module)
    keys = _state_keys(items, _SAVE)
    values = _snapshot([state for _, state in items])
    tree: dict[str, Any] = {}
    manifest: dict[str, dict[str, _Record]] = {}
    for (path, state), key, value in zip(items, keys, values, strict=True):
        records = manifest[key] = {}
        for leaf_key, leaf in _leaves(value, state, path, _SAVE):
            records[leaf_key], data = _to_store(leaf, state, path, _SAVE)
            if data is not None:
                tree[_full_key(key, leaf_key)] = data
    if not tree:
        tree[_EMPTY_MARKER] = np.zeros((), np.int8)
    ocp = _orbax()
    with _manager(directory, max_to_keep, read=False) as manager:
        if step is None:
            latest = manager.latest_step()
            step = 0 if latest is None else latest + 1
        if step in manager.all_steps():
            raise CheckpointError(
                f"{_SAVE}: step {step} already exists in {directory}; "
                "give a new step (or none: the next one)"
            )
        metadata = {_MANIFEST: {"version": 1, "states": manifest}}
        try:
            manager.save(step, args=ocp.args.StandardSave(tree, custom_metadata=metadata))
            manager.wait_until_finished()
        except (ValueError, OSError) as exc:
            raise CheckpointError(
                f"{_SAVE}: orbax could not write step {step} to {directory}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
    return step


def restore(
    directory: str | os.PathLike[str],
    states_or_module: object,
    *,
    step: int | None = None,
    state_shardings: Any = None,
) -> int:
    """Restore every state of a module (or of a state, mapping or list of states) from `directory`.

    Each value is read onto the sharding of the state's current value (another
    mesh than the one saved from is resharded; an uncommitted value stays
    uncommitted, free to follow a later `jit(state_shardings=...)`), or onto the
    sharding `state_shardings` gives it: one `Sharding` for every state or
    `{State, State type or filter: Sharding}`, as in `jit`. Each value comes back
    as the kind the state holds (a NumPy array, a Python scalar, a typed key, a
    pytree of the same leaves). The checkpoint must hold exactly the states'
    paths and leaves, with their shapes and dtypes; otherwise a
    `CheckpointError` names the path, and no state changes. All states are
    written together, as one transformed call's writes. Reading creates nothing
    in `directory`. Returns the step restored (default: the latest).

    Examples:
        >>> import tempfile, jax.numpy as jnp
        >>> import statejax as sj
        >>> directory = tempfile.mkdtemp()
        >>> _ = save(directory, {"w": sj.State(jnp.ones(2))})
        >>> restore(directory, {"w": sj.State(jnp.ones(3))})
        Traceback (most recent call last):
        statejax.checkpoints.CheckpointError: statejax.checkpoints.restore: State at path ('w',) (float32[3]): the state holds float32[3] but the checkpoint holds float32[2] (step 0); restore into states of the saved shapes and dtypes
    """
    where = _RESTORE
    _refuse_in_transform(where)
    items = _items(states_or_module)
    keys = _state_keys(items, where)
    states = [state for _, state in items]
    try:
        rules = parse_rules(state_shardings, (Sharding,), "a Sharding")
    except ValueError as exc:
        raise SpecError(f"{where}: state_shardings: {exc}") from None
    placements = resolve(rules, states, {id(s): p for p, s in items}, None)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{where}: no checkpoint in {directory} (no such directory)")
    ocp = _orbax()
    with _manager(directory, None, read=True) as manager:
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise CheckpointError(f"{where}: no checkpoint in {directory}")
        elif step not in manager.all_steps():
            raise CheckpointError(
                f"{where}: no step {step} in {directory}; it holds {sorted(manager.all_steps())}"
            )
        saved = _manifest(manager.item_metadata(step))
        missing = [(p, s) for (p, s), k in zip(items, keys, strict=True) if k not in saved]
        if missing:
            path, state = missing[0]
            raise CheckpointError(
                f"{where}: {describe_state(state, path)} is not in the checkpoint (step {step} "
                f"of {directory}); missing paths: {[p for p, _ in missing]}. Restore into the "
                "states that were saved, or save again."
            )
        extra = [_decode(k) for k in saved if k not in set(keys)]
        if extra:
            raise CheckpointError(
                f"{where}: the checkpoint (step {step}) holds paths no state has: {extra}. "
                "Restore into the module that was saved (or a mapping with those paths)."
            )
        plans = []
        target: dict[str, Any] = {}
        values = _snapshot(states)
        for (path, state), key, value, placement in zip(
            items, keys, values, placements, strict=True
        ):
            check_fits(where, state, path, value, placement)
            plan = _plan(value, state, path, saved[key], step, placement)
            for leaf_key, (data_target, _) in plan[1].items():
                if data_target is not None:
                    target[_full_key(key, leaf_key)] = data_target
            plans.append(plan)
        try:
            restored = (
                manager.restore(step, args=ocp.args.StandardRestore(target)) if target else {}
            )
        except (ValueError, OSError) as exc:
            raise CheckpointError(
                f"{where}: orbax could not read step {step} of {directory}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
    new_values = [
        _build(plan, {lk: restored.get(_full_key(key, lk)) for lk in plan[1]})
        for plan, key in zip(plans, keys, strict=True)
    ]
    # Every value is read and checked before any state changes; then all are stored
    # together under the merge lock, as one transformed call's writes are.
    final = {id(s): (s, v) for s, v in zip(states, new_values, strict=True)}
    split = Split(write_states=[s for s, _ in final.values()])
    split.scatter([final[id(s)][1] for s in split.write_states], top_level=True)
    return step


# A state's restore plan: its value's treedef, and per leaf name the orbax target
# (`None`: nothing stored) and a function turning the read data into the new leaf.
_Plan = tuple[Any, dict[str, tuple[Any, Any]]]


def _plan(
    value: Any,
    state: State[Any],
    path: Path,
    saved: Mapping[str, _Record],
    step: int,
    placement: Any,
) -> _Plan:
    where = _RESTORE
    leaves = _leaves(value, state, path, where)
    have = [name for name, _ in leaves]
    if set(have) != set(saved):
        lacking = sorted(set(saved) - set(have))
        surplus = sorted(set(have) - set(saved))
        raise CheckpointError(
            f"{where}: {describe_state(state, path)} holds a value whose leaves differ from "
            f"the checkpoint's (step {step}): leaves only in the checkpoint "
            f"{[_decode(n) if n else () for n in lacking]}, only in the state "
            f"{[_decode(n) if n else () for n in surplus]}; restore into a state of the "
            "saved structure"
        )
    out: dict[str, tuple[Any, Any]] = {}
    for name, leaf in leaves:
        (shape, dtype, _), _ = _to_store(leaf, state, path, where)
        have_shape, have_dtype, stored = saved[name]
        if (shape, dtype) != (have_shape, have_dtype):
            at = f" leaf {_decode(name)}" if name else ""
            raise CheckpointError(
                f"{where}: {describe_state(state, path)}{at}: the state holds "
                f"{_show(shape, dtype)} but the checkpoint holds {_show(have_shape, have_dtype)} "
                f"(step {step}); restore into states of the saved shapes and dtypes"
            )
        out[name] = _leaf_plan(leaf, stored, placement)
    return jax.tree_util.tree_structure(value), out


def _leaf_plan(leaf: Any, stored: bool, placement: Any) -> tuple[Any, Any]:
    is_key = _is_key(leaf)
    data = jax.eval_shape(jax.random.key_data, leaf) if is_key else leaf
    if not isinstance(data, (jax.Array, jax.ShapeDtypeStruct)):
        data = np.asarray(data)
    shape, dtype = tuple(data.shape), np.dtype(data.dtype)
    if placement is None and isinstance(leaf, jax.Array) and getattr(leaf, "committed", False):
        placement = leaf.sharding
    target: Any
    if placement is not None:
        target = jax.ShapeDtypeStruct(shape, dtype, sharding=placement)  # type: ignore[no-untyped-call]
    else:
        # Read onto the host; an uncommitted JAX value becomes uncommitted again.
        target = np.empty(shape, dtype)

    def build(read: Any) -> Any:
        if read is None:  # an empty array: nothing was stored
            read = np.zeros(shape, dtype)
            if placement is not None:
                read = jax.device_put(read, placement)
        if is_key:
            return jax.random.wrap_key_data(jnp.asarray(read), impl=jax.random.key_impl(leaf))
        if isinstance(leaf, jax.Array) or placement is not None:
            return read if isinstance(read, jax.Array) else jnp.asarray(read)
        if isinstance(leaf, np.ndarray):
            return np.asarray(read)
        if isinstance(leaf, np.generic):
            return np.asarray(read)[()]
        return type(leaf)(np.asarray(read).item())

    return (target if stored else None), build


def _build(plan: _Plan, read: Mapping[str, Any]) -> Any:
    treedef, leaves = plan
    return jax.tree_util.tree_unflatten(
        treedef, [build(read[name]) for name, (_, build) in leaves.items()]
    )


def _manifest(metadata: Any) -> dict[str, dict[str, _Record]]:
    """`{state name: {leaf name: (shape, dtype, stored)}}` of a saved step."""
    custom = getattr(metadata, "custom_metadata", None) or {}
    if _MANIFEST in custom:
        return {
            key: {leaf: (tuple(r[0]), str(r[1]), bool(r[2])) for leaf, r in records.items()}
            for key, records in custom[_MANIFEST]["states"].items()
        }
    # A checkpoint written before the manifest: one array per state.
    tree = getattr(metadata, "tree", metadata)
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{_RESTORE}: unreadable metadata {metadata!r}")
    return {
        str(key): {"": (tuple(meta.shape), np.dtype(meta.dtype).name, True)}
        for key, meta in tree.items()
    }

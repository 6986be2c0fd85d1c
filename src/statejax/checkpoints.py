"""Save and restore states, sharded or not, with orbax-checkpoint.

A checkpoint is keyed by state path (`('layers', 0, 'w')` is stored as
`layers/0/w`), one numbered step per `save`, kept in `directory` by an orbax
`CheckpointManager`: a save is written aside and renamed into place when
complete (a crash mid-save leaves the previous step readable), and only the last
`max_to_keep` steps are kept. Sharded arrays are written by the processes that
own them and restored onto each state's current sharding, so restoring onto
another mesh reshards. orbax-checkpoint is an optional extra:
`pip install statejax[checkpoint]`.

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
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from statejax._errors import StatejaxError
from statejax._state import State, describe_state
from statejax.filters import Path
from statejax.registry._paths import state_items as _items

__all__ = ["CheckpointError", "restore", "save"]


class CheckpointError(StatejaxError, ValueError):
    """A checkpoint does not fit the states it is restored into (paths, shapes or dtypes)."""


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


def _key(path: Path) -> str:
    return "/".join(str(p) for p in path)


def _states(states_or_module: object) -> dict[str, tuple[Path, State[Any]]]:
    return {_key(path): (path, state) for path, state in _items(states_or_module)}


def _manager(directory: str | os.PathLike[str], max_to_keep: int | None) -> Any:
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def save(
    directory: str | os.PathLike[str],
    states_or_module: object,
    *,
    step: int | None = None,
    max_to_keep: int | None = None,
) -> int:
    """Save the value of every state of a module (or of a state, mapping or list of states).

    `step` numbers the checkpoint (default: one more than the latest in
    `directory`, or 0); saving a step that exists is an error. `max_to_keep`
    keeps only that many of the latest steps. Call it from every process of a
    multi-process run: each writes the shards it owns. Returns the step.

    Examples:
        >>> import tempfile, jax.numpy as jnp
        >>> import statejax as sj
        >>> directory = tempfile.mkdtemp()
        >>> [save(directory, [sj.State(jnp.ones(2))], max_to_keep=2) for _ in range(3)]
        [0, 1, 2]
        >>> sorted(os.listdir(directory))
        ['1', '2']
    """
    tree = {key: state.value for key, (_, state) in _states(states_or_module).items()}
    ocp = _orbax()
    with _manager(directory, max_to_keep) as manager:
        if step is None:
            latest = manager.latest_step()
            step = 0 if latest is None else latest + 1
        if step in manager.all_steps():
            raise CheckpointError(
                f"statejax.checkpoints.save: step {step} already exists in {directory}; "
                "give a new step (or none: the next one)"
            )
        manager.save(step, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()
    return step


def restore(
    directory: str | os.PathLike[str], states_or_module: object, *, step: int | None = None
) -> int:
    """Restore every state of a module (or of a state, mapping or list of states) from `directory`.

    Each value is read onto the state's current sharding (another mesh than the
    one saved from is resharded). The checkpoint must hold exactly the states'
    paths, with their shapes and dtypes; otherwise a `CheckpointError` names the
    path, and no state changes. Returns the step restored (default: the latest).

    Examples:
        >>> import tempfile, jax.numpy as jnp
        >>> import statejax as sj
        >>> directory = tempfile.mkdtemp()
        >>> _ = save(directory, {"w": sj.State(jnp.ones(2))})
        >>> restore(directory, {"w": sj.State(jnp.ones(3))})
        Traceback (most recent call last):
        statejax.checkpoints.CheckpointError: statejax.checkpoints.restore: the state at path 'w' is float32[3] but the checkpoint holds float32[2] (step 0); restore into states of the saved shapes and dtypes
    """
    states = _states(states_or_module)
    ocp = _orbax()
    where = "statejax.checkpoints.restore"
    with _manager(directory, None) as manager:
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise CheckpointError(f"{where}: no checkpoint in {directory}")
        elif step not in manager.all_steps():
            raise CheckpointError(
                f"{where}: no step {step} in {directory}; it holds {sorted(manager.all_steps())}"
            )
        saved = _flat_metadata(manager.item_metadata(step))
        missing = [k for k in states if k not in saved]
        extra = [k for k in saved if k not in states]
        if missing:
            path, state = states[missing[0]]
            raise CheckpointError(
                f"{where}: {describe_state(state, path)} is not in the checkpoint (step {step} "
                f"of {directory}); missing paths: {missing}. Restore into the states that "
                "were saved, or save again."
            )
        if extra:
            raise CheckpointError(
                f"{where}: the checkpoint (step {step}) holds paths no state has: {extra}. "
                "Restore into the module that was saved (or a mapping with those paths)."
            )
        target = {}
        for key, (_, state) in states.items():
            value = state.value
            shape, dtype = tuple(np.shape(value)), np.dtype(jax.numpy.result_type(value))
            have_shape, have_dtype = saved[key]
            if (shape, dtype) != (have_shape, have_dtype):
                raise CheckpointError(
                    f"{where}: the state at path {key!r} is {_show(shape, dtype)} but the "
                    f"checkpoint holds {_show(have_shape, have_dtype)} (step {step}); restore "
                    "into states of the saved shapes and dtypes"
                )
            target[key] = jax.ShapeDtypeStruct(shape, dtype, sharding=_sharding_of(value))  # type: ignore[no-untyped-call]
        restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    # Every value is read before any state changes: a failed restore changes nothing.
    for key, (_, state) in states.items():
        state.value = restored[key]
    return step


def _sharding_of(value: Any) -> Any:
    sharding = getattr(value, "sharding", None)
    return sharding if sharding is not None else jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _show(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{np.dtype(dtype).name}[{','.join(map(str, shape))}]"


def _flat_metadata(metadata: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
    """`{key: (shape, dtype)}` of a saved tree's metadata."""
    tree = getattr(metadata, "tree", metadata)
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"statejax.checkpoints.restore: unreadable metadata {metadata!r}")
    return {str(key): (tuple(meta.shape), np.dtype(meta.dtype)) for key, meta in tree.items()}

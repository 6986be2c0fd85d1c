"""The hook specifications: the documented contract between statejax and its plugins.

A plugin is a module (or object) with functions marked `@statejax.extend.hookimpl`
whose names match the hooks below. Built-in transforms are plugins too and use
nothing a third party cannot. A third-party plugin is found through the
`statejax.transforms` entry-point group::

    [project.entry-points."statejax.transforms"]
    ema = "statejax_ema.plugin"

A hook implementation may accept a subset of a hook's arguments. Hooks are
plain (not `async`) functions. A function marked `@hookimpl` whose name matches
no hook below, a hook function without `@hookimpl`, and a plugin that defines
no hook at all are reported as a `PluginError` when plugins load.
docs/plugins.md states the whole contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from statejax._state import State
    from statejax.registry._manager import PluginRegistry
    from statejax.registry._protocol import TransformSpec

__all__ = ["StateBatching", "hookspec", "statejax_batch_state", "statejax_register_transforms"]

hookspec = pluggy.HookspecMarker("statejax")


@hookspec
def statejax_register_transforms(registry: PluginRegistry) -> None:
    """Register the plugin's transforms: call `registry.register(transform)` for each.

    `transform` satisfies `statejax.extend.StateTransform` (for example a
    `statejax.extend.Transform`); its name must be an identifier, its function
    callable, its spec a `TransformSpec` whose defaults satisfy its own
    constraints. Return `None`: returning the transforms instead is an error. A
    name claimed twice is a `statejax.PluginError` naming both claimants; a
    built-in keeps its name, a name two third-party plugins claim goes to neither.
    """


@dataclass(frozen=True)
class StateBatching:
    """How vmap batches one state it would otherwise broadcast; see `statejax_batch_state`.

    - `prepare(value, axis_size) -> (lane_value, carry)`: called before the
      lanes run, with the state's current value and the batch size.
      `lane_value` is handed to the lanes, batched on `in_axis` (`None`:
      one shared value); `carry` is kept for `finish`.
    - `finish(new_value, carry) -> stored`: called after the lanes ran, only if
      the function wrote the state; `new_value` is what the lanes wrote,
      collected on `out_axis` (`None`: the lanes must write an unbatched
      value). Its result is stored in the state.

    Both run under the enclosing JAX trace (if any), so they may use jax ops.
    """

    prepare: Callable[[Any, int], tuple[Any, Any]]
    finish: Callable[[Any, Any], Any]
    in_axis: int | None = 0
    out_axis: int | None = 0


@hookspec(firstresult=True)
def statejax_batch_state(state: State[Any], spec: TransformSpec) -> StateBatching | None:
    """Say how `vmap` batches `state`, a state the user did not select.

    Called once per state when vmap builds its pure core (not per call), for
    every state the function touches that `in_states`/`out_states` do not
    select; `spec` is the vmap's validated options (a `VmapSpec`; read
    options with `getattr` so other batching transforms can call the hook).
    Return a `StateBatching` to take over, or `None` to let another
    plugin decide; if none does, the state is broadcast (one shared copy, and
    writing a batched value into it is a `BatchAxisError`). The first
    non-`None` answer wins. `RandomState` uses this hook to give each lane
    its own key and advance the key once per call.

    Examples:
        A plugin that gives each lane a copy of every `Counter` state and
        stores the lanes' sum back:

        >>> import jax.numpy as jnp
        >>> from statejax.extend import StateBatching, hookimpl
        >>> class Counter:  # stands in for a State subclass
        ...     pass
        >>> @hookimpl
        ... def statejax_batch_state(state, spec):
        ...     if isinstance(state, Counter):
        ...         return StateBatching(
        ...             prepare=lambda v, n: (jnp.broadcast_to(v, (n, *jnp.shape(v))), v),
        ...             finish=lambda new, old: new.sum(0),
        ...         )
        ...     return None
    """

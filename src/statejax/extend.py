"""The public API for writing transform plugins.

A plugin is a module with a `statejax_register_transforms` hook that registers
`Transform` objects; docs/plugins.md states the whole contract. A transform wraps
the user's function in a `StatefulFunction`, whose `lift` hands the pure core to a
JAX transform; the engine splits the states, verifies them at every trace, and
merges the written values back. The built-in `jit`, `grad` and `vmap` are
written with exactly this API.

Examples:
    A complete state-aware transform (a jit that counts its calls) as a plugin:

    >>> import jax
    >>> from statejax.extend import StatefulFunction, Transform, TransformSpec, hookimpl
    >>> class CountedSpec(TransformSpec):
    ...     pass
    >>> def counted_jit(fn):
    ...     return StatefulFunction(fn, "counted_jit", lambda split, pure: jax.jit(pure))
    >>> @hookimpl
    ... def statejax_register_transforms(registry):
    ...     registry.register(Transform("counted_jit", counted_jit, CountedSpec))
"""

from typing import Any as _Any

from statejax._errors import BatchAxisError, SpecError, StateLeakError, TraceError
from statejax._jax_compat import jit_disabled
from statejax._state import State
from statejax._tracing import (
    StateTrace,
    adopt_created,
    current_trace,
    describe_state,
    is_leaked,
    register_by_reference,
)
from statejax.registry._engine import Lift, PureCore, Split, StatefulFunction, StateSetChanged
from statejax.registry._hookspecs import StateBatching
from statejax.registry._manager import (
    ENTRY_POINT_GROUP,
    PluginOrigin,
    PluginRegistry,
    PluginWarning,
    RegisteredTransform,
    get_registry,
    hookimpl,
    reset_registry,
)
from statejax.registry._paths import StatePaths
from statejax.registry._protocol import StateTransform, Transform, TransformSpec, parse_spec


def batch_rule(state: State[_Any], spec: TransformSpec) -> StateBatching | None:
    """Ask the plugins how a batching transform should batch `state` (`None`: broadcast).

    Calls the `statejax_batch_state` hook; see `StateBatching`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.transforms.vmap import VmapSpec
        >>> batch_rule(sj.State(jnp.zeros(2)), VmapSpec()) is None
        True
    """
    rule: StateBatching | None = get_registry().manager.hook.statejax_batch_state(
        state=state, spec=spec
    )
    return rule


__all__ = [
    "BatchAxisError",
    "ENTRY_POINT_GROUP",
    "Lift",
    "PluginOrigin",
    "PluginRegistry",
    "PluginWarning",
    "PureCore",
    "RegisteredTransform",
    "SpecError",
    "Split",
    "State",
    "StateLeakError",
    "StatePaths",
    "StateTrace",
    "StateSetChanged",
    "StateTransform",
    "StatefulFunction",
    "StateBatching",
    "Transform",
    "TraceError",
    "TransformSpec",
    "adopt_created",
    "batch_rule",
    "current_trace",
    "describe_state",
    "get_registry",
    "hookimpl",
    "is_leaked",
    "jit_disabled",
    "parse_spec",
    "register_by_reference",
    "reset_registry",
]

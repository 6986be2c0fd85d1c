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
from statejax._jax_compat import api_boundary, jit_disabled
from statejax._state import State
from statejax._tracing import (
    StateTrace,
    adopt_created,
    current_trace,
    describe_state,
    is_leaked,
    register_by_reference,
)
from statejax.registry._engine import CALLS_PURE_AS_IS, StatefulFunction
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
from statejax.registry._pure import Lift, PureCore, StateSetChanged
from statejax.registry._split import Split


def batch_rule(state: State[_Any], spec: TransformSpec) -> StateBatching | None:
    """Ask the plugins how a batching transform should batch `state` (`None`: broadcast).

    Calls the `statejax_batch_state` hooks, last registered first, until one answers;
    see `StateBatching`. The rule returned is the plugin's with its `prepare` and
    `finish` checked each time they return: `prepare` must return a pair, and
    `finish` no tracer of a trace that is not running (one kept from an earlier trace).

    Raises:
        PluginError: a hook returned something other than a `StateBatching` or
            `None`; later, when the rule's `prepare` or `finish` returns a bad value.
            The message names the plugin, the hook and the state.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.extend import get_registry
        >>> vmap_spec = get_registry().get("vmap").spec
        >>> batch_rule(sj.State(jnp.zeros(2)), vmap_spec()) is None
        True
    """
    return get_registry().batch_rule(state, spec)


__all__ = [
    "CALLS_PURE_AS_IS",
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
    "api_boundary",
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

"""The exception hierarchy of statejax.

Every error statejax raises on purpose derives from `StatejaxError`, so a
user can catch the library's complaints without catching their own bugs. The
messages name the state path (where one is known), the transform and the fix.
"""

from __future__ import annotations

__all__ = [
    "BatchAxisError",
    "BrainStateError",
    "PluginError",
    "ShardingError",
    "SpecError",
    "StateLeakError",
    "StatejaxError",
    "TraceContextError",
    "TraceError",
]


class StatejaxError(Exception):
    """Base class of every error raised by statejax."""


class SpecError(StatejaxError, ValueError):
    """Invalid options for a transform, reported at decoration time."""


class PluginError(StatejaxError):
    """A transform plugin failed to load, validate or register."""


class ShardingError(StatejaxError, ValueError):
    """A state's value is not placed as its transform's `state_shardings` say."""


class TraceError(StatejaxError):
    """A state was used in a way a transform cannot trace (for example a write in a loop condition)."""


class StateLeakError(TraceError):
    """A state created inside a transform was used after the transform returned."""


class BatchAxisError(StatejaxError, ValueError):
    """A batched value reached a state that vmap treats as broadcast (or sizes disagree)."""


BrainStateError = StatejaxError
"""BrainState's name for the base class of its errors: the same class as `StatejaxError`."""

TraceContextError = TraceError
"""BrainState's name for a state used against its trace: the same class as `TraceError`.

statejax raises it where BrainState does: a tracer written to a state outside any
state-aware transform, and (as its subclass `StateLeakError`) a state used after the
trace that created it ended.
"""

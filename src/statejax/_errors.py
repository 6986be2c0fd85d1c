"""The exception hierarchy of statejax.

Every error statejax raises on purpose derives from `StatejaxError`, so a
user can catch the library's complaints without catching their own bugs. The
messages name the state path (where one is known), the transform and the fix.

Where BrainState (or Python, or JAX) raises a `TypeError` or a `ValueError` for the same
mistake, statejax's error is also one, so `except` clauses written for those still catch
it. Every class here reports itself as `statejax.<Name>` (as JAX's errors report
themselves as `jax.errors.<Name>`), the name under which it is exported.
"""

from __future__ import annotations

__all__ = [
    "BatchAxisError",
    "BrainStateError",
    "EnvironError",
    "EnvironKeyError",
    "EnvironTypeError",
    "HookCancellationError",
    "HookError",
    "HookExecutionError",
    "HookRegistrationError",
    "HookWarning",
    "LoopBodyError",
    "NaNError",
    "PluginError",
    "ShardingError",
    "SpecError",
    "SpecTypeError",
    "StateLeakError",
    "StateOperandError",
    "StatejaxError",
    "TraceContextError",
    "TraceError",
    "TraceTypeError",
    "TraceValueError",
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


class SpecTypeError(SpecError, TypeError):
    """A `SpecError` about an argument's type (a branch that is not callable); a `TypeError` too."""


class TraceTypeError(TraceError, TypeError):
    """A `TraceError` about a value's type (a non-float state under grad); a `TypeError` too."""


class TraceValueError(TraceError, ValueError):
    """A `TraceError` about a value (a write in a loop condition); a `ValueError` too."""


class LoopBodyError(TraceTypeError, ValueError):
    """A `scan`/`for_loop` body that returns no `(carry, y)` pair.

    A `TypeError` (as `jax.lax.scan`'s) and a `ValueError` (as BrainState's
    `checkpointed_scan`'s).
    """


class NaNError(StatejaxError, RuntimeError):
    """A NaN or Inf reached a checked output (`debug_nan`, or a transform's `debug_nan=True`)."""


class StateOperandError(StatejaxError, TypeError):
    """A `State` used as an array (`x @ state`, `state + 1`): read `state.value` instead."""


class HookError(StatejaxError):
    """Base class of the state hook errors (BrainState's `HookError`)."""


class HookExecutionError(HookError):
    """A state hook's callback raised; the original exception is its `__cause__`."""


class HookRegistrationError(HookError, ValueError):
    """A hook could not be registered: an unknown hook type, or a callback that is not callable."""


class HookCancellationError(HookError):
    """A `write_before` hook cancelled a write; nothing was written."""


class HookWarning(UserWarning):
    """A state hook failed and its manager's `HookConfig(on_error="log")` reported it."""


class EnvironError(StatejaxError, ValueError):
    """A `statejax.environ` setting refused: a bad value, or one JAX can no longer take."""


class EnvironTypeError(EnvironError, TypeError):
    """An `EnvironError` about a type (a callback that is not callable); a `TypeError` too."""


class EnvironKeyError(EnvironError, KeyError):
    """`environ.get`/`environ.pop` of a key that is not set (and no default); a `KeyError` too."""

    def __str__(self) -> str:
        # KeyError shows its message quoted; this one is a sentence.
        return str(self.args[0]) if self.args else ""


# Report the classes under their public name: a traceback shows `statejax.SpecError`, not
# the private module that defines it; pickling finds them there too.
for _cls in (
    StatejaxError,
    SpecError,
    PluginError,
    ShardingError,
    TraceError,
    StateLeakError,
    BatchAxisError,
    SpecTypeError,
    TraceTypeError,
    TraceValueError,
    LoopBodyError,
    NaNError,
    StateOperandError,
    HookError,
    HookExecutionError,
    HookRegistrationError,
    HookCancellationError,
    HookWarning,
    EnvironError,
    EnvironTypeError,
    EnvironKeyError,
):
    _cls.__module__ = "statejax"
del _cls


BrainStateError = StatejaxError
"""BrainState's name for the base class of its errors: the same class as `StatejaxError`."""

TraceContextError = TraceError
"""BrainState's name for a state used against its trace: the same class as `TraceError`.

statejax raises it where BrainState does: a tracer written to a state outside any
state-aware transform, and (as its subclass `StateLeakError`) a state used after the
trace that created it ended.
"""

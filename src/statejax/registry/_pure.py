"""The pure core: the user's function over a split's values, and how a trace meets a
state outside the split (`TraceMode`, `MissingStates`, `StateSetChanged`)."""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from statejax._errors import StateLeakError, TraceError
from statejax._jax_compat import tracer_trace
from statejax._settings import recording
from statejax._state import State
from statejax._tracing import StateTrace, describe_state, is_leaked
from statejax.registry._recording import Recording, RecordingTrace
from statejax.registry._split import Split

__all__ = [
    "Lift",
    "MissingStates",
    "PureCore",
    "StateSetChanged",
    "TraceMode",
    "check_traceable",
]


class TraceMode(enum.Enum):
    """How a trace of a pure core meets a state missing from its split.

    Either way the missing states are noted on the pure core (`PureCore.noted`), the
    one signal the engine grows the split by; the mode decides what the trace does next.
    """

    #: A real trace (jit compiling, grad or vmap running): abort it with
    #: `StateSetChanged`, so nothing is compiled or run on a stale split.
    RUN = "run"
    #: An abstract trace under `jax.eval_shape`: let it finish (JAX frees a trace that
    #: returns, not one aborted by an exception, with the values it closed over).
    DISCOVER = "discover"


class MissingStates(NamedTuple):
    """States a trace touched outside its split: read only, and written."""

    reads: tuple[State[Any], ...]
    writes: tuple[State[Any], ...]


class StateSetChanged(Exception):
    """Aborts a `TraceMode.RUN` trace that met states outside its split.

    Internal control flow: it never escapes `StatefulFunction.__call__` of the
    function that raised it (`owner`). It carries no states: those are in the pure
    core's `noted`, which the engine grows the split by.
    """

    def __init__(self, owner: object) -> None:
        super().__init__("statejax internal: state set changed; retrying")
        self.owner = owner


class PureCore:
    """The user function made pure over a `Split`.

    `core(read_vals, write_vals, *args, **kwargs) -> (out, new_write_vals)`.
    After each call on a thread, `record` is that call's `StateTrace` (which
    states were read, written, created; it holds no values), for plugins that
    check usage, for example grad's "this state is never read". A transform that
    hands created states out (vmap does, for ensembles) sets
    `hands_out_created = True` in its lift; then, right after each call,
    `take_created_values` returns the values the states in `record.created` held
    when the function returned, for the transform to return from its JAX transform
    and hand out with `statejax.extend.adopt_created`. Both are kept per thread, so
    threads tracing the same function at once do not mix them up.

    A trace that meets states outside the split notes them in `noted`, then acts by
    this thread's `TraceMode` (RUN, unless inside `traced_as(TraceMode.DISCOVER)`).
    The mode cannot be an argument: the lift's JAX transform calls the pure core as
    `pure(read_vals, write_vals, *args)`, and it must be this very function in both
    modes, so that `jax.jit` reuses the discovery trace for the first call.
    """

    __slots__ = (
        "__weakref__",
        "_local",
        "env_reads",
        "fn",
        "hands_out_created",
        "name",
        "noted",
        "owner",
        "split",
    )

    def __init__(self, fn: Callable[..., Any], split: Split, name: str, owner: object) -> None:
        self.fn = fn
        self.split = split
        self.name = name
        self.owner = owner
        # Off by default: kept values are tracers, which must not outlive their trace.
        self.hands_out_created = False
        # The states any trace of this core (any thread, either mode) found missing.
        # Once one is noted, this split is stale for good: JAX may have cached a lenient
        # discovery trace (jax.jit does), so no thread may run it for real.
        self.noted: list[MissingStates] = []
        # The `statejax.environ` settings its traces read, with the values they saw.
        self.env_reads: dict[Any, Any] = {}
        self._local = threading.local()

    @contextlib.contextmanager
    def traced_as(self, mode: TraceMode) -> Iterator[None]:
        """Inside the block, this thread's traces of this core meet missing states per `mode`."""
        local = self._local
        saved: TraceMode = getattr(local, "mode", TraceMode.RUN)
        local.mode = mode
        try:
            yield
        finally:
            local.mode = saved

    @contextlib.contextmanager
    def recorded_by(self, recording: Recording | None) -> Iterator[None]:
        """This thread's next trace of this core in the block fills `recording` (if any)."""
        self._local.recording = recording
        try:
            yield
        finally:
            self._local.recording = None

    @property
    def replay(self) -> Recording | None:
        """The discovery trace that found this split, which this thread's next trace of
        this core stages instead of running the function (see `_recording`), or `None`.

        Per thread: another thread may trace the split first, in its own JAX settings
        (`jax.enable_x64`, a matmul precision) that the recording's input types do not
        show; it traces its own call, and leaves this thread's recording alone.
        """
        replay: Recording | None = getattr(self._local, "replay", None)
        return replay

    @replay.setter
    def replay(self, recording: Recording | None) -> None:
        self._local.replay = recording

    @property
    def record(self) -> StateTrace | None:
        """The record of this thread's last call (`None` before the first)."""
        record: StateTrace | None = getattr(self._local, "record", None)
        return record

    def take_created_values(self) -> list[Any]:
        """The values of the states created by this thread's last call; then forgets them.

        Forgetting matters: they are tracers of the enclosing JAX transform, which
        must not outlive it.
        """
        values: list[Any] = getattr(self._local, "created_values", [])
        self._local.created_values = []
        return values

    def __call__(
        self, read_vals: Sequence[Any], write_vals: Sequence[Any], /, *args: Any, **kwargs: Any
    ) -> tuple[Any, list[Any]]:
        split = self.split
        replay = self.replay
        if replay is not None:
            self.replay = None  # used once: the trace JAX compiles for the first call
            replayed = replay.replay(
                split.read_states, split.write_states, read_vals, write_vals, args, kwargs
            )
            if replayed is not None:
                self._local.record = replay.record
                return replayed
        recorder: Recording | None = getattr(self._local, "recording", None)
        if recorder is None:
            trace = StateTrace(self.name, known=split.states)
        else:
            self._local.recording = None  # for this trace only, not for nested calls
            recorder.begin(
                split.read_states, split.write_states, (read_vals, write_vals, args, kwargs)
            )
            trace = RecordingTrace(self.name, split.states, recorder)
        values = trace.values
        for state, value in zip(split.read_states, read_vals, strict=True):
            values[id(state)] = value
        for state, value in zip(split.write_states, write_vals, strict=True):
            values[id(state)] = value
        with trace:
            try:
                with recording(self.env_reads):
                    out = self.fn(*args, **kwargs)
            except StateSetChanged:
                raise
            except Exception as exc:
                # With states outside the split, the error may only be an artefact of this
                # trace (an inner vmap saw an unmapped value): retry with the union first;
                # the retry raises again if the error is real.
                if trace.unknown and self._note(trace) is TraceMode.RUN:
                    raise StateSetChanged(self.owner) from exc
                raise
            # A state the split has as read-only but that this trace wrote must move.
            misplaced = [s for s in trace.writes.values() if split.is_read_only(s)]
            missing = bool(trace.unknown or misplaced)
            if missing and self._note(trace, misplaced) is TraceMode.RUN:
                raise StateSetChanged(self.owner)
            new_write_vals = [values[id(s)] for s in split.write_states]
            created_values = [values[id(s)] for s in trace.created]
            check_traceable(split.write_states, new_write_vals, self.name)
            check_traceable(trace.created, created_values, self.name)
            if recorder is not None:
                # The discovery trace returns every state it wrote: its jaxpr is then the
                # whole computation over the grown split, to replay.
                new_write_vals = recorder.finish(
                    trace,
                    split.write_states,
                    out,
                    new_write_vals,
                    self.noted[-1] if missing else None,
                )
                check_traceable(recorder.written, new_write_vals, self.name)
        self._local.record = trace
        if self.hands_out_created:
            self._local.created_values = created_values
        return out, new_write_vals

    def _note(self, trace: StateTrace, misplaced: Sequence[State[Any]] = ()) -> TraceMode:
        """Note the states `trace` found missing (the one signal); return this thread's mode."""
        unknown = trace.unknown
        reads = tuple(s for k, s in unknown.items() if k not in trace.writes)
        writes = tuple(s for k, s in unknown.items() if k in trace.writes)
        self.noted.append(MissingStates(reads, writes + tuple(misplaced)))
        mode: TraceMode = getattr(self._local, "mode", TraceMode.RUN)
        return mode


def _is_traceable(leaf: object) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def check_traceable(states: Sequence[State[Any]], values: Sequence[Any], name: str) -> None:
    """Raise a TraceError naming the first state whose value JAX cannot carry.

    A tracer of a JAX trace that has already ended (written inside a plain JAX
    transform deeper than the one the state was written in) cannot be carried
    either: it would raise JAX's UnexpectedTracerError later, naming no state.
    """
    for state, value in zip(states, values, strict=True):
        for leaf in jax.tree.leaves(value):
            if isinstance(leaf, jax.core.Tracer):
                if tracer_trace(leaf).is_valid():
                    continue
                raise TraceError(
                    f"{name}: {describe_state(state)} was written inside a plain JAX transform "
                    "(jax.grad, jax.vmap, lax.scan, ...) that has already returned, so its "
                    "value is a tracer that escaped it. Use the statejax transform of the same "
                    "name (statejax.grad, statejax.vmap, statejax.scan, ...) instead, so the "
                    "state is threaded through it."
                )
            if not _is_traceable(leaf):
                _refuse_untraceable(state, leaf, name)


def _refuse_untraceable(state: State[Any], leaf: object, name: str) -> None:
    if is_leaked(state):
        raise StateLeakError(
            f"{name}: {describe_state(state)} was created inside a transform that has "
            "returned, and is used here; its value only existed inside that trace. Create "
            "the state outside the transform (for example in the module's __init__) and "
            "write to it inside."
        )
    raise TraceError(
        f"{name}: {describe_state(state)} holds a {type(leaf).__name__}, which JAX "
        "cannot trace. A state's value must be a pytree of arrays or numbers; keep "
        "other objects as plain attributes (or static arguments)."
    )


#: `lift(split, pure) -> transformed`: hand the pure core to a JAX transform.
#: `transformed(read_vals, write_vals, *args, **kwargs)` returns
#: `(result, new_write_vals)`; the engine merges the latter and returns `result`.
Lift = Callable[[Split, PureCore], Callable[..., tuple[Any, Sequence[Any]]]]

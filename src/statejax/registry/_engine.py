"""The split / pure core / merge recipe shared by every transform.

A transform plugin wraps a user function in a `StatefulFunction` and supplies one
thing: `lift(split, pure)`, which hands the pure core to a JAX transform. The
engine does the rest:

1. **split**: the `Split` lists the states the function reads (only) and the
   states it writes. It starts as the plugin's seed (often empty) and is
   *verified* by every trace: a trace that touches a state outside the split
   notes the missing states on its pure core (`PureCore.noted`), and the engine
   retries with the union. Before a call runs for real, an abstract trace
   (`TraceMode.DISCOVER`, under `jax.eval_shape`) completes the split; a real
   trace that still meets a new state (`TraceMode.RUN`) is aborted with
   `StateSetChanged`, so nothing runs on a stale split. So discovery costs one
   extra trace on the first call and nothing afterwards; for `jax.jit` lifts not
   even that: the discovery trace is recorded and replayed (`_recording`).
2. **pure core**: `PureCore` `(read_vals, write_vals, *args, **kwargs) ->
   (out, new_write_vals)` runs the user function inside a `StateTrace` that
   gives the states the given values (tracers, under a JAX transform). Those
   values live in the trace, never in the shared `State` objects.
3. **merge**: the new values of the written states are stored back, all of one
   call together, only after the lifted function returned.

If anything raises, no state changes. Splits are cached per identity of the
modules and states passed (positionally or by keyword), weakly: a cache entry
dies with the objects it is keyed by and keeps none of them alive.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

import jax
import numpy as np

from statejax._errors import PluginError, StateLeakError, TraceError
from statejax._jax_compat import (
    DISABLE_JIT as _DISABLE_JIT,
)
from statejax._jax_compat import (
    api_boundary,
    current_jax_trace,
    is_top_level,
    jit_disabled,
    trace_chain,
    tracer_trace,
)
from statejax._settings import GENERATION, changed, recording
from statejax._state import State
from statejax._state_hooks import hooks_paused
from statejax._tracing import (
    CALL_REFS,
    THIS_THREAD,
    StateTrace,
    contains_tracer,
    current_traces,
    describe_state,
    is_leaked,
    lives_in_trace,
    release_call_refs,
    storable_value,
)
from statejax.graph import Module
from statejax.registry._recording import Recording, RecordingTrace

__all__ = [
    "CALLS_PURE_AS_IS",
    "Lift",
    "MissingStates",
    "PureCore",
    "Split",
    "StateSetChanged",
    "StatefulFunction",
    "TraceMode",
]

P = ParamSpec("P")
R = TypeVar("R")


class Split:
    """The states a function touches: `read_states` (read only) and `write_states`.

    Order is first-touch order and is stable across calls, so the value lists
    line up with the pure core's inputs and outputs.
    """

    __slots__ = ("_index", "read_states", "write_states")

    def __init__(
        self, read_states: Sequence[State[Any]] = (), write_states: Sequence[State[Any]] = ()
    ) -> None:
        self.write_states: tuple[State[Any], ...] = tuple(_unique(write_states))
        written = {id(s) for s in self.write_states}
        self.read_states: tuple[State[Any], ...] = tuple(
            s for s in _unique(read_states) if id(s) not in written
        )
        self._index: dict[int, tuple[bool, int]] = {
            **{id(s): (False, i) for i, s in enumerate(self.read_states)},
            **{id(s): (True, i) for i, s in enumerate(self.write_states)},
        }

    @property
    def states(self) -> tuple[State[Any], ...]:
        """Every state in the split: the read-only ones, then the written ones."""
        return self.read_states + self.write_states

    def locate(self, state: State[Any]) -> tuple[bool, int] | None:
        """`(is_written, index)` of `state` in its list, or `None` if absent."""
        return self._index.get(id(state))

    def position(self, state: State[Any]) -> tuple[bool, int]:
        """`(is_written, index)` of `state`, which must be in the split (else `KeyError`).

        For the states a transform put in the split itself (its seed), where
        `locate`'s `None` cannot happen: `written, i = split.position(state)`
        type-checks, and `write_vals[i] if written else read_vals[i]` is its value.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> from statejax.extend import Split
            >>> a, b = sj.State(jnp.zeros(1)), sj.State(jnp.ones(1))
            >>> Split(read_states=[a], write_states=[b]).position(b)
            (True, 0)
        """
        location = self._index.get(id(state))
        if location is None:
            raise KeyError(
                f"{describe_state(state)} is not in this split; put it in the seed Split "
                "of the StatefulFunction, or use split.locate, which returns None"
            )
        return location

    def is_read_only(self, state: State[Any]) -> bool:
        """Whether `state` is in the split as read-only."""
        location = self._index.get(id(state))
        return location is not None and not location[0]

    def __contains__(self, state: object) -> bool:
        return id(state) in self._index

    def union(self, reads: Sequence[State[Any]], writes: Sequence[State[Any]]) -> Split:
        """A split with these reads and writes added (a state written anywhere is written)."""
        return Split(self.read_states + tuple(reads), self.write_states + tuple(writes))

    def same_as(self, other: Split) -> bool:
        """Whether `other` holds the same states, each read-only or written alike."""
        return self._index == other._index

    def gather(self, top_level: bool | None = None) -> tuple[list[Any], list[Any]]:
        """The current values, as `(read_values, write_values)`.

        Inside an enclosing trace the reads go through `State.value`, so the
        enclosing transform learns of them (that is how transforms nest), and see
        the values that trace gave. Outside, the stored values are read together
        under the merge lock, so a call never sees half of another call's merge.
        `top_level`: whether no JAX transform is tracing (the caller may know).
        """
        if current_traces():
            # Passing values on is no read of the user's: no state hook runs.
            with hooks_paused():
                return [s.value for s in self.read_states], [s.value for s in self.write_states]
        with _MERGE_LOCK:
            if not (is_top_level() if top_level is None else top_level):
                # Inside a plain JAX transform: a state created there holds its value
                # with the trace it belongs to; `.value` unwraps it.
                with hooks_paused():
                    return (
                        [s.value for s in self.read_states],
                        [s.value for s in self.write_states],
                    )
            return [s._value for s in self.read_states], [s._value for s in self.write_states]

    def scatter(
        self,
        write_values: Sequence[Any],
        top_level: bool | None = None,
        *,
        name: str = "",
        concrete: bool = False,
    ) -> None:
        """Store new values into the written states (recorded by an enclosing trace).

        Every value is checked before any is stored (`check_merge`): one value per
        written state, and no tracer that belongs to no running trace (one kept from an
        earlier trace). Outside any statejax trace, a tracer (a statejax transform
        called inside a plain JAX transform) may only go into a state created inside
        that plain transform. Then all are stored together, under the merge lock.
        `name` names the transform in error messages. `concrete=True` says the values
        are known to hold no tracer (they are what a `jax.jit` function returned at the
        top level): only their number is checked.

        Examples:
            >>> import jax.numpy as jnp
            >>> import statejax as sj
            >>> from statejax.extend import Split
            >>> a, b = sj.State(jnp.zeros(1)), sj.State(jnp.zeros(1))
            >>> Split(write_states=[a, b]).scatter([jnp.ones(1)], name="my_jit")
            Traceback (most recent call last):
            statejax._errors.PluginError: my_jit: 1 new value for the 2 written states; State (float32[1]) got none. ...
            >>> float(a.value[0]), float(b.value[0])  # nothing was stored
            (0.0, 0.0)
        """
        if current_traces():
            write_values = check_merge(name, self.write_states, write_values, False)
            # The user's writes ran their state hooks when they were traced: this
            # passes their values on to the enclosing trace, running none again.
            with hooks_paused():
                for state, value in zip(self.write_states, write_values, strict=True):
                    state.value = value
            return
        if top_level is None:
            top_level = is_top_level()
        write_values = check_merge(name, self.write_states, write_values, top_level, concrete)
        # Outside every JAX transform the values are concrete (checked above). Inside a
        # plain one (a statejax transform called in jax.jit) every value is checked before
        # any is stored: a tracer may only go into a state created inside that transform.
        if not top_level:
            stored = []
            for state, value in zip(self.write_states, write_values, strict=True):
                if not lives_in_trace(state) and contains_tracer(value):
                    _refuse_tracers((state,), (value,))
                stored.append(storable_value(state, value))
            with _MERGE_LOCK:
                for state, value in zip(self.write_states, stored, strict=True):
                    state._value = value
            return
        with _MERGE_LOCK:
            for state, value in zip(self.write_states, write_values, strict=True):
                state._value = value

    def __repr__(self) -> str:
        return f"Split(reads={len(self.read_states)}, writes={len(self.write_states)})"


# The types of values known to hold no tracer (arrays, numbers): a merge at the top level
# whose values are all of these types is checked by one set comparison. Grows as values of
# other concrete array types are met; never holds a container type.
_CONCRETE_TYPES: set[type] = {np.ndarray, bool, int, float, complex}


def _short(value: object) -> str:
    """`repr(value)` on one line, at most 80 characters."""
    return " ".join(repr(value).split())[:80]


def _is_concrete_type(kind: type) -> bool:
    return not issubclass(kind, jax.core.Tracer) and issubclass(
        kind, (jax.Array, np.ndarray, np.generic, bool, int, float, complex)
    )


def check_merge(
    name: str,
    states: Sequence[State[Any]],
    values: Any,
    top_level: bool,
    concrete: bool = False,
) -> Sequence[Any]:
    """Check the values a merge would store in `states`; return them as a sequence.

    Every merge that stores values given by plugin code (a lift's result, a batching
    hook's `finish`) calls this before it stores anything, so a bad value changes no
    state: there must be one value per state, and no value may hold a tracer that
    belongs to no running JAX trace (one kept from an earlier trace, or of a JAX
    transform that has returned; at the top level, any tracer). Raises a
    `PluginError` naming `name` (the transform) and the state. Cheap at the top
    level when every value is an array: one pass over their types; with `concrete`
    (the values are known to hold no tracer), only their number is checked.
    """
    label = f"{name}: " if name else ""
    if isinstance(values, (list, tuple)):
        checked: Sequence[Any] = values
    else:
        if isinstance(
            values, (str, bytes, Mapping, jax.Array, np.ndarray, np.generic)
        ) or not isinstance(values, Iterable):
            raise PluginError(
                f"{label}the new values of the written states are {type(values).__name__} "
                f"{_short(values)}, not a sequence. A lift's function returns (result, "
                "new_write_values), with new_write_values a list holding one value per "
                "state in split.write_states, in that order. No state was changed."
            )
        checked = list(values)
    if len(checked) != len(states):
        n, m = len(checked), len(states)
        if n < m:
            fault = f"{describe_state(states[n])} got none"
        else:
            fault = f"{n - m} more than there are states"
        raise PluginError(
            f"{label}{n} new value{'s' if n != 1 else ''} for the {m} written state"
            f"{'s' if m != 1 else ''}; {fault}. A lift's function returns (result, "
            "new_write_values), with one value per state in split.write_states, in that "
            "order. No state was changed."
        )
    if concrete:
        return checked
    if top_level:
        kinds = set(map(type, checked))
        if kinds <= _CONCRETE_TYPES:
            return checked
    allowed = None if top_level else trace_chain(current_jax_trace())
    for state, value in zip(states, checked, strict=True):
        for leaf in jax.tree.leaves(value):
            if not isinstance(leaf, jax.core.Tracer):
                continue
            if allowed is not None and any(tracer_trace(leaf) is t for t in allowed):
                continue
            raise PluginError(
                f"{label}the new value of {describe_state(state)} is a JAX tracer that "
                "belongs to no running trace (kept from an earlier trace, or of a JAX "
                "transform that has returned); storing it would leak it. A lift (or a "
                "batching hook's finish) must hand back the values its JAX transform "
                "returned in this call. No state was changed."
            )
    if top_level:
        _CONCRETE_TYPES.update(kind for kind in kinds if _is_concrete_type(kind))
    return checked


def _refuse_tracers(states: Sequence[State[Any]], values: Sequence[Any]) -> None:
    """Called inside a plain JAX transform, a statejax transform returns tracers: refuse them."""
    for state, value in zip(states, values, strict=True):
        if contains_tracer(value):
            raise TraceError(
                f"a statejax transform was called inside a plain JAX transform (jax.jit, "
                f"jax.grad, ...) and would store a tracer in {describe_state(state)}. Use "
                "the statejax transform on the outside too (statejax.jit, statejax.grad, ...)."
            )


def _unique(states: Sequence[State[Any]]) -> list[State[Any]]:
    seen: set[int] = set()
    out = []
    for s in states:
        if id(s) not in seen:
            seen.add(id(s))
            out.append(s)
    return out


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
        "replay",
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
        # The discovery trace that found this split, to stage instead of tracing the
        # function again, once (see `_recording`).
        self.replay: Recording | None = None
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
    def recorded_by(self, recording: Recording) -> Iterator[None]:
        """This thread's next trace of this core in the block fills `recording`."""
        self._local.recording = recording
        try:
            yield
        finally:
            self._local.recording = None

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
            _check_traceable(split.write_states, new_write_vals, self.name)
            _check_traceable(trace.created, created_values, self.name)
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
                _check_traceable(recorder.written, new_write_vals, self.name)
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


def _check_traceable(states: Sequence[State[Any]], values: Sequence[Any], name: str) -> None:
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


class _Version:
    """One split of an entry with its pure core and lifted function.

    Only `verified` changes, once, from False to True: an abstract trace found
    that the split holds every state the function touches.
    """

    __slots__ = (
        "_verified",
        "env_reads",
        "env_seen",
        "fast",
        "jitted",
        "pure",
        "read_states",
        "signatures",
        "split",
        "transformed",
        "write_states",
    )

    def __init__(
        self, split: Split, pure: PureCore, transformed: Callable[..., Any], verified: bool
    ) -> None:
        self.split = split
        # The split's lists, one attribute away for the cached call path.
        self.read_states = split.read_states
        self.write_states = split.write_states
        self.pure = pure
        self.transformed = transformed
        self._verified = verified
        # The environ settings its traces read (the pure core's dict, shared), and the
        # environ generation at which they were last found unchanged.
        self.env_reads = pure.env_reads
        self.env_seen = GENERATION.value
        # A `jax.jit` function: called at the top level (jit not disabled), it returns
        # concrete arrays only (JAX refuses a tracer kept from another trace), so the
        # merge checks only the number of values.
        self.jitted = isinstance(transformed, _jit_function_type())
        # The signatures of the eager calls this split was verified for.
        self.signatures: set[Hashable] = set()
        # Whether a call may take the inlined cached path: a verified `jax.jit` core
        # (which returns concrete arrays at the top level, jit not disabled).
        self.fast = verified and self.jitted

    @property
    def verified(self) -> bool:
        return self._verified

    @verified.setter
    def verified(self, value: bool) -> None:
        self._verified = value
        self.fast = value and self.jitted


class _Entry:
    """The cache entry of one tuple of modules/states: the current `_Version`.

    A call reads `version` once and uses only that, so a thread that grows the
    split (installing a new version) never gives another thread a split that does
    not match its lifted function. `refs` are the weak references (with
    callbacks that drop the entry) to the objects the entry is keyed by.
    """

    __slots__ = ("__weakref__", "owner", "refs", "version")

    def __init__(self) -> None:
        self.version: _Version | None = None
        self.refs: list[weakref.ref[Any]] = []
        # Names this entry to its pure cores and their StateSetChanged signals. A token,
        # not the entry itself, so that the entry is freed by reference counting (no
        # cycle through its pure cores) as soon as a module it is keyed by dies.
        self.owner = object()

    @property
    def split(self) -> Split:
        assert self.version is not None
        return self.version.split

    @property
    def pure(self) -> PureCore:
        assert self.version is not None
        return self.version.pure


class StatefulFunction(Generic[R]):
    """A user function wrapped with the split/merge recipe around a plugin's `lift`.

    Calling it gathers the split's values, calls the lifted pure core, merges the
    written values and returns the result. Splits are cached per identity of the
    modules and states passed as arguments, positionally or by keyword (so a
    jitted method keeps one split per instance); an entry dies with those
    objects and keeps none of them alive.

    `staged=True` says that the lifted function traces the whole pure core
    before running any of it (as `jax.jit` and `lax.scan` do). Otherwise
    (`jax.grad`, `jax.vmap` run as they trace) an eager call first checks the
    split with an abstract trace, so the function runs for real once per call
    even when a call touches a state no earlier call did.

    `eager(*args, **kwargs)`, if given, is called instead under `jax.disable_jit()` (as
    `jit` runs the function eagerly there).

    `static_key(args, kwargs)` gives the hashable values of the arguments the
    lifted function treats as compile-time constants (jit's static arguments): each
    gets its own cache entry, so a variant stores back only the states it writes,
    not those of every variant (which a concurrent call of another variant could
    be writing).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.extend import StatefulFunction
        >>> count = sj.State(jnp.array(0))
        >>> def step(x):
        ...     count.value += 1
        ...     return x * 2
        >>> lift = lambda split, pure: jax.jit(pure)      # a state-aware jit in one line
        >>> f = StatefulFunction(step, "my_jit", lift, staged=True)
        >>> int(f(jnp.array(3))), int(count.value)
        (6, 1)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        lift: Lift,
        seed: Split | None = None,
        *,
        staged: bool = False,
        static_key: Callable[[tuple[Any, ...], dict[str, Any]], Hashable] | None = None,
        eager: Callable[..., Any] | None = None,
    ) -> None:
        self.fn = fn
        self.eager = eager
        self.name = name
        self.lift = lift
        self.seed = seed if seed is not None else Split()
        self.staged = staged
        self.static_key = static_key
        # Entries keyed by modules only (or by nothing) are held here. An entry keyed by
        # a State is held by that state instead (its split refers to the state, so a
        # strong reference from here would keep the state alive for ever), and only
        # referenced weakly here.
        self._entries: dict[tuple[Hashable, ...], _Entry] = {}
        self._state_keyed: dict[tuple[Hashable, ...], weakref.ref[_Entry]] = {}
        # The entry of calls with no argument (key `()`), one attribute away.
        self._bare: _Entry | None = None
        self._lock = threading.Lock()

    def split_for(self, *args: Any, **kwargs: Any) -> Split:
        """The current split for a call with these arguments."""
        entry = self._find(self._key(args, kwargs))
        return entry.split if entry is not None else self.seed

    def clear_cache(self) -> None:
        """Forget every split and lifted function; the next call discovers again."""
        with self._lock:
            self._bare = None
            self._entries.clear()
            for ref in list(self._state_keyed.values()):
                entry = ref()
                if entry is not None:
                    _release_from_states(entry)
            self._state_keyed.clear()

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Hashable, ...]:
        """The cache key of a call: the identities of the modules and states passed, then
        (as one nested tuple) the static values."""
        key = [id(a) for a in args if isinstance(a, _BY_REFERENCE)]
        if kwargs:
            key += [id(v) for v in kwargs.values() if isinstance(v, _BY_REFERENCE)]
        if self.static_key is None:
            return tuple(key)
        return (*key, self.static_key(args, kwargs))

    def _find(self, key: tuple[Hashable, ...]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            ref = self._state_keyed.get(key)
            entry = ref() if ref is not None else None
        return entry

    def as_function(self, like: Callable[P, Any]) -> Callable[P, R]:
        """A plain function that calls this one, with `like`'s name, docs and signature.

        Being a function, it binds as a method when stored on a class, so a
        decorated method works. It carries `clear_cache()` and `stateful`
        (this object).
        """
        # A JAX API boundary (one function, calling this object): errors leave without
        # statejax's frames in their traceback, as they leave a JAX transform.
        wrapper: Callable[P, R] = functools.wraps(like)(api_boundary(self.__call__))
        wrapper.clear_cache = self.clear_cache  # type: ignore[attr-defined]
        wrapper.stateful = self  # type: ignore[attr-defined]
        return wrapper

    def __call__(self, /, *args: Any, **kwargs: Any) -> R:
        # `self` positional-only: a jitted method may be called as `Cls.method(self=m)`.
        # Count call depth here, not through helper calls: this is the cached call path.
        if self.eager is not None and _DISABLE_JIT.value:
            eager: R = self.eager(*args, **kwargs)
            return eager
        calls = CALL_REFS
        depth = calls.depth
        calls.depth = depth + 1
        try:
            if args or kwargs or self.static_key:
                key = self._key(args, kwargs)
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._find(key) or self._new_entry(key, args, kwargs)
            else:
                entry = self._bare or self._bare_entry()
            version = entry.version
            assert version is not None
            if version.env_reads and version.env_seen != GENERATION.value:
                version = self._refresh(entry, version)
            top_level = is_top_level()
            if version.fast and top_level and not THIS_THREAD.stack:
                # The cached call of a verified `jax.jit` core at the top level, inlined:
                # gather under the merge lock, call the compiled core, merge under it.
                states = version.write_states
                _lock()  # (acquire/release: cheaper than `with` on this path)
                try:
                    read_vals = [s._value for s in version.read_states]
                    write_vals = [s._value for s in states]
                finally:
                    _unlock()
                try:
                    returned = version.transformed(read_vals, write_vals, *args, **kwargs)
                except (StateSetChanged, TypeError) as exc:  # a retrace met something new
                    fast: R = self._settle_failed(exc, entry, version, args, kwargs, top_level)
                    return fast
                if type(returned) is tuple and len(returned) == 2:
                    result, new_vals = returned
                    if type(new_vals) is list and len(new_vals) == len(states):
                        _lock()
                        try:
                            for state, value in zip(states, new_vals):  # noqa: B905 (checked)
                                state._value = value
                        finally:
                            _unlock()
                        return result  # type: ignore[no-any-return]
                else:
                    self._refuse_result(returned)
                    result, new_vals = returned
                version.split.scatter(new_vals, top_level, name=self.name, concrete=True)
                return result  # type: ignore[no-any-return]
            if version.verified and (self.staged or not top_level):
                mode = TraceMode.RUN  # the cached call path: no abstract trace first
            else:
                mode = self._mode(version, args, kwargs)
            result_: R = self._settle(entry, version, mode, args, kwargs, top_level)
            return result_
        finally:
            calls.depth = depth
            if not depth and calls.made:
                release_call_refs()

    def _bare_entry(self) -> _Entry:
        """The entry of calls with no argument, made on the first."""
        entry = self._find(()) or self._new_entry((), (), {})
        self._bare = entry
        return entry

    def _settle_failed(
        self,
        exc: Exception,
        entry: _Entry,
        version: _Version,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        top_level: bool,
    ) -> Any:
        """The inlined cached call raised: handle it as `_settle` handles its own call."""
        if isinstance(exc, StateSetChanged):
            if exc.owner is not entry.owner or not version.pure.noted:
                raise exc
            return self._settle(
                entry, version, TraceMode.RUN, args, kwargs, top_level, aborted=True
            )
        split = version.split
        with _MERGE_LOCK:
            values = [s._value for s in split.states]
        _check_traceable(split.states, values, self.name)
        raise exc

    def _refuse_result(self, returned: object) -> None:
        """A lifted function returned no `(result, new_write_values)` pair: name the lift.

        A list of two is accepted as the pair (returns normally)."""
        if isinstance(returned, list) and len(returned) == 2:
            return
        lift = self.lift
        where = f"{getattr(lift, '__module__', '?')}.{getattr(lift, '__qualname__', lift)}"
        raise PluginError(
            f"{self.name}: the function made by its lift ({where}) returned "
            f"{type(returned).__name__} {_short(returned)}, not a pair (result, "
            "new_write_values). A lift's function returns what the pure core returns: the "
            "result, and a list with the new value of each state in split.write_states. "
            "No state was changed."
        )

    def prepare(self, /, *args: Any, **kwargs: Any) -> tuple[Split, Callable[..., Any]]:
        """The verified split and lifted function a call with these arguments would use.

        Nothing runs and no state changes (the split is found by abstract traces, as on a
        first call): for ahead-of-time inspection, such as jit's `.lower(...)`, which
        calls the lifted function's own methods on `split.gather()`.
        """
        calls = CALL_REFS
        calls.depth += 1
        try:
            key = self._key(args, kwargs)
            entry = self._find(key) or self._new_entry(key, args, kwargs)
            version = entry.version
            assert version is not None
            if version.env_reads and version.env_seen != GENERATION.value:
                version = self._refresh(entry, version)
            if not version.verified or version.pure.noted:
                version = self._discover(entry, version, args, kwargs)
            return version.split, version.transformed
        finally:
            calls.depth -= 1
            if not calls.depth and calls.made:
                release_call_refs()

    def _version(self, entry: _Entry, split: Split, verified: bool) -> _Version:
        pure = PureCore(self.fn, split, self.name, entry.owner)
        return _Version(split, pure, self.lift(split, pure), verified)

    def _new_entry(
        self, key: tuple[Hashable, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Entry:
        with self._lock:
            entry = self._find(key)
            if entry is not None:  # another thread made it meanwhile
                return entry
            entry = _Entry()
            entry.version = self._version(entry, self.seed, verified=False)
            forget = functools.partial(_forget_entry, weakref.ref(self), key, weakref.ref(entry))
            keyed = _by_reference(args, kwargs)
            entry.refs = [weakref.ref(obj, forget) for obj in keyed]
            states = [obj for obj in keyed if isinstance(obj, State)]
            if not states:
                self._entries[key] = entry
                return entry
            for state in states:
                held = getattr(state, "_cache_entries", None)
                if held is None:
                    held = state._cache_entries = []
                held.append(entry)
            self._state_keyed[key] = weakref.ref(entry)
            return entry

    def _refresh(self, entry: _Entry, version: _Version) -> _Version:
        """A version whose traces saw the environ settings as they are now.

        `version`'s traces read settings, and some setting changed since they were last
        checked: if one they read differs now, install a fresh version of the same split
        (a new lifted function, so JAX traces again); otherwise keep `version`.
        """
        generation = GENERATION.value  # read first: a change after it is seen next call
        if not changed(version.env_reads):
            version.env_seen = generation
            return version
        with self._lock:
            current = entry.version
            assert current is not None
            if current is version:
                entry.version = current = self._version(entry, version.split, version.verified)
            return current

    def _grow(
        self,
        entry: _Entry,
        missing: Sequence[MissingStates],
        verified: bool,
        replay: Recording | None = None,
    ) -> _Version:
        """Install the split grown by the missing states (unless another thread already did).

        `replay`: the discovery trace that found them, for the new split's first trace.
        """
        reads = [s for found in missing for s in found.reads]
        writes = [s for found in missing for s in found.writes]
        with self._lock:
            current = entry.version
            assert current is not None
            split = current.split.union(reads, writes)
            if not split.same_as(current.split):
                entry.version = current = self._version(entry, split, verified)
                if replay is not None:
                    current.pure.replay = replay
                    current.pure.env_reads.update(replay.env_reads)
            return current

    def _mode(self, version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TraceMode:
        """Whether a call must first check its split with an abstract trace (DISCOVER).

        A staged lift needs this once per split: it traces everything before running
        anything, so a retrace meeting a new state costs nothing to abort. Under
        `jax.disable_jit` it runs eagerly, and an abstract trace would refuse what the
        user disabled jit for (`float(x)`, Python branches on values): skip it.

        An eager call of a lift that is not staged (grad, vmap) runs the function as it
        traces, so its split is checked for every new signature of the call (the
        structure, shapes and dtypes of the arguments and state values, and the
        values of other arguments), as `jax.jit` retraces for a new signature.
        """
        if self.staged:
            return TraceMode.RUN if jit_disabled() else TraceMode.DISCOVER
        if version.verified:
            signature = _call_signature(version.split, args, kwargs)
            if signature is not None and signature in version.signatures:
                return TraceMode.RUN
        return TraceMode.DISCOVER

    def _settle(
        self,
        entry: _Entry,
        version: _Version,
        mode: TraceMode,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        top_level: bool,
        run: bool = True,
        aborted: bool = False,
    ) -> Any:
        """The one retry loop: trace `version` in `mode` until its split is complete.

        Each trace that finds states missing notes them on the pure core
        (`PureCore.noted`, the one signal), and the loop installs the grown split:
        after an abstract DISCOVER trace the grown split is checked by another one;
        after an aborted RUN trace the retry, itself a real trace, checks it. A split
        noted stale by another thread (whose lenient trace JAX may have handed this
        thread from its cache) is never run. With `run`, returns the call's result,
        having merged its writes; without, the verified version (nothing runs).
        """
        while True:
            if version.pure.noted:
                version = self._grow(entry, version.pure.noted, verified=aborted)
                mode = TraceMode.RUN if aborted else TraceMode.DISCOVER
                aborted = False
                continue
            if mode is TraceMode.DISCOVER:
                recording = self._trace_abstractly(version, args, kwargs)
                noted = version.pure.noted
                if noted:
                    if recording is None or len(noted) != 1 or noted[0] is not recording.missing:
                        continue
                    # One recorded trace found the missing states, each given an input: the
                    # grown split is complete, and its first trace replays that one.
                    version = self._grow(entry, noted, verified=True, replay=recording)
                    if not version.verified:  # another thread's split: check it
                        continue
                else:
                    version.verified = True
                    if not self.staged and run:
                        _remember_signature(version, args, kwargs)
                mode = TraceMode.RUN
            if not run:
                return version
            split = version.split
            read_vals, write_vals = split.gather(top_level)
            try:
                returned = version.transformed(read_vals, write_vals, *args, **kwargs)
            except StateSetChanged as abort:
                if abort.owner is not entry.owner or not version.pure.noted:
                    raise  # another function's trace: its own loop retries it
                aborted = True
                continue
            except TypeError:
                # JAX rejects a state value it cannot trace; say which state it was.
                _check_traceable(split.states, read_vals + write_vals, self.name)
                raise
            if type(returned) is not tuple or len(returned) != 2:
                self._refuse_result(returned)
            result, new_write_vals = returned
            concrete = version.jitted and top_level and not jit_disabled()
            split.scatter(new_write_vals, top_level, name=self.name, concrete=concrete)
            return result

    def _discover(
        self, entry: _Entry, version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Version:
        """Complete and verify the split with abstract traces; the verified version."""
        found: _Version = self._settle(
            entry, version, TraceMode.DISCOVER, args, kwargs, top_level=True, run=False
        )
        return found

    def _trace_abstractly(
        self, version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Recording | None:
        """One DISCOVER trace of the lifted function; missing states end up in `noted`.

        The lifted function runs under `jax.eval_shape`, which computes nothing and
        runs no side effect, while the pure core notes the states missing from the
        split instead of aborting. So an eager grad or vmap then runs the function
        for real once per call, and no JAX trace is abandoned by an exception
        (JAX keeps an aborted trace, and the values it closed over, alive).

        A `jax.jit` lift is traced by its own `trace` method instead, recorded (see
        `_recording`): returns the recording when it can be replayed.
        """
        split = version.split
        read_vals, write_vals = split.gather()
        transformed = version.transformed
        if calls_pure_as_is(transformed, version.pure):
            return self._trace_recorded(version, read_vals, write_vals, args, kwargs)

        def run(read: list[Any], write: list[Any]) -> None:
            transformed(read, write, *args, **kwargs)

        def run_closed() -> None:
            transformed(read_vals, write_vals, *args, **kwargs)

        try:
            # The trace around it keeps anything the lifted function stores in a
            # state while tracing (a created state it hands out, say): nothing leaks.
            with version.pure.traced_as(TraceMode.DISCOVER):
                with StateTrace(f"{self.name} (discovery)"):
                    if self.staged:
                        jax.eval_shape(run, read_vals, write_vals)
                    else:
                        # An eager lift (grad, vmap) hands the state values to its JAX
                        # transform, which traces only those it transforms: a state vmap
                        # broadcasts, or grad does not differentiate, stays concrete there,
                        # as a value jax.vmap closes over does. Discovery closes over them
                        # too, so a Python branch on such a value runs in both.
                        jax.eval_shape(run_closed)
        except Exception as exc:
            if not version.pure.noted:  # a real error, not an artefact of a missing state
                if isinstance(exc, TypeError):
                    _check_traceable(split.states, read_vals + write_vals, self.name)
                raise
        return None

    def _trace_recorded(
        self,
        version: _Version,
        read_vals: list[Any],
        write_vals: list[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Recording | None:
        """The DISCOVER trace of a `jax.jit` lift: `jax.jit(pure).trace(...)`, recorded.

        It runs nothing. With no state missing, JAX keeps this trace for the call (one
        trace in all); otherwise the recording, if it can be replayed, stands in for
        the grown split's first trace.
        """
        split = version.split
        pure = version.pure
        recording = Recording()
        try:
            with pure.traced_as(TraceMode.DISCOVER), pure.recorded_by(recording):
                with StateTrace(f"{self.name} (discovery)"):
                    jitted: Any = version.transformed  # a `jax.jit` function
                    traced = jitted.trace(read_vals, write_vals, *args, **kwargs)
        except Exception as exc:
            if not pure.noted:  # a real error, not an artefact of a missing state
                if isinstance(exc, TypeError):
                    _check_traceable(split.states, read_vals + write_vals, self.name)
                raise
            return None  # the grown split is traced anew: its errors name its states
        if not pure.noted:
            return None
        states = [*split.states, *recording.written, *(s for s, _ in recording.extra_inputs)]
        return recording if recording.seal(traced.jaxpr, states, pure.env_reads) else None


#: The attribute naming the pure core a wrapper calls with its own arguments, returning
#: what it returns: `jax.jit` of such a wrapper (or of the pure core itself) compiles the
#: pure core as it is, and its discovery trace can be replayed (see `_recording`).
CALLS_PURE_AS_IS = "__statejax_calls_pure_as_is__"


def calls_pure_as_is(transformed: Callable[..., Any], pure: PureCore) -> bool:
    """Whether `transformed` is `jax.jit` (or a wrapper with its `trace`, as jit's
    donating one) of the pure core, or of a wrapper of it marked with `CALLS_PURE_AS_IS`."""
    if not callable(getattr(transformed, "trace", None)):
        return False
    fn = getattr(transformed, "__wrapped__", None)
    return fn is pure or getattr(fn, CALLS_PURE_AS_IS, None) is pure


_MAX_SIGNATURES = 256


@functools.cache
def _jit_function_type() -> type:
    """The type of the functions `jax.jit` returns (made without running anything)."""
    return type(jax.jit(_identity))


def _identity(x: Any) -> Any:
    return x


def _call_signature(split: Split, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    """What decides which states an eager call touches, as far as the call shows it.

    The tree of the arguments and state values, the type of each array, the value of
    each flag (a bool, None, a string) and the type of anything else: like `jax.jit`,
    a new number does not count, so a learning rate that changes every call does not
    cost an abstract trace every call. `None` when the tree cannot be hashed.
    """
    read_vals, write_vals = split.gather()
    leaves, treedef = jax.tree.flatten((read_vals, write_vals, args, kwargs))
    signature: list[Any] = [treedef]
    for leaf in leaves:
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            signature.append(jax.typeof(leaf))
        elif leaf is None or isinstance(leaf, (bool, str)):
            signature.append((type(leaf), leaf))
        else:
            signature.append(type(leaf))
    key = tuple(signature)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _remember_signature(version: _Version, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Record that `version` is verified for eager calls of this signature."""
    signature = _call_signature(version.split, args, kwargs)
    if signature is not None:
        if len(version.signatures) >= _MAX_SIGNATURES:
            version.signatures.clear()
        version.signatures.add(signature)


def _forget_entry(
    owner: weakref.ref[StatefulFunction[Any]],
    key: tuple[Hashable, ...],
    entry_ref: weakref.ref[_Entry],
    _: object,
) -> None:
    """Weak-reference callback: an object an entry is keyed by died; drop the entry.

    It runs wherever the garbage collector runs, so it takes no lock; dict pops and
    list removals are atomic.
    """
    stateful = owner()
    if stateful is not None:
        stateful._entries.pop(key, None)
        stateful._state_keyed.pop(key, None)
    entry = entry_ref()
    if entry is not None:
        _release_from_states(entry)


def _release_from_states(entry: _Entry) -> None:
    """Stop the live states an entry is keyed by from holding it."""
    for ref in entry.refs:
        held = getattr(ref(), "_cache_entries", None)
        if held is not None:
            held[:] = [e for e in held if e is not entry]


_BY_REFERENCE = (Module, State)


def _by_reference(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[object]:
    found: list[object] = [a for a in args if isinstance(a, _BY_REFERENCE)]
    if kwargs:
        found += [v for v in kwargs.values() if isinstance(v, _BY_REFERENCE)]
    return found


# Held while a call's values are gathered or merged: a call sees all of another
# call's writes or none of them.
_MERGE_LOCK = threading.Lock()

_lock, _unlock = _MERGE_LOCK.acquire, _MERGE_LOCK.release

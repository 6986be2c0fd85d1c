"""A jitted function's first call traces it once: the discovery trace is recorded and replayed.

A `jax.jit` lift compiles the pure core with the values of the split's states as inputs,
so the split must be complete before the trace JAX compiles. Found by a separate trace,
that is two traces of the user's function on a first call: one to find the states, one
with them as inputs. Instead, the discovery trace (`jax.jit(pure).trace(...)`, which
runs nothing) gives each state it meets outside the split a *new input* of the jaxpr it
is building (`new_trace_input`), and returns the values of every state it wrote.
Its jaxpr is then the whole computation over the grown split, in another order: the
`Recording` keeps it with the map from the grown split's values to its inputs, and when
`jax.jit` traces the grown split's pure core, the core replays the recording
(`paste_jaxpr`: the equations are copied, none is traced) instead of running the
function again. When the discovery trace meets no new state, JAX keeps its trace for the
call itself, as `jax.jit(f).trace(...)` then `f(...)` does.

A recording is used once, for the trace it was made for: the same static arguments and
the same input types, checked when it is replayed; anything else traces as usual. It is
not made when the function creates states (they would be created once, not per trace),
returns a module or a state, or meets a state whose value JAX cannot take as an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax

from statejax._jax_compat import (
    current_jax_trace,
    new_trace_input,
    paste_jaxpr,
    tracer_trace,
    tracer_var,
)
from statejax._state import State
from statejax._tracing import StateTrace
from statejax.graph import Module

if TYPE_CHECKING:
    from jax.extend.core import ClosedJaxpr

__all__ = ["Recording", "RecordingTrace"]


class RecordingTrace(StateTrace):
    """The discovery trace's record: a state it meets outside its split becomes a new input.

    The new input carries the value the state has here (a concrete array at the top
    level, an enclosing trace's tracer inside one) as its type only, so the function sees
    a tracer, as it will in the call itself: a Python branch on the value fails here
    as it would there, and nothing of the value is baked into the jaxpr.
    """

    __slots__ = ("recording",)

    def __init__(self, name: str, known: Sequence[State[Any]], recording: Recording) -> None:
        super().__init__(name, known)
        self.recording: Recording | None = recording

    def read(self, state: State[Any]) -> Any:
        key = id(state)
        fresh = key not in self.reads and key not in self.values
        value = super().read(state)
        recording = self.recording
        if fresh and recording is not None and key in self.unknown:
            value = self.values[key] = recording.add_input(state, value, self._jax_trace)
        return value


class Recording:
    """One discovery trace of a jitted pure core, kept to be replayed by the grown split's core.

    Filled in three steps: `begin` (the pure core's inputs, by the engine's call of the
    pure core inside `jax.jit(...).trace`), `finish` (its outputs, with the values of
    the states written outside the split's written states appended), then `seal` (the
    jaxpr, once `trace` returned). `replay` stages it for the grown split.
    """

    __slots__ = (
        "env_reads",
        "extra_inputs",
        "in_tree",
        "in_vars",
        "jaxpr",
        "missing",
        "out_tree",
        "out_vars",
        "record",
        "seed_reads",
        "seed_writes",
        "statics",
        "usable",
        "written",
    )

    def __init__(self) -> None:
        self.usable = True
        self.seed_reads: tuple[State[Any], ...] = ()
        self.seed_writes: tuple[State[Any], ...] = ()
        self.in_tree: Any = None
        self.statics: list[Any] = []
        # The jaxpr variables of the pure core's inputs and outputs, as it saw them: the
        # jaxpr must have exactly these inputs, and these outputs where they are variables.
        self.in_vars: list[object] = []
        self.out_vars: list[object] = []
        # (state, number of leaves) of each state given new inputs, in the order given.
        self.extra_inputs: list[tuple[State[Any], int]] = []
        self.written: list[State[Any]] = []
        self.out_tree: Any = None
        self.jaxpr: ClosedJaxpr | None = None
        self.record: StateTrace | None = None
        self.missing: object = None
        self.env_reads: dict[Any, Any] = {}

    def begin(
        self,
        read_states: Sequence[State[Any]],
        write_states: Sequence[State[Any]],
        inputs: tuple[Any, ...],
    ) -> None:
        """Note the pure core's inputs `(read_vals, write_vals, args, kwargs)`.

        The tracers among their leaves are the jaxpr's declared inputs, in order; the
        other leaves are static arguments, which a replay must see again.
        """
        self.seed_reads, self.seed_writes = tuple(read_states), tuple(write_states)
        leaves, self.in_tree = jax.tree.flatten(inputs)
        inputs_here, self.statics = _inputs_and_statics(leaves)
        self.in_vars = [tracer_var(x) for x in inputs_here]
        if any(isinstance(x, jax.core.Tracer) for x in self.statics):
            # Another trace's tracer: not an input of this jaxpr, and not to keep.
            self.usable = False
            self.statics = []

    def add_input(self, state: State[Any], value: Any, trace: object) -> Any:
        """`value` (the state's value here) with each leaf replaced by a new input of `trace`."""
        if not self.usable:
            return value
        # The common case, one array, skips the tree walk.
        one = isinstance(value, jax.Array)
        leaves, tree = ([value], None) if one else jax.tree.flatten(value)
        inputs = [new_trace_input(trace, leaf) for leaf in leaves]
        if any(x is None for x in inputs):
            # Not an array: the engine refuses it with its own error; record nothing more.
            self.usable = False
            return value
        self.extra_inputs.append((state, len(inputs)))
        self.in_vars.extend(tracer_var(x) for x in inputs if x is not None)
        return inputs[0] if tree is None else jax.tree.unflatten(tree, inputs)

    def finish(
        self,
        trace: StateTrace,
        write_states: Sequence[State[Any]],
        out: Any,
        new_write_vals: list[Any],
        missing: object,
    ) -> list[Any]:
        """The pure core's new written values, followed by those of the other states it wrote.

        With no state `missing` (none noted), the values as they are: JAX keeps this
        trace for the call itself, so it must be the pure core's own.
        """
        if missing is None:
            self.usable = False
            self.written = list(write_states)
            return new_write_vals
        listed = {id(s) for s in write_states}
        listed.update(id(s) for s in trace.created)
        extra = [s for k, s in trace.writes.items() if k not in listed]
        self.written = [*write_states, *extra]
        values = [*new_write_vals, *(trace.values[id(s)] for s in extra)]
        self.record = trace
        if isinstance(trace, RecordingTrace):
            trace.recording = None  # the trace is kept as the call's record: no cycle
        self.missing = missing
        leaves, self.out_tree = jax.tree.flatten((out, values))
        here = trace._jax_trace
        self.out_vars = [
            tracer_var(x) if isinstance(x, jax.core.Tracer) and tracer_trace(x) is here else None
            for x in leaves
        ]
        if trace.created or _holds_by_reference(out):
            self.usable = False
        return values

    def seal(
        self, jaxpr: ClosedJaxpr, states: Sequence[State[Any]], env_reads: dict[Any, Any]
    ) -> bool:
        """Keep the recorded jaxpr, if it matches what was noted; whether it can be replayed.

        It cannot if a state's value entered it as a constant (read where no trace gave
        the state an input): the replay would run on that old value.
        """
        self.env_reads = dict(env_reads)
        if not self.usable or self.out_tree is None:
            return False
        # The jaxpr is the pure core's own: its inputs are the core's, in the order noted,
        # and its outputs the core's (a lift that transformed them is not replayed).
        invars, outvars = jaxpr.jaxpr.invars, jaxpr.jaxpr.outvars
        if len(invars) != len(self.in_vars) or any(
            a is not b for a, b in zip(invars, self.in_vars, strict=True)
        ):
            return False
        if len(outvars) != len(self.out_vars) or any(
            want is not None and got is not want
            for got, want in zip(outvars, self.out_vars, strict=True)
        ):
            return False
        consts = {id(c) for c in jaxpr.consts}
        if consts and any(id(leaf) in consts for s in states for leaf in jax.tree.leaves(s._value)):
            return False
        self.jaxpr = jaxpr
        return True

    def replay(
        self,
        read_states: Sequence[State[Any]],
        write_states: Sequence[State[Any]],
        read_vals: Sequence[Any],
        write_vals: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, list[Any]] | None:
        """Stage the recorded jaxpr for a call of the grown split: `(out, new_write_vals)`.

        `None` (nothing staged) unless the call is the one recorded: the same static
        arguments, and inputs of the same types. (Only the recording thread holds it: see
        `PureCore.replay`.)
        """
        jaxpr = self.jaxpr
        if jaxpr is None:
            return None
        value_of = {id(s): v for s, v in zip(read_states, read_vals, strict=True)}
        value_of.update((id(s), v) for s, v in zip(write_states, write_vals, strict=True))
        try:
            seed_reads = [value_of[id(s)] for s in self.seed_reads]
            seed_writes = [value_of[id(s)] for s in self.seed_writes]
            extra = [value_of[id(s)] for s, _ in self.extra_inputs]
        except KeyError:
            return None
        leaves, tree = jax.tree.flatten((seed_reads, seed_writes, args, kwargs))
        if tree != self.in_tree:
            return None
        inputs, statics = _inputs_and_statics(leaves)
        if not _same_statics(statics, self.statics):
            return None
        for value, (_, count) in zip(extra, self.extra_inputs, strict=True):
            state_leaves = jax.tree.leaves(value)
            if len(state_leaves) != count:
                return None
            inputs.extend(state_leaves)
        in_avals = jaxpr.in_avals  # sealed: its inputs are exactly `in_vars`
        if len(inputs) != len(in_avals) or any(
            not isinstance(x, jax.core.Tracer) or x.aval != a
            for x, a in zip(inputs, in_avals, strict=True)
        ):
            return None
        outs = paste_jaxpr(jaxpr, inputs)
        if outs is None:
            return None
        out, values = jax.tree.unflatten(self.out_tree, outs)
        new_of = {id(s): v for s, v in zip(self.written, values, strict=True)}
        return out, [new_of.get(id(s), value_of[id(s)]) for s in write_states]


def _inputs_and_statics(leaves: list[Any]) -> tuple[list[Any], list[Any]]:
    """The leaves that are tracers of the trace running here (the jaxpr's declared
    inputs, in order), and the others (static arguments)."""
    here = current_jax_trace()
    inputs, statics = [], []
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer) and tracer_trace(leaf) is here:
            inputs.append(leaf)
        else:
            statics.append(leaf)
    return inputs, statics


def _same_statics(now: list[Any], then: list[Any]) -> bool:
    if len(now) != len(then):
        return False
    for a, b in zip(now, then, strict=True):
        if a is b:
            continue
        try:
            if type(a) is not type(b) or not bool(a == b):
                return False
        except Exception:  # an array, or an object whose == is not a bool
            return False
    return True


def _holds_by_reference(tree: Any) -> bool:
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, (Module, State)))
    return any(isinstance(leaf, (Module, State)) for leaf in leaves)

"""`StateTraceStack`: BrainState's record of the states a block of code touched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from statejax._state import State
from statejax._state_hooks import hooks_paused
from statejax._tracing import StateTrace, adopt_created, peek_value

__all__ = ["StateTraceStack"]


class _OrderedTrace(StateTrace):
    """A `StateTrace` that also keeps the order of first touch and the value before it."""

    __slots__ = ("first", "touched")
    _ends_inner_traces = False  # BrainState's rule: exiting out of order is refused
    _reads_beneath = True  # a block of the computation around it: its reads are that one's

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.touched: dict[int, State[Any]] = {}
        self.first: dict[int, Any] = {}

    def _note(self, state: State[Any]) -> None:
        key = id(state)
        if key not in self.touched:
            self.touched[key] = state
            self.first[key] = peek_value(state)

    def read(self, state: State[Any]) -> Any:
        self._note(state)
        return super().read(state)

    def write(self, state: State[Any], value: Any) -> None:
        self._note(state)
        super().write(state, value)


class StateTraceStack:
    """Records which states a block reads and writes, in the order first touched.

    Inside `with StateTraceStack() as stack:` reads and writes are recorded (and
    reported to any enclosing transform, as usual). The written values stay in the
    block's record until it ends; when it ends normally they are written to the
    states (an ordinary write), and when it raises, no state changes.
    `recovery_original_values()` puts back the values the written states had before.

    Args:
        name: an optional name, shown in `str(stack)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> a, b = sj.State(jnp.zeros(2)), sj.State(jnp.zeros(2))
        >>> with sj.StateTraceStack(name="demo") as stack:
        ...     b.value = a.value + 1
        >>> stack.states == [a, b], stack.been_writen
        (True, [False, True])
        >>> b.value.tolist()
        [1.0, 1.0]
        >>> stack.recovery_original_values(); b.value.tolist()
        [0.0, 0.0]
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.states: list[State[Any]] = []
        self.been_writen: list[bool] = []
        self._original_state_values: list[Any] = []
        self._index: dict[int, int] = {}
        self._trace: _OrderedTrace | None = None

    def __str__(self) -> str:
        return f"StateTraceStack({self.name or ''})"

    @property
    def original_state_values(self) -> tuple[Any, ...]:
        """The value each state had when the block first touched it."""
        return tuple(self._original_state_values)

    def __enter__(self) -> StateTraceStack:
        if self._trace is not None:
            raise RuntimeError("a StateTraceStack cannot be entered while it is active")
        self._trace = _OrderedTrace(f"StateTraceStack({self.name or ''})")
        self._trace.__enter__()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Leave the block: apply its writes (none if it raised).

        Raises:
            RuntimeError: the record is not active, or a record entered after it is
                still active (exit out of order); nothing changes, so the records can
                still be left innermost first.
        """
        trace = self._trace
        if trace is None:
            raise RuntimeError(f"{self} was exited without being entered")
        born = {id(s) for s in trace.created}
        created = [(s, trace.values[id(s)]) for s in trace.created]
        written = [(s, trace.values[k]) for k, s in trace.writes.items() if k not in born]
        trace.__exit__(exc_type, *exc)  # raises RuntimeError, changing nothing, if out of order
        self._trace = None
        for key, state in trace.touched.items():
            self._add(state, trace.first[key], key in trace.writes)
        if exc_type is None:
            # States born in the block live on, as they would without it.
            for state, value in created:
                adopt_created(state, value)
            done: list[State[Any]] = []
            # The block's writes ran their state hooks when made: storing them runs none.
            with hooks_paused():
                try:
                    for state, value in written:
                        state.value = value
                        done.append(state)
                except BaseException:
                    # All or nothing: a refused write (a tracer that would leak) undoes the rest.
                    for state in done:
                        state.value = trace.first[id(state)]
                    raise

    def _add(self, state: State[Any], original: Any, writes: bool) -> None:
        index = self._index.get(id(state))
        if index is None:
            self._index[id(state)] = len(self.states)
            self.states.append(state)
            self.been_writen.append(writes)
            self._original_state_values.append(original)
        elif writes:
            self.been_writen[index] = True

    def merge(self, *others: StateTraceStack) -> StateTraceStack:
        """Add the states of `others` to this record (in place), and return it."""
        for other in others:
            for state, writes, original in zip(
                other.states, other.been_writen, other._original_state_values, strict=True
            ):
                self._add(state, original, writes)
        return self

    def __add__(self, other: StateTraceStack) -> StateTraceStack:
        return StateTraceStack(self.name).merge(self, other)

    def get_state_values(
        self, separate: bool = False, replace: bool = False
    ) -> tuple[Any, ...] | tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The current values of the recorded states; with `separate`, `(written, read)`.

        With `separate` and `replace`, both tuples are as long as `states`, holding
        `None` where a state is of the other kind.
        """
        if not separate:
            return tuple(s.value for s in self.states)
        writes = self.get_write_state_values(replace)
        reads = self.get_read_state_values(replace)
        return writes, reads

    def get_read_states(self, replace_writen: bool = False) -> tuple[State[Any] | None, ...]:
        """The states only read (with `replace_writen`, `None` in place of written ones)."""
        return self._pick(False, replace_writen, lambda s: s)

    def get_write_states(self, replace_read: bool = False) -> tuple[State[Any] | None, ...]:
        """The states written (with `replace_read`, `None` in place of read-only ones)."""
        return self._pick(True, replace_read, lambda s: s)

    def get_read_state_values(self, replace_writen: bool = False) -> tuple[Any, ...]:
        """The values of the states only read (see `get_read_states`)."""
        return self._pick(False, replace_writen, lambda s: s.value)

    def get_write_state_values(self, replace_read: bool = False) -> tuple[Any, ...]:
        """The values of the written states (see `get_write_states`)."""
        return self._pick(True, replace_read, lambda s: s.value)

    def _pick(self, written: bool, keep_places: bool, get: Any) -> tuple[Any, ...]:
        return tuple(
            get(s) if w == written else None
            for s, w in zip(self.states, self.been_writen, strict=True)
            if keep_places or w == written
        )

    def state_subset(self, state_type: type) -> list[State[Any]]:
        """The recorded states that are instances of `state_type`."""
        return [s for s in self.states if isinstance(s, state_type)]

    def assign_state_vals(self, state_vals: Sequence[Any]) -> None:
        """Write `state_vals` (one per recorded state, in order) into the written states.

        Raises:
            ValueError: the number of values differs from the number of states.
        """
        if len(state_vals) != len(self.states):
            raise ValueError(
                f"StateTraceStack.assign_state_vals: {len(state_vals)} values for "
                f"{len(self.states)} states"
            )
        for state, writes, value in zip(self.states, self.been_writen, state_vals, strict=True):
            if writes:
                state.value = value

    def recovery_original_values(self) -> None:
        """Put back, in every written state, the value it had before the block."""
        for state, writes, value in zip(
            self.states, self.been_writen, self._original_state_values, strict=True
        ):
            if writes:
                state.value = value

"""The split / pure core / merge recipe shared by every transform.

A transform plugin wraps a user function in a :class:`StatefulFunction` and
supplies one thing: ``lift(split, pure)``, which hands the pure core to a JAX
transform. The engine does the rest:

1. **split**: the :class:`Split` lists the states the function reads (only) and
   the states it writes. It starts as the plugin's seed (often empty) and is
   *verified* by every trace: a trace that touches a state outside the split
   raises :class:`StateSetChanged`, and the engine retries with the union. So
   discovery costs one extra trace on the first call and nothing afterwards.
2. **pure core**: :class:`PureCore` ``(read_vals, write_vals, *args, **kwargs)
   -> (out, new_write_vals)`` runs the user function with the states
   temporarily holding the given values (tracers, under a JAX transform).
3. **merge**: the new values of the written states are stored back.

If anything raises, no state changes: values are only stored after the lifted
function returns, and every trace restores what it touched when it closes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from statejax._state import _TLS, State, StateTrace
from statejax.graph import Module

__all__ = ["Lift", "PureCore", "Split", "StateSetChanged", "StatefulFunction"]

R = TypeVar("R")


class Split:
    """The states a function touches: ``read_states`` (read only) and ``write_states``.

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
        """``(is_written, index)`` of ``state`` in its list, or ``None`` if absent."""
        return self._index.get(id(state))

    def __contains__(self, state: object) -> bool:
        return id(state) in self._index

    def union(self, reads: Sequence[State[Any]], writes: Sequence[State[Any]]) -> Split:
        """A split with these reads and writes added (a state written anywhere is written)."""
        return Split(self.read_states + tuple(reads), self.write_states + tuple(writes))

    def gather(self) -> tuple[list[Any], list[Any]]:
        """The current values, as ``(read_values, write_values)``.

        Inside an enclosing trace the reads go through ``State.value``, so the
        enclosing transform learns of them (that is how transforms nest).
        """
        if _TLS.stack:
            return [s.value for s in self.read_states], [s.value for s in self.write_states]
        return [s._value for s in self.read_states], [s._value for s in self.write_states]

    def scatter(self, write_values: Sequence[Any]) -> None:
        """Store new values into the written states (recorded by an enclosing trace)."""
        if _TLS.stack:
            for state, value in zip(self.write_states, write_values, strict=True):
                state.value = value
        else:
            for state, value in zip(self.write_states, write_values, strict=True):
                state._value = value

    def __repr__(self) -> str:
        return f"Split(reads={len(self.read_states)}, writes={len(self.write_states)})"


def _unique(states: Sequence[State[Any]]) -> list[State[Any]]:
    seen: set[int] = set()
    out = []
    for s in states:
        if id(s) not in seen:
            seen.add(id(s))
            out.append(s)
    return out


class StateSetChanged(Exception):
    """A trace touched states outside its split; the engine retries with the union.

    Internal control flow: it never escapes :meth:`StatefulFunction.__call__`
    of the function that raised it (``owner``).
    """

    def __init__(self, owner: object, reads: list[State[Any]], writes: list[State[Any]]) -> None:
        super().__init__("statejax internal: state set changed; retrying")
        self.owner = owner
        self.reads = reads
        self.writes = writes


class PureCore:
    """The user function made pure over a :class:`Split`.

    ``core(read_vals, write_vals, *args, **kwargs) -> (out, new_write_vals)``.
    After each call, ``record`` is the :class:`StateTrace` of that call (which
    states were read, written, created), for plugins that check usage, for
    example grad's "this state is never read". ``created_values`` lists the
    values the states in ``record.created`` held when the function returned
    (before the trace closed and marked them leaked), so a transform can return
    them from its JAX transform and hand them back out with
    :func:`statejax.extend.adopt_created` (vmap does this for ensembles).
    """

    __slots__ = ("__weakref__", "created_values", "fn", "name", "owner", "record", "split")

    def __init__(self, fn: Callable[..., Any], split: Split, name: str, owner: object) -> None:
        self.fn = fn
        self.split = split
        self.name = name
        self.owner = owner
        self.record: StateTrace | None = None
        self.created_values: list[Any] = []

    def __call__(
        self, read_vals: Sequence[Any], write_vals: Sequence[Any], /, *args: Any, **kwargs: Any
    ) -> tuple[Any, list[Any]]:
        split = self.split
        with StateTrace(self.name, self.owner, split.states) as trace:
            for state, value in zip(split.read_states, read_vals, strict=True):
                trace.set_value(state, value)
            for state, value in zip(split.write_states, write_vals, strict=True):
                trace.set_value(state, value)
            try:
                out = self.fn(*args, **kwargs)
            except Exception as exc:
                # With states outside the split, the error may only be an artefact of this
                # trace (an inner vmap saw an unmapped value): retry with the union first;
                # the retry raises again if the error is real.
                if not trace.unknown or isinstance(exc, StateSetChanged):
                    raise
                self.record = trace
                reads = [s for k, s in trace.unknown.items() if k not in trace.writes]
                writes = [s for k, s in trace.unknown.items() if k in trace.writes]
                raise StateSetChanged(self.owner, reads, writes) from exc
            new_write_vals = [s._value for s in split.write_states]
            created = {id(s) for s in trace.created}
            stray_writes = [
                s for k, s in trace.writes.items() if k not in created and split.locate(s) is None
            ]
            read_only_writes = [
                s for s in trace.writes.values() if (split.locate(s) or (True,))[0] is False
            ]
            self.record = trace
            self.created_values = [s._value for s in trace.created]
            if trace.unknown or read_only_writes:
                reads = [s for k, s in trace.unknown.items() if k not in trace.writes]
                raise StateSetChanged(self.owner, reads, stray_writes + read_only_writes)
        return out, new_write_vals


#: ``lift(split, pure) -> transformed``: hand the pure core to a JAX transform.
#: ``transformed(read_vals, write_vals, *args, **kwargs)`` returns
#: ``(result, new_write_vals)``; the engine merges the latter and returns ``result``.
Lift = Callable[[Split, PureCore], Callable[..., tuple[Any, Sequence[Any]]]]


class _Entry:
    __slots__ = ("pure", "split", "transformed")

    def __init__(self, split: Split) -> None:
        self.split = split
        self.pure: PureCore | None = None
        self.transformed: Callable[..., tuple[Any, Sequence[Any]]] | None = None


class StatefulFunction(Generic[R]):
    """A user function wrapped with the split/merge recipe around a plugin's ``lift``.

    Calling it gathers the split's values, calls the lifted pure core, merges the
    written values and returns the result. Splits are cached per tuple of the
    modules and states passed as top-level positional arguments (so a jitted
    method keeps one split per instance).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.extend import StatefulFunction
        >>> count = sj.State(jnp.array(0))
        >>> def step(x):
        ...     count.value += 1
        ...     return x * 2
        >>> lift = lambda split, pure: jax.jit(pure)      # a state-aware jit in one line
        >>> f = StatefulFunction(step, "my_jit", lift)
        >>> int(f(jnp.array(3))), int(count.value)
        (6, 1)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        lift: Lift,
        seed: Split | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.lift = lift
        self.seed = seed if seed is not None else Split()
        self._entries: dict[tuple[object, ...], _Entry] = {}

    def split_for(self, *args: Any) -> Split:
        """The current split for a call with these positional arguments."""
        entry = self._entries.get(_reference_key(args))
        return entry.split if entry is not None else self.seed

    def clear_cache(self) -> None:
        """Forget every split and lifted function; the next call discovers again."""
        self._entries.clear()

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        key = _reference_key(args)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(self.seed)
        while True:
            transformed = entry.transformed
            split = entry.split
            if transformed is None:
                entry.pure = PureCore(self.fn, split, self.name, entry)
                transformed = entry.transformed = self.lift(split, entry.pure)
            read_vals, write_vals = split.gather()
            try:
                result, new_write_vals = transformed(read_vals, write_vals, *args, **kwargs)
            except StateSetChanged as change:
                if change.owner is not entry:
                    raise
                entry.split = split.union(change.reads, change.writes)
                entry.transformed = None
                continue
            split.scatter(new_write_vals)
            return result  # type: ignore[no-any-return]


def _reference_key(args: tuple[Any, ...]) -> tuple[object, ...]:
    if not args:
        return ()
    return tuple(a for a in args if isinstance(a, (Module, State)))

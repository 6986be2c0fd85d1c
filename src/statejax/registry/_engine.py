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

import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar

import jax
import numpy as np

from statejax._errors import TraceError
from statejax._state import _TLS, State, StateTrace, _contains_tracer, describe_state
from statejax.graph import Module

__all__ = ["Lift", "PureCore", "Split", "StateSetChanged", "StatefulFunction"]

P = ParamSpec("P")
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

    def is_read_only(self, state: State[Any]) -> bool:
        """Whether ``state`` is in the split as read-only."""
        location = self._index.get(id(state))
        return location is not None and not location[0]

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
            # Inside a plain JAX transform every written value is a tracer; checking
            # the first one is enough, and cheap when it is a concrete array.
            first = write_values[0] if write_values else None
            if first is not None and (
                isinstance(first, jax.core.Tracer) or not isinstance(first, jax.Array)
            ):
                _refuse_tracers(self.write_states, write_values)
            for state, value in zip(self.write_states, write_values, strict=True):
                state._value = value

    def __repr__(self) -> str:
        return f"Split(reads={len(self.read_states)}, writes={len(self.write_states)})"


def _refuse_tracers(states: Sequence[State[Any]], values: Sequence[Any]) -> None:
    """Called inside a plain JAX transform, a statejax transform returns tracers: refuse them."""
    for state, value in zip(states, values, strict=True):
        if _contains_tracer(value):
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
            except StateSetChanged:
                raise
            except Exception as exc:
                # With states outside the split, the error may only be an artefact of this
                # trace (an inner vmap saw an unmapped value): retry with the union first;
                # the retry raises again if the error is real.
                if trace.unknown:
                    raise self._changed(trace) from exc
                raise
            self.record = trace
            self.created_values = [s._value for s in trace.created]
            # A state the split has as read-only but that this trace wrote must move.
            misplaced = [s for s in trace.writes.values() if split.is_read_only(s)]
            if trace.unknown or misplaced:
                raise self._changed(trace, misplaced)
            new_write_vals = [s._value for s in split.write_states]
            _check_traceable(split.write_states, new_write_vals, self.name)
        return out, new_write_vals

    def _changed(self, trace: StateTrace, misplaced: Sequence[State[Any]] = ()) -> StateSetChanged:
        unknown = trace.unknown
        reads = [s for k, s in unknown.items() if k not in trace.writes]
        writes = [s for k, s in unknown.items() if k in trace.writes]
        return StateSetChanged(self.owner, reads, writes + list(misplaced))


def _is_traceable(leaf: object) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def _check_traceable(states: Sequence[State[Any]], values: Sequence[Any], name: str) -> None:
    """Raise a TraceError naming the first state whose value JAX cannot carry."""
    for state, value in zip(states, values, strict=True):
        bad = [leaf for leaf in jax.tree.leaves(value) if not _is_traceable(leaf)]
        if bad:
            raise TraceError(
                f"{name}: {describe_state(state)} holds a {type(bad[0]).__name__}, which JAX "
                "cannot trace. A state's value must be a pytree of arrays or numbers; keep "
                "other objects as plain attributes (or static arguments)."
            )


#: ``lift(split, pure) -> transformed``: hand the pure core to a JAX transform.
#: ``transformed(read_vals, write_vals, *args, **kwargs)`` returns
#: ``(result, new_write_vals)``; the engine merges the latter and returns ``result``.
Lift = Callable[[Split, PureCore], Callable[..., tuple[Any, Sequence[Any]]]]


class _Entry:
    __slots__ = ("pure", "split", "transformed", "verified")

    def __init__(self, split: Split) -> None:
        self.split = split
        self.pure: PureCore | None = None
        self.transformed: Callable[..., tuple[Any, Sequence[Any]]] | None = None
        # Whether a trace has confirmed that ``split`` holds every state touched.
        self.verified = False


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

    def as_function(self, like: Callable[P, Any]) -> Callable[P, R]:
        """A plain function that calls this one, with ``like``'s name, docs and signature.

        Being a function, it binds as a method when stored on a class, so a
        decorated method works. It carries ``clear_cache()`` and ``stateful``
        (this object).
        """
        call = self.__call__

        @functools.wraps(like)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return call(*args, **kwargs)

        wrapper.clear_cache = self.clear_cache  # type: ignore[attr-defined]
        wrapper.stateful = self  # type: ignore[attr-defined]
        return wrapper

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
                if not entry.verified:
                    self._discover(transformed, read_vals, write_vals, args, kwargs)
                    entry.verified = True
                result, new_write_vals = transformed(read_vals, write_vals, *args, **kwargs)
            except StateSetChanged as change:
                if change.owner is not entry:
                    raise
                entry.split = split.union(change.reads, change.writes)
                entry.transformed = None
                entry.verified = False
                continue
            except TypeError:
                # JAX rejects a state value it cannot trace; say which state it was.
                _check_traceable(split.states, read_vals + write_vals, self.name)
                raise
            split.scatter(new_write_vals)
            return result  # type: ignore[no-any-return]

    def _discover(
        self,
        transformed: Callable[..., Any],
        read_vals: list[Any],
        write_vals: list[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Check the split with an abstract trace before the first real call.

        Called eagerly, the lifted function (a grad, a vmap) would otherwise run
        for real, side effects included, only to find that a state is missing and
        run again. ``jax.eval_shape`` traces it without computing anything and
        raises the same StateSetChanged. Inside an enclosing JAX trace the real
        call is itself only a trace, so there is nothing to save.
        """
        if any(
            isinstance(leaf, jax.core.Tracer)
            for leaf in jax.tree.leaves((read_vals, write_vals, args, kwargs))
        ):
            return

        def run(read: list[Any], write: list[Any]) -> None:
            transformed(read, write, *args, **kwargs)

        # The trace around it puts back anything the lifted function stores in a
        # state while tracing (a created state it hands out, say): nothing leaks.
        with StateTrace(f"{self.name} (discovery)", self):
            jax.eval_shape(run, read_vals, write_vals)


def _reference_key(args: tuple[Any, ...]) -> tuple[object, ...]:
    if not args:
        return ()
    return tuple([a for a in args if isinstance(a, _BY_REFERENCE)])


_BY_REFERENCE = (Module, State)

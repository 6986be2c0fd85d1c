"""The split: which states a call reads and writes, and the merge of its new values.

`Split` holds the states, gathers their values for a call and stores (`scatter`) the
new ones back, all of one call together under `MERGE_LOCK`, after `check_merge` has
checked every value: a bad value changes no state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from statejax._errors import PluginError, TraceError
from statejax._jax_compat import current_jax_trace, is_top_level, trace_chain, tracer_trace
from statejax._state import State
from statejax._state_hooks import hooks_paused
from statejax._tracing import (
    contains_tracer,
    current_traces,
    describe_state,
    lives_in_trace,
    storable_value,
)

__all__ = ["MERGE_LOCK", "Split", "all_concrete", "check_merge", "short_repr"]

# Held while a call's values are gathered or merged: a call sees all of another
# call's writes or none of them.
MERGE_LOCK = threading.Lock()


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
        with MERGE_LOCK:
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
            with MERGE_LOCK:
                for state, value in zip(self.write_states, stored, strict=True):
                    state._value = value
            return
        with MERGE_LOCK:
            for state, value in zip(self.write_states, write_values, strict=True):
                state._value = value

    def __repr__(self) -> str:
        return f"Split(reads={len(self.read_states)}, writes={len(self.write_states)})"


# The types of values known to hold no tracer (arrays, numbers): a merge at the top level
# whose values are all of these types is checked by one set comparison. Grows as values of
# other concrete array types are met; never holds a container type.
_CONCRETE_TYPES: set[type] = {np.ndarray, bool, int, float, complex}


def short_repr(value: object) -> str:
    """`repr(value)` on one line, at most 80 characters."""
    return " ".join(repr(value).split())[:80]


def _is_concrete_type(kind: type) -> bool:
    return not issubclass(kind, jax.core.Tracer) and issubclass(
        kind, (jax.Array, np.ndarray, np.generic, bool, int, float, complex)
    )


def all_concrete(values: Iterable[Any]) -> bool:
    """Whether every value is a concrete array or a number: its own only pytree leaf,
    holding no tracer. By type, in one set comparison once the types were met."""
    kinds = set(map(type, values))
    if kinds <= _CONCRETE_TYPES:
        return True
    if all(_is_concrete_type(kind) for kind in kinds):
        _CONCRETE_TYPES.update(kinds)
        return True
    return False


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
                f"{short_repr(values)}, not a sequence. A lift's function returns (result, "
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
    if top_level and all_concrete(checked):
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

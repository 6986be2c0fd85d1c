"""`catch_new_states`: collect (and tag) the states created inside a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from statejax._state import State
from statejax._tracing import calling_on_create
from statejax.filters import PredicateLike, to_predicate

__all__ = ["NewStateCatcher", "catch_new_states"]


class NewStateCatcher:
    """The states created inside a `catch_new_states` block, in creation order.

    Iterable, indexable and sized like a list; `get_states()` and
    `get_state_values()` return lists. Membership is by identity.

    Args:
        state_tag: the tag added to each caught state; `None` adds none.
        state_to_exclude: a filter (see `statejax.filters.to_predicate`) of states
            not to catch; `None` excludes none.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> with sj.catch_new_states("init") as catcher:
        ...     a = sj.State(jnp.zeros(2))
        ...     b = sj.ParamState(jnp.ones(2), tag="w")
        >>> catcher.get_by_tag("w") == [b], len(catcher.values)
        (True, 2)
        >>> catcher.remove(a); a in catcher, len(catcher)
        (False, 1)
    """

    def __init__(self, state_tag: str | None = None, state_to_exclude: Any = None) -> None:
        self.state_tag = state_tag
        # The exclusion filter, as a predicate `(path, state) -> bool`.
        self.state_to_exclude = to_predicate(
            False if state_to_exclude is None else state_to_exclude
        )
        # The ids of the caught states (they are kept alive by `states`).
        self.state_ids: set[int] = set()
        self.states: list[State[Any]] = []

    def append(self, state: State[Any]) -> None:
        """Catch `state` (once), and add the catcher's tag to its tags."""
        if id(state) in self.state_ids or self.state_to_exclude((), state):
            return
        self.state_ids.add(id(state))
        self.states.append(state)
        if self.state_tag is not None:
            state.add_tag(self.state_tag)

    def remove(self, state: State[Any]) -> None:
        """Stop holding `state` (nothing happens if it was not caught); its tags stay."""
        if id(state) in self.state_ids:
            self.state_ids.remove(id(state))
            self.states = [s for s in self.states if s is not state]

    def clear(self) -> None:
        """Forget every caught state (their tags stay)."""
        self.state_ids.clear()
        self.states.clear()

    def get_by_tag(self, tag: str) -> list[State[Any]]:
        """The caught states whose tags include `tag`, in creation order."""
        return [s for s in self.states if s.tag is not None and tag in s.tag]

    def decrease_stack_level(self) -> None:
        """Lower the `stack_level` of every caught state by one (never below zero)."""
        for state in self.states:
            state.decrease_stack_level()

    def get_states(self) -> list[State[Any]]:
        """The caught states."""
        return list(self.states)

    def get_state_values(self) -> list[Any]:
        """The caught states' current values."""
        return [state.value for state in self.states]

    @property
    def values(self) -> list[Any]:
        """The caught states' current values (`get_state_values()`)."""
        return self.get_state_values()

    def __iter__(self) -> Iterator[State[Any]]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: int) -> State[Any]:
        return self.states[index]

    def __contains__(self, state: object) -> bool:
        return id(state) in self.state_ids

    def __repr__(self) -> str:
        return f"NewStateCatcher(tag={self.state_tag!r}, states={len(self.states)})"


@contextlib.contextmanager
def catch_new_states(
    state_tag: str | None = None, state_to_exclude: PredicateLike | None = None
) -> Iterator[NewStateCatcher]:
    """Catch the states created in this thread inside the block (and tag the untagged).

    A state's tags are a set: each block adds its `state_tag` to the states it
    catches; a state created inside nested blocks is caught (and tagged) by each.

    Args:
        state_tag: the tag added to each caught state; `None` tags nothing.
        state_to_exclude: a filter (see `statejax.filters.to_predicate`) of states
            not to catch.

    Yields:
        The `NewStateCatcher` that collects the states.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> with sj.catch_new_states("init") as catcher:
        ...     a = sj.State(jnp.zeros(2))
        ...     b = sj.ParamState(jnp.ones(2), tag="w")
        >>> catcher.get_states() == [a, b], a.tag, sorted(b.tag)
        (True, {'init'}, ['init', 'w'])
    """
    catcher = NewStateCatcher(state_tag, state_to_exclude)
    with calling_on_create(catcher.append):
        yield catcher

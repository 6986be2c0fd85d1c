"""`catch_new_states`: collect (and tag) the states created inside a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from statejax._state import _TLS, State
from statejax.filters import PredicateLike, to_predicate

__all__ = ["NewStateCatcher", "catch_new_states"]


class NewStateCatcher:
    """The states created inside a `catch_new_states` block, in creation order.

    Iterable, indexable and sized like a list; `get_states()` and
    `get_state_values()` return lists.
    """

    def __init__(self, state_tag: str | None = None, state_to_exclude: Any = None) -> None:
        self.state_tag = state_tag
        self._exclude = to_predicate(False if state_to_exclude is None else state_to_exclude)
        self.states: list[State[Any]] = []

    def append(self, state: State[Any]) -> None:
        """Catch `state` (once), and add the catcher's tag to its tags."""
        if self._exclude((), state) or any(s is state for s in self.states):
            return
        self.states.append(state)
        if self.state_tag is not None:
            state.add_tag(self.state_tag)

    def get_states(self) -> list[State[Any]]:
        """The caught states."""
        return list(self.states)

    def get_state_values(self) -> list[Any]:
        """The caught states' current values."""
        return [state.value for state in self.states]

    def __iter__(self) -> Iterator[State[Any]]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: int) -> State[Any]:
        return self.states[index]

    def __contains__(self, state: object) -> bool:
        return any(s is state for s in self.states)

    def __repr__(self) -> str:
        return f"NewStateCatcher(tag={self.state_tag!r}, states={len(self.states)})"


@contextlib.contextmanager
def catch_new_states(
    state_tag: str | None = None, state_to_exclude: PredicateLike | None = None
) -> Iterator[NewStateCatcher]:
    """Catch the states created in this thread inside the block (and tag the untagged).

    A state has one tag in statejax: `state_tag` is given to caught states that
    have none; a state created inside nested blocks is caught by each, and
    tagged by the outermost block that has a tag.

    Args:
        state_tag: the tag for caught states without one; `None` tags nothing.
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
    hooks = _TLS.on_create
    hooks.append(catcher.append)
    try:
        yield catcher
    finally:
        hooks.remove(catcher.append)

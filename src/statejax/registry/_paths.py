"""The paths of the states a transform sees, so that its filters can match on paths.

The engine's `Split` holds states, not paths: a state has no path of its own, only
the one it is found under from a module or a mapping. `vmap` finds them in its call
arguments and in the mappings the user selected with; `StatePaths` gives a plugin
the same lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from statejax._state import State
from statejax.filters import FilterLike, Path, to_filter
from statejax.graph import Module, iter_states

__all__ = ["StatePaths", "state_items"]

S = TypeVar("S", bound=State[Any])


class StatePaths:
    """Where each state was found: the paths that filters such as `PathContains` see.

    Build it from the call's arguments and the user's options with `find`. A
    state found in several places keeps the first path. A state found nowhere
    falls back to the attribute it was stored under (`Net.w` gives `('w',)`),
    as vmap does, else the empty path.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.extend import StatePaths
        >>> from statejax.filters import PathContains
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.enc = sj.ParamState(jnp.ones(2))
        ...         self.dec = sj.ParamState(jnp.ones(2))
        >>> net = Net()
        >>> paths = StatePaths.find(net)
        >>> paths.path(net.enc)
        ('enc',)
        >>> paths.select(PathContains("dec"), [net.enc, net.dec]) == [net.dec]
        True
    """

    __slots__ = ("_paths",)

    def __init__(self, paths: Mapping[int, Path] | None = None) -> None:
        self._paths: dict[int, Path] = dict(paths or {})

    @classmethod
    def find(cls, *sources: object) -> StatePaths:
        """Collect paths from `sources`: modules and states (walked as `Module.states`
        walks them), mappings path -> State (such as `model.states(...)`; their keys are
        the paths), and lists, tuples or dicts of these (a call's `args`, `kwargs`)."""
        found = cls()
        for source in sources:
            found._add(source)
        return found

    def _add(self, source: object) -> None:
        if isinstance(source, (Module, State)):
            for path, state in iter_states(source):
                self._paths.setdefault(id(state), path)
        elif isinstance(source, Mapping):
            if source and all(isinstance(v, State) for v in source.values()):
                for key, state in source.items():
                    self._paths.setdefault(id(state), key if isinstance(key, tuple) else (key,))
            else:
                for value in source.values():
                    self._add(value)
        elif isinstance(source, (list, tuple)):
            for item in source:
                self._add(item)

    def known(self, state: State[Any]) -> Path | None:
        """The path `state` was found under, or `None` (for error messages that name it)."""
        return self._paths.get(id(state))

    def path(self, state: State[Any]) -> Path:
        """The path a filter sees for `state`: where it was found, else its attribute name."""
        path = self._paths.get(id(state))
        if path is not None:
            return path
        name = state._where
        return tuple(name.split(".")[1:]) if name else ()

    def select(self, filter: FilterLike, states: Iterable[S]) -> list[S]:
        """The states among `states` that `filter` matches, in order, each at its path."""
        match = to_filter(filter)
        return [s for s in states if match(self.path(s), s)]


def state_items(states_or_module: object) -> list[tuple[Path, State[Any]]]:
    """`(path, state)` pairs of a module, a state, or a mapping/iterable of states
    (a mapping's keys are the paths; an iterable's states get `(i,)`), for `statejax.sharding`
    and `statejax.checkpoints`.

    Raises:
        TypeError: `states_or_module` is none of these, or holds a value that is not a State.
    """
    if isinstance(states_or_module, (Module, State)):
        return list(iter_states(states_or_module))
    if isinstance(states_or_module, Mapping):
        items = []
        for key, state in states_or_module.items():
            if not isinstance(state, State):
                raise TypeError(f"{key!r} maps to {type(state).__name__}, not a State")
            items.append((key if isinstance(key, tuple) else (key,), state))
        return items
    if isinstance(states_or_module, Iterable):
        items = []
        for i, state in enumerate(states_or_module):
            if not isinstance(state, State):
                raise TypeError(f"item {i} is {type(state).__name__}, not a State")
            items.append(((i,), state))
        return items
    raise TypeError(
        f"{type(states_or_module).__name__} is neither a Module, a State, nor a mapping or "
        "iterable of States"
    )

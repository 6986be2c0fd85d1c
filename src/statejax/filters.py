"""A typed language for selecting states.

A filter answers "is the state at this path one I want?". Every place that takes
a filter also accepts the shorthands below, converted by :func:`to_filter`:

====================================  =========================================
shorthand                             filter
====================================  =========================================
a ``State`` subclass                  :class:`OfType`
a callable ``(path, state) -> bool``  :class:`Predicate`
``...`` or ``True``                   :class:`Everything`
``None`` or ``False``                 :class:`Nothing`
a tuple of filters                    :class:`Any` (matches if one matches)
====================================  =========================================

Filters are frozen and hashable, so they can sit in a transform's options, and
generic in the state type they select: ``OfType(ParamState)`` is a
``Filter[ParamState]``, which is how mypy knows what ``model.states(ParamState)``
holds.

Example:
    >>> import jax.numpy as jnp
    >>> import statejax as sj
    >>> from statejax.filters import Any, Not, WithTag
    >>> class Net(sj.Module):
    ...     def __init__(self):
    ...         self.w = sj.ParamState(jnp.ones(2), tag="enc")
    ...         self.h = sj.HiddenState(jnp.zeros(2))
    >>> sorted(Net().states(Any(sj.ParamState, sj.HiddenState)))
    [('h',), ('w',)]
    >>> list(Net().states(Not(WithTag("enc"))))
    [('h',)]
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from types import EllipsisType
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar, cast, overload
from typing import Any as _Any

from statejax._state import State

__all__ = [
    "All",
    "Any",
    "Everything",
    "Filter",
    "FilterLike",
    "Not",
    "Nothing",
    "OfType",
    "Path",
    "PathContains",
    "Predicate",
    "WithTag",
    "to_filter",
]

#: The address of a state inside a module: attribute names and container keys.
Path: TypeAlias = tuple[_Any, ...]

S = TypeVar("S", bound=State[_Any], covariant=True)
A = TypeVar("A", bound=State[_Any])
B = TypeVar("B", bound=State[_Any])
C = TypeVar("C", bound=State[_Any])
D = TypeVar("D", bound=State[_Any])


class Filter(abc.ABC, Generic[S]):
    """A frozen, hashable predicate on ``(path, state)`` selecting states of type ``S``."""

    __slots__ = ()

    @abc.abstractmethod
    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        """Whether the state at ``path`` is selected."""

    @abc.abstractmethod
    def _key(self) -> Hashable: ...

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Filter) and type(other) is type(self) and self._key() == other._key()
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen; build a new filter instead")


PredicateFn: TypeAlias = Callable[[Path, State[_Any]], bool]

#: Anything accepted where a filter is expected.
FilterLike: TypeAlias = "type[State[_Any]] | Filter[_Any] | PredicateFn | EllipsisType | bool | None | tuple[FilterLike, ...]"

if TYPE_CHECKING:
    # What a filter argument of one element type may be, for the overloads below.
    _One: TypeAlias = type[A] | Filter[A]


class OfType(Filter[S]):
    """Selects states that are instances of ``state_type`` (subclasses included)."""

    __slots__ = ("state_type",)
    state_type: type[S]

    def __init__(self, state_type: type[S]) -> None:
        if not (isinstance(state_type, type) and issubclass(state_type, State)):
            raise TypeError(f"OfType expects a State subclass, got {state_type!r}")
        object.__setattr__(self, "state_type", state_type)

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return isinstance(state, self.state_type)

    def _key(self) -> Hashable:
        return cast(Hashable, self.state_type)

    def __repr__(self) -> str:
        return f"OfType({self.state_type.__name__})"


class PathContains(Filter[State[_Any]]):
    """Selects states whose path has ``key`` as one of its components."""

    __slots__ = ("key",)
    key: str | int

    def __init__(self, key: str | int) -> None:
        object.__setattr__(self, "key", key)

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return self.key in path

    def _key(self) -> Hashable:
        return self.key

    def __repr__(self) -> str:
        return f"PathContains({self.key!r})"


class WithTag(Filter[State[_Any]]):
    """Selects states created with ``tag=tag``."""

    __slots__ = ("tag",)
    tag: str

    def __init__(self, tag: str) -> None:
        object.__setattr__(self, "tag", tag)

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return state.tag == self.tag

    def _key(self) -> Hashable:
        return self.tag

    def __repr__(self) -> str:
        return f"WithTag({self.tag!r})"


class Predicate(Filter[State[_Any]]):
    """Wraps a callable ``(path, state) -> bool``; equal when the callables are."""

    __slots__ = ("fn",)
    fn: PredicateFn

    def __init__(self, fn: PredicateFn) -> None:
        object.__setattr__(self, "fn", fn)

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return bool(self.fn(path, state))

    def _key(self) -> Hashable:
        return self.fn

    def __repr__(self) -> str:
        return f"Predicate({getattr(self.fn, '__qualname__', self.fn)!r})"


class Everything(Filter[State[_Any]]):
    """Selects every state (also written ``...`` or ``True``)."""

    __slots__ = ()

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return True

    def _key(self) -> Hashable:
        return ()

    def __repr__(self) -> str:
        return "Everything()"


class Nothing(Filter[State[_Any]]):
    """Selects no state (also written ``None`` or ``False``)."""

    __slots__ = ()

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return False

    def _key(self) -> Hashable:
        return ()

    def __repr__(self) -> str:
        return "Nothing()"


class Any(Filter[S]):
    """Selects states matched by any of ``filters``; typed as the union of theirs.

    Example:
        >>> import statejax as sj
        >>> from statejax.filters import Any
        >>> Any(sj.ParamState, sj.HiddenState)
        Any(OfType(ParamState), OfType(HiddenState))
    """

    __slots__ = ("filters",)
    filters: tuple[Filter[_Any], ...]

    @overload
    def __init__(self: Any[A], a: _One[A], /) -> None: ...
    @overload
    def __init__(self: Any[A | B], a: _One[A], b: _One[B], /) -> None: ...
    @overload
    def __init__(self: Any[A | B | C], a: _One[A], b: _One[B], c: _One[C], /) -> None: ...
    @overload
    def __init__(
        self: Any[A | B | C | D], a: _One[A], b: _One[B], c: _One[C], d: _One[D], /
    ) -> None: ...
    @overload
    def __init__(self: Any[State[_Any]], *filters: FilterLike) -> None: ...
    def __init__(self, *filters: FilterLike) -> None:
        object.__setattr__(self, "filters", tuple(to_filter(f) for f in filters))

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return any(f(path, state) for f in self.filters)

    def _key(self) -> Hashable:
        return self.filters

    def __repr__(self) -> str:
        return f"Any({', '.join(map(repr, self.filters))})"


class All(Filter[S]):
    """Selects states matched by every one of ``filters``; typed as the first one's type."""

    __slots__ = ("filters",)
    filters: tuple[Filter[_Any], ...]

    @overload
    def __init__(self: All[A], first: _One[A], /, *rest: FilterLike) -> None: ...
    @overload
    def __init__(self: All[State[_Any]], *filters: FilterLike) -> None: ...
    def __init__(self, *filters: FilterLike) -> None:
        object.__setattr__(self, "filters", tuple(to_filter(f) for f in filters))

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return all(f(path, state) for f in self.filters)

    def _key(self) -> Hashable:
        return self.filters

    def __repr__(self) -> str:
        return f"All({', '.join(map(repr, self.filters))})"


class Not(Filter[State[_Any]]):
    """Selects the states that ``filter`` does not."""

    __slots__ = ("filter",)
    filter: Filter[_Any]

    def __init__(self, filter: FilterLike) -> None:
        object.__setattr__(self, "filter", to_filter(filter))

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return not self.filter(path, state)

    def _key(self) -> Hashable:
        return self.filter

    def __repr__(self) -> str:
        return f"Not({self.filter!r})"


@overload
def to_filter(spec: type[A] | Filter[A]) -> Filter[A]: ...
@overload
def to_filter(spec: FilterLike) -> Filter[State[_Any]]: ...
def to_filter(spec: FilterLike) -> Filter[_Any]:
    """Convert a filter shorthand into a :class:`Filter`.

    Raises:
        TypeError: ``spec`` is none of the accepted forms; the message names it.

    Example:
        >>> import statejax as sj
        >>> from statejax.filters import to_filter
        >>> to_filter(sj.ParamState), to_filter(...), to_filter(None)
        (OfType(ParamState), Everything(), Nothing())
    """
    if isinstance(spec, Filter):
        return spec
    if spec is Ellipsis or spec is True:
        return Everything()
    if spec is None or spec is False:
        return Nothing()
    if isinstance(spec, type):
        if issubclass(spec, State):
            return OfType(spec)
    elif isinstance(spec, tuple):
        return Any(*spec)
    elif callable(spec):
        return Predicate(spec)
    raise TypeError(
        f"statejax: {spec!r} ({type(spec).__name__}) is not a state filter. Use a State subclass "
        "(sj.ParamState), a predicate (path, state) -> bool, ... or True (all), None or False "
        "(none), a tuple of filters, or one of statejax.filters.OfType/PathContains/WithTag/"
        "Any/All/Not/Everything/Nothing."
    )

"""A typed language for selecting states.

A filter answers "is the state at this path one I want?". Every place that takes
a filter also accepts the shorthands below, converted by
[to_filter][statejax.filters.to_filter]:

| shorthand                            | filter                                |
|--------------------------------------|---------------------------------------|
| a `State` subclass                   | `OfType`                              |
| a callable `(path, state) -> bool`   | `Predicate`                           |
| `...` or `True`                      | `Everything`                          |
| `None` or `False`                    | `Nothing`                             |
| a tuple of filters                   | `Any` (matches if one matches)        |

Filters are frozen and hashable, so they can sit in a transform's options, and
generic in the state type they select: `OfType(ParamState)` is a
`Filter[ParamState]`, which is how mypy knows what `model.states(ParamState)`
holds.

`OfType` and `WithTag` are also plain predicates on any object, as in BrainState:
`OfType(T)` matches instances of any class `T`, `WithTag(t)` any object whose `tag`
attribute is `t` (or a list/tuple/set holding `t`).
[to_predicate][statejax.filters.to_predicate] turns BrainState's wider shorthand
(which also takes a tag string, any class, or a list) into such a predicate.

Examples:
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
from typing import TYPE_CHECKING, Generic, TypeAlias, cast, overload
from typing import Any as _Any

from typing_extensions import TypeVar

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
    "to_predicate",
]

#: The address of a state inside a module: attribute names and container keys.
Path: TypeAlias = tuple[_Any, ...]

S = TypeVar("S", bound=State[_Any], covariant=True)
# The default is what a filter of unknown element type (`...`, a plain predicate) selects.
A = TypeVar("A", bound=State[_Any], default=State[_Any])
B = TypeVar("B", bound=State[_Any], default=State[_Any])
C = TypeVar("C", bound=State[_Any], default=State[_Any])
D = TypeVar("D", bound=State[_Any], default=State[_Any])


class Filter(abc.ABC, Generic[S]):
    """A frozen, hashable predicate on `(path, state)` selecting states of type `S`."""

    __slots__ = ()

    @abc.abstractmethod
    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        """Whether the state at `path` is selected."""

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
    OneFilter: TypeAlias = type[A] | Filter[A]
    # Any filter shorthand, typed by its element type where that is known: one argument
    # of `states(a, b, ...)`. `...`, `None` or a plain predicate leave `A` at its default.
    EachFilter: TypeAlias = (
        type[A] | Filter[A] | PredicateFn | EllipsisType | bool | None | tuple[FilterLike, ...]
    )


class OfType(Filter[S]):
    """Selects objects that are instances of `state_type` (subclasses included).

    Given a `State` subclass it is typed as a filter of that state type, so
    `model.states(OfType(ParamState))` is a `StateMapping[ParamState]`. As in
    BrainState, any class is accepted, which makes it a predicate on any object
    (for example with [to_predicate][statejax.filters.to_predicate]); as a state
    filter, a class that is not a `State` subclass selects nothing.

    Args:
        state_type: the class to match.

    Raises:
        TypeError: `state_type` is not a class.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.filters import OfType
        >>> OfType(sj.ParamState)((), sj.ParamState(jnp.ones(1)))
        True
        >>> OfType(int)((), 3), OfType(int)((), "3")
        (True, False)
    """

    __slots__ = ("state_type",)
    state_type: type[S]

    @overload
    def __init__(self: OfType[A], state_type: type[A]) -> None: ...
    @overload
    def __init__(self: OfType[State[_Any]], state_type: type[object]) -> None: ...
    def __init__(self, state_type: type[object]) -> None:
        if not isinstance(state_type, type):
            raise TypeError(
                f"OfType expects a class, got {state_type!r} ({type(state_type).__name__})"
            )
        object.__setattr__(self, "state_type", state_type)

    def __call__(self, path: Path, state: object, /) -> bool:
        return isinstance(state, self.state_type)

    def _key(self) -> Hashable:
        return cast(Hashable, self.state_type)

    def __repr__(self) -> str:
        return f"OfType({self.state_type.__name__})"


class PathContains(Filter[State[_Any]]):
    """Selects states whose path has `key` as one of its components."""

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
    """Selects objects whose `tag` attribute is `tag`: states created with `tag=tag`.

    As in BrainState it works on any object with a `tag` attribute; a tag that is a
    list, tuple or set matches when it holds `tag`. Objects without a `tag`
    attribute (and states created without one) never match.

    Args:
        tag: the tag to match.

    Raises:
        TypeError: `tag` is not a string.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.filters import WithTag
        >>> WithTag("enc")((), sj.ParamState(jnp.ones(1), tag="enc"))
        True
        >>> class Layer:
        ...     tag = ("enc", "frozen")
        >>> WithTag("frozen")((), Layer()), WithTag("enc")((), object())
        (True, False)
    """

    __slots__ = ("tag",)
    tag: str

    def __init__(self, tag: str) -> None:
        if not isinstance(tag, str):
            raise TypeError(f"WithTag expects a str tag, got {tag!r} ({type(tag).__name__})")
        object.__setattr__(self, "tag", tag)

    def __call__(self, path: Path, state: object, /) -> bool:
        tag = getattr(state, "tag", None)
        if isinstance(tag, str):
            return tag == self.tag
        if isinstance(tag, (list, tuple, set, frozenset)):
            return self.tag in tag
        return False

    def _key(self) -> Hashable:
        return self.tag

    def __repr__(self) -> str:
        return f"WithTag({self.tag!r})"


class Predicate(Filter[State[_Any]]):
    """Wraps a callable `(path, state) -> bool`; equal when the callables are.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.filters import Predicate
        >>> big = Predicate(lambda path, state: state.value.size > 1)
        >>> big(("w",), sj.ParamState(jnp.ones(3))), big(("b",), sj.ParamState(jnp.ones(1)))
        (True, False)
    """

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
    """Selects every state (also written `...` or `True`)."""

    __slots__ = ()

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return True

    def _key(self) -> Hashable:
        return ()

    def __repr__(self) -> str:
        return "Everything()"


class Nothing(Filter[State[_Any]]):
    """Selects no state (also written `None` or `False`)."""

    __slots__ = ()

    def __call__(self, path: Path, state: State[_Any], /) -> bool:
        return False

    def _key(self) -> Hashable:
        return ()

    def __repr__(self) -> str:
        return "Nothing()"


class Any(Filter[S]):
    """Selects states matched by any of `filters`; typed as the union of theirs.

    Examples:
        >>> import statejax as sj
        >>> from statejax.filters import Any
        >>> Any(sj.ParamState, sj.HiddenState)
        Any(OfType(ParamState), OfType(HiddenState))
    """

    __slots__ = ("filters",)
    filters: tuple[Filter[_Any], ...]

    @overload
    def __init__(self: Any[A], a: OneFilter[A], /) -> None: ...
    @overload
    def __init__(self: Any[A | B], a: OneFilter[A], b: OneFilter[B], /) -> None: ...
    @overload
    def __init__(
        self: Any[A | B | C], a: OneFilter[A], b: OneFilter[B], c: OneFilter[C], /
    ) -> None: ...
    @overload
    def __init__(
        self: Any[A | B | C | D],
        a: OneFilter[A],
        b: OneFilter[B],
        c: OneFilter[C],
        d: OneFilter[D],
        /,
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
    """Selects states matched by every one of `filters`; typed as the first one's type."""

    __slots__ = ("filters",)
    filters: tuple[Filter[_Any], ...]

    @overload
    def __init__(self: All[A], first: OneFilter[A], /, *rest: FilterLike) -> None: ...
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
    """Selects the states that `filter` does not."""

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
    """Convert a filter shorthand into a `Filter`.

    Accepts a `State` subclass, a predicate `(path, state) -> bool`, `...`/`True`,
    `None`/`False`, a tuple of these (any of them matches), or a `Filter`, which is
    returned as it is. Unlike BrainState, a string is not a filter here: spell a tag
    `WithTag("name")` (or convert with [to_predicate][statejax.filters.to_predicate]).

    Args:
        spec: the shorthand or filter to convert.

    Returns:
        A frozen, hashable filter; its type parameter is the state type it selects.

    Raises:
        TypeError: `spec` is none of the accepted forms; the message names it.

    Examples:
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
    hint = (
        f" To select states by tag write WithTag({spec!r}); by path component, "
        f"PathContains({spec!r})."
        if isinstance(spec, str)
        else ""
    )
    raise TypeError(
        f"statejax: {spec!r} ({type(spec).__name__}) is not a state filter. Use a State subclass "
        "(sj.ParamState), a predicate (path, state) -> bool, ... or True (all), None or False "
        "(none), a tuple of filters, or one of statejax.filters.OfType/PathContains/WithTag/"
        f"Any/All/Not/Everything/Nothing.{hint}"
    )


#: What [to_predicate][statejax.filters.to_predicate] accepts: a filter shorthand, a tag
#: string, any class, or a list/tuple of these.
PredicateLike: TypeAlias = (
    "FilterLike | str | type[object] | list[PredicateLike] | tuple[PredicateLike, ...]"
)


def to_predicate(the_filter: PredicateLike) -> Callable[[Path, _Any], bool]:
    """Turn a filter shorthand into a predicate `(path, obj) -> bool` (BrainState's function).

    Takes everything [to_filter][statejax.filters.to_filter] takes, plus BrainState's
    wider shorthand:

    | given                         | predicate                           |
    |-------------------------------|-------------------------------------|
    | a string                      | `WithTag(string)`                   |
    | any class                     | `OfType(cls)`                       |
    | `...`/`True`, `None`/`False`  | `Everything()`, `Nothing()`         |
    | a list or tuple               | `Any(...)` of the converted items   |
    | a `Filter` or other callable  | itself, unchanged                   |

    The result can be called on any object, and passed wherever statejax takes a
    filter (a plain callable is then wrapped in `Predicate`).

    Args:
        the_filter: the shorthand to convert.

    Returns:
        A callable `(path, obj) -> bool`; a `Filter` for every form but a callable,
        which comes back as it is.

    Raises:
        TypeError: `the_filter` is none of the above; the message names it.

    Examples:
        >>> import jax.numpy as jnp
        >>> import statejax as sj
        >>> from statejax.filters import to_predicate
        >>> to_predicate("enc"), to_predicate([int, sj.ParamState])
        (WithTag('enc'), Any(OfType(int), OfType(ParamState)))
        >>> to_predicate(int)((), 3)
        True
        >>> class Net(sj.Module):
        ...     def __init__(self):
        ...         self.w = sj.ParamState(jnp.ones(2), tag="enc")
        ...         self.h = sj.HiddenState(jnp.zeros(2))
        >>> list(Net().states(to_predicate("enc")))
        [('w',)]
    """
    if isinstance(the_filter, Filter):
        return the_filter
    if isinstance(the_filter, str):
        return WithTag(the_filter)
    if isinstance(the_filter, type):
        return OfType(the_filter)
    if isinstance(the_filter, (list, tuple)):
        return Any(*(to_predicate(f) for f in the_filter))
    if callable(the_filter):
        return cast(Callable[[Path, _Any], bool], the_filter)
    if the_filter is Ellipsis or the_filter is True:
        return Everything()
    if the_filter is None or the_filter is False:
        return Nothing()
    raise TypeError(
        f"statejax: {the_filter!r} ({type(the_filter).__name__}) is not a filter. Use a tag "
        "string, a class, a predicate (path, obj) -> bool, ... or True (all), None or False "
        "(none), a list or tuple of these, or a statejax.filters filter."
    )

"""The filter language: shorthands, combinators, equality, errors."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statejax as sj
from statejax.filters import (
    All,
    Any,
    Everything,
    Not,
    Nothing,
    OfType,
    PathContains,
    Predicate,
    WithTag,
    to_filter,
)


class Net(sj.Module):
    def __init__(self) -> None:
        self.enc = {"w": sj.ParamState(jnp.ones(2), tag="enc"), "h": sj.HiddenState(jnp.ones(2))}
        self.dec = [sj.ParamState(jnp.ones(3), tag="dec")]
        self.n = sj.ShortTermState(jnp.array(0))


def paths(f: object) -> list[tuple[object, ...]]:
    return list(Net().states(f))  # type: ignore[call-overload]


def test_shorthands() -> None:
    assert paths(sj.ParamState) == [("enc", "w"), ("dec", 0)]
    assert paths(...) == paths(True) == [("enc", "w"), ("enc", "h"), ("dec", 0), ("n",)]
    assert paths(None) == paths(False) == []
    assert paths((sj.HiddenState, sj.ShortTermState)) == [("enc", "h"), ("n",)]
    assert paths(lambda p, s: p[0] == "dec") == [("dec", 0)]


def test_combinators() -> None:
    assert paths(PathContains("enc")) == [("enc", "w"), ("enc", "h")]
    assert paths(WithTag("dec")) == [("dec", 0)]
    assert paths(All(sj.ParamState, PathContains("enc"))) == [("enc", "w")]
    assert paths(Not(sj.ParamState)) == [("enc", "h"), ("n",)]
    # HiddenState is a ShortTermState, as in BrainState.
    assert paths(Any(WithTag("enc"), sj.ShortTermState)) == [("enc", "w"), ("enc", "h"), ("n",)]
    assert paths(Everything()) == paths(...)
    assert paths(Nothing()) == []


def test_filters_are_frozen_hashable_with_repr() -> None:
    assert OfType(sj.ParamState) == to_filter(sj.ParamState)
    assert hash(Any(sj.ParamState, WithTag("x"))) == hash(Any(sj.ParamState, WithTag("x")))
    assert {Not(sj.ParamState), Not(sj.ParamState)} == {Not(sj.ParamState)}
    assert (
        repr(All(sj.ParamState, Not(WithTag("a")))) == "All(OfType(ParamState), Not(WithTag('a')))"
    )
    with pytest.raises(AttributeError):
        OfType(sj.ParamState).state_type = sj.State  # type: ignore[misc]


def test_unusable_filter_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match=r"42 \(int\) is not a state filter"):
        to_filter(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"'w' \(str\) is not a state filter"):
        Net().states("w")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="is not a state filter"):
        to_filter(int)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"OfType expects a class, got 42 \(int\)"):
        OfType(42)  # type: ignore[call-overload]


def test_predicate_equality_by_callable() -> None:
    def f(p: tuple[object, ...], s: sj.State[object]) -> bool:
        return True

    assert Predicate(f) == to_filter(f)


@given(st.lists(st.sampled_from(["p", "h", "s"]), max_size=8))
def test_not_is_the_complement(kinds: list[str]) -> None:
    classes = {"p": sj.ParamState, "h": sj.HiddenState, "s": sj.ShortTermState}

    class Bag(sj.Module):
        def __init__(self) -> None:
            self.items = [classes[k](jnp.zeros(())) for k in kinds]

    bag = Bag()
    chosen, rest = bag.states(sj.ParamState, Not(sj.ParamState))
    assert len(chosen) + len(rest) == len(kinds)
    assert set(chosen).isdisjoint(rest)

"""The conformance kit catches transforms that break the engine's promises (issue 12, §2)."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax
import pytest

import statejax_pytest
from statejax import _jax_compat
from statejax.extend import PureCore, Split, StatefulFunction, TransformSpec
from statejax.testing import CHECKS, ConformanceError, check_transform


class NoOptions(TransformSpec):
    """No options."""


def engine_transform(
    name: str, run: Callable[[PureCore, list[Any], list[Any], tuple[Any, ...]], Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A jit-like transform on the engine whose lifted function is `run`."""

    def transform(fn: Callable[..., Any]) -> Callable[..., Any]:
        def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
            return jax.jit(lambda read, write, *args: run(pure, read, write, args))

        stateful: StatefulFunction[Any] = StatefulFunction(fn, name, lift, staged=True)
        return stateful.as_function(fn)

    transform.__name__ = name
    return transform


def test_a_transform_that_drops_writes_fails() -> None:
    dropping = engine_transform("dropping", lambda pure, r, w, a: (pure(r, w, *a)[0], w))
    with pytest.raises(ConformanceError) as info:
        check_transform(dropping, checks=["eager"])
    assert str(info.value) == (
        "statejax.testing: check 'eager' failed: dropping lost a write: state 'count' holds "
        "0.0 after the calls, expected 2.0 (the function increments it once per call). Return "
        "new values through lift; the engine merges them."
    )


def leaking_transform() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A transform that computes the right thing but keeps each call's output tracer."""
    kept: list[Any] = []

    def run(pure: PureCore, r: list[Any], w: list[Any], a: tuple[Any, ...]) -> Any:
        out, new = pure(r, w, *a)
        kept.append(out)  # a tracer outlives its trace
        return out, new

    return engine_transform("leaking", run)


def test_a_transform_that_leaks_a_tracer_fails() -> None:
    leaking = leaking_transform()
    check_transform(leaking, checks=["eager"])  # it computes the right thing...
    with pytest.raises(
        ConformanceError,
        match=r"^statejax.testing: check 'leaks' failed: leaking leaked a tracer "
        r"\(jax.checking_leaks\): Leaked trace",
    ):
        check_transform(leaking, checks=["leaks"])  # ...but leaks


def test_reporting_a_leak_walks_the_heap_once_per_leaked_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JAX explains a leak with one `gc.get_referrers` (a walk over every object of the
    process) per link from the tracer up to a module: hundreds of walks, minutes in a
    long test session. The kit reports without the chain."""
    walks: list[int] = []
    get_referrers = gc.get_referrers

    def counted(*objs: Any) -> list[Any]:
        walks.append(len(objs))  # no reference to the objects: that would lengthen the chain
        return get_referrers(*objs)

    monkeypatch.setattr(gc, "get_referrers", counted)
    with pytest.raises(ConformanceError, match=r"leaking leaked a tracer") as info:
        check_transform(leaking_transform(), checks=["leaks"])
    assert 1 <= len(walks) <= 2, len(walks)  # one per leaked trace JAX finds
    assert "is referred to by" not in str(info.value.__cause__)  # no chain
    assert _jax_compat._core._why_alive is _jax_compat._why_alive  # JAX's own report is back


def test_a_transform_that_is_not_atomic_fails() -> None:
    def passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn  # runs the function on the live states: each write lands at once

    assert check_transform(passthrough, checks=["eager"]) == ("eager",)
    with pytest.raises(ConformanceError) as info:
        check_transform(passthrough, checks=["trace_error"])
    assert str(info.value) == (
        "statejax.testing: check 'trace_error' failed: passthrough is not atomic: the function "
        "raised, yet state 'count' changed from array(0., dtype=float32) to "
        "array(1., dtype=float32). Merge written values only after the whole call succeeded "
        "(the engine does)."
    )


def test_a_transform_without_the_misspelled_option_pattern_fails_the_spec_check() -> None:
    def strict(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    with pytest.raises(
        ConformanceError,
        match=r"check 'spec' failed: strict rejects an unknown option with a TypeError .*"
        r"take \*\*misspelled: Never and pass it to parse_spec",
    ):
        check_transform(strict, checks=["spec"], spec=NoOptions)
    with pytest.raises(ConformanceError, match=r"strict has no spec: pass spec="):
        check_transform(strict, checks=["spec"])


def test_unknown_check_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown checks \['jti'\]; choose from eager, jit"):
        check_transform("jit", checks=["jti"])


def test_the_builtin_jit_passes(statejax_conformance: Callable[..., tuple[str, ...]]) -> None:
    assert statejax_conformance is check_transform  # the pytest11 plugin's fixture
    assert statejax_conformance("jit", checks=["eager", "trace_error", "spec"]) == (
        "eager",
        "trace_error",
        "spec",
    )
    assert CHECKS[0] == "eager"


def test_the_pytest_plugin_adds_nothing_until_requested() -> None:
    hooks = [name for name in vars(statejax_pytest) if name.startswith("pytest_")]
    assert hooks == []
    code = "import sys, statejax_pytest; print('jax' in sys.modules, 'statejax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

"""Typed usage that mypy --strict must accept, with the types it must infer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, assert_type

import jax
import jax.numpy as jnp

import statejax as sj
from statejax.filters import Any as AnyOf
from statejax.filters import Filter, Not, OfType, Path, WithTag


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.zeros(3))
        self.h = sj.HiddenState(jnp.zeros(3))

    @sj.jit
    def step(self, x: jax.Array) -> jax.Array:
        self.h.value = self.h.value + x
        return self.w.value * self.h.value


net = Net()

# model.states(ParamState) is a Mapping[Path, ParamState]
params = net.states(sj.ParamState)
assert_type(params, sj.StateMapping[sj.ParamState[Any]])
as_mapping: Mapping[Path, sj.ParamState[Any]] = params
for path, state in params.items():
    assert_type(path, Path)
    assert_type(state, sj.ParamState[Any])

# Any(ParamState, HiddenState) is a filter of ParamState | HiddenState
either = AnyOf(sj.ParamState, sj.HiddenState)
assert_type(either, AnyOf[sj.ParamState[Any] | sj.HiddenState[Any]])
as_filter: Filter[sj.ParamState[Any] | sj.HiddenState[Any]] = either
assert_type(net.states(either), sj.StateMapping[sj.ParamState[Any] | sj.HiddenState[Any]])
assert_type(net.states(OfType(sj.HiddenState)), sj.StateMapping[sj.HiddenState[Any]])
assert_type(net.states(Not(WithTag("x"))), sj.StateMapping[sj.State[Any]])
assert_type(net.states(...), sj.StateMapping[sj.State[Any]])
assert_type(net.states(lambda p, s: True), sj.StateMapping[sj.State[Any]])
assert_type(net.states(sj.ParamState, sj.HiddenState), tuple[sj.StateMapping[sj.State[Any]], ...])

# the value of a typed state
counter = sj.State(jnp.array(0))
assert_type(counter.value, jax.Array)


# jit keeps the wrapped signature, on functions and methods, in both forms
@sj.jit
def scale(x: jax.Array, factor: float) -> jax.Array:
    return x * factor


@sj.jit(static_argnums=1)
def repeat(x: jax.Array, times: int) -> list[jax.Array]:
    return [x] * times


as_callable: Callable[[jax.Array, float], jax.Array] = scale
assert_type(scale(jnp.ones(2), 2.0), jax.Array)
assert_type(repeat(jnp.ones(2), 3), list[jax.Array])
assert_type(net.step(jnp.ones(3)), jax.Array)
assert_type(sj.transform.jit(scale)(jnp.ones(2), 1.0), jax.Array)

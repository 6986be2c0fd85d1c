"""Typed usage that mypy --strict must accept, with the types it must infer.

pyright --strict accepts it too (tests/typing/check_pyright.py), except the lines marked
`# mypy plugin only`: there pyright sees a plugin transform as `Any`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, assert_type

import jax
import jax.numpy as jnp
from statejax_ema import EmaFunction, EmaSpec

import statejax as sj
from statejax.extend import parse_spec
from statejax.filters import All, Not, OfType, Path, PathContains, WithTag
from statejax.filters import Any as AnyOf
from statejax.filters import Filter


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

# states(A, B) is one typed mapping per filter; filters of unknown element type give State
ParamMap = sj.StateMapping[sj.ParamState[Any]]
HiddenMap = sj.StateMapping[sj.HiddenState[Any]]
AnyMap = sj.StateMapping[sj.State[Any]]
assert_type(net.states(sj.ParamState, sj.HiddenState), tuple[ParamMap, HiddenMap])
assert_type(net.states(sj.ParamState, ...), tuple[ParamMap, AnyMap])
assert_type(
    net.states(Not(WithTag("x")), OfType(sj.HiddenState), PathContains("w")),
    tuple[AnyMap, HiddenMap, AnyMap],
)
assert_type(net.states(lambda p, s: True, sj.ParamState), tuple[AnyMap, ParamMap])
assert_type(net.states(All(sj.ParamState, Not(WithTag("frozen")))), ParamMap)
assert_type(sj.graph.pop_states(Net(), sj.ParamState, sj.HiddenState), tuple[ParamMap, HiddenMap])
five = net.states(sj.ParamState, sj.HiddenState, sj.State, sj.ParamState, sj.State)
assert_type(five, tuple[AnyMap, ...])

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


# the grad family: the derivative has the structure of grad_states
def loss(x: jax.Array) -> jax.Array:
    return jnp.sum(net.w.value * x)


x = jnp.ones(3)
Grads = Mapping[Path, jax.Array]
assert_type(sj.grad(loss, params)(x), Grads)
assert_type(sj.grad(loss, net.w)(x), jax.Array)
assert_type(sj.grad(loss, [net.w, net.h])(x), Sequence[jax.Array])
assert_type(sj.grad(loss, {"w": net.w})(x), Mapping[str, jax.Array])
assert_type(sj.grad(loss, params, argnums=0)(x), tuple[Grads, Any])
assert_type(sj.grad(loss)(x), Any)
# return_value and has_aux append the value (typed as fn's result) and the aux
assert_type(sj.grad(loss, params, return_value=True)(x), tuple[Grads, jax.Array])
assert_type(sj.grad(loss, params, has_aux=True)(x), tuple[Grads, Any])
assert_type(sj.grad(loss, params, has_aux=True, return_value=True)(x), tuple[Grads, jax.Array, Any])
assert_type(sj.vector_grad(loss, params, return_value=True)(x), tuple[Grads, jax.Array])
assert_type(sj.transform.jacrev(loss, params, has_aux=True)(x), tuple[Any, Any])
assert_type(sj.transform.hessian(loss, params)(x), Any)
assert_type(sj.grad(loss, params, check_states=False, holomorphic=False)(x), Grads)
# the returned function keeps fn's parameters, also through jit and as a decorator
assert_type(sj.jit(sj.grad(loss, params))(x), Grads)
step = sj.grad(grad_states=params, return_value=True)(loss)
assert_type(step(x), tuple[Any, jax.Array])
flag = bool(x.sum() > 0)
assert_type(sj.grad(loss, params, has_aux=flag)(x), Any)


# vmap selectors: a selector (axis 0) or {axis: selector} with int axes
def lane(x: jax.Array) -> jax.Array:
    return x


sj.vmap(lane, in_states=params)
sj.vmap(lane, in_states={0: params, 1: [net.h]}, out_states=sj.HiddenState)
sj.vmap(lane, in_states={-1: net.w}, out_states=[net.h, WithTag("x")])
sj.vmap(lane, in_states=(sj.ParamState, sj.HiddenState), out_states=...)
assert_type(sj.vmap(in_states=params)(lane)(x), jax.Array)

# an installed plugin's transform has its function's signature (the statejax.mypy plugin)
ema_step = sj.transform.ema(lambda: None, params, decay=0.9)
assert_type(ema_step, EmaFunction[[], None])  # mypy plugin only
assert_type(ema_step(), None)  # mypy plugin only
assert_type(parse_spec(EmaSpec, "ema", states=params, decay=0.5), EmaSpec)

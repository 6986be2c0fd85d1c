"""Typed usage that mypy --strict must reject: each line marked `# E` is an error."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import statejax as sj
from statejax.filters import Any as AnyOf


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.zeros(3))


@sj.jit
def scale(x: jax.Array, factor: float) -> jax.Array:
    return x * factor


net = Net()
net.states(42)  # E
net.states("w")  # E
AnyOf(sj.ParamState, 3.5)  # E
scale(jnp.ones(2))  # E
scale(jnp.ones(2), "twice")  # E
sj.jit(scale, static_argnum=1)  # E
sj.grad(scale, net.w, has_axu=True)  # E
params = net.states(sj.ParamState)
params[("w",)] = sj.ParamState(jnp.ones(1))  # E

"""Typed usage that mypy --strict must reject: each line marked `# E: <message>` is an error.

tests/typing/test_typing.py checks that mypy reports an error on exactly the marked lines,
and that an error on each line contains the text after `# E:`. Lines marked
`# E[mypy plugin]:` need the statejax.mypy plugin; the others are rejected by
pyright --strict too (tests/typing/check_pyright.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from statejax_ema import EmaSpec

import statejax as sj
from statejax.extend import parse_spec
from statejax.filters import Any as AnyOf


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.zeros(3))


@sj.jit
def scale(x: jax.Array, factor: float) -> jax.Array:
    return x * factor


def loss(x: jax.Array) -> jax.Array:
    return jnp.sum(x)


net = Net()
net.states(42)  # E: No overload variant of "states" of "Module" matches argument type "int"
net.states("w")  # E: No overload variant of "states" of "Module" matches argument type "str"
AnyOf(sj.ParamState, 3.5)  # E: No overload variant of "Any" matches argument types "type[ParamState[T]]", "float"
scale(jnp.ones(2))  # E: Missing positional argument "factor" in call to "scale"
scale(jnp.ones(2), "twice")  # E: Argument 2 to "scale" has incompatible type "str"; expected "float"
sj.jit(scale, static_argnum=1)  # E: Unexpected keyword argument "static_argnum" for overloaded function "jit"; did you mean "static_argnums"?
params = net.states(sj.ParamState)
params[("w",)] = sj.ParamState(jnp.ones(1))  # E: Unsupported target for indexed assignment ("StateMapping[ParamState[Any]]")

# the grad family: misspelled options, and results used as the wrong structure
sj.grad(loss, net.w, has_axu=True)  # E: Unexpected keyword argument "has_axu" for overloaded function "grad"; did you mean "has_aux"?
sj.grad(loss, params, allow_unused=True)  # E: Unexpected keyword argument "allow_unused" for overloaded function "grad"
sj.grad(loss, params)(x=jnp.ones(3))["w"]  # E: Invalid index type "str" for "Mapping[tuple[Any, ...], Array]"
sj.grad(loss, params, return_value=True)(jnp.ones(3))[0].shape  # E: "Mapping[tuple[Any, ...], Array]" has no attribute "shape"
sj.grad(loss, params)("x")  # E: No overload variant of "__call__" of "GradFunction" matches argument type "str"
sj.grad(loss, 3.0)  # E: No overload variant of "grad" matches argument types "Callable[[Array], Array]", "float"

# vmap selectors
sj.vmap(loss, in_states={0.5: params})  # E: Dict entry 0 has incompatible type "float": "StateMapping[ParamState[Any]]"; expected "int"
sj.vmap(loss, in_states={"zero": params})  # E: Dict entry 0 has incompatible type "str": "StateMapping[ParamState[Any]]"; expected "int"
sj.vmap(loss, in_states=42)  # E: No overload variant of "vmap" matches argument types "Callable[[Array], Array]", "int"
sj.vmap(loss, out_states=net)  # E: No overload variant of "vmap" matches argument types "Callable[[Array], Array]", "Net"
sj.vmap(loss, in_states={0: "w"})  # E: Dict entry 0 has incompatible type "int": "str"

# states(A, B) keeps each element type
_, more = net.states(sj.ParamState, sj.HiddenState)
more_params: sj.StateMapping[sj.ParamState[Any]] = more  # E: Incompatible types in assignment (expression has type "StateMapping[HiddenState[Any]]", variable has type "StateMapping[ParamState[Any]]")

# plugin transforms (statejax.mypy) and parse_spec options
sj.transform.no_such_transform  # E[mypy plugin]: Module has no attribute "no_such_transform"
sj.transform.ema(loss, params, decya=0.5)  # E[mypy plugin]: Unexpected keyword argument "decya" for "ema"; did you mean "decay"?
sj.transform.ema(loss, params, decay="slow")  # E[mypy plugin]: Argument "decay" to "ema" has incompatible type "str"; expected "float"
parse_spec(EmaSpec, "ema", states=params, decya=0.5)  # E[mypy plugin]: Unexpected option "decya" for EmaSpec; did you mean "decay"? (valid options: states, decay)

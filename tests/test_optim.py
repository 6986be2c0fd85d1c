"""statejax.optim: optax transformations whose state lives in States."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statejax as sj
from statejax._transforms.autodiff import grad
from statejax._transforms.jit import jit
from statejax.optim import Optimizer, OptimState


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.array([[1.0, -0.5], [0.25, 2.0]]))
        self.b = sj.ParamState(jnp.array([0.1, -0.1]))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x @ self.w.value + self.b.value)


X = jnp.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]])
Y = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])


def pure_loss(params: dict[str, jax.Array]) -> jax.Array:
    return jnp.mean((jnp.tanh(X @ params["w"] + params["b"]) - Y) ** 2)


def reference(tx: optax.GradientTransformation, steps: int) -> dict[str, jax.Array]:
    net = Net()
    params = {"w": net.w.value, "b": net.b.value}
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(jax.grad(pure_loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("use_jit", [True, False])
def test_adam_matches_optax_with_a_mapping(use_jit: bool) -> None:
    net = Net()
    params = net.states(sj.ParamState)
    opt = Optimizer(optax.adam(0.05), params)

    def step() -> None:
        grads = grad(lambda: jnp.mean((net(X) - Y) ** 2), params)()
        opt.update(grads)

    run = jit(step) if use_jit else step
    for _ in range(5):
        run()
    expected = reference(optax.adam(0.05), 5)
    np.testing.assert_allclose(net.w.value, expected["w"], rtol=1e-5)
    np.testing.assert_allclose(net.b.value, expected["b"], rtol=1e-5)
    assert int(opt.opt_state.value[0].count) == 5


def test_list_of_params_and_chained_transform() -> None:
    net = Net()
    tx = optax.chain(optax.clip_by_global_norm(0.1), optax.sgd(0.3, momentum=0.9))
    opt = Optimizer(tx, [net.w, net.b])

    @jit
    def step() -> jax.Array:
        grads, loss = grad(lambda: jnp.mean((net(X) - Y) ** 2), [net.w, net.b], return_value=True)()
        opt.update(grads)
        return loss  # type: ignore[no-any-return]

    for _ in range(4):
        step()
    expected = reference(tx, 4)
    np.testing.assert_allclose(net.w.value, expected["w"], rtol=1e-5)
    np.testing.assert_allclose(net.b.value, expected["b"], rtol=1e-5)


def test_optimizer_state_is_a_state_of_the_optimizer() -> None:
    net = Net()
    opt = Optimizer(optax.adam(1e-3), net.states(sj.ParamState))
    assert isinstance(opt.opt_state, OptimState)
    assert isinstance(opt.opt_state, sj.LongTermState)
    assert list(opt.states()) == [("opt_state",)]
    assert list(opt.params) == [("w",), ("b",)]


def test_update_checks_the_gradient_structure() -> None:
    net = Net()
    opt = Optimizer(optax.sgd(0.1), net.states(sj.ParamState))
    with pytest.raises(TypeError, match=r"no gradient for the parameter \('b',\)"):
        opt.update({("w",): jnp.zeros((2, 2)), ("c",): jnp.zeros(2)})
    with pytest.raises(TypeError, match=r"expected gradients as a mapping with the keys"):
        opt.update([jnp.zeros((2, 2)), jnp.zeros(2)])
    listed = Optimizer(optax.sgd(0.1), [net.w])
    with pytest.raises(TypeError, match=r"expected a list of 1 gradients"):
        listed.update([])


def test_bad_params() -> None:
    with pytest.raises(sj.SpecError, match=r"params must hold States, got 3"):
        Optimizer(optax.sgd(0.1), [3])  # type: ignore[list-item]
    with pytest.raises(sj.SpecError, match=r"params must be a mapping to States"):
        Optimizer(optax.sgd(0.1), sj.ParamState(jnp.ones(2)))  # type: ignore[arg-type]


def test_weakly_typed_parameters_become_strong_once() -> None:
    b = sj.ParamState(jnp.array(0.5))  # from a Python float: weakly typed
    assert jax.typeof(b.value).weak_type
    opt = Optimizer(optax.adam(0.1), [b])
    assert not jax.typeof(b.value).weak_type and float(b.value) == 0.5
    opt.update([jnp.array(1.0)])
    assert not jax.typeof(b.value).weak_type  # so a jitted step keeps one executable


def test_extra_args_reach_the_transformation() -> None:
    w = sj.ParamState(jnp.array([1.0, 2.0]))
    tx = optax.chain(optax.sgd(1.0), optax.contrib.reduce_on_plateau(patience=0, factor=0.5))
    opt = Optimizer(tx, [w])
    losses = [jnp.array(v) for v in (1.0, 2.0, 3.0, 4.0)]

    @jit
    def step(loss: jax.Array) -> None:
        opt.update([jnp.ones(2)], value=loss)

    params, state = [jnp.array([1.0, 2.0])], tx.init([jnp.array([1.0, 2.0])])
    for loss in losses:
        step(loss)
        updates, state = tx.update([jnp.ones(2)], state, params, value=loss)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(w.value, params[0])
    assert float(opt.opt_state.value[1].scale) == float(state[1].scale) < 1.0  # it did reduce

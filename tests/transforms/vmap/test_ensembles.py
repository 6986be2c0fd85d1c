"""Ensembles: states created under vmap come out stacked; training them equals one-by-one."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statejax as sj
from statejax import random
from statejax._transforms.autodiff import grad
from statejax._transforms.vmap import vmap
from statejax.extend import is_leaked
from statejax.graph import StateMapping
from statejax.optim import Optimizer


class MLP(sj.Module):
    def __init__(self, key: jax.Array, n_in: int = 2, n_hidden: int = 8) -> None:
        k1, k2 = jax.random.split(key)
        self.w1 = sj.ParamState(jax.random.normal(k1, (n_in, n_hidden)) / jnp.sqrt(n_in))
        self.b1 = sj.ParamState(jnp.zeros(n_hidden))
        self.w2 = sj.ParamState(jax.random.normal(k2, (n_hidden, 1)) / jnp.sqrt(n_hidden))
        self.steps = sj.ShortTermState(jnp.array(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x @ self.w1.value + self.b1.value) @ self.w2.value


def test_initialiser_under_vmap_creates_stacked_states() -> None:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    ensemble = vmap(MLP)(keys)
    assert ensemble.w1.value.shape == (3, 2, 8)
    assert ensemble.b1.value.shape == (3, 8)  # unbatched initial values are broadcast
    assert ensemble.steps.value.shape == (3,)
    for i in range(3):
        member = MLP(keys[i])
        np.testing.assert_allclose(ensemble.w1.value[i], member.w1.value, rtol=1e-6)
        np.testing.assert_allclose(ensemble.w2.value[i], member.w2.value, rtol=1e-6)
    assert not any(is_leaked(s) for s in ensemble.states().values())


def test_initialiser_with_random_module_and_axis_size() -> None:
    class Noise(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(random.normal(size=3))

    random.seed(5)
    ensemble = vmap(Noise, axis_size=4)()
    assert ensemble.w.value.shape == (4, 3)
    keys = jax.random.split(jax.random.PRNGKey(5), 5)  # the default key, split per member
    for i in range(4):
        expected = jax.random.normal(jax.random.split(keys[i + 1])[1], (3,))
        np.testing.assert_allclose(ensemble.w.value[i], expected, rtol=1e-6)
    np.testing.assert_array_equal(random.get_key_data(), keys[0])  # advanced once


@pytest.mark.slow
def test_nested_vmap_stacks_twice() -> None:
    keys = jax.random.split(jax.random.PRNGKey(1), 6).reshape(2, 3, 2)
    grid = vmap(vmap(MLP))(keys)
    assert grid.w1.value.shape == (2, 3, 2, 8)
    np.testing.assert_allclose(grid.w1.value[1, 2], MLP(keys[1, 2]).w1.value, rtol=1e-6)


def test_states_created_under_jit_still_leak() -> None:
    holder = []

    @sj.jit
    def make(x: jax.Array) -> jax.Array:
        holder.append(sj.State(x))
        return x

    make(jnp.ones(2))
    assert is_leaked(holder[-1])
    with pytest.raises(sj.StateLeakError):
        _ = holder[-1].value


def train_ensemble(ensemble: MLP, xs: jax.Array, ys: jax.Array, steps: int) -> list[jax.Array]:
    params = ensemble.states(sj.ParamState)

    def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((ensemble(x) - y) ** 2)

    @sj.jit
    @vmap(in_states={0: ensemble.states()}, in_axes=(0, 0))
    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, loss = grad(loss_fn, params, return_value=True)(x, y)
        for path, g in grads.items():
            params[path].value = params[path].value - 0.1 * g
        ensemble.steps.value = ensemble.steps.value + 1
        return loss

    return [step(xs, ys) for _ in range(steps)]


def train_one(member: MLP, x: jax.Array, y: jax.Array, steps: int) -> list[jax.Array]:
    params = member.states(sj.ParamState)

    def loss_fn(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((member(x) - y) ** 2)

    @sj.jit
    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, loss = grad(loss_fn, params, return_value=True)(x, y)
        for path, g in grads.items():
            params[path].value = params[path].value - 0.1 * g
        return loss

    return [step(x, y) for _ in range(steps)]


def test_training_the_ensemble_equals_training_members_one_by_one() -> None:
    n = 3
    keys = jax.random.split(jax.random.PRNGKey(2), n)
    ensemble = vmap(MLP)(keys)
    data_key = jax.random.PRNGKey(3)
    xs = jax.random.normal(data_key, (n, 16, 2))  # each member its own data
    ys = jnp.sin(xs.sum(-1, keepdims=True))
    losses = train_ensemble(ensemble, xs, ys, steps=4)
    assert losses[-1].shape == (n,)
    assert np.all(np.asarray(losses[-1]) < np.asarray(losses[0]))
    np.testing.assert_array_equal(ensemble.steps.value, np.full(n, 4))
    for i in range(n):
        member = MLP(keys[i])
        member_losses = train_one(member, xs[i], ys[i], steps=4)
        np.testing.assert_allclose(
            [loss[i] for loss in losses], member_losses, rtol=1e-5, atol=1e-6
        )
        for path, state in member.states(sj.ParamState).items():
            np.testing.assert_allclose(
                ensemble.states()[path].value[i], state.value, rtol=1e-5, atol=1e-6
            )


# --- vmap_new_states ------------------------------------------------------------------


def test_vmap_new_states_stacks_created_states_per_lane() -> None:
    from statejax.transform import vmap_new_states

    made: list[sj.State[Any]] = []

    @vmap_new_states(in_axes=0, state_tag="ensemble")
    def build(x: jax.Array) -> jax.Array:
        w = sj.ParamState(x * 10.0 + sj.random.uniform())  # each lane its own key
        own = sj.State(jnp.zeros(2), tag="mine")
        made.extend([w, own])
        return w.value

    out = build(jnp.arange(3.0))
    w, own = made[-2:]
    np.testing.assert_allclose(out, w.value)
    assert w.value.shape == (3,) and own.value.shape == (3, 2)
    assert len(set(np.asarray(w.value - jnp.arange(3.0) * 10.0).tolist())) == 3
    assert (w.tag, own.tag) == ({"ensemble"}, {"mine", "ensemble"})
    for option in ("in_states", "out_states", "state_to_exclude"):
        with pytest.raises(sj.SpecError, match=rf"vmap_new_states: option {option} is not"):
            vmap_new_states(**{option: sj.ParamState})
    with pytest.raises(sj.SpecError, match=r"vmap_new_states: option axis_size"):
        vmap_new_states(axis_size=0)


def adam_ensemble(n: int) -> tuple[MLP, StateMapping[sj.ParamState[Any]], Optimizer]:
    """An ensemble and its optimizer, made as the ensembles page says: under vmap."""
    ensemble = vmap(MLP)(jax.random.split(jax.random.PRNGKey(4), n))
    params = ensemble.states(sj.ParamState)
    opt = vmap(lambda: Optimizer(optax.adam(0.05), params), in_states={0: params})()
    return ensemble, params, opt


def test_an_optimizer_created_under_vmap_trains_each_member_as_alone() -> None:
    n, steps = 3, 3
    ensemble, params, opt = adam_ensemble(n)
    # Every leaf of the optimizer state is stacked per member, the step count included.
    counts = opt.opt_state.value[0].count
    assert counts.shape == (n,)
    start = {path: state.value for path, state in params.items()}

    @sj.jit
    @vmap(in_states={0: [params, opt.states()]})
    def step(x: jax.Array, y: jax.Array) -> jax.Array:
        grads, loss = grad(lambda: jnp.mean((ensemble(x) - y) ** 2), params, return_value=True)()
        opt.update(grads)
        return loss

    xs = jax.random.normal(jax.random.PRNGKey(5), (n, 16, 2))
    ys = jnp.sin(xs.sum(-1, keepdims=True))
    for _ in range(steps):
        assert step(xs, ys).shape == (n,)
    # No shape changed, and each member moved as optax moves it alone.
    for path, state in params.items():
        assert state.value.shape == start[path].shape
    np.testing.assert_array_equal(opt.opt_state.value[0].count, np.full(n, steps))
    for i in range(n):
        member = MLP(jax.random.split(jax.random.PRNGKey(4), n)[i])
        member_params = member.states(sj.ParamState)
        member_opt = Optimizer(optax.adam(0.05), member_params)
        x, y = xs[i], ys[i]
        for _ in range(steps):
            grads = grad(lambda: jnp.mean((member(x) - y) ** 2), member_params)()  # noqa: B023
            member_opt.update(grads)
        for path, state in member_params.items():
            np.testing.assert_allclose(params[path].value[i], state.value, rtol=1e-5, atol=1e-6)


def test_an_optimizer_made_outside_vmap_is_refused_with_the_pattern() -> None:
    ensemble = vmap(MLP)(jax.random.split(jax.random.PRNGKey(4), 4))
    params = ensemble.states(sj.ParamState)
    opt = Optimizer(optax.adam(0.05), params)  # moments stacked, step count shared
    before = {path: state.value for path, state in params.items()}
    moments = opt.opt_state.value

    def step(x: jax.Array) -> None:
        opt.update(grad(lambda: jnp.mean(ensemble(x) ** 2), params)())

    xs = jnp.ones((4, 5, 2))
    # The diagnosis sees the batch axis the moments already have, and does not suggest
    # out_states (which would stack them again), but the pattern that works.
    with pytest.raises(
        sj.BatchAxisError,
        match=r"OptimState Optimizer\.opt_state .* already has the batch size 4 on axis 0 "
        r"\(value\[0\]\.mu\[0\]: float32\[4,2,8\].*stack it a second time "
        r"\(float32\[4,2,8\] -> float32\[4,4,2,8\]\)\. Not every leaf has that axis "
        r"\(value\[0\]\.count: int32\[\]\), so create the state under vmap.*Optimizer\(tx, params\)",
    ):
        vmap(step, in_states={0: params})(xs)
    # Following the old suggestion is refused too, before anything is written.
    with pytest.raises(
        sj.BatchAxisError,
        match=r"opt_state .* is in out_states \(axis 0\) but not in in_states.*batch size 4 "
        r"on axis 0 .*second batch axis \(float32\[4,4,2,8\]\).*No state was changed",
    ):
        vmap(step, in_states={0: params}, out_states={0: opt.opt_state})(xs)
    for path, state in params.items():
        np.testing.assert_array_equal(state.value, before[path])
        assert not is_leaked(state)
    assert opt.opt_state.value is moments

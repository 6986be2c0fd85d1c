"""statejax models under plain JAX transforms (issue 14): the functional API.

A model split with `treefy_split` into a graphdef and trees of `TreefyState`s goes through
plain `jax.jit` / `jax.grad` and optax; `treefy_merge` inside the transform rebuilds
it, with states that hold that transform's tracers and live only inside it. Training
this way must give what the state-aware loop (`sj.jit` + `sj.grad` on a live model)
gives; a state created inside must not outlive the transform; a state created
outside must never receive a tracer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statejax as sj
from statejax.optim import Optimizer

STEPS = 5
LR = 0.1


class Count(sj.State[Any]):
    """How often a model was called: a state that is neither a parameter nor trained."""


def forward(w1: Any, b1: Any, w2: Any, b2: Any, x: jax.Array) -> Any:
    return jnp.tanh(x @ w1 + b1) @ w2 + b2


def val(x: Any) -> Any:
    """The value of a tree entry: `treefy_split` trees hold `TreefyState`s, as in BrainState."""
    return x.value if isinstance(x, sj.TreefyState) else x


def forward_tree(params: Any, x: jax.Array, scale: float = 1.0) -> Any:
    """`forward` on a tree of parameters keyed by path."""
    return forward(*(scale * val(params[p]) for p in PARAM_PATHS), x)  # type: ignore[call-arg]


class MLP(sj.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int, seed: int = 0) -> None:
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        self.w1 = sj.ParamState(jax.random.normal(k1, (n_in, hidden)) / n_in**0.5)
        self.b1 = sj.ParamState(jnp.zeros(hidden))
        self.w2 = sj.ParamState(jax.random.normal(k2, (hidden, n_out)) / hidden**0.5)
        self.b2 = sj.ParamState(jnp.zeros(n_out))
        self.count = Count(jnp.array(0))

    def __call__(self, x: jax.Array) -> Any:
        self.count.value += 1
        return forward(self.w1.value, self.b1.value, self.w2.value, self.b2.value, x)


PARAM_PATHS = [("w1",), ("b1",), ("w2",), ("b2",)]


def batch() -> tuple[jax.Array, jax.Array]:
    x = jnp.linspace(-1.0, 1.0, 16)[:, None]
    return x, jnp.sin(3.0 * x)


def assert_trees_close(got: Any, expected: Any) -> None:
    assert list(got) == list(expected)
    for path in expected:
        np.testing.assert_allclose(val(got[path]), val(expected[path]), rtol=1e-5, atol=1e-6)


def live_reference(make_update: Any) -> MLP:
    """The state-aware loop: `sj.jit` of `sj.grad` on a live model, `STEPS` steps."""
    model = MLP(1, 32, 1)
    params = model.states(sj.ParamState)
    update = make_update(params)
    x, y = batch()

    @sj.jit
    def step(x: jax.Array, y: jax.Array) -> None:
        def loss(x: jax.Array, y: jax.Array) -> jax.Array:
            return jnp.mean((y - model(x)) ** 2)

        update(sj.grad(loss, params)(x, y))

    for _ in range(STEPS):
        step(x, y)
    return model


def sgd_update(params: Any) -> Any:
    def update(grads: Any) -> None:
        for path, g in grads.items():
            params[path].value = params[path].value - LR * g

    return update


# --- (1) and (2): the functional training loop -------------------------------------------


def test_functional_training_loop_matches_the_state_aware_one() -> None:
    graphdef, params, counts = sj.graph.treefy_split(MLP(1, 32, 1), sj.ParamState, Count)
    initial = params

    @jax.jit
    def train_step(params: Any, counts: Any, batch: Any) -> tuple[Any, Any]:
        x, y = batch

        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            model = sj.graph.treefy_merge(graphdef, params, counts)
            loss = jnp.mean((y - model(x)) ** 2)  # model(x) writes model.count
            return loss, sj.graph.treefy_states(model, Count)

        grads, counts = jax.grad(loss_fn, has_aux=True)(params)
        params = jax.tree.map(lambda w, g: w - LR * g, params, grads)
        return params, counts

    for _ in range(STEPS):
        params, counts = train_step(params, counts, batch())

    model = live_reference(sgd_update)
    assert list(params) == PARAM_PATHS
    assert not np.allclose(params.w1.value, initial.w1.value)  # it trained
    assert_trees_close(params, model.states(sj.ParamState).values_tree())
    assert list(counts) == [("count",)]
    assert int(counts[("count",)].value) == int(model.count.value) == STEPS


def test_functional_optax_loop_matches_the_state_aware_one() -> None:
    graphdef, params, counts = sj.graph.treefy_split(MLP(1, 32, 1), sj.ParamState, Count)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params: Any, counts: Any, opt_state: Any, batch: Any) -> tuple[Any, ...]:
        x, y = batch

        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            model = sj.graph.treefy_merge(graphdef, params, counts)
            return jnp.mean((y - model(x)) ** 2), sj.graph.treefy_states(model, Count)

        grads, counts = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), counts, opt_state

    for _ in range(STEPS):
        params, counts, opt_state = train_step(params, counts, opt_state, batch())

    model = live_reference(lambda ps: Optimizer(optax.adam(1e-2), ps).update)
    assert_trees_close(params, model.states(sj.ParamState).values_tree())
    assert int(counts[("count",)].value) == int(model.count.value) == STEPS


def test_merge_after_the_transform_gives_a_live_model() -> None:
    """Trees out of `jax.jit` merge back into an ordinary model, usable with `sj.jit`."""
    graphdef, params, counts = sj.graph.treefy_split(MLP(1, 32, 1), sj.ParamState, Count)

    @jax.jit
    def scaled(params: Any) -> Any:
        return jax.tree.map(lambda w: 2.0 * w, params)

    model = sj.graph.treefy_merge(graphdef, scaled(params), counts)
    x, _ = batch()
    out = sj.jit(lambda x: model(x))(x)
    np.testing.assert_allclose(out, forward_tree(params, x, scale=2.0), rtol=1e-5, atol=1e-6)
    assert int(model.count.value) == 1


# --- (3) a state created inside a plain transform lives only there ------------------------


def assert_leaked(states: list[sj.State[Any]]) -> None:
    for state in states:
        with pytest.raises(sj.StateLeakError, match="created inside"):
            _ = state.value
        with pytest.raises(sj.StateLeakError, match="created inside"):
            sj.jit(lambda s=state: s.value + 1)()


def test_state_merged_inside_jax_jit_leaks_after() -> None:
    graphdef, params, counts = sj.graph.treefy_split(MLP(1, 32, 1), sj.ParamState, Count)
    kept: list[sj.State[Any]] = []
    x, _ = batch()

    @jax.jit
    def run(params: Any, counts: Any) -> Any:
        model = sj.graph.treefy_merge(graphdef, params, counts)
        kept.extend([model.count, model.w1])  # escapes into a global list
        return model(x)

    run(params, counts)
    assert_leaked(kept)


def test_module_constructed_inside_jax_jit_leaks_after() -> None:
    kept: list[sj.State[Any]] = []
    x, _ = batch()

    @jax.jit
    def run(x: jax.Array) -> Any:
        model = MLP(1, 4, 1)
        kept.extend(model.states().values())
        return model(x)

    run(x)
    assert len(kept) == 5
    assert_leaked(kept)


@pytest.mark.parametrize("transform", ["jit", "grad"])
def test_state_merged_from_concrete_values_lives_only_inside(transform: str) -> None:
    """`counts` is closed over, so the merged `count` starts concrete; it lives inside all the same."""
    graphdef, params, counts = sj.graph.treefy_split(MLP(1, 32, 1), sj.ParamState, Count)
    kept: list[sj.State[Any]] = []
    x, _ = batch()

    def run(params: Any) -> jax.Array:
        model = sj.graph.treefy_merge(graphdef, params, counts)
        kept.extend([model.count, model.w1])
        return jnp.sum(model(x))  # writes model.count, created inside

    if transform == "jit":
        jax.jit(run)(params)
    else:
        jax.grad(run)(params)
    assert int(counts[("count",)].value) == 0
    assert_leaked(kept)


# --- (4) statejax transforms inside a plain one ------------------------------------------


def test_statejax_transforms_on_a_model_merged_inside_jax_jit() -> None:
    graphdef, params, counts = sj.graph.treefy_split(MLP(1, 32, 1), sj.ParamState, Count)
    x, _ = batch()
    grad_keys: list[Any] = []

    @jax.jit
    def run(params: Any, counts: Any, x: jax.Array) -> tuple[Any, ...]:
        model = sj.graph.treefy_merge(graphdef, params, counts)
        y = sj.jit(lambda x: model(x))(x)
        grads = sj.grad(lambda x: jnp.mean(model(x) ** 2), model.states(sj.ParamState))(x)
        grad_keys.append(list(grads))  # a dict out of jax.jit has its keys sorted
        ys = sj.vmap(lambda xi: model(xi[None])[0])(x)
        return y, [grads[p] for p in PARAM_PATHS], ys, sj.graph.treefy_states(model, Count)

    y, grads, ys, new_counts = run(params, counts, x)

    plain = forward_tree

    expected_grads = jax.grad(lambda p: jnp.mean(plain(p, x) ** 2))(dict(params))
    np.testing.assert_allclose(y, plain(params, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, plain(params, x), rtol=1e-5, atol=1e-6)
    assert grad_keys == [PARAM_PATHS]
    for path, g in zip(PARAM_PATHS, grads, strict=True):
        np.testing.assert_allclose(val(g), val(expected_grads[path]), rtol=1e-5, atol=1e-6)
    assert int(new_counts[("count",)].value) == 3  # one call each in jit, grad and vmap
    assert int(counts[("count",)].value) == 0  # the trees given in are not changed


# --- (5) a state created outside never receives a tracer ---------------------------------


@pytest.mark.parametrize("transform", [jax.jit, jax.grad, jax.vmap], ids=["jit", "grad", "vmap"])
def test_tracer_written_into_preexisting_state_is_refused(transform: Any) -> None:
    total = sj.State(jnp.array(1.0))

    def add(x: jax.Array) -> jax.Array:
        total.value = total.value + x  # a tracer of the plain transform
        return x

    with pytest.raises(sj.TraceError, match="tracer"):
        transform(add)(jnp.array(2.0) if transform is not jax.vmap else jnp.ones(3))
    assert not isinstance(total.value, jax.core.Tracer)
    assert float(total.value) == 1.0


@pytest.mark.parametrize("how", ["direct", "sj.jit"])
def test_live_model_called_inside_jax_jit_keeps_its_states(how: str) -> None:
    model = MLP(1, 32, 1)
    before = model.states().values_tree()
    x, _ = batch()

    @jax.jit
    def call(x: jax.Array) -> Any:
        if how == "sj.jit":
            return sj.jit(lambda x: model(x))(x)
        return model(x)  # writes model.count, a state created outside

    with pytest.raises(sj.TraceError, match=r"tracer (was written to|in) .*count"):
        call(x)
    after = model.states().values_tree()
    assert not any(isinstance(v, jax.core.Tracer) for v in after.values())
    assert_trees_close(after, before)

"""checkpoint / remat: the same values, gradients and writes as without it."""

from __future__ import annotations

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._transforms.autodiff import grad
from statejax._transforms.checkpoint import checkpoint, remat
from statejax._transforms.jit import jit


def make() -> tuple[sj.ParamState[jax.Array], sj.ShortTermState[jax.Array]]:
    return sj.ParamState(jnp.array([0.5, -1.5])), sj.ShortTermState(jnp.array(0))


def pure(w: jax.Array, x: jax.Array) -> jax.Array:
    h = jnp.sin(w * x)
    return jnp.sum(jnp.tanh(h * w) ** 2)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"policy": jax.checkpoint_policies.nothing_saveable},
        {"policy": jax.checkpoint_policies.dots_saveable, "prevent_cse": False},
    ],
)
def test_same_gradients_as_without(options: dict[str, object]) -> None:
    w, count = make()

    def layer(x: jax.Array) -> jax.Array:
        count.value += 1
        return pure(w.value, x)

    x = jnp.array(0.7)
    block = checkpoint(layer, **options)  # type: ignore[arg-type]
    g_ckpt, v_ckpt = grad(block, w, argnums=0, return_value=True)(x)
    g_plain, v_plain = grad(layer, w, argnums=0, return_value=True)(x)
    expected = jax.grad(pure, argnums=(0, 1))(jnp.array([0.5, -1.5]), x)
    for a, b in zip(
        jax.tree.leaves((g_ckpt, v_ckpt)), jax.tree.leaves((g_plain, v_plain)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(g_ckpt[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(g_ckpt[1], expected[1], rtol=1e-6)
    assert int(count.value) == 2


def test_remat_is_checkpoint_and_works_under_jit() -> None:
    assert remat is checkpoint
    w, count = make()

    @remat
    def layer(x: jax.Array) -> jax.Array:
        count.value += 1
        return pure(w.value, x)

    step = jit(lambda x: grad(lambda x: layer(layer(x) * 0.1), w)(x))
    g = step(jnp.array(0.3))
    g = step(jnp.array(0.3))
    expected = jax.grad(lambda w: pure(w, pure(w, jnp.array(0.3)) * 0.1))(jnp.array([0.5, -1.5]))
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    assert int(count.value) == 4  # two layers per step, two steps


def test_static_argnums() -> None:
    w, _ = make()

    @checkpoint(static_argnums=1)
    def f(x: jax.Array, power: int) -> jax.Array:
        return jnp.sum(w.value**power * x)

    g = grad(lambda x: f(x, 3), w)(jnp.array(2.0))
    np.testing.assert_allclose(g, 3 * jnp.array([0.5, -1.5]) ** 2 * 2.0, rtol=1e-6)


def test_forward_values_and_writes() -> None:
    w, count = make()

    def f(x: jax.Array) -> jax.Array:
        count.value += 2
        w.value = w.value * 2
        return x + 1

    assert float(checkpoint(f)(jnp.array(1.0))) == 2.0
    assert int(count.value) == 2
    np.testing.assert_allclose(w.value, [1.0, -3.0])


def test_static_argnums_beyond_the_arguments() -> None:
    f = checkpoint(lambda x, n: x * n, static_argnums=2)
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.checkpoint\(.*\): static_argnums=\(2,\) but the function was called "
        r"with 2 positional argument\(s\)",
    ):
        f(1.0, 2)


def test_options_are_validated() -> None:
    with pytest.raises(sj.SpecError, match=r"statejax\.checkpoint: option static_argnums\[0\]"):
        checkpoint(lambda x: x, static_argnums=-1)
    with pytest.raises(sj.SpecError, match=r"option policy"):
        checkpoint(lambda x: x, policy=3)  # type: ignore[arg-type]


def remat_eqns(jaxpr: object) -> list[object]:
    """The checkpoint equations anywhere in ``jaxpr`` (a ClosedJaxpr or Jaxpr)."""
    found = []
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:  # type: ignore[attr-defined]
        if eqn.primitive.name in ("checkpoint", "remat", "remat2"):
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found.extend(remat_eqns(sub))
    return found


def test_the_backward_pass_recomputes_with_the_policy() -> None:
    w, _ = make()
    policy = jax.checkpoint_policies.dots_saveable
    block = checkpoint(lambda x: pure(w.value, x), policy=policy)
    jaxpr, _ = sj.make_jaxpr(grad(block, w))(jnp.array(0.7))
    eqns = remat_eqns(jaxpr)
    assert eqns, jaxpr
    assert all(eqn.params["policy"] is policy for eqn in eqns)  # type: ignore[attr-defined]
    plain, _ = sj.make_jaxpr(grad(lambda x: pure(w.value, x), w))(jnp.array(0.7))
    assert not remat_eqns(plain)

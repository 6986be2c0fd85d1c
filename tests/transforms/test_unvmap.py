"""unvmap: a reduction over every vmap lane (any, all, max, none), and its op option."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import statejax as sj
from statejax.transform import unvmap


def test_unvmap_reduces_over_every_lane() -> None:
    x = jnp.array([[1.0, -1.0], [-1.0, -3.0]])
    assert jax.vmap(lambda r: unvmap(r > 0, "any"))(x).tolist() == [True, True]
    assert jax.vmap(lambda r: unvmap(r > -2, "all"))(x).tolist() == [False, False]
    assert jax.vmap(jax.vmap(lambda v: unvmap(v, "max")))(x).tolist() == [[1.0, 1.0]] * 2
    assert jax.vmap(lambda r: unvmap(r, "none"))(x).tolist() == [[1.0, -1.0]] * 2
    assert bool(jax.jit(lambda r: unvmap(r, "all"))(jnp.array([True, True])))
    with pytest.raises(sj.SpecError, match=r"statejax\.unvmap: option op"):
        unvmap(x, "sum")  # type: ignore[arg-type]

"""Options several transforms share: positions (static_argnums) and sizes (length,
axis_size, batch_size, unroll, pbar) refuse bools, floats and huge ints, and take NumPy
integers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._transforms.abstract import make_jaxpr
from statejax._transforms.vmap import map as sj_map


def _loss(x: jax.Array) -> jax.Array:
    return jnp.sum(x**2)


@pytest.mark.parametrize("bad", [False, True, 2**70, 2.0, "1"])
def test_positions_reject_bools_floats_and_huge_ints(bad: Any) -> None:
    f = lambda x: x  # noqa: E731
    for make, option in [
        (lambda: sj.jit(f, static_argnums=bad), "jit: option static_argnums"),
        (lambda: sj.jit(f, static_argnums=(0, bad)), "jit: option static_argnums"),
        (lambda: sj.checkpoint(f, static_argnums=bad), "checkpoint: option static_argnums"),
        (lambda: make_jaxpr(f, static_argnums=bad), "make_jaxpr: option static_argnums"),
    ]:
        if isinstance(bad, str) and "make_jaxpr" not in option:
            continue  # a string is a static argument name there, not a position
        with pytest.raises(sj.SpecError, match=rf"statejax\.{option}"):
            make()


@pytest.mark.parametrize("bad", [False, True, 2**40, 2**70, 3.0])
def test_sizes_reject_bools_floats_and_huge_ints(bad: Any) -> None:
    xs = jnp.arange(3.0)
    step = lambda c, x: (c, x)  # noqa: E731
    cases = [
        (lambda: sj.scan(step, 0, xs, length=bad), "scan: option length"),
        (lambda: sj.for_loop(lambda x: x, xs, length=bad), "for_loop: option length"),
        (lambda: sj.vmap(lambda x: x, axis_size=bad), "vmap: option axis_size"),
        (lambda: sj_map(lambda x: x, xs, batch_size=bad), "map: option batch_size"),
    ]
    if not isinstance(bad, bool):  # unroll=True/False: unroll all steps or none (lax.scan)
        cases.append((lambda: sj.scan(step, 0, xs, unroll=bad), "scan: option unroll"))
    cases.append((lambda: sj.scan(step, 0, xs, pbar=bad), "scan: option pbar"))
    for make, option in cases:
        with pytest.raises(sj.SpecError, match=rf"statejax\.{option}"):
            make()


def test_valid_numbers_still_pass() -> None:
    xs = jnp.arange(4.0)
    assert sj.scan(lambda c, x: (c + x, x), 0.0, xs, length=np.int64(4), pbar=np.int64(2))[1].shape
    assert sj.jit(lambda x, n: x * n, static_argnums=np.int64(1))(xs, 2).shape == (4,)
    np.testing.assert_allclose(sj_map(lambda x: x + 1, xs, batch_size=np.int64(3)), xs + 1)
    assert sj.grad(_loss, argnums=(0,))(xs)[0].shape == (4,)

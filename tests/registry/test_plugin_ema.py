"""The separately installed statejax-ema plugin, used through statejax.transform.ema."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.testing import CHECKS


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.array([1.0, 2.0]))
        self.b = sj.ParamState(jnp.array(0.5))
        self.steps = sj.ShortTermState(jnp.array(0))


def test_ema_tracks_parameters_like_a_python_reference() -> None:
    net = Net()
    decay = 0.9

    def train_step(x: jax.Array) -> jax.Array:
        net.steps.value += 1
        net.w.value = net.w.value - 0.1 * x
        return jnp.sum(net.w.value)

    step = sj.transform.ema(train_step, net.states(sj.ParamState), decay=decay)
    ref_w, avg_w, avg_b = np.array([1.0, 2.0]), np.array([1.0, 2.0]), 0.5
    for i in range(5):
        x = jnp.full(2, float(i))
        out = step(x)
        ref_w = ref_w - 0.1 * np.asarray(x)
        avg_w = decay * avg_w + (1 - decay) * ref_w
        avg_b = decay * avg_b + (1 - decay) * 0.5
        np.testing.assert_allclose(out, ref_w.sum(), rtol=1e-6)
    np.testing.assert_allclose(step.averages[("w",)].value, avg_w, rtol=1e-6)
    np.testing.assert_allclose(step.averages[("b",)].value, avg_b, rtol=1e-6)
    assert int(net.steps.value) == 5


def test_ema_options_are_validated_with_the_path() -> None:
    with pytest.raises(sj.SpecError, match=r"statejax.ema: option decay: .*less than 1"):
        sj.transform.ema(lambda: None, [sj.State(jnp.ones(1))], decay=1.5)
    with pytest.raises(sj.SpecError, match=r"entry at path 'w' is ndarray, not a State"):
        sj.transform.ema(lambda: None, {"w": np.ones(2)})


def test_ema_passes_the_conformance_kit(statejax_conformance: Callable[..., Any]) -> None:
    def apply(fn: Callable[..., Any], states: Mapping[str, sj.State[Any]], **options: Any) -> Any:
        return sj.transform.ema(fn, states, decay=0.5, **options)

    assert statejax_conformance("ema", apply) == CHECKS


def test_a_misspelled_ema_option_is_a_spec_error() -> None:
    with pytest.raises(
        sj.SpecError, match=r"^statejax.ema: unknown option 'decya'. Did you mean 'decay'\?"
    ):
        sj.transform.ema(lambda: None, [sj.State(jnp.ones(1))], decya=0.5)

"""The complete plugin in docs/plugins.md type-checks and does what the page says (§4)."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from mypy import api

import statejax as sj
from statejax.extend import PureCore, Split, StatefulFunction
from statejax.filters import PathContains
from statejax.testing import check_transform

ROOT = Path(__file__).parents[2]
PAGE = (ROOT / "docs" / "plugins.md").read_text()
PLUGIN = next(
    block
    for block in re.findall(r"```python\n(.*?)```", PAGE, flags=re.S)
    if "def statejax_register_transforms" in block
)


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    module = ModuleType("statejax_freeze")
    exec(compile(PLUGIN, "docs/plugins.md", "exec", dont_inherit=True), module.__dict__)
    return module


@pytest.mark.slow
def test_the_complete_plugin_passes_mypy_strict(tmp_path: Path) -> None:
    path = tmp_path / "statejax_freeze.py"
    path.write_text(PLUGIN)
    out, err, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--strict", str(path)]
    )
    assert status == 0, out + err


class Encoder(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones(2))


class Model(sj.Module):
    def __init__(self) -> None:
        self.encoder = Encoder()
        self.head = sj.ParamState(jnp.ones(2))


def test_path_filters_match_inside_the_plugin(plugin: ModuleType) -> None:
    model = Model()

    def step(x: jax.Array) -> jax.Array:
        model.encoder.w.value = model.encoder.w.value - x
        model.head.value = model.head.value - x
        return jnp.sum(model.head.value)

    frozen = plugin.freeze(step, PathContains("encoder"), within=model)
    assert float(frozen(jnp.ones(2))) == 0.0
    assert model.encoder.w.value.tolist() == [1.0, 1.0]
    assert model.head.value.tolist() == [0.0, 0.0]
    # Without the model, the encoder's state is seen at its attribute name ('w',):
    unfrozen = plugin.freeze(step, PathContains("encoder"))
    unfrozen(jnp.ones(2))
    assert model.encoder.w.value.tolist() == [0.0, 0.0]


def test_the_plugin_registers_and_checks_its_options(plugin: ModuleType) -> None:
    registry = sj.extend.PluginRegistry(sj.extend.PluginOrigin("docs", "0", "freeze = x"))
    plugin.statejax_register_transforms(registry)
    assert [c.name for c in registry.claims] == ["freeze"]
    with pytest.raises(sj.SpecError, match=r"^statejax.freeze: option frozen: .*3"):
        plugin.freeze(lambda: None, 3)
    with pytest.raises(
        sj.SpecError, match=r"^statejax.freeze: unknown option 'withn'. Did you mean 'within'\?"
    ):
        plugin.freeze(lambda: None, sj.ParamState, withn=None)


def test_lift_may_return_an_untransformed_wrapper() -> None:
    def plain(fn: Any) -> Any:
        def lift(split: Split, pure: PureCore) -> Any:
            return pure  # no JAX transform: runs eagerly under whatever trace encloses it

        stateful: StatefulFunction[Any] = StatefulFunction(fn, "plain", lift)
        return stateful.as_function(fn)

    assert check_transform(plain, checks=["eager", "jit", "grad_inside", "trace_error"]) == (
        "eager",
        "jit",
        "grad_inside",
        "trace_error",
    )

"""How the registry reports broken and clashing plugins (issue 12, section 1).

Every fake plugin is a module plus a `.dist-info` in a temporary directory put on
`sys.path`: importlib.metadata finds it as an installed distribution, and nothing
is installed globally.
"""

from __future__ import annotations

import sys
import textwrap
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest

import statejax as sj
from statejax.extend import (
    PluginWarning,
    StatePaths,
    TransformSpec,
    get_registry,
    parse_spec,
    reset_registry,
)
from statejax.filters import PathContains
from statejax.registry import _manager

HEADER = "from statejax.extend import Transform, TransformSpec, hookimpl\n\n"
SPEC = "class S(TransformSpec):\n    pass\n\n"

Install = Callable[..., Path]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """`install(name, source, dist=...)`: a fake distribution with one entry point `name`."""
    names: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("STATEJAX_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("STATEJAX_PLUGINS", raising=False)
    reset_registry()

    def add(name: str, source: str, dist: str | None = None) -> Path:
        dist = dist or f"fake-{name}"
        (tmp_path / f"fake_{name}.py").write_text(HEADER + SPEC + textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[statejax.transforms]\n{name} = fake_{name}\n")
        names.append(name)
        return tmp_path / f"fake_{name}.py"

    yield add
    for name in names:
        sys.modules.pop(f"fake_{name}", None)
    reset_registry()


GOOD = """
@hookimpl
def statejax_register_transforms(registry):
    registry.register(Transform("twice", lambda fn: lambda *a: fn(fn(*a)), S))
"""
BROKEN = "raise ImportError('no module named torch_of_doom')\n"


def load() -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        get_registry()
    return [w for w in record if issubclass(w.category, PluginWarning)]


def messages() -> str:
    return "\n".join(str(w.message) for w in load())


# --- warnings as errors ------------------------------------------------------------------


def test_a_broken_plugin_under_warnings_as_errors_breaks_no_other_transform(
    install: Install,
) -> None:
    install("broken", BROKEN)
    install("good", GOOD)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("error")  # python -W error / filterwarnings = error
        s = sj.State(jnp.zeros(()))

        def f(x: jax.Array) -> jax.Array:
            return x + s.value

        for _ in range(2):  # the first call loads the registry (vmap asks its hook)
            np.testing.assert_allclose(sj.vmap(f)(jnp.arange(3.0)), [0.0, 1.0, 2.0])
            assert sj.transform.twice(lambda x: x + 1)(1) == 3
    shown = [w for w in record if issubclass(w.category, PluginWarning)]
    assert len(shown) == 1, "the broken plugin is reported once"
    assert "fake-broken 1.2.3" in str(shown[0].message)
    assert "torch_of_doom" in str(shown[0].message)


def test_the_warning_points_at_the_users_call_and_chains_the_plugins_error(
    install: Install,
) -> None:
    path = install("broken", BROKEN)
    with pytest.warns(PluginWarning, match="torch_of_doom") as record:
        get_registry()  # the user's line: loads the registry
    assert record[0].filename == __file__
    (error,) = get_registry().errors
    assert isinstance(error, sj.PluginError)
    assert isinstance(error.__cause__, ImportError)
    frames = traceback.extract_tb(error.__cause__.__traceback__)
    assert any(frame.filename == str(path) for frame in frames), frames


# --- name clashes ------------------------------------------------------------------------


def clash_source(only: str) -> str:
    return f"""
        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("shared", lambda fn: fn, S))
            registry.register(Transform({only!r}, lambda fn: fn, S))
    """


@pytest.mark.parametrize("order", ["found", "reversed"])
def test_a_name_two_plugins_claim_goes_to_neither_and_only_that_name(
    install: Install, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    install("alpha", clash_source("alpha_only"))
    install("beta", clash_source("beta_only"))
    if order == "reversed":  # the outcome must not depend on discovery order
        found = _manager.entry_points
        monkeypatch.setattr(
            _manager, "entry_points", lambda group: list(reversed(list(found(group=group))))
        )
    text = messages()
    registry = get_registry()
    assert {"alpha_only", "beta_only"} <= set(registry.transforms)
    assert "shared" not in registry.transforms
    expected = (
        "transform 'shared' is registered by both entry point 'alpha = fake_alpha' of "
        "fake-alpha 1.2.3 and entry point 'beta = fake_beta' of fake-beta 1.2.3; statejax "
        "gives the name to neither"
    )
    assert expected in text
    assert [str(e) for e in registry.errors] == [text]
    with pytest.raises(AttributeError, match="no transform 'shared': transform 'shared' is"):
        sj.transform.shared  # noqa: B018


def test_a_builtin_name_stays_builtin_and_the_plugin_keeps_its_other_names(
    install: Install,
) -> None:
    install(
        "rival",
        """
        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("jit", lambda fn: fn, S))
            registry.register(Transform("mine", lambda fn: fn, S))
        """,
    )
    text = messages()
    assert sj.transform.jit is sj.jit
    assert sj.transform.mine(abs) is abs
    assert (
        "entry point 'rival = fake_rival' of fake-rival 1.2.3 registers transform 'jit', which "
        "entry point 'builtin:statejax.transforms.jit' of statejax" in text
    )
    assert "The built-in keeps the name" in text


# --- hooks that cannot work --------------------------------------------------------------

SILENT = {
    "undecorated": (
        """
        def statejax_register_transforms(registry):
            registry.register(Transform("undecorated", lambda fn: fn, S))
        """,
        "statejax_register_transforms is not marked with @statejax.extend.hookimpl, so "
        "statejax would ignore it",
    ),
    "misspelled": (
        """
        def statejax_register_transform(registry):
            pass
        """,
        "defines no statejax hook (no function marked @statejax.extend.hookimpl named "
        "statejax_batch_state or statejax_register_transforms), so it would do nothing. It "
        "defines 'statejax_register_transform': did you mean 'statejax_register_transforms'?",
    ),
    "returning": (
        """
        @hookimpl
        def statejax_register_transforms(registry):
            return [Transform("returning", lambda fn: fn, S)]
        """,
        "statejax_register_transforms returned [Transform(name='returning'",
    ),
    "asynchronous": (
        """
        @hookimpl
        async def statejax_register_transforms(registry):
            registry.register(Transform("asynchronous", lambda fn: fn, S))
        """,
        "hook statejax_register_transforms is 'async def', so calling it would only create a "
        "coroutine",
    ),
    "uncallable": (
        """
        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("uncallable", 3, S))
        """,
        "transform 'uncallable' has function 3 (int), which is not callable",
    ),
    "bad_defaults": (
        """
        import pydantic

        class Decay(TransformSpec):
            decay: float = pydantic.Field(default=1.5, lt=1.0)

        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("bad_defaults", lambda fn: fn, Decay))
        """,
        "transform 'bad_defaults' has spec Decay whose defaults violate its own constraints "
        "(decay: Input should be less than 1)",
    ),
    "bad_defaults_required": (
        """
        import pydantic

        class Needs(TransformSpec):
            states: list[int]
            steps: int = pydantic.Field(default=0, gt=0)

        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("bad_defaults_required", lambda fn: fn, Needs))
        """,
        "spec Needs whose defaults violate its own constraints (steps: Input should be "
        "greater than 0)",
    ),
}


@pytest.mark.parametrize("name", list(SILENT))
def test_a_hook_that_cannot_work_is_reported_naming_the_distribution(
    install: Install, name: str
) -> None:
    source, expected = SILENT[name]
    install(name, source)
    install("good", GOOD)
    text = messages()
    assert f"entry point '{name} = fake_{name}' of fake-{name} 1.2.3" in text
    assert expected in text
    registry = get_registry()
    assert len(registry.errors) == 1
    assert name not in registry.transforms
    assert sj.transform.twice(lambda x: x * 3)(1) == 9


def test_a_spec_with_required_options_and_valid_defaults_registers(install: Install) -> None:
    install(
        "needs",
        """
        class Needs(TransformSpec):
            states: list[int]
            steps: int = 1

        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("needs", lambda fn: fn, Needs))
        """,
    )
    assert messages() == ""
    assert "needs" in get_registry().transforms


# --- loading and the autoload switches ---------------------------------------------------


def test_load_twice_registers_nothing_again(install: Install) -> None:
    install("broken", BROKEN)
    install("good", GOOD)
    load()
    registry = get_registry()
    before = (dict(registry.transforms), list(registry.errors))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.load()
        get_registry()
    assert (registry.transforms, registry.errors) == before


def test_an_allowlist_naming_nothing_installed_warns(
    install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    install("good", GOOD)
    monkeypatch.setenv("STATEJAX_PLUGINS", "good,godo")
    text = messages()
    assert (
        "STATEJAX_PLUGINS names 'godo', which no installed distribution provides as an entry "
        "point of group 'statejax.transforms' (installed entry points: " in text
    )
    assert "It lists entry point names." in text
    assert "twice" in get_registry().transforms


def test_disabling_autoload_wins_over_the_allowlist(
    install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    install("good", GOOD)
    monkeypatch.setenv("STATEJAX_PLUGINS", "good")
    monkeypatch.setenv("STATEJAX_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert messages() == ""
    assert "twice" not in get_registry().transforms


def test_the_installed_plugins_load_cleanly() -> None:
    # What filterwarnings = error::PluginWarning used to catch: a PluginWarning is never
    # raised now (it must not break other transforms), so the suite asserts it.
    assert get_registry().errors == []


# --- specs and paths ---------------------------------------------------------------------


def test_a_model_validator_error_reads_as_the_transform_s_message() -> None:
    class Pair(TransformSpec):
        low: int = 0
        high: int = 1

        @pydantic.model_validator(mode="after")
        def _ordered(self) -> Pair:
            if self.low >= self.high:
                raise ValueError("bad combination")
            return self

    with pytest.raises(sj.SpecError) as info:
        parse_spec(Pair, "t", low=2, high=1)
    assert str(info.value) == "statejax.t: bad combination"


def test_state_paths_let_a_plugin_match_path_filters() -> None:
    class Net(sj.Module):
        def __init__(self) -> None:
            self.enc = sj.ParamState(jnp.ones(2))
            self.dec = sj.ParamState(jnp.ones(2))

    net = Net()
    nested = {"model": net}
    paths = StatePaths.find((nested,), {"extra": {("x", 1): net.dec}})
    assert paths.path(net.enc) == ("enc",)
    assert paths.select(PathContains("dec"), [net.enc, net.dec]) == [net.dec]
    assert StatePaths.find({("a", "b"): net.enc}).path(net.enc) == ("a", "b")
    # not found anywhere: the attribute it was stored under, as vmap uses
    assert StatePaths().path(net.dec) == ("dec",)
    assert StatePaths().known(net.dec) is None

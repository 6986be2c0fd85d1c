"""The plugin registry: built-ins, entry points, failures, autoload switches, specs."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import jax.numpy as jnp
import pytest

import statejax as sj
from statejax.extend import (
    PluginWarning,
    Transform,
    TransformSpec,
    get_registry,
    parse_spec,
    reset_registry,
)

PLUGINS = {
    "broken_import": "raise ImportError('no module named torch_of_doom')\n",
    "bad_signature": """
        from statejax.extend import hookimpl

        @hookimpl
        def statejax_register_transforms(registry, colour):
            pass
    """,
    "misspelled": """
        from statejax.extend import hookimpl

        @hookimpl
        def statejax_register_transform(registry):
            pass
    """,
    "duplicate": """
        from statejax.extend import Transform, TransformSpec, hookimpl

        class S(TransformSpec):
            pass

        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("jit", lambda fn: fn, S))
    """,
    "not_a_transform": """
        from statejax.extend import hookimpl

        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(object())
    """,
    "good": """
        from statejax.extend import Transform, TransformSpec, hookimpl

        class TwiceSpec(TransformSpec):
            pass

        def twice(fn):
            return lambda *a: fn(fn(*a))

        @hookimpl
        def statejax_register_transforms(registry):
            registry.register(Transform("twice", twice, TwiceSpec, "apply twice"))
    """,
}


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Install one fake distribution per plugin above, visible to importlib.metadata."""
    for name, source in PLUGINS.items():
        (tmp_path / f"fake_{name}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"fake_{name}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fake-{name}\nVersion: 1.2.3\n"
        )
        (info / "entry_points.txt").write_text(f"[statejax.transforms]\n{name} = fake_{name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("STATEJAX_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("STATEJAX_PLUGINS", raising=False)
    reset_registry()
    yield tmp_path
    for name in PLUGINS:
        sys.modules.pop(f"fake_{name}", None)
    reset_registry()


def load_with_warnings() -> list[str]:
    with pytest.warns(PluginWarning) as record:
        get_registry()
    return [str(w.message) for w in record]


def test_builtins_are_registered_without_metadata() -> None:
    registry = get_registry()
    assert registry.get("jit").function is sj.jit
    assert registry.get("jit").origin.entry_point == "builtin:statejax._transforms.jit"
    assert sj.transform.jit is sj.jit


def test_every_builtin_transform_is_top_level_except_builtins_of_python() -> None:
    """The rule of docs/reference/index.md: each transform a built-in plugin registers is
    `statejax.<name>` too (the same object), except `map`, which would shadow Python's
    `map` under `from statejax import *`; third-party transforms are not top-level."""
    import builtins

    registry = get_registry()
    builtin = {name for name, t in registry.transforms.items() if t.origin.builtin}
    assert {"jit", "vmap2", "pmap", "unvmap", "checkify"} <= builtin
    for name in sorted(builtin):
        if hasattr(builtins, name):
            assert name not in sj.__all__ and not hasattr(sj, name), name
        else:
            assert name in sj.__all__, name
            assert getattr(sj, name) is getattr(sj.transform, name), name
    assert "ema" not in sj.__all__ and not hasattr(sj, "ema")


def test_third_party_plugin_through_entry_point() -> None:
    entry = get_registry().get("ema")
    assert entry.origin.distribution == "statejax-ema"
    assert entry.origin.entry_point == "ema = statejax_ema.plugin"
    assert sj.transform.ema is entry.function


def test_failing_plugins_are_isolated_and_named(fake_plugins: Path) -> None:
    messages = "\n".join(load_with_warnings())
    registry = get_registry()
    assert len(registry.errors) == 5
    assert (
        "entry point 'broken_import = fake_broken_import' of fake-broken_import 1.2.3: "
        "ImportError: no module named torch_of_doom" in messages
    )
    assert "fake-bad_signature 1.2.3" in messages and "colour" in messages
    assert "fake-misspelled 1.2.3" in messages and "statejax_register_transform" in messages
    assert (
        "entry point 'duplicate = fake_duplicate' of fake-duplicate 1.2.3 registers transform "
        "'jit', which entry point 'builtin:statejax._transforms.jit' of statejax" in messages
    )
    assert "registered <object object" in messages and "not a StateTransform" in messages
    # everything else keeps working
    assert sj.transform.jit is sj.jit
    assert sj.transform.twice(lambda x: x + 1)(1) == 3
    s = sj.State(jnp.array(1.0))
    assert float(sj.jit(lambda: s.value * 2)()) == 2.0


def test_unknown_transform_suggests_and_lists_failures(fake_plugins: Path) -> None:
    load_with_warnings()
    with pytest.raises(AttributeError, match=r"no transform 'twise'. Did you mean 'twice'\?"):
        sj.transform.twise  # noqa: B018
    with pytest.raises(AttributeError, match=r"failed plugin: .*torch_of_doom"):
        sj.transform.broken_import  # noqa: B018


def test_autoload_can_be_disabled(fake_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEJAX_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = get_registry()
    assert registry.errors == []
    assert "jit" in registry.transforms
    assert "ema" not in registry.transforms and "twice" not in registry.transforms


def test_allowlist_narrows_autoload(fake_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEJAX_PLUGINS", "good, ema")
    registry = get_registry()
    assert registry.errors == []
    assert {"twice", "ema", "jit"} <= set(registry.transforms)
    assert "duplicate" not in registry.transforms


def test_parse_spec_messages() -> None:
    class EmaLike(TransformSpec):
        decay: float = 0.9
        steps: int = 1

    assert parse_spec(EmaLike, "ema", decay=0.5) == EmaLike(decay=0.5)
    with pytest.raises(
        sj.SpecError,
        match=r"statejax.ema: unknown option 'decya'. Did you mean 'decay'\? Valid options: decay, steps.",
    ):
        parse_spec(EmaLike, "ema", decya=0.5)
    with pytest.raises(
        sj.SpecError, match=r"statejax.ema: option steps: Input should be a valid integer"
    ):
        parse_spec(EmaLike, "ema", steps="many")
    spec = EmaLike()
    with pytest.raises(Exception, match="frozen"):
        spec.decay = 0.1  # type: ignore[misc]
    assert hash(spec) == hash(EmaLike())


def test_transform_dataclass_satisfies_protocol() -> None:
    from statejax.extend import StateTransform

    class NoOptions(TransformSpec):
        pass

    assert isinstance(Transform("t", lambda f: f, NoOptions), StateTransform)

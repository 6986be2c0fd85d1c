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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest

import statejax as sj
from statejax.extend import (
    Lift,
    PluginWarning,
    PureCore,
    Split,
    StateBatching,
    StatefulFunction,
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
        "entry point 'builtin:statejax._transforms.jit' of statejax" in text
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


# --- lifts and batching hooks at call time -----------------------------------------------


class _Pair(sj.Module):
    def __init__(self) -> None:
        self.a = sj.State(jnp.zeros(2))
        self.b = sj.State(jnp.zeros(2))


def _write_both(pair: _Pair) -> Callable[[jax.Array], jax.Array]:
    def f(x: jax.Array) -> jax.Array:
        pair.a.value = pair.a.value + x
        pair.b.value = pair.b.value + x
        return x

    return f


def _assert_unchanged(pair: _Pair) -> None:
    for state in (pair.a, pair.b):
        assert not isinstance(state._value, jax.core.Tracer)
        np.testing.assert_array_equal(state.value, jnp.zeros(2))


def _lift_editing(edit: Callable[[Any, list[Any]], Any]) -> Lift:
    """A lift whose function hands `edit(out, new_write_values)` back to the engine."""

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        def transformed(rv: list[Any], wv: list[Any], *args: Any) -> Any:
            out, new = pure(rv, wv, *args)
            return edit(out, new)

        return transformed

    return lift


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda out, new: (out, new[:1]),
            r"1 new value for the 2 written states; .*_Pair\.b.* got none",
        ),
        (lambda out, new: (out, [*new, new[0]]), r"3 new values for the 2 written states"),
    ],
    ids=["too-few", "too-many"],
)
def test_a_lift_returning_too_few_or_too_many_values_writes_nothing(
    edit: Callable[[Any, list[Any]], Any], message: str
) -> None:
    pair = _Pair()
    stateful: StatefulFunction[Any] = StatefulFunction(
        _write_both(pair), "counting_jit", _lift_editing(edit)
    )
    with pytest.raises(sj.PluginError, match=rf"^counting_jit: {message}.*No state was changed"):
        stateful(jnp.ones(2))
    _assert_unchanged(pair)
    # Nested in a statejax trace, the enclosing transform stores nothing either.
    with pytest.raises(sj.PluginError, match=rf"^counting_jit: {message}"):
        sj.jit(stateful)(jnp.ones(2))
    _assert_unchanged(pair)


def test_a_jax_jit_lift_returning_too_few_values_writes_nothing() -> None:
    # A jax.jit function's values skip the tracer check at the top level, not the count.
    pair = _Pair()

    def lift(split: Split, pure: PureCore) -> Callable[..., Any]:
        return jax.jit(_lift_editing(lambda out, new: (out, new[:1]))(split, pure))

    stateful: StatefulFunction[Any] = StatefulFunction(
        _write_both(pair), "short_jit", lift, staged=True
    )
    with pytest.raises(sj.PluginError, match=r"^short_jit: 1 new value for the 2 written states"):
        stateful(jnp.ones(2))
    _assert_unchanged(pair)


def test_a_lift_returning_no_pair_names_the_transform_and_its_lift() -> None:
    pair = _Pair()
    lift = _lift_editing(lambda out, new: out)
    stateful: StatefulFunction[Any] = StatefulFunction(_write_both(pair), "my_jit", lift)
    with pytest.raises(
        sj.PluginError,
        match=r"^my_jit: the function made by its lift \(.*_lift_editing.<locals>.lift\) "
        r"returned ArrayImpl .*not a pair \(result, new_write_values\)",
    ):
        stateful(jnp.ones(2))
    _assert_unchanged(pair)


def _kept_tracer(shape: tuple[int, ...]) -> jax.Array:
    """A tracer of a jax.jit trace that has returned."""
    kept: list[jax.Array] = []
    jax.jit(lambda x: kept.append(x) or x)(jnp.ones(shape))
    return kept[0]


@pytest.mark.parametrize("around", ["eager", "statejax.jit", "jax.jit"])
def test_a_lift_handing_back_a_kept_tracer_stores_nothing(around: str) -> None:
    pair = _Pair()
    kept = _kept_tracer((2,))
    lift = _lift_editing(lambda out, new: (out, [kept, new[1]]))
    stateful: StatefulFunction[Any] = StatefulFunction(_write_both(pair), "leaky", lift)
    call = {"eager": stateful, "statejax.jit": sj.jit(stateful), "jax.jit": jax.jit(stateful)}
    with pytest.raises(
        sj.PluginError,
        match=r"^leaky: the new value of State _Pair\.a .* is a JAX tracer that belongs to no "
        r"running trace",
    ):
        call[around](jnp.ones(2))
    _assert_unchanged(pair)


def test_scatter_checks_every_value_before_storing_any() -> None:
    pair = _Pair()
    split = Split(write_states=[pair.a, pair.b])
    with pytest.raises(sj.PluginError, match=r"^t: the new value of State _Pair\.b .* JAX tracer"):
        split.scatter([jnp.ones(2), _kept_tracer((2,))], name="t")
    with pytest.raises(sj.PluginError, match=r"ArrayImpl .* not a sequence"):
        split.scatter(jnp.ones((2, 2)), name="t")  # rows would be read as the values
    _assert_unchanged(pair)
    split.scatter(iter([jnp.ones(2), jnp.full(2, 2.0)]))  # any iterable of values
    np.testing.assert_array_equal(pair.b.value, jnp.full(2, 2.0))


class Tally(sj.State[jax.Array]):
    """A state type batched by the hooks below."""

    __slots__ = ()


def _counting(x: jax.Array, tally: Tally) -> jax.Array:
    tally.value = tally.value + x
    return x


def _assert_tally_unchanged(tally: Tally) -> None:
    assert not isinstance(tally._value, jax.core.Tracer)
    np.testing.assert_array_equal(tally.value, 1.0)


BATCH_HOOK = """
import jax, jax.numpy as jnp
from statejax.extend import StateBatching, hookimpl

ANSWER = []

@hookimpl
def statejax_batch_state(state, spec):
    if type(state).__name__ == "Tally":
        return ANSWER[0]
    return None
"""


@pytest.fixture
def batch_hook(install: Install) -> list[Any]:
    """The answer the installed plugin `fake-batcher` gives for a `Tally` (set it first)."""
    install("batcher", BATCH_HOOK)
    assert get_registry().errors == []
    module = sys.modules["fake_batcher"]
    answer: list[Any] = module.ANSWER
    return answer


def test_a_batching_hook_answering_no_state_batching_names_the_plugin(
    batch_hook: list[Any],
) -> None:
    batch_hook.append("lanes, please")
    tally = Tally(jnp.array(1.0))
    with pytest.raises(
        sj.PluginError,
        match=r"^entry point 'batcher = fake_batcher' of fake-batcher 1\.2\.3: hook "
        r"statejax_batch_state returned str 'lanes, please' for Tally .*; it must return a "
        r"statejax\.extend\.StateBatching",
    ):
        sj.vmap(_counting, in_axes=(0, None))(jnp.arange(3.0), tally)
    _assert_tally_unchanged(tally)


def test_a_batching_hook_whose_prepare_returns_no_pair_names_the_plugin(
    batch_hook: list[Any],
) -> None:
    batch_hook.append(StateBatching(prepare=lambda v, n: v, finish=lambda new, old: old))
    tally = Tally(jnp.array(1.0))
    with pytest.raises(
        sj.PluginError,
        match=r"fake-batcher 1\.2\.3: the prepare of the StateBatching that hook "
        r"statejax_batch_state returned for Tally .* not a pair \(lane_value, carry\)",
    ):
        sj.vmap(_counting, in_axes=(0, None))(jnp.arange(3.0), tally)
    _assert_tally_unchanged(tally)


@pytest.mark.parametrize("around", ["eager", "statejax.jit"])
def test_a_batching_hook_whose_finish_hands_back_a_kept_tracer_stores_nothing(
    batch_hook: list[Any], around: str
) -> None:
    kept = _kept_tracer(())
    batch_hook.append(
        StateBatching(
            prepare=lambda v, n: (jnp.broadcast_to(v, (n,)), v), finish=lambda new, old: kept
        )
    )
    tally = Tally(jnp.array(1.0))
    mapped = sj.vmap(_counting, in_axes=(0, None))
    call = mapped if around == "eager" else sj.jit(mapped)
    with pytest.raises(
        sj.PluginError,
        match=r"fake-batcher 1\.2\.3: the finish of the StateBatching from hook "
        r"statejax_batch_state: the new value of Tally .* is a JAX tracer that belongs to no "
        r"running trace",
    ):
        call(jnp.arange(3.0), tally)
    _assert_tally_unchanged(tally)

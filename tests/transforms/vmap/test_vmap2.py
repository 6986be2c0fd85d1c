"""vmap2 and vmap2_new_states (BrainState's function forms) against jax.vmap."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj
from statejax._transforms._selectors import parse_state_axes, vmap_state_axes
from statejax._transforms.mapping import (
    StatefulMapping,
    Vmap2NewStatesSpec,
    Vmap2Spec,
    vmap2,
    vmap2_new_states,
)
from statejax.registry._manager import get_registry

# --- vmap2 on stateless functions: exactly jax.vmap ------------------------------------------


@pytest.mark.parametrize(
    ("fn", "args", "options"),
    [
        (lambda x: x * 2, (jnp.arange(4.0),), {"in_axes": 0}),
        (lambda v: v.sum(), (jnp.arange(6.0).reshape(2, 3),), {"in_axes": 1}),
        (lambda v: v * 2, (jnp.arange(6.0).reshape(3, 2),), {"in_axes": 0, "out_axes": 1}),
        (lambda a, b: a + b, (jnp.arange(3.0), jnp.array(10.0)), {"in_axes": (0, None)}),
        (
            lambda d: d["a"] + d["b"],
            ({"a": jnp.arange(3.0), "b": jnp.arange(3.0) * 10},),
            {"in_axes": ({"a": 0, "b": None},)},
        ),
        (lambda x: x / jax.lax.psum(x, "i"), (jnp.arange(1.0, 5.0),), {"axis_name": "i"}),
        (lambda x: x + jax.lax.axis_index("i"), (jnp.zeros(4),), {"axis_name": "i"}),
        (lambda x: jnp.stack([x, 2 * x]), (jnp.arange(3.0),), {"out_axes": -1}),
        (lambda: jnp.ones(2), (), {"in_axes": (), "axis_size": 3}),
    ],
)
def test_stateless_matches_jax_vmap(fn: Any, args: tuple[Any, ...], options: Any) -> None:
    got = vmap2(fn, **options)(*args)
    np.testing.assert_allclose(got, jax.vmap(fn, **options)(*args))


def test_keyword_arguments_are_mapped_on_axis_0_as_in_jax() -> None:
    def f(x: jax.Array, *, y: jax.Array) -> jax.Array:
        return x * y

    x, y = jnp.arange(3.0), jnp.arange(3.0) + 1
    np.testing.assert_allclose(vmap2(f)(x, y=y), jax.vmap(f)(x, y=y))
    np.testing.assert_allclose(vmap2(lambda *, y: y * 2)(y=y), y * 2)


def test_nested_and_under_jit_grad() -> None:
    x = jnp.arange(6.0).reshape(2, 3)
    got = vmap2(vmap2(lambda v: v**2))(x)
    np.testing.assert_allclose(got, jax.vmap(jax.vmap(lambda v: v**2))(x))
    w = sj.ParamState(jnp.array(3.0))

    def loss(xs: jax.Array) -> jax.Array:
        return jnp.sum(vmap2(lambda x: x * w.value)(xs))

    np.testing.assert_allclose(sj.grad(loss, w)(jnp.array([1.0, 2.0, 4.0])), 7.0)
    np.testing.assert_allclose(sj.jit(vmap2(lambda x: x * 2.0))(jnp.arange(3.0)), [0, 2, 4])


def test_decorator_forms_return_stateful_mappings() -> None:
    def f(x: jax.Array) -> jax.Array:
        return x + 1

    direct = vmap2(f)
    builder = vmap2(in_axes=0, out_axes=0)
    assert isinstance(builder, functools.partial)
    assert isinstance(direct, StatefulMapping) and isinstance(builder(f), StatefulMapping)
    assert direct.name == "vmap2" and direct.origin_fun is f
    np.testing.assert_allclose(builder(f)(jnp.arange(3.0)), jax.vmap(f)(jnp.arange(3.0)))
    assert sj.transform.vmap2 is vmap2 and sj.transform.vmap2_new_states is vmap2_new_states


# --- vmap2 with states -------------------------------------------------------------------------


def test_states_mapped_and_written_back_match_the_pure_function() -> None:
    a = sj.ShortTermState(jnp.arange(5.0))
    b = sj.ShortTermState(jnp.ones((2, 5)))  # mapped on axis 1
    shared = sj.State(jnp.array(10.0))

    def pure(a: jax.Array, b: jax.Array, x: jax.Array) -> tuple[Any, ...]:
        return a + x, b * x, a + b.sum() + x + 10.0

    def f(x: jax.Array) -> jax.Array:
        a.value = a.value + x
        b.value = b.value * x
        return a.value - x + b.value.sum() / x + x + shared.value

    xs = jnp.arange(1.0, 6.0)
    new_a, new_b, out = jax.vmap(pure, in_axes=(0, 1, 0), out_axes=(0, 1, 0))(a.value, b.value, xs)
    got = vmap2(f, state_in_axes={0: [a], 1: b}, state_out_axes={0: a, 1: b})(xs)
    np.testing.assert_allclose(got, out)
    np.testing.assert_allclose(a.value, new_a)
    np.testing.assert_allclose(b.value, new_b)
    assert float(shared.value) == 10.0


def test_state_out_axes_only_and_collectives() -> None:
    s = sj.ShortTermState(jnp.zeros(()))

    def f(x: jax.Array) -> jax.Array:
        s.value = x / jax.lax.psum(x, "i")
        return s.value

    xs = jnp.arange(1.0, 5.0)
    out = vmap2(f, axis_name="i", state_out_axes=s)(xs)
    ref = jax.vmap(lambda x: x / jax.lax.psum(x, "i"), axis_name="i")(xs)
    np.testing.assert_allclose(out, ref)
    np.testing.assert_allclose(s.value, ref)


def test_none_entry_keeps_states_whole() -> None:
    counter = sj.ShortTermState(jnp.zeros(3))
    total = sj.ShortTermState(jnp.array(0.0))

    def f(x: jax.Array) -> jax.Array:
        counter.value = counter.value + x
        return counter.value + total.value

    mapped = vmap2(f, state_in_axes={None: total, 0: counter})
    np.testing.assert_allclose(mapped(jnp.arange(3.0)), jnp.arange(3.0))
    np.testing.assert_allclose(counter.value, jnp.arange(3.0))
    assert float(total.value) == 0.0

    def bad(x: jax.Array) -> jax.Array:
        total.value = total.value + x  # batched write into a state kept whole
        return x

    with pytest.raises(sj.BatchAxisError, match="which is broadcast"):
        vmap2(bad, state_in_axes={None: total})(jnp.arange(3.0))
    assert float(total.value) == 0.0


def test_undeclared_batched_write_raises_and_changes_nothing() -> None:
    w = sj.ShortTermState(jnp.zeros(3))

    def f(x: jax.Array) -> jax.Array:
        w.value = w.value + x
        return w.value

    with pytest.raises(sj.BatchAxisError, match="out_states"):
        vmap2(f)(jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(sj.BatchAxisError):
        vmap2(f, unexpected_out_state_mapping="raise")(jnp.array([1.0, 2.0, 3.0]))
    assert w.value.tolist() == [0.0, 0.0, 0.0]
    for policy in ("auto", "warn", "ignore"):
        with pytest.raises(sj.SpecError, match="unexpected_out_state_mapping"):
            vmap2(f, unexpected_out_state_mapping=policy)


def test_random_draws_differ_per_lane_and_advance_the_key() -> None:
    rng = sj.random.RandomState(0)
    before = jax.random.key_data(rng.value)
    out = vmap2(lambda x: x + rng.randn(2))(jnp.zeros((4, 2)))
    assert out.shape == (4, 2)
    assert len({tuple(np.asarray(row).round(6)) for row in out}) == 4
    assert not np.array_equal(jax.random.key_data(rng.value), before)


def test_axis_size_checked_against_the_mapped_arguments() -> None:
    np.testing.assert_allclose(vmap2(lambda x: x * 2, axis_size=3)(jnp.arange(3.0)), [0, 2, 4])
    for f in (lambda x: x * 2, lambda x: x + sj.random.randn()):
        with pytest.raises(
            sj.BatchAxisError, match=r"axis_size=5 conflicts with the mapped size 3"
        ):
            vmap2(f, axis_size=5)(jnp.zeros(3))
    out = vmap2(lambda x: x + sj.random.randn(), in_axes=None, axis_size=4)(jnp.zeros(()))
    assert out.shape == (4,) and len(set(np.asarray(out).tolist())) == 4


def test_spmd_axis_name_reaches_jax_vmap() -> None:
    mesh = jax.make_mesh((1,), ("d",))

    def f(x: jax.Array) -> jax.Array:
        return jax.lax.with_sharding_constraint(x * 2, NamedSharding(mesh, P()))

    def constraint_specs(jaxpr: Any) -> list[str]:
        found = []
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "sharding_constraint":
                found.append(str(eqn.params["sharding"].spec))
            for param in eqn.params.values():
                sub = getattr(param, "jaxpr", param)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(sub, "eqns"):
                    found += constraint_specs(sub)
        return found

    xs = jnp.ones((4, 3))
    ref = constraint_specs(jax.make_jaxpr(jax.vmap(f, spmd_axis_name="d"))(xs).jaxpr)
    got = constraint_specs(jax.make_jaxpr(vmap2(f, spmd_axis_name="d"))(xs).jaxpr)
    assert ref == got == ["P('d',)"]
    via_vmap = sj.transform.vmap(f, spmd_axis_name="d")
    assert constraint_specs(jax.make_jaxpr(via_vmap)(xs).jaxpr) == ref


def test_bad_options_are_spec_errors_naming_vmap2() -> None:
    s = sj.State(jnp.zeros(3))
    for options, match in [
        ({"in_axes": 1.5}, "in_axes"),
        ({"axis_size": -1}, "axis_size"),
        ({"state_in_axes": {None: s, 0: [s]}}, "selected under axes None and 0"),
        ({"state_out_axes": {"a": sj.ParamState, None: s}}, "not an integer axis or None"),
        ({"state_in_axes": 3}, "state_in_axes"),
    ]:
        with pytest.raises(sj.SpecError, match=rf"statejax\.vmap2: option .*{match}"):
            vmap2(lambda x: x, **options)


def test_stateful_mapping_mapping_kwargs() -> None:
    rng = sj.random.RandomState(1)
    same = StatefulMapping(lambda x: x + rng.randn(), mapping_kwargs={"split_keys": False})
    assert len(set(np.asarray(same(jnp.zeros(3))).tolist())) == 1
    with pytest.raises(sj.SpecError, match="mapping_kwargs"):
        StatefulMapping(lambda x: x, mapping_kwargs={"sum_match": True})


def test_parse_state_axes_is_reusable() -> None:
    w = sj.ParamState(jnp.zeros(2))
    axes = parse_state_axes({None: [w], 1: sj.ShortTermState}, "state_in_axes")
    assert [a for a, _ in axes] == [None, 1]
    assert parse_state_axes(axes, "state_in_axes") == axes  # parsed values parse to themselves
    assert vmap_state_axes(axes) == {1: axes[1][1]}
    assert vmap_state_axes(parse_state_axes(None, "x")) is None
    assert parse_state_axes(w, "x")[0][0] == 0


def test_parse_state_axes_shows_each_axis_and_its_selector() -> None:
    """What the shared selector language gives (was a doctest of the private helper)."""
    w = sj.ParamState(jnp.zeros(3))
    axes = parse_state_axes({None: [w], 1: sj.ShortTermState}, "x")
    assert repr(axes) == "((None, ParamState (float32[3])), (1, OfType(ShortTermState)))"
    mapped = vmap_state_axes(parse_state_axes({None: sj.ParamState, 0: sj.ShortTermState}, "x"))
    assert repr(mapped) == "{0: OfType(ShortTermState)}"


def test_registered_with_specs() -> None:
    registry = get_registry()
    assert registry.get("vmap2").spec is Vmap2Spec
    assert registry.get("vmap2_new_states").spec is Vmap2NewStatesSpec
    assert "state_in_axes" in Vmap2Spec.model_json_schema()["properties"]
    assert "state_out_axes" in Vmap2NewStatesSpec.model_json_schema()["properties"]


# --- vmap2_new_states --------------------------------------------------------------------------


class Member(sj.Module):
    def init_all_states(self, n: int, scale: float = 1.0) -> None:
        self.w = sj.ParamState(sj.random.normal(size=(n,)))
        self.b = sj.ParamState(self.w.value.mean() * scale)  # derived from a new state
        self.count = sj.ShortTermState(jnp.zeros(()))


def test_new_states_are_batched_per_lane() -> None:
    sj.random.seed(0)
    m = Member()
    groups = vmap2_new_states(m, {"n": 3, "scale": 2.0}, axis_size=5)
    assert m.w.value.shape == (5, 3) and m.b.value.shape == (5,) and m.count.value.shape == (5,)
    np.testing.assert_allclose(m.b.value, m.w.value.mean(axis=1) * 2.0, rtol=1e-6)
    assert not np.allclose(m.w.value[0], m.w.value[1])  # each lane drew its own numbers
    assert list(groups) == [0] and groups[0] == [m.w, m.b, m.count]


def test_new_states_without_randomness_match_jax_vmap() -> None:
    shared = sj.State(jnp.arange(3.0))  # existing: read broadcast

    class Ramp(sj.Module):
        def init_all_states(self) -> None:
            self.w = sj.ParamState(shared.value * 2.0 + 1.0)
            self.h = sj.HiddenState(jnp.outer(shared.value, shared.value))

    m = Ramp()
    groups = vmap2_new_states(m, {}, axis_size=4, state_out_axes={1: sj.HiddenState})
    np.testing.assert_allclose(
        m.w.value, jax.vmap(lambda _: shared.value * 2.0 + 1.0)(jnp.zeros(4))
    )
    ref_h = jax.vmap(lambda _: jnp.outer(shared.value, shared.value), out_axes=1)(jnp.zeros(4))
    np.testing.assert_allclose(m.h.value, ref_h)
    assert m.h.value.shape == (3, 4, 3)
    assert list(groups) == [1, 0] and groups[1] == [m.h] and groups[0] == [m.w]
    assert shared.value.tolist() == [0.0, 1.0, 2.0]


def test_axes_routing_tags_and_paths() -> None:
    sj.random.seed(1)
    m = Member()
    groups = vmap2_new_states(
        m,
        {"n": 3},
        state_tag="members",
        axis_size=4,
        state_out_axes={None: sj.ShortTermState, -1: sj.filters.PathContains("w")},
    )
    assert list(groups) == [None, -1, 0]
    assert m.count.value.shape == () and m.w.value.shape == (3, 4) and m.b.value.shape == (4,)
    np.testing.assert_allclose(m.b.value, m.w.value.mean(axis=0), rtol=1e-6)
    assert all("members" in s.tag for g in groups.values() for s in g)
    assert m.states(sj.filters.WithTag("members")).keys() == {("w",), ("b",), ("count",)}


def test_new_state_errors_change_nothing() -> None:
    sj.random.seed(2)
    key = jax.random.key_data(sj.random.DEFAULT.value)
    m = Member()
    existing = sj.ParamState(jnp.zeros(3))
    for kwargs, error, match in [
        ({}, sj.SpecError, "axis_size is required"),
        ({"axis_size": 4, "state_out_axes": {None: sj.ParamState}}, sj.BatchAxisError, "whole"),
        ({"axis_size": 4, "state_out_axes": {2: sj.ParamState}}, sj.BatchAxisError, "axis 2"),
        ({"axis_size": 4, "state_out_axes": {1: sj.HiddenState}}, sj.SpecError, "matches none"),
        ({"axis_size": 4, "state_out_axes": existing}, sj.SpecError, "existing states"),
        ({"axis_size": 0}, sj.SpecError, "axis_size"),
    ]:
        with pytest.raises(error, match=match):
            vmap2_new_states(m, {"n": 3}, **kwargs)
        assert np.array_equal(jax.random.key_data(sj.random.DEFAULT.value), key)
    assert existing.value.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(sj.SpecError, match="has no init_all_states"):
        vmap2_new_states(object(), {}, axis_size=2)
    with pytest.raises(sj.SpecError, match="init_kwargs must be a mapping"):
        vmap2_new_states(m, [("n", 3)], axis_size=2)  # type: ignore[arg-type]


def test_new_states_failure_inside_init_leaves_random_key() -> None:
    sj.random.seed(0)
    key = jax.random.key_data(sj.random.DEFAULT.value)

    class Failing:
        def init_all_states(self) -> None:
            self.s = sj.ShortTermState(sj.random.randn(3))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        vmap2_new_states(Failing(), {}, axis_size=4)
    assert np.array_equal(jax.random.key_data(sj.random.DEFAULT.value), key)


def test_new_states_under_jit_and_spmd_axis_name() -> None:
    class Zeros(sj.Module):
        def init_all_states(self) -> None:
            self.h = sj.HiddenState(jnp.zeros(2))

    m = Zeros()

    @sj.jit
    def init_and_sum() -> jax.Array:
        vmap2_new_states(m, {}, axis_size=3, state_out_axes={1: sj.HiddenState})
        return m.h.value.sum() + m.h.value.shape[1]

    # States created inside jit are leaked after it; the mapped shape is what counts here.
    assert float(init_and_sum()) == 3.0
    vmap2_new_states(m, {}, axis_size=3, spmd_axis_name="d")
    assert m.h.value.shape == (3, 2)


def test_module_init_all_states_calls_every_init_state_once() -> None:
    calls: list[str] = []

    class Cell(sj.Module):
        def __init__(self, name: str) -> None:
            self.name = name

        def init_state(self, batch: int) -> None:
            calls.append(self.name)
            self.h = sj.HiddenState(sj.random.randn(batch))

    class Net(sj.Module):
        def __init__(self) -> None:
            shared = Cell("shared")
            self.a, self.b, self.again = Cell("a"), shared, shared

        def init_state(self, batch: int) -> None:
            calls.append("net")

    eager = Net()
    caught = eager.init_all_states(2, state_tag="h")
    assert sorted(calls) == ["a", "net", "shared"]  # the shared cell once
    assert {id(s) for s in caught.get_states()} == {id(eager.a.h), id(eager.b.h)}
    assert "h" in eager.a.h.tag

    sj.random.seed(0)
    net = Net()
    groups = vmap2_new_states(net, {"batch": 2}, axis_size=3)
    assert net.a.h.value.shape == (3, 2) and net.again.h is net.b.h
    assert {id(s) for s in groups[0]} == {id(net.a.h), id(net.b.h)}
    assert not np.allclose(net.a.h.value[0], net.a.h.value[1])  # one draw per lane


def test_stateful_mapping_binds_as_a_method_and_caches_no_nested_module() -> None:
    import gc
    import weakref

    class Scaled(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.full(2, 2.0))

        @functools.partial(vmap2, in_axes=(None, 0))
        def apply(self, x: jax.Array) -> jax.Array:
            return x * self.w.value

    m = Scaled()
    np.testing.assert_allclose(m.apply(jnp.ones((3, 2))), jnp.full((3, 2), 2.0))

    mapping = sj.transform.StatefulMapping(
        lambda x, box: x * box[0].w.value, in_axes=(0, None), static_argnums=1
    )
    held = Scaled()
    alive = weakref.ref(held)
    np.testing.assert_allclose(mapping(jnp.ones((3, 2)), (held,)), jnp.full((3, 2), 2.0))
    del held
    gc.collect()
    assert alive() is None and not mapping._variants  # a module inside a static tuple


def test_python_branch_on_an_unmapped_state_runs_as_in_jax_vmap() -> None:
    flag = sj.State(True)
    f = vmap2(lambda x: x * 2.0 if flag.value else x + 1.0)
    np.testing.assert_allclose(f(jnp.arange(4.0)), [0.0, 2.0, 4.0, 6.0])
    flag.value = False
    np.testing.assert_allclose(f(jnp.arange(4.0)), [1.0, 2.0, 3.0, 4.0])


def test_a_state_mapped_in_and_out_on_different_axes_is_refused() -> None:
    s = sj.State(jnp.arange(12.0).reshape(4, 3))

    def f(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return x

    with pytest.raises(
        sj.BatchAxisError, match=r"mapped on input axis 0 .* written back on axis 1 .*No state"
    ):
        vmap2(f, state_in_axes={0: s}, state_out_axes={1: s})(jnp.ones(4))
    np.testing.assert_array_equal(s.value, jnp.arange(12.0).reshape(4, 3))
    # The same axis in both (or counted from the end) is no move.
    vmap2(f, state_in_axes={0: s}, state_out_axes={-2: s})(jnp.ones(4))
    np.testing.assert_array_equal(s.value, jnp.arange(12.0).reshape(4, 3) + 1.0)


def test_an_unbatched_write_to_an_out_state_is_stacked_on_its_axis() -> None:
    # BrainState keeps the unbatched value; statejax stacks it, as jax.vmap's out_axes
    # does (docs/porting.md), so the state's shape does not depend on the data flow.
    sh = sj.State(jnp.zeros(3))

    def g(x: jax.Array) -> jax.Array:
        sh.value = jnp.ones(3)
        return x

    vmap2(g, state_out_axes={1: sh})(jnp.ones(4))
    np.testing.assert_array_equal(sh.value, jnp.ones((3, 4)))


@pytest.mark.parametrize("static", [False, True])
def test_a_repeated_vmap2_call_traces_as_jax_vmap_and_nothing_under_jit(static: bool) -> None:
    counter = sj.ShortTermState(jnp.zeros(3))
    traces: list[int] = []

    def accumulate(x: jax.Array, scale: float) -> jax.Array:
        traces.append(1)  # a Python side effect: runs once per trace
        counter.value = counter.value + x * scale
        return counter.value

    options: dict[str, Any] = {"static_argnums": 1} if static else {"in_axes": (0, None)}
    mapped = StatefulMapping(accumulate, state_in_axes={0: sj.ShortTermState}, **options)
    xs = jnp.ones(3)
    mapped(xs, 2.0)
    traces.clear()
    mapped(xs, 2.0)
    # Eagerly, as jax.vmap: the function runs once per call, batched; no discovery trace.
    assert traces == [1]
    jitted = sj.jit(lambda x: mapped(x, 2.0))
    jitted(xs)
    traces.clear()
    jitted(xs)
    jitted(xs)
    assert traces == []
    np.testing.assert_allclose(counter.value, jnp.full(3, 10.0))  # five calls of 2.0

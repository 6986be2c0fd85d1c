"""BrainState's functional graph API: treefy_states, update_states, pop_states, Node,
StateTree as a plain-JAX pytree, and filters as generic predicates (to_predicate)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statejax as sj
from statejax import filters, graph
from statejax.filters import (
    Any as AnyOf,
)
from statejax.filters import (
    Everything,
    Nothing,
    OfType,
    PathContains,
    WithTag,
    to_filter,
    to_predicate,
)


class Linear(sj.Module):
    def __init__(self, n_in: int, n_out: int, scale: float = 1.0) -> None:
        self.w = sj.ParamState(jnp.full((n_in, n_out), scale))
        self.b = sj.ParamState(jnp.zeros(n_out))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w.value + self.b.value


class MLP(sj.Module):
    def __init__(self) -> None:
        self.layers = [Linear(2, 3), Linear(3, 1, scale=0.5)]
        self.stats = {"mean": sj.LongTermState(jnp.zeros(3))}
        self.steps = sj.ShortTermState(jnp.array(0))
        self.alias = self.layers[0]  # the same module reachable along two paths

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.layers[1](jnp.tanh(self.layers[0](x)))


class Tied(sj.Module):
    def __init__(self) -> None:
        self.enc = sj.ParamState(jnp.ones(2), tag="enc")
        self.dec = self.enc  # one state, two attributes
        self.h = sj.HiddenState(jnp.zeros(2))
        self.extra = {"k": sj.ParamState(jnp.full(2, 3.0))}


def values(tree: Any) -> dict[tuple[Any, ...], list[Any]]:
    return {p: np.asarray(v).tolist() for p, v in tree.items()}


# --- StateTree -------------------------------------------------------------------------


def test_state_tree_to_flat_is_a_plain_dict_copy_with_path_keys() -> None:
    _, tree = sj.treefy_split(MLP())
    flat = tree.to_flat()
    assert type(flat) is dict
    assert list(flat) == list(tree)
    assert all(isinstance(p, tuple) for p in flat)
    assert all(flat[p] is tree[p] for p in tree)
    flat.clear()
    assert len(tree) == 6  # the copy is independent


def test_state_tree_from_flat_round_trip_and_pairs() -> None:
    _, tree = sj.treefy_split(MLP())
    again = sj.StateTree.from_flat(tree.to_flat())
    assert isinstance(again, sj.StateTree)
    assert list(again) == list(tree)
    assert jax.tree.structure(again) == jax.tree.structure(tree)
    pairs = sj.StateTree.from_flat([(("b",), 2.0), (("a",), 1.0)])
    assert list(pairs) == [("b",), ("a",)]  # order kept, never sorted
    with pytest.raises(TypeError, match=r"the keys \['w'\] are not paths"):
        sj.StateTree.from_flat({"w": 1.0})  # type: ignore[arg-type]


def test_state_tree_through_jax_jit_as_argument_and_output() -> None:
    _, tree = sj.treefy_split(MLP())
    out = jax.jit(lambda t: jax.tree.map(lambda x: x * 2 + 1, t))(tree)
    assert isinstance(out, sj.StateTree)
    assert list(out) == list(tree)
    for p in tree:
        assert isinstance(out[p], sj.TreefyState) and out[p].type is tree[p].type
        np.testing.assert_allclose(out[p].value, np.asarray(tree[p].value) * 2 + 1)


def test_state_tree_through_jax_grad() -> None:
    model = MLP()
    graphdef, params, rest = sj.treefy_split(model, sj.ParamState, ...)
    x = jnp.ones((4, 2))

    def loss(p: sj.StateTree[jax.Array]) -> jax.Array:
        return jnp.sum(sj.treefy_merge(graphdef, p, rest)(x) ** 2)

    grads = jax.grad(loss)(params)
    assert isinstance(grads, sj.StateTree)
    assert list(grads) == list(params)
    # The same gradients as the state-aware grad on the live model.
    expected = sj.grad(lambda: jnp.sum(model(x) ** 2), model.states(sj.ParamState))()
    for p in params:
        # Gradients come as TreefyStates, as in BrainState: the grad is their value.
        np.testing.assert_allclose(grads[p].value, expected[p], rtol=1e-6)


def test_state_tree_with_optax_apply_updates_and_tree_map_of_two() -> None:
    params = sj.StateTree({("w",): jnp.array([1.0, 2.0]), ("b",): jnp.array(0.5)})
    grads = jax.tree.map(jnp.ones_like, params)
    opt = optax.sgd(0.1)
    updates, _ = opt.update(grads, opt.init(params), params)
    assert isinstance(updates, sj.StateTree)
    new = optax.apply_updates(params, updates)
    assert isinstance(new, sj.StateTree)
    np.testing.assert_allclose(new[("w",)], [0.9, 1.9], rtol=1e-6)
    np.testing.assert_allclose(new[("b",)], 0.4, rtol=1e-6)
    summed = jax.tree.map(lambda a, b: a + b, params, grads)
    assert isinstance(summed, sj.StateTree)
    assert values(summed) == {("w",): [2.0, 3.0], ("b",): 1.5}
    adam = optax.adam(1e-3)
    adam_updates, _ = adam.update(grads, adam.init(params), params)
    assert list(adam_updates) == list(params)


def test_state_trees_with_other_paths_do_not_combine_silently() -> None:
    a = sj.StateTree({("w",): jnp.ones(1), ("b",): jnp.ones(1)})
    b = sj.StateTree({("b",): jnp.ones(1), ("w",): jnp.ones(1)})
    with pytest.raises(ValueError, match="metadata"):
        jax.tree.map(lambda x, y: x + y, a, b)


def test_plain_jax_training_loop_writes_back_with_update_states() -> None:
    model = MLP()
    w_objects = dict(model.states(sj.ParamState))
    graphdef, params, rest = sj.treefy_split(model, sj.ParamState, ...)
    x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
    opt = optax.sgd(0.05)
    opt_state = opt.init(params)

    @jax.jit
    def step(p: Any, s: Any) -> tuple[Any, Any, jax.Array]:
        def loss(p: Any) -> jax.Array:
            return jnp.mean((sj.treefy_merge(graphdef, p, rest)(x) - y) ** 2)

        value, g = jax.value_and_grad(loss)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    losses = []
    for _ in range(3):
        params, opt_state, value = step(params, opt_state)
        losses.append(float(value))
    assert losses[0] > losses[1] > losses[2]
    graph.update_states(model, params)
    assert dict(model.states(sj.ParamState)) == w_objects  # same State objects
    for p in params:
        np.testing.assert_allclose(model.states()[p].value, params[p].value)
    assert float(jnp.mean((model(x) - y) ** 2)) < losses[2]


# --- treefy_states ---------------------------------------------------------------------


def test_treefy_states_without_filter_is_the_split_tree() -> None:
    model = MLP()
    model.steps.value = jnp.array(7)
    tree = graph.treefy_states(model)
    _, split_tree = sj.treefy_split(model)
    assert isinstance(tree, sj.StateTree)
    assert list(tree) == list(split_tree)
    assert values(tree) == values(split_tree)
    assert int(tree[("steps",)].value) == 7 and int(tree.steps.value) == 7
    # The shared module's states appear once, at their first path.
    assert ("alias", "w") not in tree and ("layers", 0, "w") in tree


def test_treefy_states_filters_first_match_wins_and_unmatched_left_out() -> None:
    model = MLP()
    params = graph.treefy_states(model, sj.ParamState)
    assert isinstance(params, sj.StateTree)
    assert list(params) == [
        ("layers", 0, "w"),
        ("layers", 0, "b"),
        ("layers", 1, "w"),
        ("layers", 1, "b"),
    ]
    both, again = graph.treefy_states(model, (sj.ParamState, sj.LongTermState), sj.ParamState)
    assert len(both) == 5 and len(again) == 0
    # ParamState is a LongTermState, as in BrainState.
    stats, rest = graph.treefy_states(model, sj.LongTermState, ...)
    assert list(stats)[-1] == ("stats", "mean") and len(stats) == 5 and list(rest) == [("steps",)]
    assert list(graph.treefy_states(model, sj.HiddenState)) == []


def test_treefy_states_rejects_catch_all_before_last_and_string_filters() -> None:
    with pytest.raises(
        ValueError,
        match=r"treefy_states: filter 0 \(Ellipsis\) matches every state.*put `\.\.\.` last",
    ):
        graph.treefy_states(MLP(), ..., sj.ParamState)
    with pytest.raises(ValueError, match=r"treefy_split: filter 0 \(True\) matches every state"):
        sj.treefy_split(MLP(), True, sj.ParamState)
    with pytest.raises(TypeError, match=r"not a state filter.*WithTag\('enc'\)"):
        graph.treefy_states(Tied(), "enc")  # type: ignore[call-overload]


def test_treefy_states_inside_a_statejax_transform() -> None:
    model = MLP()

    @sj.jit
    def total() -> jax.Array:
        tree = graph.treefy_states(model, sj.ParamState)
        return sum(jnp.sum(v.value) for v in tree.values())  # type: ignore[return-value]

    assert float(total()) == pytest.approx(2 * 3 * 1.0 + 3 * 1 * 0.5)


# --- update_states ---------------------------------------------------------------------


def test_update_states_writes_in_place_and_keeps_the_state_objects() -> None:
    model = MLP()
    before = dict(model.states())
    params = graph.treefy_states(model, sj.ParamState)
    graph.update_states(model, jax.tree.map(lambda v: v + 1, params))
    assert dict(model.states()) == before  # identities unchanged
    assert model.layers[0].w.value.tolist() == [[2.0] * 3] * 2
    assert model.layers[1].w.value.tolist() == [[1.5]] * 3
    assert model.alias.w is model.layers[0].w  # sharing preserved
    assert int(model.steps.value) == 0  # untouched


def test_update_states_with_several_trees_and_container_paths() -> None:
    model = MLP()
    graph.update_states(
        model,
        {("stats", "mean"): jnp.ones(3)},
        sj.StateTree({("steps",): jnp.array(5), ("layers", 1, "b"): jnp.array([4.0])}),
    )
    assert model.stats["mean"].value.tolist() == [1.0, 1.0, 1.0]
    assert int(model.steps.value) == 5
    assert model.layers[1].b.value.tolist() == [4.0]


def test_update_states_through_a_second_path_reaches_the_shared_state() -> None:
    model = MLP()
    graph.update_states(model, {("alias", "b"): jnp.full(3, 9.0)})
    assert model.layers[0].b.value.tolist() == [9.0, 9.0, 9.0]
    tied = Tied()
    graph.update_states(tied, {("dec",): jnp.full(2, 4.0)})
    assert tied.enc.value.tolist() == [4.0, 4.0]


def test_update_states_one_state_given_twice_is_an_error() -> None:
    model = MLP()
    with pytest.raises(
        ValueError,
        match=r"same state is given two values, at \('layers', 0, 'b'\) and \('alias', 'b'\)",
    ):
        graph.update_states(model, {("layers", 0, "b"): jnp.ones(3)}, {("alias", "b"): jnp.ones(3)})
    assert model.layers[0].b.value.tolist() == [0.0, 0.0, 0.0]


def test_update_states_unknown_path_names_it_and_writes_nothing() -> None:
    model = MLP()
    with pytest.raises(
        ValueError,
        match=r"update_states: the paths \[\('layers', 0, 'v'\), \('act',\)\] hold no state of MLP; "
        r"its state paths are \[\('layers', 0, 'w'\)",
    ):
        graph.update_states(
            model,
            {("steps",): jnp.array(3), ("layers", 0, "v"): jnp.ones(1), ("act",): 1},
        )
    assert int(model.steps.value) == 0  # the valid entry was not written either
    with pytest.raises(ValueError, match=r"\[\('layers', 0\)\] hold no state"):
        graph.update_states(model, {("layers", 0): jnp.ones(1)})  # a module, not a state
    with pytest.raises(ValueError, match=r"\[\('layers', 5, 'w'\)\] hold no state"):
        graph.update_states(model, {("layers", 5, "w"): jnp.ones(1)})


def test_update_states_rejects_non_paths_and_non_mappings() -> None:
    model = MLP()
    with pytest.raises(TypeError, match=r"the key 'steps' is not a path"):
        graph.update_states(model, {"steps": jnp.array(1)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"expected mappings from paths to values.*got list"):
        graph.update_states(model, [(("steps",), 1)])  # type: ignore[arg-type]


def test_update_states_with_state_values_copies_them() -> None:
    src, dst = MLP(), MLP()
    src.steps.value = jnp.array(11)
    before = dst.steps
    graph.update_states(dst, src.states(sj.ShortTermState))
    assert dst.steps is before and int(dst.steps.value) == 11
    assert dst.steps is not src.steps


def test_update_states_refused_write_changes_no_state() -> None:
    # Every write is checked before any is made: a value the state refuses, after a
    # valid one, leaves the valid one unwritten too.
    model = MLP()
    five = jnp.full(3, 5.0)

    @jax.jit
    def write_a_tracer(x: jax.Array) -> jax.Array:
        graph.update_states(model, {("stats", "mean"): five, ("steps",): x})
        return x

    with pytest.raises(
        sj.TraceError, match=r"a JAX tracer was written to ShortTermState MLP\.steps "
    ):
        write_a_tracer(jnp.array(1))
    assert model.stats["mean"].value.tolist() == [0.0, 0.0, 0.0]
    assert not isinstance(model.stats["mean"].value, jax.core.Tracer)
    assert int(model.steps.value) == 0
    with (
        sj.check_state_value_tree(),
        pytest.raises(ValueError, match=r"has tree structure .* write a value of the same"),
    ):
        graph.update_states(model, {("stats", "mean"): five, ("steps",): {"n": 1}})
    assert model.stats["mean"].value.tolist() == [0.0, 0.0, 0.0]
    assert int(model.steps.value) == 0


def test_update_states_inside_jit_is_a_state_write() -> None:
    model = MLP()

    @sj.jit
    def tick() -> None:
        graph.update_states(model, {("steps",): model.steps.value + 1})

    tick()
    tick()
    assert int(model.steps.value) == 2


# --- pop_states ------------------------------------------------------------------------


def test_pop_states_detaches_and_returns_the_state_objects() -> None:
    model = MLP()
    steps, mean = model.steps, model.stats["mean"]
    popped = graph.pop_states(model, sj.ShortTermState)
    assert isinstance(popped, sj.StateMapping)
    assert dict(popped) == {("steps",): steps}
    assert popped[("steps",)] is steps
    assert not hasattr(model, "steps")
    assert ("steps",) not in model.states()
    assert model.stats["mean"] is mean  # the rest stays
    assert values(popped.values_tree()) == {("steps",): 0}
    graphdef, _ = sj.treefy_split(model)
    assert ("steps",) not in graphdef.state_paths()


def test_pop_states_removes_every_alias_of_a_shared_state() -> None:
    tied = Tied()
    enc = tied.enc
    popped = graph.pop_states(tied, WithTag("enc"))
    assert list(popped) == [("enc",)] and popped[("enc",)] is enc  # recorded once
    assert not hasattr(tied, "enc") and not hasattr(tied, "dec")
    assert list(tied.states()) == [("h",), ("extra", "k")]


def test_pop_states_from_a_module_reachable_twice_and_from_dicts() -> None:
    model = MLP()
    first = model.layers[0]
    popped = graph.pop_states(model, PathContains(0), sj.LongTermState)
    assert isinstance(popped, tuple)
    layer0, stats = popped
    assert list(layer0) == [("layers", 0, "w"), ("layers", 0, "b")]
    assert not hasattr(first, "w") and not hasattr(model.alias, "b")
    # ParamState is a LongTermState, as in BrainState: layer 1's parameters go too.
    assert list(stats) == [("layers", 1, "w"), ("layers", 1, "b"), ("stats", "mean")]
    assert model.stats == {} and list(model.states()) == [("steps",)]


def test_pop_states_several_filters_first_match_wins() -> None:
    tied = Tied()
    params, again, hidden = graph.pop_states(tied, sj.ParamState, WithTag("enc"), sj.HiddenState)
    assert list(params) == [("enc",), ("extra", "k")]
    assert len(again) == 0
    assert list(hidden) == [("h",)]
    assert list(tied.states()) == []


def test_pop_then_update_puts_the_same_states_back() -> None:
    tied = Tied()
    enc, k = tied.enc, tied.extra["k"]
    popped = graph.pop_states(tied, sj.ParamState)
    graph.update_states(tied, popped)
    assert tied.enc is enc and tied.extra["k"] is k
    # Re-added attributes come last in attribute order, so their paths come last.
    assert list(tied.states()) == [("h",), ("extra", "k"), ("enc",)]
    assert not hasattr(tied, "dec")  # as BrainState: the alias is not restored


def test_pop_states_errors_leave_the_node_untouched() -> None:
    model = MLP()
    with pytest.raises(ValueError, match=r"pop_states: give at least one filter"):
        graph.pop_states(model)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"pop_states: filter 0 \(Ellipsis\) matches every state"):
        graph.pop_states(model, ..., sj.ParamState)
    assert len(model.states()) == 6


def test_pop_states_in_a_list_names_the_path() -> None:
    class InList(sj.Module):
        def __init__(self) -> None:
            self.items = [sj.HiddenState(jnp.ones(1)), sj.ParamState(jnp.ones(1))]
            self.p = sj.ParamState(jnp.ones(1))

    node = InList()
    with pytest.raises(
        ValueError,
        match=r"cannot remove the states at \[\('items', 1\)\]: they sit in a list or tuple",
    ):
        graph.pop_states(node, sj.ParamState)
    assert hasattr(node, "p") and len(node.items) == 2  # nothing removed


# --- Node ------------------------------------------------------------------------------


def test_node_is_module() -> None:
    assert graph.Node is sj.Module

    class Cell(graph.Node):
        def __init__(self) -> None:
            self.h = sj.HiddenState(jnp.zeros(2))

        @sj.jit
        def step(self, x: jax.Array) -> jax.Array:
            self.h.value = self.h.value + x
            return self.h.value

    cell = Cell()
    assert isinstance(cell, sj.Module)
    cell.step(jnp.ones(2))
    assert cell.h.value.tolist() == [1.0, 1.0]
    graphdef, tree = sj.treefy_split(cell)
    clone = sj.treefy_merge(graphdef, tree)
    assert isinstance(clone, Cell) and clone.h is not cell.h


def test_new_names_are_exported() -> None:
    for name in ("Node", "treefy_states", "update_states", "pop_states"):
        assert name in graph.__all__ and hasattr(graph, name)
    assert "to_predicate" in filters.__all__


# --- filters as generic predicates -----------------------------------------------------


class Tagged:
    def __init__(self, tag: object) -> None:
        self.tag = tag


def test_of_type_accepts_any_class() -> None:
    assert OfType(int)((), 3) and not OfType(int)((), "3")
    assert OfType(sj.Module)((), MLP())
    assert OfType(sj.ParamState)((), sj.ParamState(jnp.ones(1)))
    assert len(MLP().states(OfType(sj.ParamState))) == 4
    assert list(MLP().states(OfType(int))) == []  # not a State class: selects nothing
    assert OfType(int) == OfType(int) and repr(OfType(int)) == "OfType(int)"
    with pytest.raises(TypeError, match=r"OfType expects a class, got 'int' \(str\)"):
        OfType("int")  # type: ignore[call-overload]


def test_with_tag_matches_any_object_with_a_tag() -> None:
    assert WithTag("a")((), Tagged("a"))
    assert not WithTag("a")((), Tagged("b"))
    assert WithTag("a")((), Tagged(["b", "a"])) and WithTag("a")((), Tagged({"a"}))
    assert WithTag("a")((), Tagged(("a",)))
    assert not WithTag("a")((), Tagged(None)) and not WithTag("a")((), object())
    assert not WithTag("a")((), sj.State(jnp.ones(1)))
    assert list(Tied().states(WithTag("enc"))) == [("enc",)]
    with pytest.raises(TypeError, match=r"WithTag expects a str tag, got \['a'\] \(list\)"):
        WithTag(["a"])  # type: ignore[arg-type]


def test_to_predicate_conversions() -> None:
    assert to_predicate("enc") == WithTag("enc")
    assert to_predicate(int) == OfType(int)
    assert to_predicate(sj.ParamState) == to_filter(sj.ParamState)
    assert to_predicate(...) == to_predicate(True) == Everything()
    assert to_predicate(None) == to_predicate(False) == Nothing()
    assert to_predicate(["enc", int]) == AnyOf(WithTag("enc"), OfType(int))
    assert to_predicate(("enc", sj.HiddenState)) == AnyOf(WithTag("enc"), sj.HiddenState)

    def fn(path: tuple[Any, ...], obj: object) -> bool:
        return bool(path)

    assert to_predicate(fn) is fn  # a callable is returned as it is, as in BrainState
    f = PathContains("w")
    assert to_predicate(f) is f
    with pytest.raises(TypeError, match=r"statejax: 3\.5 \(float\) is not a filter"):
        to_predicate(3.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"3\.5 \(float\) is not a filter"):
        to_predicate(["enc", 3.5])  # type: ignore[list-item]


def test_to_predicate_results_work_as_filters_and_on_any_object() -> None:
    tied = Tied()
    assert list(tied.states(to_predicate("enc"))) == [("enc",)]
    assert list(tied.states(to_predicate(["enc", sj.HiddenState]))) == [("enc",), ("h",)]
    assert list(graph.treefy_states(tied, to_predicate(("enc",)))) == [("enc",)]
    pred = to_predicate([int, "x"])
    assert pred((), 1) and pred((), Tagged("x")) and not pred((), "x")

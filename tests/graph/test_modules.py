"""Modules, paths, states(), treefy_split / treefy_merge."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import statejax as sj


class Linear(sj.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        self.w = sj.ParamState(jnp.ones((n_in, n_out)))
        self.b = sj.ParamState(jnp.zeros(n_out))


class MLP(sj.Module):
    def __init__(self) -> None:
        self.layers = [Linear(2, 3), Linear(3, 1)]
        self.stats = {"mean": sj.LongTermState(jnp.zeros(3))}
        self.steps = sj.ShortTermState(jnp.array(0))
        self.alias = self.layers[0]  # reachable twice: reported once
        self.act = "relu"


def test_paths_nested_and_deduplicated() -> None:
    assert list(MLP().states()) == [
        ("layers", 0, "w"),
        ("layers", 0, "b"),
        ("layers", 1, "w"),
        ("layers", 1, "b"),
        ("stats", "mean"),
        ("steps",),
    ]


def test_states_with_several_filters_gives_one_mapping_each() -> None:
    params, stats = MLP().states(sj.ParamState, sj.LongTermState)
    assert len(params) == 4
    assert list(stats) == [("stats", "mean")]


def test_state_mapping_is_read_only_and_hashable() -> None:
    m = MLP()
    params = m.states(sj.ParamState)
    assert hash(params) == hash(m.states(sj.ParamState))
    assert params == m.states(sj.ParamState)
    assert params != MLP().states(sj.ParamState)
    with pytest.raises(TypeError):
        params[("x",)] = sj.ParamState(jnp.ones(1))  # type: ignore[index]
    assert params.values_tree()[("layers", 1, "b")].shape == (1,)


def test_treefy_roundtrip_with_plain_arrays() -> None:
    m = MLP()
    m.steps.value = jnp.array(7)
    graphdef, params, rest = sj.treefy_split(m, sj.ParamState, ...)
    assert all(isinstance(v, jax.Array) for v in jax.tree.leaves((params, rest)))
    doubled = jax.tree.map(lambda x: x * 2, params)
    new = sj.treefy_merge(graphdef, doubled, rest)
    assert isinstance(new, MLP) and new is not m
    assert new.layers[0].w is not m.layers[0].w
    assert new.alias is new.layers[0]  # sharing preserved
    assert float(new.layers[0].w.value[0, 0]) == 2.0
    assert int(new.steps.value) == 7
    assert new.act == "relu"
    graphdef2, _ = sj.treefy_split(new)
    assert graphdef2 == graphdef


def test_treefy_split_requires_every_state_matched() -> None:
    with pytest.raises(ValueError, match=r"\('steps',\)\] match none of the filters.*add \.\.\."):
        sj.treefy_split(MLP(), sj.ParamState, sj.LongTermState)


def test_treefy_merge_errors() -> None:
    graphdef, tree = sj.treefy_split(MLP())
    partial = sj.StateTree(list(tree.items())[:-1])
    with pytest.raises(ValueError, match=r"no value for the states at \[\('steps',\)\]"):
        sj.treefy_merge(graphdef, partial)
    with pytest.raises(ValueError, match="has a value in two trees"):
        sj.treefy_merge(graphdef, tree, tree)


def test_module_repr_lists_states() -> None:
    assert repr(Linear(1, 1)) == (
        "Linear(w=ParamState(value=float32[1,1]=1.0), b=ParamState(value=float32[1]=0.0))"
    )

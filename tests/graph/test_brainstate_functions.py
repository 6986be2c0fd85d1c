"""BrainState's graph functions: states/nodes, iteration, graphdef, clone, flatten,
custom graph nodes and nested StateTree access; sharing and cycles survive."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import pytest

import statejax as sj
from statejax import graph


class Layer(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones(2), name="w")
        self.mean = sj.LongTermState(jnp.zeros(2))


class Net(sj.Module):
    def __init__(self) -> None:
        self.a = Layer()
        self.b = self.a  # shared
        self.layers = [Layer()]
        self.h = sj.HiddenState(jnp.zeros(2))
        self.me = self  # a cycle
        self.size = 2


def test_states_first_match_and_hierarchy() -> None:
    net = Net()
    assert list(graph.states(net)) == [
        ("a", "w"),
        ("a", "mean"),
        ("layers", 0, "w"),
        ("layers", 0, "mean"),
        ("h",),
    ]
    params, long = graph.states(net, sj.ParamState, sj.LongTermState)
    assert list(params) == [("a", "w"), ("layers", 0, "w")]
    assert list(long) == [("a", "mean"), ("layers", 0, "mean")]  # params went first
    assert net.states(sj.ParamState, sj.LongTermState) == (params, long)
    assert list(graph.states(net, allowed_hierarchy=(0, 0))) == [("h",)]
    assert len(graph.states(net, allowed_hierarchy=(1, 1))) == 4
    with pytest.raises(ValueError, match=r"states: filter 0 \(Ellipsis\) matches everything"):
        graph.states(net, ..., sj.ParamState)


def test_nodes_and_iteration() -> None:
    net = Net()
    assert list(graph.nodes(net)) == [("a",), ("layers", 0), ()]
    layers, rest = graph.nodes(net, Layer, ...)
    assert list(layers) == [("a",), ("layers", 0)] and list(rest) == [()]
    assert list(net.nodes(Layer)) == [("a",), ("layers", 0)]
    assert list(graph.nodes(net, allowed_hierarchy=(1, 1))) == [("a",), ("layers", 0)]
    leaves = dict(graph.iter_leaf(net))
    assert list(leaves) == [
        ("a", "w"),
        ("a", "mean"),
        ("layers", 0, "w"),
        ("layers", 0, "mean"),
        ("h",),
        ("size",),
    ]
    assert leaves[("a", "w")] is net.a.w and leaves[("size",)] == 2
    assert [p for p, _ in graph.iter_leaf(net, (0, 0))] == [("h",), ("size",)]
    assert [p for p, _ in graph.iter_node(net)] == [("a",), ("layers", 0), ()]


def test_graphdef_clone_keeps_sharing_and_cycles() -> None:
    net = Net()
    assert graph.graphdef(net) == sj.treefy_split(net)[0] == graph.graphdef(Net())
    copy = graph.clone(net)
    assert type(copy) is Net and copy is not net
    assert copy.b is copy.a and copy.me is copy and copy.size == 2
    assert copy.a.w is not net.a.w and copy.a.w.name == "w"
    copy.a.w.value = jnp.zeros(2)
    assert net.a.w.value.tolist() == [1.0, 1.0] and copy.b.w.value.tolist() == [0.0, 0.0]


def test_flatten_unflatten_round_trip() -> None:
    net = Net()
    gd, tree = graph.flatten(net)
    assert list(tree) == list(graph.states(net))
    doubled = jax.tree.map(lambda x: x * 2, tree)
    new = graph.unflatten(gd, doubled)
    assert new.a.w.value.tolist() == [2.0, 2.0] and new.b is new.a and new.me is new
    refs = {p: sj.State(v.value).to_state_ref() for p, v in tree.items()}
    assert graph.unflatten(gd, refs).a.w.value.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="no value for the states"):
        graph.unflatten(gd, {})


def test_state_tree_nested_access() -> None:
    _, tree = sj.treefy_split(Net())
    assert tree.a.w.value.tolist() == [1.0, 1.0]
    assert tree["layers"][0]["w"].value.tolist() == [1.0, 1.0]
    assert tree[("layers", 0, "w")].value.tolist() == [1.0, 1.0]
    assert tree.h.value.tolist() == [0.0, 0.0]
    assert "a" in tree and ("a", "w") in tree and "zz" not in tree
    assert list(tree.a) == [("w",), ("mean",)]
    assert set(tree.to_nest()) == {"a", "layers", "h"}
    assert tree.to_nest()["layers"][0]["mean"].value.tolist() == [0.0, 0.0]
    with pytest.raises(AttributeError, match="no path starts with 'zz'"):
        _ = tree.zz
    with pytest.raises(KeyError):
        _ = tree["zz"]


def test_update_states_accepts_state_references() -> None:
    net = Net()
    graph.update_states(net, {("h",): sj.TreefyState(sj.HiddenState, jnp.ones(2))})
    assert net.h.value.tolist() == [1.0, 1.0]


class Bag:
    """A custom graph node: children in a dict."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}


graph.register_graph_node_type(
    Bag,
    flatten=lambda b: (tuple(b.items.items()), None),
    set_key=lambda b, k, v: b.items.__setitem__(k, v),
    pop_key=lambda b, k: b.items.pop(k),
    create_empty=lambda aux: Bag(),
    clear=lambda b: b.items.clear(),
)


def test_registered_graph_node_type() -> None:
    bag = Bag()
    inner = Layer()
    bag.items = {"w": sj.ParamState(jnp.ones(2)), "layer": inner, "again": inner}
    assert list(graph.states(bag)) == [("w",), ("layer", "w"), ("layer", "mean")]
    assert [type(n).__name__ for _, n in graph.iter_node(bag)] == ["Layer", "Bag"]
    copy = graph.clone(bag)
    assert type(copy) is Bag and copy.items["again"] is copy.items["layer"]
    assert copy.items["w"] is not bag.items["w"]
    gd, tree = sj.treefy_split(bag)
    rebuilt = sj.treefy_merge(gd, jax.tree.map(lambda x: x + 1, tree))
    assert rebuilt.items["w"].value.tolist() == [2.0, 2.0]
    popped = graph.pop_states(bag, sj.ParamState)
    assert list(popped) == [("w",), ("layer", "w")] and "w" not in bag.items
    graph.update_states(bag, popped)
    assert bag.items["w"] is popped[("w",)]

    @sj.jit
    def bump() -> None:  # a registered node's states are found by transforms too
        bag.items["w"].value = bag.items["w"].value + 1

    bump()
    assert bag.items["w"].value.tolist() == [2.0, 2.0]


def test_check_valid_context() -> None:
    net = Net()
    net.check_valid_context(lambda: "never")
    kept: list[sj.State[Any]] = []

    @sj.jit
    def make() -> None:
        kept.append(sj.State(jnp.ones(1)))

    make()
    net.leaked = kept[0]
    with pytest.raises(sj.TraceContextError, match="stale"):
        net.check_valid_context(lambda: "stale")


def test_graph_to_tree_round_trip_keeps_sharing_across_leaves() -> None:
    net = Net()
    packed, found = graph.graph_to_tree({"first": net, "second": net.a, "x": 3.0})
    assert isinstance(packed["first"], graph.NodeStates) and packed["x"] == 3.0
    # Keyed by each state's index in the shared split (modules take indices too).
    assert list(found.values()) == [s for _, s in graph.iter_states(net)]
    assert found[(2,)] is net.a.w
    assert list(packed["second"].state) == []  # net.a was packed with the first module
    doubled = jax.tree.map(lambda v: v * 2, packed)
    back = graph.tree_to_graph(doubled)
    assert back["second"] is back["first"].a and back["first"].me is back["first"]
    assert back["first"].a.w.value.tolist() == [2.0, 2.0] and back["x"] == 6.0
    assert back["first"].a.w is not net.a.w

    @jax.jit
    def through_jit(tree: Any) -> Any:
        return jax.tree.map(lambda v: v + 1, tree)

    again = graph.tree_to_graph(through_jit(packed))
    assert again["first"].h.value.tolist() == [1.0, 1.0]
    states_only = graph.NodeStates.from_states(packed["first"].state)
    with pytest.raises(ValueError, match="no graphdef"):
        _ = states_only.graphdef


def test_ref_map_static_and_flat_mappings() -> None:
    a, b = [1], [1]
    refs: graph.RefMap[Any, str] = graph.RefMap({id: "fn"})
    refs[a], refs[b] = "a", "b"
    assert len(refs) == 3 and refs[a] == "a" and refs[b] == "b" and [1] not in refs
    del refs[a]
    assert list(refs) == [id, b] and str(refs) == repr(refs)
    static = graph.Static({"k": 1})
    assert jax.tree.leaves({"x": 1, "s": graph.Static(2)}) == [1]
    assert graph.Static(2) == graph.Static(2) and hash(graph.Static(2)) == hash(graph.Static(2))
    assert static.value == {"k": 1}
    net = Net()
    flat = graph.states(net, sj.ParamState).to_flat()
    assert type(flat) is dict and flat[("a", "w")] is net.a.w
    assert sj.StateLeakError.__mro__[1] is sj.TraceContextError

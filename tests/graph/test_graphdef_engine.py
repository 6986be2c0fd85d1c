"""BrainState 0.5.4's graph engine in statejax (issue 10).

`treefy_split` trees of `TreefyState`s, the flat `GraphDef` (root edge + node specs),
`flatten`/`unflatten` with their context arguments, `split_context`/`merge_context`,
`graph_to_tree` with prefixes and hooks, `graph_invisible_attrs`, and the module repr.
Sharing and cycles must survive every round trip.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax import graph


class Cell(sj.Module):
    def __init__(self, n: int = 2) -> None:
        self.w = sj.ParamState(jnp.ones(n), name="w", tag="enc")
        self.h = sj.HiddenState(jnp.zeros(n))
        self.size = n


class Net(sj.Module):
    def __init__(self) -> None:
        self.a = Cell()
        self.b = self.a  # a shared module
        self.tied = self.a.w  # a shared state
        self.layers = [Cell(3), {"k": sj.ShortTermState(jnp.array(1))}]
        self.shape = (2, 3)
        self.me = self  # a cycle


def edges(gd: graph.GraphDef[Any], index: int = 0) -> dict[Any, Any]:
    spec = next(s for s in gd.node_specs if s.index == index)
    return dict(spec.fields)


# --- TreefyState trees ------------------------------------------------------------------


def test_treefy_split_leaves_are_treefy_states_with_type_name_and_tag() -> None:
    net = Net()
    _, params, rest = sj.treefy_split(net, sj.ParamState, ...)
    ref = params[("a", "w")]
    assert isinstance(ref, sj.TreefyState)
    assert ref.type is sj.ParamState and ref.name == "w" and ref.get_metadata()["tag"] == {"enc"}
    # Nested, attribute access (BrainState's NestedDict) and path access agree.
    assert params.a.w is ref and params["layers"][0]["w"] is params[("layers", 0, "w")]
    assert list(params.to_flat()) == [("a", "w"), ("layers", 0, "w")]
    assert [type(v).__name__ for v in rest.values()] == ["TreefyState"] * 3
    # The pytree leaves are the values only.
    assert [leaf.shape for leaf in jax.tree.leaves(params)] == [(2,), (3,)]


def test_trees_go_through_jax_and_merge_back_with_metadata() -> None:
    net = Net()
    gd, tree = sj.treefy_split(net)
    doubled = jax.jit(lambda t: jax.tree.map(lambda x: x * 2, t))(tree)
    new = sj.treefy_merge(gd, doubled)
    assert new.a.w.value.tolist() == [2.0, 2.0]
    assert type(new.a.w) is sj.ParamState and new.a.w.name == "w" and new.a.w.tag == {"enc"}
    # Sharing and the cycle come back.
    assert new.b is new.a and new.tied is new.a.w and new.me is new
    assert new.a is not net.a and new.a.w is not net.a.w
    # A gradient tree holds TreefyStates too, whose values are the gradients.
    gd, params, rest = sj.treefy_split(net, sj.ParamState, ...)
    grads = jax.grad(lambda p: jnp.sum(sj.treefy_merge(gd, p, rest).a.w.value * 3.0))(params)
    np.testing.assert_allclose(grads.a.w.value, [3.0, 3.0])


def test_sharding_and_plain_values_still_merge() -> None:
    class Sharded(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones((2, 2)), sharding=("embed", None))

    gd, tree = sj.treefy_split(Sharded())
    assert sj.treefy_merge(gd, tree).w.sharding == ("embed", None)
    # A tree of plain values (statejax's earlier form) still merges: a state of the
    # recorded type is made for each.
    plain = sj.StateTree({("w",): jnp.zeros((2, 2))})
    rebuilt = sj.treefy_merge(gd, plain)
    assert type(rebuilt.w) is sj.ParamState and float(rebuilt.w.value.sum()) == 0.0


def test_treefy_states_and_update_states_with_treefy_states() -> None:
    net = Net()
    w = net.a.w
    params = graph.treefy_states(net, sj.ParamState)
    assert isinstance(params.a.w, sj.TreefyState)
    graph.update_states(net, jax.tree.map(lambda v: v + 1, params))
    assert net.a.w is w and net.a.w.value.tolist() == [2.0, 2.0]
    # A TreefyState of a non-State type is never grafted into a node.
    with pytest.raises(ValueError, match="hold no state"):
        graph.update_states((1, 2), sj.StateTree({(0,): sj.TreefyState(int, 10)}))  # type: ignore[arg-type]


# --- the flat GraphDef --------------------------------------------------------------------


def test_graphdef_is_a_root_edge_and_a_table_of_node_specs() -> None:
    gd = graph.graphdef(Net())
    assert gd.type is Net and gd.index == 0 and gd.root == graph.NodeEdge(0)
    assert [s.index for s in gd.node_specs] == sorted(s.index for s in gd.node_specs)
    top = edges(gd)
    assert top["a"] == top["b"] and isinstance(top["a"], graph.NodeEdge)
    assert top["me"] == graph.NodeEdge(0)
    cell_w = edges(gd, top["a"].index)["w"]
    assert isinstance(cell_w, graph.StateEdge) and cell_w.path == ("a", "w")
    assert top["tied"] == graph.StateEdge(cell_w.index, None, sj.ParamState)
    assert isinstance(top["layers"], graph.PytreeEdge)
    assert top["shape"] == graph.StaticEdge((2, 3))  # hashable container: one static value
    spec = gd.node_specs[0]
    assert spec.type is Net and spec.metadata == (Net,)
    # Equal for identically built modules, and hashable.
    assert gd == graph.graphdef(Net()) and hash(gd) == hash(graph.graphdef(Net()))
    assert graph.graphdef([Cell()]).type is graph.PytreeType


def test_static_collapse_and_deferred_hash_check() -> None:
    class Box(sj.Module):
        def __init__(self, **kw: Any) -> None:
            for k, v in kw.items():
                setattr(self, k, v)

    gd, tree = graph.flatten(Box(lst=[2, 3], none=None, arr=(1, jnp.ones(2))))
    fields = edges(gd)
    assert isinstance(fields["lst"], graph.PytreeEdge)  # a list is unhashable
    assert fields["none"] == graph.StaticEdge(None)
    assert isinstance(fields["arr"], graph.PytreeEdge)
    rebuilt = graph.unflatten(gd, tree)
    assert rebuilt.lst == [2, 3] and rebuilt.none is None and rebuilt.arr[0] == 1
    with pytest.raises(TypeError, match="not hashable"):
        hash(gd)  # the bare array, only when hashed


def test_hand_built_graphdef_with_a_state_leaf_edge() -> None:
    template, _ = graph.flatten(Cell())
    spec = template.node_specs[0]
    gd = graph.GraphDef(
        graph.NodeEdge(spec.index),
        (
            graph.NodeSpec(
                spec.type, spec.index, spec.metadata, (("w", graph.StateLeafEdge(("x",))),)
            ),
        ),
    )
    ref = sj.ParamState(jnp.arange(3.0)).to_state_ref()
    rebuilt = graph.unflatten(gd, graph.NestedDict.from_flat({("x",): ref}))
    assert isinstance(rebuilt.w, sj.ParamState) and rebuilt.w.value.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"Expected key x in the state mapping"):
        graph.unflatten(gd, graph.NestedDict())


# --- flatten / unflatten arguments --------------------------------------------------------


def test_flatten_arguments_and_errors() -> None:
    net = Net()
    _, raw = graph.flatten(net, treefy_state=False)
    assert raw.a.w is net.a.w  # the states themselves
    ref_index: graph.RefMap[Any, int] = graph.RefMap()
    graph.flatten(net, ref_index)
    assert ref_index[net] == 0 and net.a in ref_index and ref_index[net.a.w] > 0
    with pytest.raises(TypeError, match="RefMap"):
        graph.flatten(net, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="root must be a module"):
        graph.flatten(sj.ParamState(jnp.ones(2)))
    with pytest.raises(TypeError, match="must be a GraphDef"):
        graph.unflatten("nope", raw)  # type: ignore[arg-type]
    gd, tree = graph.flatten(net)
    with pytest.raises(ValueError, match="not state paths"):
        graph.unflatten(gd, {**tree.to_flat(), ("zz",): 1})


def test_unflatten_index_ref_cache_reuses_objects_in_place() -> None:
    gd, tree = graph.flatten(Cell())
    table: dict[int, Any] = {}
    first = graph.unflatten(gd, tree, index_ref=table)
    assert table[0] is first and table[gd.node_specs[0].index] is first
    fresh = Cell()
    fresh.w.value = jnp.full(2, 9.0)
    gd2, tree2 = graph.flatten(fresh)
    again = graph.unflatten(gd2, tree2, index_ref_cache=table)
    assert again is first and again.w.value.tolist() == [9.0, 9.0]
    # A state missing from the mapping comes from the cache.
    w_index = next(i for i, v in table.items() if v is first.w)
    assert graph.unflatten(gd, graph.NestedDict(), index_ref_cache=table).w is first.w
    with pytest.raises(ValueError, match="index_ref_cache holds a object"):
        graph.unflatten(gd, tree, index_ref_cache={0: object()})
    with pytest.raises(ValueError, match="where the graphdef has a state"):
        graph.unflatten(gd, tree, index_ref_cache={w_index: object()})


def test_split_and_merge_context_share_objects_across_calls() -> None:
    w = sj.ParamState(jnp.ones(2))

    class Holder(sj.Module):
        def __init__(self) -> None:
            self.w = w

    with graph.split_context() as (ctx, ref_index):
        g1, t1 = ctx.treefy_split(Holder())
        g2, t2 = ctx.treefy_split(Holder())
        assert w in ref_index
    assert list(t1) == [("w",)] and list(t2) == []  # the second refers to the first
    assert not hasattr(ctx, "ref_index")  # single use, as in BrainState
    with graph.merge_context() as (mctx, table):
        a, b = mctx.treefy_merge(g1, t1), mctx.treefy_merge(g2, t2)
        assert table[g1.index] is a
    assert a.w is b.w and a.w is not w
    assert not hasattr(mctx, "index_ref")


# --- graph_to_tree / tree_to_graph -------------------------------------------------------


def test_graph_to_tree_prefixes_and_aliasing_checks() -> None:
    shared = Cell()
    seen: list[Any] = []

    def split_fn(ctx: Any, path: Any, prefix: Any, leaf: Any) -> Any:
        seen.append(prefix)
        return graph.NodeStates.from_split(*ctx.treefy_split(leaf), metadata=prefix)

    tree, found = graph.graph_to_tree([shared, shared], prefix=0, split_fn=split_fn)
    assert seen == [0, 0] and tree[0].metadata == 0
    assert set(map(id, found.values())) == {id(shared.w), id(shared.h)}
    with pytest.raises(ValueError, match="inconsistent aliasing"):
        graph.graph_to_tree([shared, shared], prefix=[0, 1])
    tree, _ = graph.graph_to_tree([shared, shared], prefix=[0, 1], check_aliasing=False)
    back = graph.tree_to_graph(tree)
    assert back[0] is back[1]
    with pytest.raises(ValueError, match="not a prefix tree"):
        graph.graph_to_tree([shared, shared], prefix=[0, 1, 2, 3])


def test_graph_to_tree_maps_other_leaves_when_asked() -> None:
    tree, _ = graph.graph_to_tree(
        [Cell(), 1.0],
        split_fn=lambda ctx, path, prefix, leaf: (
            graph.NodeStates.from_split(*ctx.treefy_split(leaf))
            if isinstance(leaf, sj.Module)
            else leaf + 1.0
        ),
        map_non_graph_nodes=True,
    )
    assert tree[1] == 2.0
    back = graph.tree_to_graph(
        tree,
        merge_fn=lambda ctx, path, prefix, leaf: (
            ctx.treefy_merge(leaf.graphdef, *leaf.states)
            if isinstance(leaf, graph.NodeStates)
            else leaf * 10
        ),
        map_non_graph_nodes=True,
    )
    assert isinstance(back[0], Cell) and back[1] == 20.0
    ns = graph.NodeStates.from_prefixes([0, None], metadata="axes")
    assert ns.states == (0, None) and ns.metadata == "axes"


# --- NestedDict / FlattedDict, invisible attributes, repr --------------------------------


def test_nested_dict_and_flatted_dict_are_brainstate_names() -> None:
    assert sj.NestedDict is sj.StateTree and sj.FlattedDict is sj.StateMapping
    tree = sj.NestedDict({"enc": {"w": 1.0, "b": 2.0}, "h": 0.0})
    assert tree.to_flat() == {("enc", "w"): 1.0, ("enc", "b"): 2.0, ("h",): 0.0}
    assert isinstance(graph.states(Cell()), sj.FlattedDict)
    # unflatten takes BrainState-style nested dicts too.
    gd, flat = graph.flatten(Cell())
    rebuilt = graph.unflatten(gd, {"w": flat.w, "h": flat.h})
    assert rebuilt.w.value.tolist() == [1.0, 1.0] and rebuilt.w.name == "w"


def test_graph_invisible_attrs_are_skipped_everywhere() -> None:
    class Hidden(sj.Module):
        graph_invisible_attrs = ("cache",)

        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(2))
            self.cache = sj.ShortTermState(jnp.zeros(2))

    net = Hidden()
    assert list(net.states()) == [("w",)]
    assert [p for p, _ in graph.iter_leaf(net)] == [("w",)]
    assert "cache" not in edges(graph.graphdef(net))
    assert not hasattr(graph.clone(net), "cache")
    with pytest.raises(ValueError, match="hold no state"):
        graph.update_states(net, {("cache",): jnp.ones(2)})
    assert "cache" not in repr(net)


def test_module_repr_shows_attributes_hides_none_and_survives_cycles() -> None:
    class Shown(sj.Module):
        def __init__(self) -> None:
            self.kept = 1
            self.empty = None
            self.me = self

    r = repr(Shown())
    assert r == "Shown(kept=1, me=Shown(...))"
    assert Shown().__pretty_repr_item__("x", None) is None


def test_failed_unflatten_with_cache_changes_nothing_and_keeps_invisible_attrs() -> None:
    class Cached(sj.Module):
        graph_invisible_attrs = ("memo",)

        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(2))
            self.h = sj.HiddenState(jnp.zeros(2))
            self.memo = "kept"

    gd, tree = graph.flatten(Cached())
    table: dict[int, Any] = {}
    live = graph.unflatten(gd, tree, index_ref=table)
    live.memo = "kept"
    before = (live.w.value.tolist(), live.h.value.tolist(), dict(vars(live)))
    # A new value for w, and h's path missing while the cache lacks h: refused first.
    h_index = next(i for i, v in table.items() if v is live.h)
    del table[h_index]
    partial = {("w",): jnp.full(2, 5.0)}
    with pytest.raises(ValueError, match="no value for the states"):
        graph.unflatten(gd, partial, index_ref_cache=table)
    assert (live.w.value.tolist(), live.h.value.tolist(), dict(vars(live))) == before
    # A successful reuse rewrites the recorded attributes and keeps the invisible one.
    table[h_index] = live.h
    again = graph.unflatten(gd, partial, index_ref_cache=table)
    assert again is live and live.memo == "kept" and live.w.value.tolist() == [5.0, 5.0]


def test_merging_nested_trees_checks_paths_not_top_level_keys() -> None:
    class Enc(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(2))
            self.b = sj.ShortTermState(jnp.zeros(2))

    class Top(sj.Module):
        def __init__(self) -> None:
            self.enc = Enc()

    gd, _, _ = graph.treefy_split(Top(), sj.ParamState, ...)
    w, b = {"enc": {"w": jnp.full(2, 3.0)}}, {"enc": {"b": jnp.full(2, 4.0)}}
    merged = graph.treefy_merge(gd, w, b)
    assert merged.enc.w.value.tolist() == [3.0, 3.0] and merged.enc.b.value.tolist() == [4.0, 4.0]
    with graph.merge_context() as (ctx, _):
        again = ctx.treefy_merge(gd, w, b)
    assert again.enc.w.value.tolist() == [3.0, 3.0] and again.enc.b.value.tolist() == [4.0, 4.0]
    for merge in (graph.treefy_merge, lambda g, *t: graph.MergeContext({}).treefy_merge(g, *t)):
        with pytest.raises(ValueError, match=r"\('enc', 'w'\) has a value in two trees"):
            merge(gd, w, w, b)


def test_graphdef_hash_is_recomputed_after_pickling() -> None:
    import pickle

    gd = graph.graphdef(Cell())
    hash(gd)
    copy = pickle.loads(pickle.dumps(gd))
    assert copy.__dict__["_cached_hash"] is None  # string hashes differ between processes
    assert copy == gd and hash(copy) == hash(gd)

"""BrainState 0.5.4 parity of the state API: source info, trace checks, the new-state
catcher, `StateTraceStack` exits, `HiddenTreeState` messages and `StateDictManager`."""

from __future__ import annotations

import inspect
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import source_info_util

import statejax as sj
from statejax._new_states import NewStateCatcher
from statejax._tracing import current_traces


def test_source_info_points_at_the_line_that_created_the_state() -> None:
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    state = sj.ParamState(jnp.zeros(2))
    info = state.source_info
    assert isinstance(info, source_info_util.SourceInfo)
    frames = [(f.file_name, f.line_num) for f in info.traceback.frames]
    assert (__file__, line) in frames
    # rebuilt states (copy, replace, TreefyState.to_state) get their own source info
    assert isinstance(state.copy().source_info, source_info_util.SourceInfo)
    assert isinstance(state.to_state_ref().to_state().source_info, source_info_util.SourceInfo)


def test_raise_error_with_source_info_raises_the_error_itself() -> None:
    state = sj.State(jnp.zeros(2))
    error = ValueError("bad state")
    with pytest.raises(ValueError, match="bad state") as caught:
        state.raise_error_with_source_info(error)
    assert caught.value is error
    assert "raise_error_with_source_info" in "".join(traceback.format_tb(caught.tb))


def test_check_valid_trace_refuses_a_state_whose_trace_ended() -> None:
    calls: list[int] = []

    def message() -> str:
        calls.append(1)
        return "state from a finished jit"

    live = sj.State(jnp.zeros(2))
    live.check_valid_trace(message)
    assert calls == []  # the message is built only when needed
    made: list[sj.State[Any]] = []

    @sj.jit
    def make() -> jax.Array:
        made.append(sj.State(jnp.ones(2)))
        made[0].check_valid_trace(message)  # usable inside its own trace
        return made[0].value

    np.testing.assert_array_equal(make(), jnp.ones(2))
    with pytest.raises(sj.TraceContextError, match="state from a finished jit"):
        made[0].check_valid_trace(message)
    assert calls == [1]


def test_restore_value_takes_v_by_keyword() -> None:
    state = sj.State({"a": jnp.zeros(2)})
    state.restore_value(v={"a": jnp.ones(2)})
    np.testing.assert_array_equal(state.value["a"], jnp.ones(2))
    assert list(inspect.signature(sj.State.restore_value).parameters) == ["self", "v"]


def test_catcher_collection_methods() -> None:
    with sj.catch_new_states("grp") as catcher:
        a = sj.State(jnp.ones(2))
        b = sj.ParamState(jnp.zeros(2), tag="w")
    assert catcher.get_by_tag("grp") == [a, b]
    assert catcher.get_by_tag("w") == [b] and catcher.get_by_tag("other") == []
    assert catcher.state_ids == {id(a), id(b)}
    assert [v.tolist() for v in catcher.values] == [[1.0, 1.0], [0.0, 0.0]]
    a.stack_level = 3
    catcher.decrease_stack_level()
    assert (a.stack_level, b.stack_level) == (2, 0)
    catcher.remove(a)
    catcher.remove(a)  # a second time: nothing happens
    assert a not in catcher and b in catcher and len(catcher) == 1 and a.tag == {"grp"}
    catcher.clear()
    assert len(catcher) == 0 and catcher.state_ids == set() and b.tag == {"w", "grp"}


def test_catcher_appends_once_and_honours_the_exclusion_filter() -> None:
    catcher = NewStateCatcher(state_tag="t", state_to_exclude=sj.ParamState)
    s1, s2 = sj.State(jnp.ones(2)), sj.State(jnp.zeros(2))
    p = sj.ParamState(jnp.zeros(1))
    for state in (s1, s1, s2, p):
        catcher.append(state)
    assert catcher.get_states() == [s1, s2] and catcher[0] is s1 and list(catcher) == [s1, s2]
    assert p not in catcher and p.tag is None and s1.tag == {"t"}
    assert catcher.state_to_exclude((), p) and not catcher.state_to_exclude((), s1)


def test_trace_stack_exited_out_of_order_raises_and_keeps_the_stack() -> None:
    state = sj.State(jnp.zeros(2))
    depth = len(current_traces())
    outer, inner = sj.StateTraceStack(name="outer"), sj.StateTraceStack(name="inner")
    outer.__enter__()
    inner.__enter__()
    try:
        state.value = jnp.ones(2)
        with pytest.raises(RuntimeError, match="exited out of order"):
            outer.__exit__(None, None, None)
        assert len(current_traces()) == depth + 2
        np.testing.assert_array_equal(state.value, jnp.ones(2))  # still inside both
    finally:
        inner.__exit__(None, None, None)
        outer.__exit__(None, None, None)
    assert len(current_traces()) == depth
    np.testing.assert_array_equal(state.value, jnp.ones(2))  # the write reached the state
    assert outer.states == [state] and outer.been_writen == [True]
    with pytest.raises(RuntimeError, match="without being entered"):
        outer.__exit__(None, None, None)


def test_trace_stack_nested_exits_in_order() -> None:
    depth = len(current_traces())
    with sj.StateTraceStack(name="a"), sj.StateTraceStack(name="b"):
        assert len(current_traces()) == depth + 2
    assert len(current_traces()) == depth


def test_hidden_tree_state_messages() -> None:
    t = sj.HiddenTreeState({"v": jnp.ones((4, 3)), "i": jnp.zeros((4, 3))})
    with pytest.raises(KeyError, match="'does_not_exist' not found"):
        t.get_value("does_not_exist")
    with pytest.raises(TypeError, match="set_value takes a dictionary of hidden states"):
        t.set_value(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape of the hidden state is \(4, 3\)"):
        t.set_value({0: jnp.ones((9, 9))})
    np.testing.assert_array_equal(t.get_value("v"), jnp.ones((4, 3)))  # unchanged


def _manager() -> tuple[sj.StateDictManager, sj.ParamState[Any], sj.State[Any]]:
    w, n = sj.ParamState(jnp.ones(2)), sj.State(jnp.zeros(1))
    return sj.StateDictManager(w=w, n=n, alias=w), w, n


def test_state_dict_manager_selection() -> None:
    m, w, n = _manager()
    assert dict(m.subset(sj.ParamState)) == {"w": w, "alias": w}
    assert dict(m.subset(lambda s: s is n)) == {"n": n}
    assert dict(m.not_subset(sj.ParamState)) == {"n": n}
    params, rest = m.split(sj.ParamState)
    assert isinstance(params, sj.StateDictManager) and list(params) == ["w", "alias"]
    assert list(rest) == ["n"]
    assert list(m.filter_by_predicate(lambda k, s: k.startswith("a"))) == ["alias"]
    assert list(m.unique()) == ["w", "n"] and len(m) == 3
    assert m.unique_() is m and list(m) == ["w", "n"]
    assert m.to_dict() == {"w": w, "n": n} and type(m.to_dict()) is dict


def test_state_dict_manager_by_keys_and_values() -> None:
    m, w, n = _manager()
    assert list(m.difference_by_keys(["w"])) == ["n", "alias"]
    assert list(m.intersection_by_keys(["w", "x"])) == ["w"]
    assert list(m.difference_by_values([w])) == ["n"]
    assert list(m.intersection_by_values([n])) == ["n"]
    assert list(m.intersection_by_values([n], by="value")) == ["n"]
    with pytest.raises(ValueError, match="'id' or 'value'"):
        m.intersection_by_values([n], by="name")
    assert dict(m.map_keys(str.upper)) == {"W": w, "N": n, "ALIAS": w}
    with pytest.raises(ValueError, match="same new key"):
        m.map_keys(lambda k: 0)
    assert m.map_values(lambda s: s.numel()) == {"w": 2, "n": 1, "alias": 2}
    m.pop_by_keys(["alias", "missing"])
    assert list(m) == ["w", "n"]
    m.pop_by_values([n])
    assert list(m) == ["w"]
    m.assign({"n": n}, x=w)
    assert list(m) == ["w", "n", "x"]
    with pytest.raises(TypeError, match="takes mappings"):
        m.assign([("a", n)])  # type: ignore[list-item]
    combined = m + {"y": n}
    assert isinstance(combined, sj.StateDictManager) and list(combined) == ["w", "n", "x", "y"]
    assert list(m | {"z": n}) == ["w", "n", "x", "z"] and "z" not in m
    m |= {"z": n}
    assert list(m) == ["w", "n", "x", "z"]


def test_state_dict_manager_unique_adds() -> None:
    m, w, n = _manager()
    with pytest.raises(ValueError, match="already holds another state"):
        m.add_unique_value("w", n)
    assert m.add_unique_value("other", w) is False and "other" not in m
    fresh = sj.State(jnp.zeros(3))
    assert m.add_unique_value("fresh", fresh) is True and m["fresh"] is fresh
    with pytest.raises(TypeError, match="holds States"):
        m.add_unique_key("k", jnp.zeros(1))  # type: ignore[arg-type]


def test_state_dict_manager_is_a_pytree_that_transforms_take() -> None:
    m, _w, n = _manager()
    leaves, treedef = jax.tree.flatten(m)
    assert leaves == []  # states travel by reference
    assert jax.tree.unflatten(treedef, leaves) == m
    assert m.tree_unflatten(*reversed(m.tree_flatten())) == m

    @sj.jit
    def step(manager: sj.StateDictManager) -> jax.Array:
        manager["n"].value = manager["n"].value + manager["w"].value.sum()
        return manager["w"].value * 2

    out = step(m)
    np.testing.assert_array_equal(out, jnp.ones(2) * 2)
    np.testing.assert_array_equal(n.value, jnp.array([2.0]))  # the write came back
    assert repr(m).startswith("StateDictManager({'w': ParamState(")


def test_a_transform_ends_a_trace_stack_its_function_left_open() -> None:
    state = sj.State(jnp.zeros(2))
    depth = len(current_traces())

    @sj.jit
    def leaves_one_open() -> jax.Array:
        sj.StateTraceStack(name="left").__enter__()
        state.value = state.value + 1
        return state.value

    with pytest.raises(RuntimeError, match=r"StateTraceStack\(left\) entered inside .* still"):
        leaves_one_open()
    assert len(current_traces()) == depth  # the stack is whole again
    np.testing.assert_array_equal(state.value, jnp.zeros(2))  # and no state changed

    @sj.jit
    def step() -> jax.Array:
        state.value = state.value + 1
        return state.value

    np.testing.assert_array_equal(step(), jnp.ones(2))


def test_an_error_in_flight_is_not_masked_by_a_trace_stack_left_open() -> None:
    @sj.jit
    def fails() -> jax.Array:
        sj.StateTraceStack(name="left").__enter__()
        raise KeyError("the real error")

    depth = len(current_traces())
    with pytest.raises(KeyError, match="the real error"):
        fails()
    assert len(current_traces()) == depth


def test_states_still_copy_deep_copy_and_pickle_with_source_info() -> None:
    import copy
    import pickle

    state = sj.ParamState(jnp.arange(3.0), name="w", tag="t")
    for clone in (copy.copy(state), copy.deepcopy(state)):
        assert type(clone) is sj.ParamState and clone is not state
        assert (clone.name, clone.tag) == ("w", {"t"})
        assert clone.source_info is state.source_info
        np.testing.assert_array_equal(clone.value, state.value)
    loaded = pickle.loads(pickle.dumps(state))
    assert (loaded.name, loaded.tag) == ("w", {"t"})
    assert isinstance(loaded.source_info, source_info_util.SourceInfo)
    np.testing.assert_array_equal(loaded.value, state.value)
    rng = copy.deepcopy(sj.random.RandomState(1))
    np.testing.assert_array_equal(rng.normal(size=3), sj.random.RandomState(1).normal(size=3))

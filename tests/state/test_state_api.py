"""BrainState's State API: names, tag sets, copy/replace/restore, references, helpers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax.extend import StateTrace, is_leaked


def test_name_tag_set_and_add_tag() -> None:
    s = sj.State(jnp.ones(2), name="w", tag=["a", "b"])
    assert s.name == "w" and s.tag == {"a", "b"}
    s.name = "v"
    s.add_tag("c")
    s.add_tag("c")
    assert s.name == "v" and s.tag == {"a", "b", "c"}
    bare = sj.State(jnp.ones(2))
    assert bare.name is None and bare.tag is None
    bare.add_tag("x")
    assert bare.tag == {"x"}
    assert sj.filters.WithTag("x")((), bare) and not sj.filters.WithTag("y")((), bare)
    with pytest.raises(TypeError, match="tags are strings"):
        sj.State(jnp.ones(1), tag=[1])  # type: ignore[list-item]
    assert repr(sj.State(jnp.array(1), name="n", tag="t")) == (
        "State(value=int32[]=1, name='n', tag={'t'})"
    )


def test_brainstate_hierarchy() -> None:
    assert issubclass(sj.ParamState, sj.LongTermState)
    assert issubclass(sj.BatchState, sj.LongTermState)
    assert issubclass(sj.HiddenState, sj.ShortTermState)
    assert issubclass(sj.DelayState, sj.ShortTermState)


def test_state_of_a_state_takes_its_value_and_state_values_are_refused() -> None:
    inner: sj.State[Any] = sj.State(jnp.full(2, 4.0))
    outer: sj.State[Any] = sj.State(inner)
    assert outer.value is inner.value and outer is not inner
    with pytest.raises(ValueError, match=r"cannot store a State as the value of State .*copy_from"):
        outer.value = inner
    assert outer.value is inner.value


def test_numel_value_call_and_stack_level() -> None:
    assert sj.State(jnp.array(3.0)).numel() == 1
    assert sj.State({"a": jnp.ones(5), "b": jnp.ones((2, 3))}).numel() == 11
    s = sj.State(jnp.array([1.0, 2.0]))
    assert s.value_call(lambda x: x + 1).tolist() == [2.0, 3.0]
    assert s.stack_level == 0
    s.increase_stack_level()
    assert s.stack_level == 1
    s.stack_level = 0
    s.decrease_stack_level()
    assert s.stack_level == 0
    with StateTrace("t"):
        assert sj.State(jnp.ones(1)).stack_level == 1


def test_copy_replace_copy_from() -> None:
    a = sj.ParamState(jnp.ones(2), name="a", tag="t")
    c = a.copy()
    assert type(c) is sj.ParamState and c is not a and c.name == "a" and c.tag == {"t"}
    c.value = jnp.zeros(2)
    c.add_tag("u")
    assert a.value.tolist() == [1.0, 1.0] and a.tag == {"t"}
    r = a.replace(jnp.full(2, 5.0))
    assert r.value.tolist() == [5.0, 5.0] and r.name == "a" and a.value.tolist() == [1.0, 1.0]
    assert a.replace(_name="b").name == "b" and a.replace(value=jnp.zeros(2)).name == "a"
    other = sj.ParamState(jnp.zeros(2))
    assert a.replace(other) is other
    with pytest.raises(ValueError, match="cannot replace with a State"):
        a.replace(sj.State(jnp.zeros(2)))
    with pytest.raises(TypeError, match="unknown attribute 'colour'"):
        a.replace(colour="red")
    b = sj.ParamState(jnp.full(2, 3.0), name="b")
    a.copy_from(b)
    assert a.value.tolist() == [3.0, 3.0] and a.name == "b"
    a.copy_from(a)
    with pytest.raises(ValueError, match="cannot copy from a State"):
        a.copy_from(sj.State(jnp.zeros(2)))


def test_restore_value_and_value_tree_check() -> None:
    s = sj.State({"a": jnp.ones(2)})
    s.restore_value({"a": jnp.zeros(2)})
    assert s.value["a"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="has tree structure"):
        s.restore_value({"a": jnp.ones(2), "b": jnp.ones(2)})
    assert list(s.value) == ["a"]
    t = sj.State(jnp.zeros(3))
    with sj.check_state_value_tree():
        t.value = jnp.ones(3)
        with pytest.raises(
            ValueError, match=r"State \(float32\[3\]\) has tree structure PyTreeDef\(\{.a.: \*\}\)"
        ):
            t.value = {"a": jnp.zeros(3)}  # type: ignore[assignment]
        with sj.check_state_value_tree(False):
            t.value = (jnp.zeros(3),)  # type: ignore[assignment]
    t.value = jnp.zeros(4)  # off again outside the block
    with sj.check_state_jax_tracer():
        t.value = jnp.ones(4)
    assert t.value.tolist() == [1.0] * 4


def test_new_methods_write_through_the_engine() -> None:
    """Writes by copy_from/restore_value/update_from_ref inside jit are threaded, not stored."""
    a = sj.State(jnp.zeros(2))
    src = sj.State(jnp.ones(2))

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        a.copy_from(src)
        a.restore_value(a.value + x)
        fresh = a.copy()  # created inside the trace: lives there only
        fresh.value = fresh.value * 2
        return fresh.value

    assert step(jnp.ones(2)).tolist() == [4.0, 4.0]
    assert a.value.tolist() == [2.0, 2.0]
    assert not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(a._value))

    @sj.jit
    def bad(x: jax.Array) -> jax.Array:
        a.update_from_ref(sj.TreefyState(sj.State, x))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        bad(jnp.full(2, 9.0))
    assert a.value.tolist() == [2.0, 2.0]  # unchanged after the exception


def test_copy_inside_a_trace_is_leaked_after_it() -> None:
    a = sj.State(jnp.ones(2))
    kept: list[sj.State[Any]] = []

    @sj.jit
    def f() -> jax.Array:
        kept.append(a.copy())
        return a.value

    f()
    assert is_leaked(kept[0])
    with pytest.raises(sj.StateLeakError):
        kept[0].check_if_deleted()
    with pytest.raises(sj.StateLeakError):
        kept[0].numel()
    sj.State(jnp.ones(1)).check_if_deleted()


def test_treefy_state_reference() -> None:
    s = sj.ParamState(jnp.array([1.0, 2.0]), name="w", tag="t")
    ref = s.to_state_ref()
    assert isinstance(ref, sj.TreefyState) and ref.type is sj.ParamState
    assert ref.name == "w" and ref.get_metadata() == {"_name": "w", "tag": {"t"}}
    doubled = jax.tree.map(lambda x: x * 2, ref)
    assert doubled.value.tolist() == [2.0, 4.0] and doubled.name == "w"
    assert len(jax.tree.leaves(ref)) == 1
    assert ref.replace(jnp.zeros(2)).value.tolist() == [0.0, 0.0]
    assert ref.copy() == ref and ref.copy() is not ref
    back = doubled.to_state()
    assert type(back) is sj.ParamState and back.name == "w" and back.tag == {"t"}
    target = sj.ParamState(jnp.zeros(2))
    target.update_from_ref(doubled)
    assert target.value.tolist() == [2.0, 4.0] and target.name == "w"
    ref.name = "v"
    assert ref.name == "v" and "TreefyState(type=ParamState" in repr(ref)


def test_hidden_state_validation_and_shape() -> None:
    h = sj.HiddenState(np.zeros((3, 4)))
    assert h.varshape == (3, 4) and h.num_state == 1
    assert sj.HiddenState(jnp.zeros(5)).varshape == (5,)
    with pytest.raises(TypeError, match=r"HiddenState holds one array .* got a list"):
        sj.HiddenState([1, 2, 3])
    with pytest.raises(TypeError, match="got a dict"):
        sj.HiddenState({"a": jnp.zeros(1)})


def test_maybe_state_fake_state_and_errors() -> None:
    assert sj.maybe_state(sj.State(jnp.ones(2))).tolist() == [1.0, 1.0]
    assert sj.maybe_state(3) == 3
    f = sj.FakeState(10, name="old")
    f.value, f.name = 20, "new"
    assert (f.value, f.name) == (20, "new") and repr(f) == "FakedState(value=20)"
    assert sj.BrainStateError is sj.StatejaxError and sj.TraceContextError is sj.TraceError


def test_state_dict_manager() -> None:
    short, param = sj.ShortTermState(jnp.ones(2)), sj.ParamState(jnp.zeros(3))
    m = sj.StateDictManager(short=short, param=param)
    m.assign_values({"short": jnp.full(2, 5.0)})
    assert short.value.tolist() == [5.0, 5.0]
    assert set(m.collect_values()) == {"short", "param"} == set(m.to_dict_values())
    params, rest = m.split_values(sj.ParamState)
    assert list(params) == ["param"] and list(rest) == ["short"]
    assert list(m.subset(sj.ShortTermState)) == ["short"]
    with pytest.raises(TypeError, match="takes mappings"):
        m.assign_values([("short", jnp.ones(2))])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="holds States, got int"):
        m.add_unique_value("bad", 123)  # type: ignore[arg-type]
    extra = sj.State(jnp.ones(1))
    assert m.add_unique_value("extra", extra) and not m.add_unique_value("again", extra)
    with pytest.raises(ValueError, match="already holds another state"):
        m.add_unique_key("extra", sj.State(jnp.ones(1)))


def test_hidden_group_state() -> None:
    g = sj.HiddenGroupState(jnp.zeros((3, 2)), name="g")
    assert g.varshape == (3,) and g.num_state == 2 and g.name2index == {"0": 0, "1": 1}
    g.set_value({1: jnp.ones(3)})
    g.set_value([jnp.full(3, 2.0)])
    assert g.get_value(0).tolist() == [2.0] * 3 and g.get_value("1").tolist() == [1.0] * 3
    assert g.get_value(-1).tolist() == [1.0] * 3
    with pytest.raises(ValueError, match="at least two axes"):
        sj.HiddenGroupState(jnp.zeros(3))
    with pytest.raises(IndexError, match="index 2 out of range for 2"):
        g.get_value(2)
    with pytest.raises(KeyError, match="variable 'x' not found"):
        g.get_value("x")
    with pytest.raises(
        ValueError, match=r"has shape \(2,\), but the shape of the hidden state is \(3,\)"
    ):
        g.set_value({0: jnp.ones(2)})
    with pytest.raises(TypeError, match="takes a dictionary of hidden states"):
        g.set_value(jnp.ones(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index -1 out of range; the state holds 2"):
        g.set_value({-1: jnp.ones(3)})
    with pytest.raises(TypeError, match=r"key 1\.5 should be int or str"):
        g.set_value({1.5: jnp.ones(3)})  # type: ignore[dict-item]
    c = g.copy()
    assert c.name2index == g.name2index and c.get_value(1).tolist() == [1.0] * 3

    @sj.jit
    def step() -> None:  # set_value is an ordinary recorded write
        g.set_value({0: g.get_value(0) + 1})

    step()
    assert g.get_value(0).tolist() == [3.0] * 3


def test_hidden_tree_state() -> None:
    t = sj.HiddenTreeState({"v": jnp.zeros(2), "u": jnp.ones(2)})
    assert t.varshape == (2,) and t.num_state == 2 and t.index2name == {0: "v", 1: "u"}
    t.set_value({"v": jnp.full(2, 5.0)})
    assert t.get_value("v").tolist() == [5.0, 5.0] and t.get_value(1).tolist() == [1.0, 1.0]
    assert sj.HiddenTreeState([jnp.zeros(2), jnp.ones(2)]).name2index == {"0": 0, "1": 1}
    with pytest.raises(ValueError, match="same shape"):
        sj.HiddenTreeState({"a": jnp.zeros(2), "b": jnp.zeros(3)})
    with pytest.raises(TypeError, match="takes a dictionary/sequence"):
        sj.HiddenTreeState(jnp.zeros((2, 2)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="entry 'a' holds one array"):
        sj.HiddenTreeState({"a": [1, 2]})
    t.name2index.pop("u")
    with pytest.raises(ValueError, match="holds 2 variables but 1 are named"):
        _ = t.num_state


def test_state_trace_stack_records_and_merges_writes() -> None:
    a, b = sj.ShortTermState(jnp.zeros(2)), sj.LongTermState(jnp.zeros(2))
    with sj.StateTraceStack(name="blk") as stack:
        b.value = a.value + 1
        made = sj.State(jnp.full(2, 7.0))
    assert str(stack) == "StateTraceStack(blk)"
    assert stack.states == [a, b] and stack.been_writen == [False, True]
    assert b.value.tolist() == [1.0, 1.0] and made.value.tolist() == [7.0, 7.0]
    assert stack.get_read_states() == (a,) and stack.get_write_states() == (b,)
    assert stack.get_write_states(replace_read=True) == (None, b)
    writes, reads = stack.get_state_values(separate=True)
    assert writes[0].tolist() == [1.0, 1.0] and reads[0].tolist() == [0.0, 0.0]
    assert stack.state_subset(sj.ShortTermState) == [a]
    stack.assign_state_vals([jnp.full(2, 9.0), jnp.full(2, 5.0)])
    assert a.value.tolist() == [0.0, 0.0] and b.value.tolist() == [5.0, 5.0]
    stack.recovery_original_values()
    assert b.value.tolist() == [0.0, 0.0] and stack.original_state_values[1].tolist() == [0, 0]
    with pytest.raises(ValueError, match="1 values for 2 states"):
        stack.assign_state_vals([jnp.ones(2)])
    other = sj.StateTraceStack()
    c = sj.State(jnp.ones(1))
    with other:
        c.value = c.value * 3
    merged = stack + other
    assert merged.states == [a, b, c] and merged.been_writen == [False, True, True]


def test_state_trace_stack_is_atomic_and_nests_in_transforms() -> None:
    s = sj.State(jnp.zeros(2))
    with pytest.raises(RuntimeError), sj.StateTraceStack():
        s.value = jnp.ones(2)
        raise RuntimeError
    assert s.value.tolist() == [0.0, 0.0]

    @sj.jit
    def f(x: jax.Array) -> None:
        with sj.StateTraceStack():
            s.value = s.value + x  # a tracer: reaches the jit's record, not the State

    f(jnp.ones(2))
    f(jnp.ones(2))
    assert s.value.tolist() == [2.0, 2.0]
    assert not isinstance(s._value, jax.core.Tracer)


def test_state_trace_stack_refused_write_changes_nothing() -> None:
    ok: sj.State[Any] = sj.State(jnp.zeros(2))
    bad = sj.State(jnp.zeros(2))

    def f(x: jax.Array) -> jax.Array:
        with sj.StateTraceStack():
            ok.value = np.ones(2)  # concrete: stored first, then undone
            bad.value = x  # a tracer of the plain jax.jit: refused when the block ends
        return x

    with pytest.raises(sj.TraceError, match="outside any statejax transform"):
        jax.jit(f)(jnp.ones(2))
    assert ok.value.tolist() == [0.0, 0.0] and bad.value.tolist() == [0.0, 0.0]

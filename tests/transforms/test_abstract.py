"""eval_shape, make_jaxpr and StatefulFunction against jax.eval_shape / jax.make_jaxpr."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._transforms.abstract import eval_shape, make_jaxpr
from statejax._transforms.loops import scan
from statejax._transforms.stateful import StatefulFunction


class Cell(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones((3, 4)))
        self.h = sj.HiddenState(jnp.zeros(4))
        self.calls = sj.ShortTermState(jnp.array(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        self.calls.value += 1
        self.h.value = jnp.tanh(x @ self.w.value + self.h.value)
        return self.h.value.astype(jnp.float16)


def test_eval_shape_matches_jax_eval_shape_and_changes_nothing() -> None:
    cell = Cell()
    x = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    out = eval_shape(cell, x)
    ref = jax.eval_shape(
        lambda x, w, h: jnp.tanh(x @ w + h).astype(jnp.float16), x, cell.w.value, cell.h.value
    )
    assert out == ref
    assert cell.h.value.shape == (4,) and int(cell.calls.value) == 0

    # BrainState's order: (state_shapes, out_shapes); every touched state, read ones too
    states, out2 = eval_shape(cell, jnp.ones((2, 3)), return_state_shapes=True)
    assert out2 == ref
    assert list(states) == [cell.w, cell.calls, cell.h]  # read-only, then written
    assert states[cell.h] == jax.ShapeDtypeStruct((2, 4), jnp.float32)
    assert states[cell.w] == jax.ShapeDtypeStruct((3, 4), jnp.float32)
    assert states[cell.calls].shape == () and states[cell.calls].dtype == jnp.int32
    assert cell.h.value.shape == (4,) and int(cell.calls.value) == 0
    with pytest.raises(sj.SpecError, match="return_state_shapes"):
        eval_shape(cell, x, return_state_shapes="maybe")


def test_eval_shape_inside_jit_is_invisible_to_the_enclosing_transform() -> None:
    cell = Cell()

    @sj.jit
    def step(x: jax.Array) -> jax.Array:
        shape = eval_shape(cell, x).shape
        return jnp.zeros(shape)

    assert step(jnp.ones((5, 3))).shape == (5, 4)
    assert int(cell.calls.value) == 0
    _, states = make_jaxpr(step)(jnp.ones((5, 3)))
    assert states == ()


def test_make_jaxpr_brainstate_layout_and_equivalence() -> None:
    cell = Cell()
    x = jnp.arange(6.0).reshape(2, 3)
    jaxpr, states = make_jaxpr(cell)(x)
    assert states == (cell.w, cell.calls, cell.h)
    # inputs: args, then states; outputs: out, then every state's value (return_only_write=False)
    in_avals = [v.aval for v in jaxpr.jaxpr.invars]
    assert [(a.shape, a.dtype) for a in in_avals] == [
        ((2, 3), jnp.float32),
        ((3, 4), jnp.float32),
        ((), jnp.int32),
        ((4,), jnp.float32),
    ]
    out, w, calls, h = jax.core.eval_jaxpr(
        jaxpr.jaxpr, jaxpr.consts, x, cell.w.value, cell.calls.value, cell.h.value
    )
    ref_h = jnp.tanh(x @ cell.w.value + cell.h.value)
    np.testing.assert_allclose(h, ref_h, rtol=1e-6)
    np.testing.assert_allclose(out, ref_h.astype(jnp.float16))
    np.testing.assert_array_equal(w, cell.w.value)
    assert int(calls) == 1
    assert int(cell.calls.value) == 0 and cell.h.value.tolist() == [0.0] * 4
    ref = jax.make_jaxpr(
        lambda x, w, c, h: (jnp.tanh(x @ w + h).astype(jnp.float16), c + 1, jnp.tanh(x @ w + h))
    )(x, cell.w.value, cell.calls.value, cell.h.value)
    assert {e.primitive.name for e in jaxpr.eqns} == {e.primitive.name for e in ref.eqns}

    only_write, states2, shapes = make_jaxpr(cell, return_only_write=True, return_shape=True)(x)
    assert states2 == states and len(only_write.jaxpr.outvars) == 3  # out, calls, h
    assert shapes == jax.ShapeDtypeStruct((2, 4), jnp.float16)


def test_make_jaxpr_static_argnums_and_nested_loops() -> None:
    acc = sj.State(jnp.array(0.0))

    def f(x: jax.Array, n: int) -> jax.Array:
        def body(c: None, x: jax.Array) -> tuple[None, jax.Array]:
            acc.value = acc.value + x
            return c, acc.value

        return scan(body, None, jnp.broadcast_to(x, (n,)))[1]

    jaxpr, states = make_jaxpr(f, static_argnums=1)(jnp.array(1.0), 4)
    assert states == (acc,)
    assert jaxpr.out_avals[0].shape == (4,)
    jaxpr, _ = make_jaxpr(f, static_argnames="n")(jnp.array(1.0), n=3)
    assert jaxpr.out_avals[0].shape == (3,)
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.make_jaxpr: option static_argnums\[0\]: "
        r"Input should be greater than or equal to 0",
    ):
        make_jaxpr(f, static_argnums=-1)


def test_stateful_function_call_matches_plain_jax_and_is_atomic() -> None:
    total = sj.State(jnp.array([1.0, 2.0]))
    seen = sj.State(jnp.array(0))

    def f(x: jax.Array, fail: bool = False) -> jax.Array:
        seen.value += 1
        total.value = total.value * x
        if fail:
            raise RuntimeError("boom")
        return total.value.sum()

    sf = StatefulFunction(f, static_argnames="fail")
    assert float(sf(jnp.array(3.0))) == 9.0
    assert total.value.tolist() == [3.0, 6.0] and int(seen.value) == 1
    with pytest.raises(RuntimeError, match="boom"):
        sf(jnp.array(5.0), fail=True)
    assert total.value.tolist() == [3.0, 6.0] and int(seen.value) == 1

    # jaxpr_call: (new_state_vals, out), one slot per state, None for read-only ones
    reader = sj.State(jnp.array(10.0))
    g = StatefulFunction(lambda x: total.value.sum() * x + reader.value)
    assert g.get_read_states(2.0) == (total, reader) and g.get_write_states(2.0) == ()
    new, out = g.jaxpr_call([jnp.array([1.0, 1.0]), jnp.array(1.0)], 2.0)
    assert new == [None, None] and float(out) == 5.0
    with pytest.raises(ValueError, match="State length mismatch"):
        g.jaxpr_call([jnp.array(1.0)], 2.0)
    with pytest.raises(ValueError, match="holds None at index"):
        g.jaxpr_call([None, jnp.array(1.0)], 2.0)


def test_stateful_function_cache_keys() -> None:
    s = sj.State(jnp.zeros(2))

    def f(x: jax.Array, n: int) -> jax.Array:
        if n > 1:
            s.value = s.value + x
        return x**n

    sf = StatefulFunction(f, static_argnums=1)
    with pytest.raises(ValueError, match="not compiled"):
        sf.get_jaxpr(jnp.ones(2), 2, compile_if_miss=False)
    key1 = sf.get_arg_cache_key(jnp.ones(2), 1, compile_if_miss=True)
    key2 = sf.get_arg_cache_key(jnp.ones(2), 2, compile_if_miss=True)
    assert key1 != key2 and key1.static_args == (1,)
    # each static variant keeps its own states
    assert sf.get_states_by_cache(key1) == () and sf.get_write_states_by_cache(key2) == (s,)
    assert sf.get_out_shapes_by_cache(key2) == (
        jax.ShapeDtypeStruct((2,), jnp.float32),
        (jax.ShapeDtypeStruct((2,), jnp.float32),),
    )
    with pytest.raises(ValueError, match="static_argnums contains index 1"):
        sf.make_jaxpr(jnp.ones(2))
    with pytest.raises(TypeError, match="must be hashable"):
        sf.get_arg_cache_key(jnp.ones(2), [1])
    with pytest.raises(ValueError, match="cannot be an instance of State"):
        StatefulFunction(lambda a: a.value).make_jaxpr(s)
    sf.clear_cache()
    with pytest.raises(ValueError, match="not compiled"):
        sf.get_jaxpr_by_cache(key1)


def test_stateful_function_keeps_no_module_alive_and_no_tracer() -> None:
    sf = StatefulFunction(lambda m, x: m(x), static_argnums=0)
    cell = Cell()
    key = sf.get_arg_cache_key(cell, jnp.ones((1, 3)), compile_if_miss=True)
    assert sf.get_write_states_by_cache(key) == (cell.calls, cell.h)
    ref = weakref.ref(cell)
    del cell
    gc.collect()
    assert ref() is None
    with pytest.raises(ValueError, match="not compiled"):
        sf.get_jaxpr_by_cache(key)

    # traced inside jit: the states never hold the tracers; writes are merged once
    counter = sj.State(jnp.array(0.0))

    def bump(x: jax.Array) -> jax.Array:
        counter.value = counter.value + x
        return counter.value

    inner = StatefulFunction(bump)
    assert float(sj.jit(lambda x: inner(x) * 2)(jnp.array(1.5))) == 3.0
    assert float(counter.value) == 1.5
    assert not isinstance(counter.value, jax.core.Tracer)


def test_stateful_function_shared_by_threads_counts_exactly() -> None:
    w = sj.ParamState(jnp.arange(3.0))
    outs = [sj.State(jnp.zeros(3)) for _ in range(4)]

    def f(x: jax.Array, i: int) -> jax.Array:
        time.sleep(0.002)  # traces on different threads overlap
        outs[i].value = outs[i].value + x * w.value
        return outs[i].value

    sf = StatefulFunction(f, static_argnums=1)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(outs))

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(3):
                sf(jnp.ones(3), i)
                assert sf.get_write_states(jnp.ones(3), i) == (outs[i],)
                assert not isinstance(w.value, jax.core.Tracer)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(outs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for out in outs:
        assert out.value.tolist() == [0.0, 3.0, 6.0]


def test_state_finder_and_catch_new_states() -> None:
    w = sj.ParamState(jnp.ones(()))
    b = sj.State(jnp.zeros(()))

    def forward(x: jax.Array) -> jax.Array:
        w.value = w.value * x
        return w.value + b.value

    assert sj.transform.StateFinder(forward)(2.0) == {0: b, 1: w}
    assert sj.transform.StateFinder(forward, filter=sj.ParamState, return_type="list")(2.0) == [w]
    found = sj.transform.StateFinder(forward, usage="write", key_fn=lambda i, s: f"w{i}")(2.0)
    assert found == {"w0": w} and float(w.value) == 1.0
    with pytest.raises(ValueError, match="invalid usage 'some'"):
        sj.transform.StateFinder(forward, usage="some")  # type: ignore[arg-type]

    with sj.catch_new_states("outer") as outer:
        a = sj.State(jnp.zeros(1))
        with sj.catch_new_states("inner", state_to_exclude=sj.ParamState) as inner:
            c = sj.State(jnp.ones(1), tag="mine")
            p = sj.ParamState(jnp.ones(1))
    assert outer.get_states() == [a, c, p] and list(inner) == [c]
    # As BrainState: each catcher adds its tag to the tags of the states it catches.
    assert (a.tag, c.tag, p.tag) == ({"outer"}, {"mine", "outer", "inner"}, {"outer"})
    assert [v.tolist() for v in inner.get_state_values()] == [[1.0]] and inner[0] is c
    assert sj.State(jnp.zeros(1)) not in outer


def test_abstract_transforms_are_registered() -> None:
    assert sj.transform.__getattr__("eval_shape") is eval_shape
    assert sj.transform.__getattr__("make_jaxpr") is make_jaxpr
    assert sj.transform.StatefulFunction is StatefulFunction

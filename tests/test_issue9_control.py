"""Issue 9, control flow: checkpointed loops, bounded_while_loop, pbar, unvmap, naming."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import statejax as sj
from statejax.transform import (
    ProgressBar,
    bounded_while_loop,
    checkpointed_for_loop,
    checkpointed_scan,
    named_call,
    named_scope,
    unvmap,
)


def _rnn(w: jax.Array, h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = jnp.tanh(w * h + x)
    return h, h * x


@pytest.mark.parametrize(("n", "base"), [(1, 2), (5, 2), (17, 4), (40, 16)])
def test_checkpointed_scan_matches_lax_scan_and_its_grad(n: int, base: int) -> None:
    xs = jnp.linspace(-1.0, 1.0, n)

    def ours(w: jax.Array) -> jax.Array:
        h, ys = checkpointed_scan(lambda h, x: _rnn(w, h, x), jnp.array(0.1), xs, base=base)
        return h + ys.sum()

    def plain(w: jax.Array) -> jax.Array:
        h, ys = lax.scan(lambda h, x: _rnn(w, h, x), jnp.array(0.1), xs)
        return h + ys.sum()

    np.testing.assert_allclose(ours(jnp.array(0.7)), plain(jnp.array(0.7)), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(ours)(jnp.array(0.7)), jax.grad(plain)(jnp.array(0.7)), rtol=1e-5
    )


def test_checkpointed_for_loop_threads_states_and_grad_wrt_a_param() -> None:
    w = sj.ParamState(jnp.array(0.5))
    h = sj.HiddenState(jnp.array(0.0))

    def loss() -> jax.Array:
        def step(x: jax.Array) -> jax.Array:
            h.value = jnp.tanh(w.value * h.value + x)
            return h.value

        return checkpointed_for_loop(step, jnp.ones(9), base=2).sum()

    def reference(wv: jax.Array) -> jax.Array:
        return lax.scan(lambda c, x: (jnp.tanh(wv * c + x),) * 2, 0.0, jnp.ones(9))[1].sum()

    g = sj.grad(loss, w)()
    np.testing.assert_allclose(g, jax.grad(reference)(jnp.array(0.5)), rtol=1e-5)
    loss()
    np.testing.assert_allclose(
        h.value, lax.scan(lambda c, x: (jnp.tanh(0.5 * c + x),) * 2, 0.0, jnp.ones(9))[0], rtol=1e-6
    )


def test_checkpointed_scan_keeps_less_for_reverse_mode_than_scan() -> None:
    xs = jnp.ones((2048, 16))

    def loss(scan: Any, w: jax.Array) -> jax.Array:
        return scan(lambda h, x: (jnp.tanh(w @ h + x), None), jnp.zeros(16), xs)[0].sum()

    def temp(scan: Any) -> int:
        grad = jax.jit(jax.grad(lambda w: loss(scan, w)))
        stats = grad.lower(jnp.eye(16)).compile().memory_analysis()
        return int(stats.temp_size_in_bytes)

    ours = temp(lambda f, c, xs: checkpointed_scan(f, c, xs))
    plain = temp(lax.scan)
    assert ours < plain / 4


def test_checkpointed_scan_options_are_checked() -> None:
    with pytest.raises(sj.SpecError, match=r"statejax\.checkpointed_scan: option base"):
        checkpointed_scan(lambda c, x: (c, x), 0.0, jnp.ones(3), base=1)
    with pytest.raises(sj.SpecError, match=r"checkpointed_for_loop: option base"):
        checkpointed_for_loop(lambda x: x, jnp.ones(3), base=True)
    with pytest.raises(
        sj.SpecError, match=r"leading axis lengths \[3, 2\] .* runs 3 \(the first\)"
    ):
        checkpointed_for_loop(lambda x, y: x, jnp.ones(3), jnp.ones(2))
    with pytest.raises(sj.SpecError, match=r"lengths \[3\] .* runs length=4 steps"):
        checkpointed_scan(lambda c, x: (c, x), 0.0, jnp.ones(3), length=4)
    # no steps: nothing to bound, it runs as scan
    assert checkpointed_scan(lambda c, x: (c + x, x), 1.0, jnp.ones(0))[1].shape == (0,)


def test_bounded_while_loop_grad_equals_the_unrolled_grad() -> None:
    def ours(x: jax.Array) -> jax.Array:
        return bounded_while_loop(lambda v: v < 10.0, lambda v: v * 1.5 + 0.1, x, max_steps=20)

    def unrolled(x: jax.Array) -> jax.Array:
        for _ in range(20):
            x = jnp.where(x < 10.0, x * 1.5 + 0.1, x)
        return x

    for x0 in (0.5, 3.0, 12.0):
        x = jnp.array(x0)
        np.testing.assert_allclose(ours(x), unrolled(x), rtol=1e-6)
        np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(unrolled)(x), rtol=1e-6)
    lanes = jnp.array([0.5, 3.0, 12.0])
    np.testing.assert_allclose(jax.vmap(ours)(lanes), jax.vmap(unrolled)(lanes), rtol=1e-6)


def test_bounded_while_loop_caps_steps_and_threads_states() -> None:
    total = sj.State(jnp.array(0))

    def body(i: jax.Array) -> jax.Array:
        total.value = total.value + 1
        return i + 1

    assert int(bounded_while_loop(lambda i: i < 100, body, 0, max_steps=7, base=2)) == 7
    assert int(total.value) == 7
    assert int(bounded_while_loop(lambda i: i < 3, body, 0, max_steps=50)) == 3
    assert int(total.value) == 10
    assert int(bounded_while_loop(lambda i: i < 3, body, 0, max_steps=0)) == 0
    with jax.disable_jit():
        assert int(bounded_while_loop(lambda i: i < 100, body, 0, max_steps=4)) == 4
    assert int(total.value) == 14

    def writes(i: jax.Array) -> jax.Array:
        total.value = total.value + 1
        return i < 3

    with pytest.raises(sj.TraceError, match=r"statejax\.bounded_while_loop: cond_fun"):
        bounded_while_loop(writes, body, 0, max_steps=5)
    assert int(total.value) == 14
    with pytest.raises(sj.SpecError, match=r"bounded_while_loop: option max_steps"):
        bounded_while_loop(lambda i: i < 3, body, 0, max_steps=-1)


def test_pbar_freq_count_and_dynamic_desc(monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[Any] = []

    class FakeBar:
        def __init__(self, total: int, desc: str, **options: Any) -> None:
            self.total, self.descs, self.shown, self.options = total, [desc], [0], options
            self.n = 0
            bars.append(self)

        def set_description(self, desc: str, refresh: bool) -> None:
            self.descs.append(desc)

        def update(self, k: int) -> None:
            self.n += k
            self.shown.append(self.n)

        def close(self) -> None:
            pass

    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    xs = jnp.arange(10.0)
    sj.for_loop(lambda x: x * 2, xs, pbar=ProgressBar(count=2, ncols=40))
    checkpointed_scan(lambda c, x: (c + x, c), 0.0, xs, base=2, pbar=3)
    desc = ("step {i}: carry {c:.0f}", lambda d: {"i": d["i"], "c": d["carry"]})
    sj.scan(lambda c, x: (c + x, c), 0.0, xs[:4], pbar=ProgressBar(freq=2, desc=desc))
    jax.effects_barrier()
    assert [b.shown for b in bars] == [[0, 1, 5, 10], [0, 1, 3, 6, 9, 10], [0, 1, 2, 4]]
    assert bars[0].options == {"leave": True, "mininterval": 0, "ncols": 40}
    assert bars[2].descs == [
        "step 0: carry 0",
        "step 0: carry 0",
        "step 1: carry 1",
        "step 3: carry 6",
    ]
    with pytest.raises(sj.SpecError, match=r"statejax\.for_loop: pbar freq=11 is more than"):
        sj.for_loop(lambda x: x, xs, pbar=11)
    with pytest.raises(sj.SpecError, match=r"statejax\.ProgressBar: option desc"):
        ProgressBar(desc=("{i}", "not callable"))
    with pytest.raises(sj.SpecError, match=r"give freq or count, not both"):
        ProgressBar(freq=1, count=2)


def test_unvmap_reduces_over_every_lane() -> None:
    x = jnp.array([[1.0, -1.0], [-1.0, -3.0]])
    assert jax.vmap(lambda r: unvmap(r > 0, "any"))(x).tolist() == [True, True]
    assert jax.vmap(lambda r: unvmap(r > -2, "all"))(x).tolist() == [False, False]
    assert jax.vmap(jax.vmap(lambda v: unvmap(v, "max")))(x).tolist() == [[1.0, 1.0]] * 2
    assert jax.vmap(lambda r: unvmap(r, "none"))(x).tolist() == [[1.0, -1.0]] * 2
    assert bool(jax.jit(lambda r: unvmap(r, "all"))(jnp.array([True, True])))
    with pytest.raises(sj.SpecError, match=r"statejax\.unvmap: option op"):
        unvmap(x, "sum")  # type: ignore[arg-type]


def test_named_call_names_the_operations_and_keeps_state_writes() -> None:
    count = sj.State(jnp.array(0.0))

    @named_call(name="block")
    def block(x: jax.Array) -> jax.Array:
        count.value = count.value + 1.0
        return jnp.sin(x) * x

    pure = named_call(lambda x: jnp.sin(x) * x, name="pure_block")
    names = {str(e.source_info.name_stack) for e in jax.make_jaxpr(pure)(1.0).eqns}
    assert names == {"pure_block"}
    g = sj.grad(block)(jnp.array(2.0))
    np.testing.assert_allclose(g, jnp.sin(2.0) + 2.0 * jnp.cos(2.0), rtol=1e-6)
    assert float(sj.jit(block)(jnp.array(1.0))) == pytest.approx(np.sin(1.0))
    assert float(count.value) == 2.0  # grad and jit both stored the write


def test_named_scope_compiles_once_per_static_value() -> None:
    traces: list[int] = []
    calls = sj.State(jnp.array(0))

    @named_scope("scale", static_argnames="k")
    def scale(x: jax.Array, k: int) -> jax.Array:
        traces.append(k)
        calls.value += 1
        return x * k

    assert [float(scale(jnp.array(2.0), k=k)) for k in (3, 3, 4)] == [6.0, 6.0, 8.0]
    assert int(calls.value) == 3 and traces.count(3) <= 2 and scale.fn.__name__ == "scale"
    pure = named_scope("pure_scale")(lambda x: x * 2.0)
    jaxpr = jax.make_jaxpr(pure)(1.0)
    eqns = jaxpr.eqns  # the operations, named (inside the jit's equation if JAX kept one)
    if "jaxpr" in eqns[0].params:
        eqns = eqns[0].params["jaxpr"].jaxpr.eqns
    assert {str(e.source_info.name_stack) for e in eqns} == {"pure_scale"}


def test_vmap_new_states_stacks_created_states_per_lane() -> None:
    from statejax.transform import vmap_new_states

    made: list[sj.State[Any]] = []

    @vmap_new_states(in_axes=0, state_tag="ensemble")
    def build(x: jax.Array) -> jax.Array:
        w = sj.ParamState(x * 10.0 + sj.random.uniform())  # each lane its own key
        own = sj.State(jnp.zeros(2), tag="mine")
        made.extend([w, own])
        return w.value

    out = build(jnp.arange(3.0))
    w, own = made[-2:]
    np.testing.assert_allclose(out, w.value)
    assert w.value.shape == (3,) and own.value.shape == (3, 2)
    assert len(set(np.asarray(w.value - jnp.arange(3.0) * 10.0).tolist())) == 3
    assert (w.tag, own.tag) == ({"ensemble"}, {"mine", "ensemble"})
    for option in ("in_states", "out_states", "state_to_exclude"):
        with pytest.raises(sj.SpecError, match=rf"vmap_new_states: option {option} is not"):
            vmap_new_states(**{option: sj.ParamState})
    with pytest.raises(sj.SpecError, match=r"vmap_new_states: option axis_size"):
        vmap_new_states(axis_size=0)

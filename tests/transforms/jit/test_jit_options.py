"""jit's jax.jit options (issue 9) and state_shardings on one device (more in test_scaling.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj


def _sharding(spec: P) -> NamedSharding:
    return NamedSharding(Mesh(np.array(jax.devices()[:1]), ("x",)), spec)


def test_aot_methods_match_jax_jit_and_change_no_state() -> None:
    s = sj.State(jnp.ones(3))

    @sj.jit
    def f(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return s.value * 2

    x = jnp.arange(3.0)
    shape = f.eval_shape(x)
    assert (shape.shape, shape.dtype) == ((3,), jnp.float32)
    lowered = f.lower(x)
    assert "stablehlo" in lowered.as_text() or "func" in lowered.as_text()
    traced = f.trace(x)
    assert len(traced.jaxpr.jaxpr.outvars) == 2  # the result and the written state
    compiled = f.compile(x)
    out, (new_s,) = compiled([], [s.value], x)
    assert out.tolist() == [2.0, 4.0, 6.0] and new_s.tolist() == [1.0, 2.0, 3.0]
    assert s.value.tolist() == [1.0, 1.0, 1.0]  # nothing ran for real
    assert f(x).tolist() == [2.0, 4.0, 6.0]
    assert s.value.tolist() == [1.0, 2.0, 3.0]


def test_aot_inside_an_outer_trace_reads_but_does_not_write() -> None:
    s = sj.State(jnp.zeros(2))

    @sj.jit
    def inner(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return s.value

    def outer(x: jax.Array) -> jax.Array:
        inner.eval_shape(x)
        return x * 1.0

    outer_jit = sj.jit(outer)
    outer_jit(jnp.ones(2))
    split = outer_jit.stateful.split_for(jnp.ones(2))  # type: ignore[attr-defined]
    assert s in split and split.is_read_only(s)
    assert s.value.tolist() == [0.0, 0.0]


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_name_keep_unused_inline_and_donate_pass_through() -> None:
    s = sj.State(jnp.zeros(2))

    @sj.jit(name="stepper", keep_unused=True, inline=True)
    def step(x: jax.Array, unused: jax.Array) -> jax.Array:
        s.value = s.value + x
        return s.value

    assert "stepper" in step.lower(jnp.ones(2), jnp.ones(1)).as_text()
    assert step(jnp.ones(2), jnp.ones(1)).tolist() == [1.0, 1.0]
    expected = jax.jit(lambda x, y: x + y, donate_argnums=0)(jnp.ones(2), jnp.ones(2))
    donating = sj.jit(lambda x, y: x + y, donate_argnums=0, donate_argnames="y")
    assert donating(jnp.ones(2), y=jnp.ones(2)).tolist() == expected.tolist()


def test_in_and_out_shardings_are_aligned_with_the_arguments() -> None:
    st = sj.State(jnp.zeros(4))

    @sj.jit(in_shardings=(_sharding(P("x")),), out_shardings=_sharding(P("x")))
    def f(x: jax.Array) -> jax.Array:
        st.value = st.value + x
        return x * 2.0

    out = f(jnp.arange(4.0))
    assert out.tolist() == [0.0, 2.0, 4.0, 6.0] and st.value.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert out.sharding.is_equivalent_to(_sharding(P("x")), 1)
    # keyword arguments (jax.jit refuses them with in_shardings) and a single sharding
    g = sj.jit(lambda x, *, scale: x * scale, in_shardings=_sharding(P()))
    assert g(jnp.ones(2), scale=3.0).tolist() == [3.0, 3.0]


def test_state_shardings_place_written_states_and_static_args_still_work() -> None:
    w = sj.ParamState(jnp.ones((2, 2)))
    count = sj.ShortTermState(jnp.array(0))
    rows = _sharding(P("x"))

    @sj.jit(state_shardings={sj.ParamState: rows}, static_argnums=1, static_argnames="k")
    def step(x: jax.Array, n: int, *, k: int = 1) -> jax.Array:
        count.value = count.value + 1
        w.value = w.value * n * k
        return x @ w.value

    assert step(jnp.ones(2), 2, k=3).tolist() == [12.0, 12.0]
    assert w.value.sharding.is_equivalent_to(rows, 2)
    assert step(jnp.ones(2), 1).tolist() == [12.0, 12.0] and int(count.value) == 2


def test_state_shardings_that_do_not_fit_name_the_state() -> None:
    class Model(sj.Module):
        def __init__(self) -> None:
            self.w = sj.ParamState(jnp.ones(3))

    model = Model()
    bad = _sharding(P("x", None))
    f = sj.jit(lambda m: m.w.value * 2, state_shardings={sj.ParamState: bad})
    with pytest.raises(sj.SpecError, match=r"ParamState at path \('w',\).*cannot be placed"):
        f(model)
    assert model.w.value.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"state_shardings": _sharding(P())}, "give a mapping"),
        (
            {"state_shardings": {sj.ParamState: P("x")}},
            r"P\('x',\) \(P\), not a Sharding.*NamedSharding\(mesh, spec\)",
        ),
        ({"state_shardings": {3: _sharding(P())}}, "key 3: 3 .int. is neither a State"),
        ({"in_shardings": "x"}, "in_shardings.*neither a Sharding nor a tuple"),
        ({"donate_argnums": -1}, "donate_argnums"),
        ({"keep_unsed": True}, "Did you mean 'keep_unused'"),
    ],
)
def test_bad_options_are_spec_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(sj.SpecError, match=message):
        sj.jit(lambda x: x, **options)  # type: ignore[call-overload]


@pytest.mark.parametrize("sharded", [False, True], ids=["plain", "state_shardings"])
def test_static_keywords_are_hashed_per_call_as_jax_jit(sharded: bool) -> None:
    w = sj.ParamState(jnp.ones(2))
    options = {"state_shardings": {sj.ParamState: _sharding(P())}} if sharded else {}

    @sj.jit(static_argnames="scale", **options)
    def step(x: jax.Array, scale: tuple[float, ...] = (1.0,)) -> jax.Array:
        w.value = w.value * scale[0]
        return x * scale[0]

    assert float(step(jnp.float32(1.0), scale=(2.0,))) == 2.0
    assert float(step(jnp.float32(1.0), scale=(3.0,))) == 3.0  # a new value recompiles
    assert float(step(jnp.float32(1.0))) == 1.0
    assert w.value.tolist() == [6.0, 6.0]
    for scale in ([2.0], [3.0]):  # unhashable: jax.jit's error, every time, no state change
        with pytest.raises(ValueError, match=r"Non-hashable static arguments.*\[" + str(scale[0])):
            step(jnp.float32(1.0), scale=scale)
    assert w.value.tolist() == [6.0, 6.0]
    assert step.eval_shape(jnp.float32(1.0), scale=(4.0,)).shape == ()


@pytest.mark.parametrize("sharded", [False, True], ids=["plain", "state_shardings"])
def test_a_static_parameter_is_static_by_position_or_by_keyword(sharded: bool) -> None:
    """As in `jax.jit`: `static_argnums` also covers the parameter passed by keyword, and
    `static_argnames` the parameter passed by position (a Python branch on it works)."""
    acc = sj.State(jnp.array(0.0))
    options = {"state_shardings": {sj.State: _sharding(P())}} if sharded else {}

    @sj.jit(static_argnums=1, **options)
    def by_number(x: jax.Array, n: int) -> jax.Array:
        acc.value = acc.value + x * n
        return x * n if n > 1 else x

    @sj.jit(static_argnames="n", **options)
    def by_name(x: jax.Array, n: int) -> jax.Array:
        return x * n if n > 1 else -x

    one = jnp.float32(1.0)
    assert [float(by_number(one, n=2)), float(by_number(one, 3)), float(by_number(one, n=1))] == [
        2.0,
        3.0,
        1.0,
    ]
    assert float(acc.value) == 6.0
    assert [float(by_name(one, 2)), float(by_name(one, n=2)), float(by_name(one, 1))] == [
        2.0,
        2.0,
        -1.0,
    ]


class _Holder(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.ones(3))


@pytest.mark.parametrize("sharded", [False, True], ids=["plain", "state_shardings"])
def test_an_argument_donated_and_read_as_a_state_names_the_state(sharded: bool) -> None:
    model = _Holder()
    options = {"state_shardings": {sj.ParamState: _sharding(P())}} if sharded else {}

    def step(m: _Holder, x: jax.Array, *, y: jax.Array) -> jax.Array:
        m.w.value = m.w.value + x + y
        return x * 2

    by_position = sj.jit(step, donate_argnums=1, **options)
    before = model.w.value
    with pytest.raises(
        sj.SpecError,
        match=r"statejax\.jit\(.*step\): argument 1 is donated \(donate_argnums\) but its array "
        r"is also the value of ParamState at path \('w',\).*Pass a copy \(jnp\.copy\(x\)\)",
    ):
        by_position(model, model.w.value, y=jnp.ones(3))
    assert model.w.value is before and model.w.value.tolist() == [1.0, 1.0, 1.0]
    by_name = sj.jit(step, donate_argnames="y", **options)
    with pytest.raises(sj.SpecError, match=r"keyword argument 'y' is donated.*\('w',\)"):
        by_name(model, jnp.ones(3), y=model.w.value)
    assert model.w.value is before
    # A copy is fine.
    assert by_position(model, jnp.copy(model.w.value), y=jnp.ones(3)).tolist() == [2.0] * 3
    assert model.w.value.tolist() == [3.0, 3.0, 3.0]

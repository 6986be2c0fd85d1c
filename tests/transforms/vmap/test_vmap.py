"""statejax vmap against Python loops and jax.vmap: state axes, writes, errors, composition."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statejax as sj
from statejax._transforms.autodiff import grad
from statejax._transforms.vmap import VmapSpec, vmap
from statejax.filters import PathContains


class Linear(sj.Module):
    def __init__(self, n_in: int, n_out: int, batch: int | None = None) -> None:
        lead = () if batch is None else (batch,)
        w = jnp.arange(n_in * n_out, dtype=jnp.float32).reshape(n_in, n_out) / 10
        self.w = sj.ParamState(jnp.broadcast_to(w, (*lead, n_in, n_out)) * 1.0)
        self.b = sj.ParamState(jnp.ones((*lead, n_out)))
        self.calls = sj.ShortTermState(jnp.array(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        self.calls.value += 1
        return x @ self.w.value + self.b.value


def test_plain_vmap_matches_jax_vmap_with_broadcast_states() -> None:
    model = Linear(3, 2)
    x = jnp.arange(12.0).reshape(4, 3)
    out = vmap(lambda x: model(x))(x)
    expected = jax.vmap(lambda x: x @ model.w.value + model.b.value)(x)
    np.testing.assert_allclose(out, expected)
    assert int(model.calls.value) == 1  # broadcast state written with an unbatched value


def test_in_states_mapped_on_axis_0_and_written_back_batched() -> None:
    model = Linear(3, 2, batch=4)
    params = model.states(sj.ParamState)
    x = jnp.arange(12.0).reshape(4, 3)

    @vmap(in_states={0: params})
    def step(x: jax.Array) -> jax.Array:
        y = model(x)
        model.b.value = model.b.value + y
        return y

    w0, b0 = model.w.value, model.b.value
    out = step(x)
    for i in range(4):  # a Python loop over the members
        yi = x[i] @ w0[i] + b0[i]
        np.testing.assert_allclose(out[i], yi, rtol=1e-6)
        np.testing.assert_allclose(model.b.value[i], b0[i] + yi, rtol=1e-6)
    assert model.b.value.shape == (4, 2)


@pytest.mark.parametrize(
    "selector",
    [
        lambda m: m.states(sj.ParamState),  # mapping of states
        lambda m: [m.w, m.b],  # iterable of states
        lambda m: m.states(sj.ParamState).values(),  # any iterable, a view too
        lambda m: (m.w, PathContains("b")),  # states and filters together
        lambda m: sj.ParamState,  # a State type
        lambda m: (sj.ParamState, PathContains("nothing")),  # a tuple of filters
        lambda m: {0: (m.w, m.b)},  # {axis: selector}
    ],
)
def test_selector_forms(selector: Any) -> None:
    model = Linear(3, 2, batch=2)
    x = jnp.ones((2, 3))
    out = vmap(lambda x: model(x), in_states=selector(model))(x)
    expected = jax.vmap(lambda w, b, x: x @ w + b)(model.w.value, model.b.value, x)
    np.testing.assert_allclose(out, expected)


def test_single_state_and_path_filter_selectors() -> None:
    model = Linear(3, 2)
    model.w.value = jnp.stack([model.w.value, 2 * model.w.value])
    x = jnp.ones((2, 3))
    expected = jax.vmap(lambda w, x: x @ w + model.b.value)(model.w.value, x)
    np.testing.assert_allclose(vmap(lambda x: model(x), in_states=model.w)(x), expected)
    np.testing.assert_allclose(
        vmap(lambda m, x: m(x), in_axes=(None, 0), in_states=PathContains("w"))(model, x),
        expected,
    )


def test_other_axis_and_negative_axis() -> None:
    table = sj.State(jnp.arange(6.0).reshape(2, 3))  # batch on axis 1
    out = vmap(lambda x: table.value * x, in_states={1: table})(jnp.arange(3.0))
    np.testing.assert_allclose(out, (table.value * jnp.arange(3.0)).T)
    out_neg = vmap(lambda x: table.value * x, in_states={-1: table})(jnp.arange(3.0))
    np.testing.assert_allclose(out_neg, out)

    @vmap(in_states={-1: table})
    def bump(x: jax.Array) -> None:
        table.value = table.value + x

    bump(jnp.arange(3.0))  # written back on the normalised axis (1)
    np.testing.assert_allclose(table.value, jnp.arange(6.0).reshape(2, 3) + jnp.arange(3.0))


def test_out_states_collects_per_lane_values() -> None:
    last = sj.State(jnp.array(0.0))

    @vmap(out_states=last)
    def f(x: jax.Array) -> jax.Array:
        last.value = x * 2
        return x

    f(jnp.arange(3.0))
    np.testing.assert_allclose(last.value, [0.0, 2.0, 4.0])
    col = sj.State(jnp.zeros(2))
    vmap(lambda x: setattr(col, "value", jnp.full(2, x)), out_states={1: col})(jnp.arange(3.0))
    np.testing.assert_allclose(col.value, np.stack([np.full(2, x) for x in range(3)], axis=1))


def test_writing_batched_value_into_broadcast_state_is_batch_axis_error() -> None:
    model = Linear(3, 2)
    x = jnp.ones((4, 3))
    before = model.b.value

    def f(x: jax.Array) -> jax.Array:
        model.b.value = model.b.value + x[:2]
        return x

    with pytest.raises(sj.BatchAxisError, match=r"ParamState Linear\.b .*broadcast"):
        vmap(f)(x)
    np.testing.assert_array_equal(model.b.value, before)  # atomic: nothing changed
    # named by its path inside the module when the module is an argument
    with pytest.raises(sj.BatchAxisError, match=r"ParamState at path \('b',\)"):
        vmap(lambda m, x: f(x), in_axes=(None, 0))(model, x)


def test_mapped_state_with_wrong_size_names_state_axis_and_sizes() -> None:
    model = Linear(3, 2, batch=4)
    params = model.states(sj.ParamState)
    with pytest.raises(
        sj.BatchAxisError,
        match=r"ParamState at path \('w',\).* mapped on axis 0, which has size 4, but the batch "
        r"size is 3",
    ):
        vmap(lambda x: model(x), in_states={0: params})(jnp.ones((3, 3)))
    with pytest.raises(sj.BatchAxisError, match=r"Linear\.b .*axis 2.*only 2 axes"):
        vmap(lambda x: model(x), in_states={2: model.b})(jnp.ones((3, 3)))


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (
            {"in_states": {1.5: sj.ParamState}},
            r"in_states: key 1\.5 \(float\) is not an integer axis",
        ),
        (
            {"in_states": {True: sj.ParamState}},
            r"in_states: key True \(bool\) is not an integer axis",
        ),
        ({"in_states": {0: sj.ParamState, "a": sj.State}}, r"key 'a' \(str\) is not an integer"),
        ({"out_states": {"a": 3}}, r"out_states: the mapping maps 'a' to int 3, which is not a St"),
        ({"in_states": 3}, r"in_states: 3 \(int\) is neither a State, a filter"),
        ({"in_states": {0: 3}}, r"in_states: in_states\[0\]: 3 \(int\) is neither a State"),
        ({"in_states": {0: [{1: sj.State(0)}]}}, r"in_states\[0\]: .* mapping nested inside a"),
        ({"in_states": []}, r"in_states: \[\] selects nothing"),
        ({"in_states": Linear(3, 2)}, r"is neither a State.* pass module\.states\(\)"),
        ({"in_states": jnp.zeros(2)}, r"in_states: Array\(.*\(ArrayImpl\) is neither a State"),
        ({"axis_size": -2}, r"axis_size: Input should be greater than or equal to 0"),
        ({"in_axis": 0}, r"unknown option 'in_axis'. Did you mean 'in_axes'\?"),
        ({"in_axes": 1.0}, r"in_axes: 1\.0 \(float\) is not an axis"),
    ],
)
def test_spec_errors_at_decoration(options: dict[str, Any], pattern: str) -> None:
    with pytest.raises(sj.SpecError, match=pattern):
        vmap(lambda x: x, **options)


def test_state_under_two_axes_is_spec_error() -> None:
    model = Linear(3, 2)
    with pytest.raises(sj.SpecError, match=r"Linear\.w .*selected under axes 0 and 1"):
        vmap(lambda x: x, in_states={0: model.w, 1: [model.w, model.b]})
    params = model.states(sj.ParamState)
    with pytest.raises(sj.SpecError, match=r"path \('w',\).*under axes 0 and 1"):
        vmap(lambda x: x, in_states={0: params, 1: model.w})
    # two filters meeting on one state: found when the function first runs
    f = vmap(lambda x: model(x), in_states={0: sj.ParamState, 1: PathContains("w")})
    with pytest.raises(sj.SpecError, match=r"Linear\.w .*under axes 0 and 1"):
        f(jnp.ones((2, 3)))


def test_selector_matching_no_touched_state_is_spec_error() -> None:
    model = Linear(3, 2)
    other = sj.HiddenState(jnp.zeros(3))
    f = vmap(lambda x: model(x), in_states={0: other})
    with pytest.raises(sj.SpecError, match=r"in_states\[0\] = HiddenState .*matches none"):
        f(jnp.ones((2, 3)))
    g = vmap(lambda x: model(x), out_states=sj.HiddenState)
    with pytest.raises(sj.SpecError, match=r"out_states\[0\] = OfType\(HiddenState\) matches"):
        g(jnp.ones((2, 3)))
    assert int(model.calls.value) == 0  # nothing merged


def test_keyword_arguments_follow_in_axes() -> None:
    f = vmap(lambda x, *, y: x * y)
    np.testing.assert_allclose(f(jnp.arange(3.0), y=jnp.arange(3.0)), jnp.arange(3.0) ** 2)
    g = vmap(lambda x, *, y: x * y, in_axes=(0,))  # a tuple: keywords on axis 0
    np.testing.assert_allclose(g(jnp.arange(3.0), y=jnp.arange(3.0)), jnp.arange(3.0) ** 2)
    h = vmap(lambda x, *, y: x * y.sum(), in_axes=1)  # an int applies to keywords too
    ys = jnp.ones((2, 3))
    np.testing.assert_allclose(h(jnp.ones((2, 3)), y=ys), jnp.full((3, 2), 2.0))


def test_in_axes_none_and_axis_size() -> None:
    acc = sj.State(jnp.array(1.0))
    out = vmap(lambda x: x + acc.value, in_axes=None, axis_size=3)(jnp.array(2.0))
    np.testing.assert_allclose(out, [3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match=r"in_axes .* has 2 entries but the function got 1"):
        vmap(lambda x: x, in_axes=(0, 0))(jnp.ones(2))


def test_collectives_over_axis_name() -> None:
    scale = sj.State(jnp.array(2.0))
    f = vmap(lambda x: scale.value * x / jax.lax.psum(x, "batch"), axis_name="batch")
    x = jnp.arange(1.0, 5.0)
    np.testing.assert_allclose(f(x), 2 * x / x.sum(), rtol=1e-6)


def test_jit_of_vmap_threads_states_and_does_not_retrace() -> None:
    model = Linear(3, 2, batch=3)
    params = model.states(sj.ParamState)
    traces = []

    @sj.jit
    @vmap(in_states={0: params})
    def step(x: jax.Array) -> jax.Array:
        traces.append(1)
        y = model(x)
        model.b.value = model.b.value - 0.1 * y
        return y

    x = jnp.ones((3, 3))
    b = model.b.value
    w = model.w.value
    for i in range(3):
        y = jax.vmap(lambda w, b, x: x @ w + b)(w, b, x)
        np.testing.assert_allclose(step(x), y, rtol=1e-6)
        b = b - 0.1 * y
        np.testing.assert_allclose(model.b.value, b, rtol=1e-6)
        if i == 0:
            first = len(traces)
    assert int(model.calls.value) == 3
    assert len(traces) == first  # cached calls run no Python


def test_per_example_gradients_vmap_of_grad() -> None:
    model = Linear(3, 2)
    params = model.states(sj.ParamState)
    xs, ys = jnp.arange(12.0).reshape(4, 3), jnp.ones((4, 2))

    def loss(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.sum((model(x) - y) ** 2)

    grads = vmap(grad(loss, params))(xs, ys)

    def pure_loss(w: jax.Array, b: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.sum((x @ w + b - y) ** 2)

    gw, gb = jax.vmap(jax.grad(pure_loss, (0, 1)), in_axes=(None, None, 0, 0))(
        model.w.value, model.b.value, xs, ys
    )
    np.testing.assert_allclose(grads[("w",)], gw, rtol=1e-5)
    np.testing.assert_allclose(grads[("b",)], gb, rtol=1e-5)
    jitted = sj.jit(vmap(grad(loss, params)))(xs, ys)
    np.testing.assert_allclose(jitted[("w",)], gw, rtol=1e-5)


def test_grad_of_vmap() -> None:
    model = Linear(3, 2)
    xs = jnp.arange(12.0).reshape(4, 3)

    def total(xs: jax.Array) -> jax.Array:
        return vmap(lambda x: jnp.sum(model(x) ** 2))(xs).sum()

    g = grad(total, model.w)(xs)
    expected = jax.grad(lambda w: jnp.sum((xs @ w + model.b.value) ** 2))(model.w.value)
    np.testing.assert_allclose(g, expected, rtol=1e-5)


def test_nested_vmap() -> None:
    table = sj.State(jnp.arange(6.0).reshape(2, 3))
    count = sj.State(jnp.array(0))

    @vmap(in_states=table)  # outer lanes: rows
    def rows(x: jax.Array) -> jax.Array:
        count.value = count.value + 1

        @vmap(in_states=table)  # inner lanes: the row's entries
        def entries(x: jax.Array) -> jax.Array:
            table.value = table.value * x
            return table.value + 1

        return entries(x)

    x = jnp.arange(6.0).reshape(2, 3)
    out = rows(x)
    expected = np.array(
        [[np.arange(6.0).reshape(2, 3)[i, j] * x[i, j] for j in range(3)] for i in range(2)]
    )
    np.testing.assert_allclose(out, expected + 1)
    np.testing.assert_allclose(table.value, expected)
    assert int(count.value) == 1


def test_spec_is_frozen_hashable_and_exports_a_schema() -> None:
    spec = VmapSpec(in_states={0: sj.ParamState}, axis_name="i")
    assert hash(spec) == hash(VmapSpec(in_states={0: sj.ParamState}, axis_name="i"))
    assert "in_states" in VmapSpec.model_json_schema()["properties"]


def test_registered_in_the_registry() -> None:
    assert sj.transform.vmap is vmap
    from statejax._transforms.vmap import map as sj_map

    assert sj.transform.map is sj_map


def test_batch_axis_error_when_the_function_returns_nothing() -> None:
    first = sj.State(jnp.array(0.0))
    second = sj.State(jnp.array(0.0), tag="second")

    def f(x: jax.Array) -> None:
        first.value = jnp.array(1.0)  # unbatched: fine
        second.value = x  # batched: not fine

    with pytest.raises(sj.BatchAxisError, match=r"State tagged 'second' .*broadcast"):
        vmap(f)(jnp.arange(3.0))
    vmap(lambda x: setattr(first, "value", jnp.array(5.0)))(jnp.arange(3.0))
    assert float(first.value) == 5.0


def test_grad_of_vmap_with_mapped_states() -> None:
    w = sj.ParamState(jnp.arange(6.0).reshape(3, 2))
    x = jnp.ones((3, 2))

    def total(x: jax.Array) -> jax.Array:
        return vmap(lambda x: jnp.sum(w.value * x) ** 2, in_states=w)(x).sum()

    expected = jax.grad(lambda wv: jax.vmap(lambda wi, xi: jnp.sum(wi * xi) ** 2)(wv, x).sum())(
        w.value
    )
    np.testing.assert_allclose(grad(total, w)(x), expected, rtol=1e-6)


def test_negative_out_states_axis_counts_from_the_end_of_the_batched_value() -> None:
    col = sj.State(jnp.zeros(2))  # only written back batched: its value gains a batch axis

    @vmap(out_states={-1: col})
    def fill(x: jax.Array) -> None:
        col.value = jnp.stack([x, 2 * x])

    xs = jnp.arange(3.0)
    fill(xs)
    np.testing.assert_allclose(col.value, np.array([[x, 2 * x] for x in xs.tolist()]).T)
    # Mapped in on 0 and written back on -1 (axis 1 of the batched value) would move the
    # batch axis, and the next call would map the state on the wrong axis: refused, as
    # BrainState's vmap2 refuses it, with no state changed.
    table = sj.State(jnp.arange(6.0).reshape(3, 2))

    @vmap(in_states={0: table}, out_states={-1: table})
    def scale(x: jax.Array) -> None:
        table.value = table.value * x

    before = np.asarray(table.value)
    with pytest.raises(sj.BatchAxisError, match="would move its batch axis"):
        scale(xs)
    np.testing.assert_array_equal(table.value, before)


def test_batch_size_from_mapped_states_alone() -> None:
    model = Linear(3, 2, batch=4)
    x = jnp.arange(3.0)
    out = vmap(lambda: model(x), in_states=model.states(sj.ParamState))()
    for i in range(4):
        np.testing.assert_allclose(out[i], x @ model.w.value[i] + model.b.value[i], rtol=1e-6)
    model.b.value = jnp.zeros((5, 2))
    with pytest.raises(
        sj.BatchAxisError,
        match=r"ParamState at path \('b',\) \(float32\[5,2\]\) is mapped on axis 0, which has "
        r"size 5, but the batch size is 4 \(from axis 0 of ParamState at path \('w',\)",
    ):
        vmap(lambda: model(x), in_states=model.states(sj.ParamState))()


def test_no_batch_size_at_all_is_a_clear_error() -> None:
    model = Linear(3, 2)
    rng = sj.RandomState(0)
    for f in (lambda: model(jnp.ones(3)), lambda: rng.normal()):
        with pytest.raises(ValueError, match=r"cannot tell the batch size: no argument and no st"):
            vmap(f)()
    assert int(model.calls.value) == 0


def test_batched_write_into_broadcast_state_under_jit_names_the_state() -> None:
    model = Linear(3, 2)

    @sj.jit
    @vmap
    def f(x: jax.Array) -> jax.Array:
        model.b.value = model.b.value + x
        return x

    with pytest.raises(sj.BatchAxisError, match=r"into ParamState Linear\.b .*which is broadcast"):
        f(jnp.ones((3, 2)))
    np.testing.assert_array_equal(model.b.value, jnp.ones(2))


def test_out_states_axis_beyond_the_batched_value_names_the_state() -> None:
    col = sj.State(jnp.zeros(2), tag="col")
    f = vmap(lambda x: setattr(col, "value", col.value + x), out_states={3: col})
    with pytest.raises(
        sj.BatchAxisError,
        match=r"State tagged 'col' \(float32\[2\]\) is written back batched on axis 3, but the "
        r"lanes' value stacked has only 2 axes \(shape \(4, 2\)\)\. .* from -2 to 1",
    ):
        f(jnp.ones(4))
    np.testing.assert_array_equal(col.value, jnp.zeros(2))


def test_batched_write_error_with_a_split_key_in_the_lanes() -> None:
    rng = sj.RandomState(0)
    noise = sj.State(jnp.array(0.0), tag="noise")

    def f(x: jax.Array) -> jax.Array:
        noise.value = rng.normal()  # per-lane draws: batched
        return x

    with pytest.raises(sj.BatchAxisError, match=r"State tagged 'noise' .*which is broadcast"):
        vmap(f)(jnp.zeros(3))
    out = vmap(f, out_states=noise)(jnp.zeros(3))
    np.testing.assert_array_equal(out, jnp.zeros(3))
    assert len(set(np.asarray(noise.value).tolist())) == 3


def test_batched_write_found_without_the_index_in_jax_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import statejax._transforms._lanes as lanes_module

    # If JAX's error stops naming the output index, each broadcast write is traced alone.
    monkeypatch.setattr(lanes_module, "_OUT_AXIS_ERROR", re.compile(r"(?!)(\d)"))
    first = sj.State(jnp.array(0.0), tag="first")
    second = sj.State(jnp.array(0.0), tag="second")

    def f(x: jax.Array) -> None:
        first.value = jnp.array(1.0)
        second.value = x

    with pytest.raises(sj.BatchAxisError, match=r"State tagged 'second' .*broadcast"):
        vmap(f)(jnp.arange(3.0))


def test_batched_write_named_with_an_axis_name() -> None:
    # With axis_name, JAX's message has no output index ("vmap has mapped output").
    total = sj.State(jnp.array(0.0), tag="total")

    def f(x: jax.Array) -> jax.Array:
        total.value = total.value + x
        return x

    with pytest.raises(sj.BatchAxisError, match=r"State tagged 'total' .*broadcast"):
        vmap(f, axis_name="b")(jnp.arange(3.0))
    assert float(total.value) == 0.0


# --- a negative in_states axis counts from the current rank ---------------------------


@pytest.mark.parametrize("jitted", [False, True])
def test_negative_in_states_axis_follows_the_current_rank(jitted: bool) -> None:
    table = sj.State(jnp.arange(12.0).reshape(3, 4))
    f: Callable[[], jax.Array] = sj.vmap(lambda: table.value.sum(), in_states={-1: table})
    if jitted:
        f = sj.jit(f)
    np.testing.assert_allclose(f(), jax.vmap(jnp.sum, in_axes=-1)(table.value))
    for shape in [(2, 3, 4), (2, 3, 4), (5, 4), (3, 4)]:  # rank changes, then back
        table.value = jnp.arange(float(np.prod(shape))).reshape(shape)
        out = f()
        assert out.shape == (shape[-1],)
        np.testing.assert_allclose(out, jax.vmap(jnp.sum, in_axes=-1)(table.value))


@pytest.mark.parametrize("jitted", [False, True])
def test_negative_axis_write_back_follows_the_current_rank(jitted: bool) -> None:
    table = sj.State(jnp.arange(12.0).reshape(3, 4))

    def bump() -> jax.Array:
        table.value = table.value * 2.0 + 1.0
        return table.value.sum()

    f: Callable[[], jax.Array] = sj.vmap(bump, in_states={-1: table})
    if jitted:
        f = sj.jit(f)
    f()
    table.value = start = jnp.arange(24.0).reshape(2, 3, 4)
    out = f()
    np.testing.assert_allclose(table.value, start * 2.0 + 1.0)  # same axis, not transposed
    np.testing.assert_allclose(out, jax.vmap(lambda t: (t * 2.0 + 1.0).sum(), -1)(start))


def test_a_batched_write_into_a_stacked_broadcast_state_suggests_in_states() -> None:
    # An ensemble's state (one row per lane) that the selectors forgot: out_states would
    # stack it a second time, so the error says to map it instead.
    rows = sj.State(jnp.zeros((4, 3)), name="rows")

    def f(x: jax.Array) -> jax.Array:
        rows.value = rows.value + x
        return x

    with pytest.raises(
        sj.BatchAxisError,
        match=r"into State 'rows' .*which is broadcast.*already has the batch size 4 on axis 0 "
        r"\(value: float32\[4,3\]\).*second time \(float32\[4,3\] -> float32\[4,4,3\]\)\. Map it "
        r"with in_states=\{0: state\}",
    ):
        vmap(f)(jnp.ones((4, 3)))
    assert rows.value.tolist() == [[0.0] * 3] * 4
    vmap(f, in_states={0: rows})(jnp.ones((4, 3)))  # the fix
    assert rows.value.shape == (4, 3)


def test_out_states_never_stacks_a_state_twice() -> None:
    count = sj.State(jnp.array(0.0), name="count")

    @vmap(out_states={0: count})
    def tick(x: jax.Array) -> jax.Array:
        count.value = count.value + x
        return x

    tick(jnp.arange(3.0))  # a shared value becomes one per lane: the point of out_states
    assert count.value.tolist() == [0.0, 1.0, 2.0]
    # Called again, every lane would read the whole stacked value and store it back
    # stacked: (3,) -> (3, 3). Refused, and nothing changes.
    with pytest.raises(
        sj.BatchAxisError,
        match=r"State 'count' .*in out_states \(axis 0\) but not in in_states.*batch size 3 on "
        r"axis 0 \(value: float32\[3\]\).*second batch axis \(float32\[3,3\]\).*No state was "
        r"changed.*in_states=\{0: state\}",
    ):
        tick(jnp.arange(3.0))
    assert count.value.tolist() == [0.0, 1.0, 2.0]
    # A lane that writes a fresh value (an initialiser) keeps working, call after call.
    hidden = sj.State(jnp.zeros(2), name="hidden")
    init = vmap(lambda x: setattr(hidden, "value", jnp.full(2, x)), out_states={0: hidden})
    for _ in range(2):
        init(jnp.arange(3.0))
        assert hidden.value.shape == (3, 2)


def test_python_branch_on_an_unmapped_state_runs_as_in_jax_vmap() -> None:
    # jax.vmap runs it with the flag closed over; discovery gives the flag its value too.
    flag = sj.State(True)
    f = vmap(lambda x: x * 2.0 if flag.value else x + 1.0)
    np.testing.assert_allclose(f(jnp.arange(4.0)), [0.0, 2.0, 4.0, 6.0])
    flag.value = False
    np.testing.assert_allclose(f(jnp.arange(4.0)), [1.0, 2.0, 3.0, 4.0])
    # The same under grad, for a state it does not differentiate.
    w = sj.ParamState(jnp.array(2.0))
    assert float(grad(lambda: w.value**2 if flag.value else w.value * 3.0, w)()) == 3.0
    # A mapped state is a tracer there, as in jax.vmap: the branch is JAX's error.
    mapped = sj.State(jnp.array([True, False]))
    with pytest.raises(jax.errors.TracerBoolConversionError):
        vmap(lambda x: x if mapped.value else -x, in_states=mapped)(jnp.ones(2))


def test_a_state_mapped_in_and_out_on_different_axes_is_refused() -> None:
    s = sj.State(jnp.arange(12.0).reshape(4, 3))

    def f(x: jax.Array) -> jax.Array:
        s.value = s.value + x
        return x

    with pytest.raises(
        sj.BatchAxisError, match=r"statejax\.vmap\(.*f\): State .* input axis 0 .* axis 1 "
    ):
        vmap(f, in_states={0: s}, out_states={1: s})(jnp.ones(4))
    np.testing.assert_array_equal(s.value, jnp.arange(12.0).reshape(4, 3))

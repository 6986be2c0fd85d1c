"""`pmap`, `pmap2` and `pmap2_new_states` on 8 simulated CPU devices.

Run by tests/transforms/pmap/test_pmap.py in a subprocess (XLA_FLAGS must be set before JAX
starts). Each check compares with `jax.pmap` / `jax.vmap` / one device and prints
`OK <check>`; each error path asserts its message. Any failure raises.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import numpy as np

import statejax as sj
from statejax import BatchAxisError, SpecError
from statejax.transform import StatefulMapping, pmap, pmap2, pmap2_new_states, vmap

N = 8
assert jax.device_count() == N, jax.devices()
RTOL, ATOL = 1e-5, 1e-6


def close(a: Any, b: Any, what: str) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL, err_msg=what)


def raises(exc: type[BaseException], fn: Callable[[], Any], *fragments: str) -> str:
    try:
        fn()
    except exc as e:
        msg = str(e)
        for fragment in fragments:
            assert fragment in msg, f"{fragment!r} not in: {msg}"
        return msg
    raise AssertionError(f"{exc.__name__} not raised")


def ok(name: str) -> None:
    print("OK", name, flush=True)


class Net(sj.Module):
    def __init__(self) -> None:
        self.w = sj.ParamState(jnp.arange(6.0).reshape(3, 2) / 10)
        self.count = sj.ShortTermState(jnp.array(0.0))


X = jnp.arange(N * 3.0).reshape(N, 3) / 7


def check_collectives_and_states() -> None:
    """Replicated reads, in_states split per device, psum/pmean, equal to jax.pmap."""
    net = Net()
    seen = sj.State(jnp.zeros(N))

    @pmap(axis_name="d", in_states={0: seen})
    def step(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        seen.value = seen.value + x.sum()
        y = x @ net.w.value
        return jax.lax.psum(y, "d"), jax.lax.pmean(y, "d")

    w = net.w.value

    def ref(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        y = x @ w
        return jax.lax.psum(y, "d"), jax.lax.pmean(y, "d")

    got, want = step(X), jax.pmap(ref, axis_name="d")(X)
    close(got[0], want[0], "psum")
    close(got[1], want[1], "pmean")
    close(seen.value, X.sum(1), "in_states written back per device")
    assert seen.value.shape == (N,)
    close(net.w.value, w, "replicated read unchanged")
    ok("pmap_collectives_equal_jax_pmap")


def check_out_states_stacked() -> None:
    """A replicated state written with a per-device value comes back stacked (out_states),
    as BrainState's test_pmap2_stateful_broadcast_in_batched_out; equal to jax.vmap."""
    param = sj.ParamState(jnp.ones(4))
    deltas = jnp.arange(N * 4.0).reshape(N, 4)

    @pmap(axis_name="d", out_states={0: param})
    def update(delta: jax.Array) -> jax.Array:
        param.value = param.value + delta
        return param.value

    out = update(deltas)
    want = jax.vmap(lambda d: jnp.ones(4) + d)(deltas)
    close(out, want, "result")
    close(param.value, want, "state stacked on axis 0")
    # A reduced value may be written into a replicated state.
    total = sj.State(jnp.zeros(()))
    pmap(lambda x: total.__setattr__("value", jax.lax.psum(x.sum(), "d")), "d")(X)
    close(total.value, X.sum(), "psum written into a replicated state")
    ok("pmap_out_states_stacked")


def check_axes() -> None:
    """in_axes (None, 1, negative), out_axes 1, keyword arguments, a state on axis 1."""
    a = jnp.arange(3 * N * 2.0).reshape(3, N, 2)
    b = jnp.arange(2.0)
    s = sj.State(jnp.arange(2 * N * 1.0).reshape(2, N))

    def f(a: jax.Array, b: jax.Array, *, c: jax.Array) -> jax.Array:
        s.value = s.value * 2
        return a @ b + c + s.value.sum()

    c = jnp.arange(N * 1.0)
    got = pmap(f, "d", in_axes=(1, None), out_axes=0, in_states={1: s})(a, b, c=c)
    s0 = jnp.arange(2 * N * 1.0).reshape(2, N)
    want = jax.vmap(lambda a, c, s: a @ b + c + (s * 2).sum(), in_axes=(1, 0, 1))(a, c, s0)
    close(got, want, "in_axes (1, None), keyword mapped on 0, state on axis 1")
    close(s.value, s0 * 2, "state written back on axis 1")
    got = pmap(lambda a: a * 2, in_axes=-2, out_axes=1)(a)
    close(got, jax.vmap(lambda a: a * 2, in_axes=-2, out_axes=1)(a), "negative in_axes, out_axes 1")
    ok("pmap_axes_equal_jax_vmap")


def check_cached_no_retrace() -> None:
    net = Net()
    count = sj.State(jnp.zeros(N))
    traces: list[int] = []

    @pmap(axis_name="d", in_states={0: count})
    def step(x: jax.Array) -> jax.Array:
        traces.append(1)
        count.value = count.value + x.sum()
        return x @ net.w.value

    step(X)
    first = len(traces)
    for _ in range(3):
        step(X)
    assert len(traces) == first, (first, len(traces))
    close(count.value, 4 * X.sum(1), "count accumulated per device")
    ok(f"pmap_cached traces={first}")


def check_training_equals_one_device() -> None:
    """Data-parallel SGD: grads pmean'ed over devices equal one device's full batch."""

    def make() -> tuple[Net, Any]:
        net = Net()
        return net, net.states(sj.ParamState)

    xs = jax.random.normal(jax.random.PRNGKey(1), (N * 2, 3))
    ys = jax.random.normal(jax.random.PRNGKey(2), (N * 2, 2))

    def step_fn(net: Net, params: Any, reduce: Callable[[Any], Any]) -> Callable[..., Any]:
        def step(x: jax.Array, y: jax.Array) -> jax.Array:
            def loss(x: jax.Array, y: jax.Array) -> jax.Array:
                return jnp.mean((x @ net.w.value - y) ** 2)

            grads, value = sj.grad(loss, params, return_value=True)(x, y)
            grads, value = reduce(grads), reduce(value)
            for path, g in grads.items():
                params[path].value = params[path].value - 0.1 * g
            return value

        return step

    one, p1 = make()
    single = sj.jit(step_fn(one, p1, lambda t: t))
    many, pn = make()
    parallel = pmap(step_fn(many, pn, lambda t: jax.lax.pmean(t, "d")), "d")
    for _ in range(3):
        l1 = single(xs, ys)
        ln = parallel(xs.reshape(N, 2, 3), ys.reshape(N, 2, 2))
        close(ln, jnp.full(N, l1), "loss")
    close(many.w.value, one.w.value, "parameters after 3 steps")
    ok("pmap_data_parallel_equals_one_device")


def check_random_per_device() -> None:
    key = sj.random.RandomState(jax.random.PRNGKey(0))
    before = key.value

    @pmap(axis_name="d", axis_size=N)
    def draw() -> jax.Array:
        return key.normal(size=(2,))

    out = draw()
    assert out.shape == (N, 2)
    assert len({tuple(np.asarray(r).round(6)) for r in out}) == N, out
    assert not bool(jnp.all(jax.random.key_data(key.value) == jax.random.key_data(before)))
    same = pmap(lambda: key.normal(size=(2,)), axis_size=N, split_keys=False)()
    close(same, jnp.broadcast_to(same[0], same.shape), "split_keys=False: one key")
    ok("pmap_random_split_per_device")


def check_composition() -> None:
    """jit(pmap), pmap(vmap), pmap2(vmap) (BrainState's test_pmap2_of_vmap2)."""
    s = sj.State(jnp.zeros(()))

    @sj.jit
    def outer(x: jax.Array) -> jax.Array:
        return pmap(lambda x: x * 2 + s.value, "d")(x)

    close(outer(X), X * 2, "jit(pmap)")
    per = sj.State(jnp.zeros(N))
    total = sj.State(jnp.zeros(()))
    traces: list[int] = []

    @sj.jit
    def jitted(x: jax.Array) -> jax.Array:
        def inner(x: jax.Array) -> jax.Array:
            traces.append(1)
            per.value = per.value + x
            total.value = total.value + jax.lax.psum(x, "d")
            return x * 2

        return pmap(inner, "d", in_states=per)(x)

    counts = []
    for _ in range(4):
        close(jitted(jnp.arange(N * 1.0)), jnp.arange(N) * 2.0, "jit(pmap) writing states")
        counts.append(len(traces))
    assert counts[1] == counts[2] == counts[3], counts  # call 2 retraces once (placement)
    close(per.value, 4 * jnp.arange(N * 1.0), "jit(pmap) in_states")
    close(total.value, 4 * jnp.arange(N * 1.0).sum(), "jit(pmap) replicated psum")
    close(sj.vmap(lambda y: pmap(lambda x: x * 2)(y))(jnp.ones((3, N))), 2.0, "vmap(pmap)")
    g = sj.grad(lambda x: pmap(lambda y: (y**2).sum())(x).sum())(X)
    close(g, 2 * X, "grad(pmap)")
    last = jax.devices()[4:]
    out = pmap(lambda x: x * 2, devices=last)(jnp.ones(4))
    close(out, jnp.full(4, 2.0), "devices=")
    assert out.sharding.device_set == set(last), out.sharding
    with jax.disable_jit():
        close(pmap(lambda x: jax.lax.psum(x, "d"), "d")(X), jnp.tile(X.sum(0), (N, 1)), "eager")
    res = pmap2(lambda row: vmap(lambda x: x * 2.0)(row), in_axes=0)(jnp.ones((N, 3)))
    close(res, jnp.full((N, 3), 2.0), "pmap2(vmap)")
    ok("pmap_composition")


def check_exception_leaves_states() -> None:
    s = sj.State(jnp.arange(N * 1.0))

    @pmap(axis_name="d", in_states=s)
    def boom(x: jax.Array) -> jax.Array:
        s.value = s.value + 1
        raise RuntimeError("boom")

    raises(RuntimeError, lambda: boom(X), "boom")
    close(s.value, jnp.arange(N * 1.0), "untouched after an exception")
    assert not isinstance(s.value, jax.core.Tracer)
    ok("pmap_exception_leaves_states")


def check_pmap2_and_new_states() -> None:
    param = sj.ParamState(jnp.ones((4,)))
    mapped = pmap2(
        lambda d: param.__setattr__("value", param.value + d) or param.value,
        axis_name="d",
        state_out_axes={0: sj.ParamState},
    )
    assert isinstance(mapped, StatefulMapping)
    deltas = jnp.arange(N * 4.0).reshape(N, 4)
    close(mapped(deltas), 1 + deltas, "pmap2 result")
    close(param.value, 1 + deltas, "pmap2 state_out_axes stacked")
    decorator = pmap2(in_axes=0, out_axes=0)
    assert isinstance(decorator, functools.partial)
    assert isinstance(decorator(lambda x: x + 1.0), StatefulMapping)
    ins = sj.State(jnp.arange(N * 1.0))
    close(pmap2(lambda: ins.value * 2, state_in_axes=ins)(), jnp.arange(N) * 2.0, "in")

    class Ens(sj.Module):
        def init_state(self, k: int) -> None:
            self.w = sj.ParamState(sj.random.randn(k))

    m = Ens()
    new = pmap2_new_states(m, init_kwargs={"k": 4}, state_tag="ens")
    assert m.w.value.shape == (N, 4) and new == {0: [m.w]} and "ens" in m.w.tag, new
    assert not bool(jnp.allclose(m.w.value[0], m.w.value[1]))

    class Counter(sj.Module):
        def init_state(self) -> None:
            self.count = sj.ShortTermState(jnp.zeros(()))

    c = Counter()
    pmap2_new_states(c, {}, axis_size=4)
    assert c.count.value.shape == (4,)
    assert pmap2_new_states(sj.Module(), {}) == {}  # no empty axis, as vmap2_new_states

    class Routed(sj.Module):
        def init_state(self) -> None:
            self.w = sj.ParamState(sj.random.randn(3))
            self.scale = sj.ShortTermState(jnp.ones(2))
            self.h = sj.State(jnp.zeros(()))

    r = Routed()
    groups = pmap2_new_states(
        r, {}, axis_size=4, state_out_axes={1: sj.ParamState, None: sj.ShortTermState}
    )
    assert groups == {None: [r.scale], 1: [r.w], 0: [r.h]}, groups
    assert r.w.value.shape == (3, 4) and r.scale.value.shape == (2,) and r.h.value.shape == (4,)
    assert not bool(jnp.allclose(r.w.value[:, 0], r.w.value[:, 1]))  # one draw per device
    raises(
        SpecError,
        lambda: pmap2_new_states(Routed(), {}, state_out_axes={1: sj.filters.WithTag("x")}),
        "matches none of the states",
    )
    pm = pmap2(lambda: ins.value * 2, state_in_axes={None: sj.ParamState, 0: ins})
    close(pm(), jnp.arange(N) * 2.0, "{None: ...} accepted, as vmap2")
    ok("pmap2_and_pmap2_new_states")


def check_errors() -> None:
    net = Net()

    def varying(net: Net, x: jax.Array) -> jax.Array:
        net.count.value = net.count.value + x.sum()
        return x

    before = net.count.value
    raises(
        BatchAxisError,
        lambda: pmap(varying, "d", in_axes=(None, 0))(net, X),
        "statejax.pmap(check_errors.<locals>.varying)",
        "differs across devices",
        "('count',)",
        "out_states={0: state}",
        "jax.lax.pmean(value, 'd')",
    )
    close(net.count.value, before, "untouched after BatchAxisError")
    raises(
        BatchAxisError,
        lambda: pmap(varying, in_axes=(None, 0))(net, X),
        "give pmap an axis_name, then jax.lax.pmean(value, axis_name)",
    )
    raises(
        ValueError,
        lambda: pmap(lambda x: x)(jnp.ones((N + 1, 2))),
        "the mapped axis has size 9",
        "8 local devices are available",
    )
    raises(
        ValueError,
        lambda: pmap(lambda a, b: a + b)(X, jnp.ones(4)),
        "pmap got inconsistent sizes for array axes to be mapped: [4, 8]",
    )
    raises(
        ValueError,
        lambda: pmap(lambda a: a, in_axes=1)(jnp.ones(N)),
        "pmap was requested to map its argument along axis 1",
        "but is only 1",
    )
    raises(
        ValueError,
        lambda: pmap(lambda x: pmap(lambda y: y * 2)(x))(jnp.ones((2, 4))),
        "pmap inside another pmap or shard_map is not supported",
    )
    small = sj.State(jnp.zeros(4))
    raises(
        BatchAxisError,
        lambda: pmap(lambda x: x + small.value.sum(), in_states=small)(X),
        "is mapped on axis 0, which has size 4",
        "the batch size is 8",
    )
    raises(
        BatchAxisError,
        lambda: pmap(lambda: small.value, in_states={1: small}, axis_size=4)(),
        "is mapped on axis 1, but its value has only 1 axes",
    )
    raises(
        ValueError,
        lambda: pmap(lambda: jnp.ones(2))(),
        "cannot tell the batch size",
        "Pass axis_size=",
    )
    raises(
        BatchAxisError,
        lambda: pmap(lambda x: x, axis_size=4)(X),
        "axis_size=4 conflicts with the mapped size 8",
    )
    raises(
        ValueError,
        lambda: pmap(lambda x: x, devices=jax.devices()[:2])(X),
        "the mapped axis has size 8, but devices lists 2 devices",
    )
    raises(
        ValueError,
        lambda: pmap(lambda x: jax.lax.pmean(x, "d") + x, "d", out_axes=None)(X),
        "out_axes is None for an output that differs across devices",
    )
    raises(
        ValueError,
        lambda: pmap(lambda x: x, in_axes=(0, None))(X),
        "in_axes (0, None) has 2 entries but the function got 1",
    )
    other = sj.State(jnp.zeros(N))
    raises(
        SpecError,
        lambda: pmap(lambda x: x + net.count.value, in_states={0: other})(X),
        "in_states[0] = State (float32[8]) matches none of the states the function touches",
    )
    raises(
        BatchAxisError,
        lambda: pmap(
            lambda: other.__setattr__("value", other.value + 1), out_states={2: other}, axis_size=N
        )(),
        "is written back batched on axis 2, but the lanes' value stacked has only 2 axes",
    )
    raises(
        ValueError,
        lambda: pmap(lambda x: x, out_axes=2)(X),
        "out_axes=2 puts the device axis outside a result of 1 axes per device; give an "
        "axis from -2 to 1",
    )
    # Decoration-time errors.
    raises(SpecError, lambda: pmap(lambda x: x, in_states={0.5: other}), "0.5", "integer axis")
    raises(SpecError, lambda: pmap(lambda x: x, in_states=3), "is neither a State, a filter")
    raises(SpecError, lambda: pmap(lambda x: x, devices=["cpu"]), "'cpu' (str) is not a jax.Device")
    raises(SpecError, lambda: pmap(lambda x: x, devices=[]), "devices is empty")
    raises(SpecError, lambda: pmap(lambda x: x, devices=[jax.devices()[0]] * 2), "device twice")
    raises(SpecError, lambda: pmap(lambda x: x, devices=3), "3 (int) is not a sequence of devices")
    raises(SpecError, lambda: pmap(lambda x: x, backend="nope"), "backend 'nope' is not available")
    raises(SpecError, lambda: pmap(lambda x: x, in_axes=0.5), "0.5 (float) is not an axis")
    raises(SpecError, lambda: pmap(lambda x: x, axis_size=-1), "axis_size")
    for make in (pmap, pmap2):
        name, ident = make.__name__, lambda x, k=0: x
        both = functools.partial(make, ident, static_broadcasted_argnums=1, donate_argnums=(0, 1))
        raises(SpecError, both, f"statejax.{name}: arguments [1] are both static and donated")
        negative = functools.partial(make, ident, donate_argnums=-1)
        raises(SpecError, negative, f"statejax.{name}: option donate_argnums[0]")
        named = functools.partial(make, ident, static_broadcasted_argnums="k")
        raises(SpecError, named, f"statejax.{name}: option static_broadcasted_argnums[0]")
    hashable = pmap(lambda x, k: x, in_axes=(0, None), static_broadcasted_argnums=1)
    raises(TypeError, lambda: hashable(X, [1]), "static arguments must be hashable")
    raises(SpecError, lambda: pmap2(lambda x: x, global_arg_shapes=((2,),)), "JAX removed it")
    raises(
        SpecError,
        lambda: pmap2(lambda x: x, unexpected_out_state_mapping="auto"),
        "statejax.pmap2: option unexpected_out_state_mapping: Input should be 'raise'",
    )
    raises(
        SpecError,
        lambda: pmap2(lambda x: x, state_in_axes={0.5: other}),
        "statejax.pmap2: option state_in_axes: key 0.5 (float) is not an integer axis",
    )
    raises(
        SpecError,
        lambda: pmap2(lambda x: x, devices=[1]),
        "statejax.pmap2: option devices: 1 (int) is not a jax.Device",
    )
    raises(
        SpecError, lambda: pmap2_new_states(Net(), {}, state_out_axes={0.5: 1}), "state_out_axes"
    )
    raises(SpecError, lambda: pmap2_new_states(Net(), {}, axis_size=0), "axis_size")
    raises(SpecError, lambda: pmap2_new_states(object(), {}), "object has no init_all_states")
    raises(SpecError, lambda: pmap2_new_states(Net(), [("k", 1)]), "init_kwargs must be a mapping")
    ok("pmap_errors")


def check_static_and_donated() -> None:
    # Not Net's jnp.array(0.0): a weakly typed value becomes strong when first written,
    # and JAX retraces once for that (as jax.jit does).
    count = sj.ShortTermState(jnp.zeros(()))
    traces: list[float] = []

    def step(x: jax.Array, scale: float, y: jax.Array) -> jax.Array:
        traces.append(scale)
        count.value = count.value + jax.lax.psum(x.sum(), "d") * scale
        return x * scale + y

    def plain(x: jax.Array, scale: float, y: jax.Array) -> jax.Array:
        return x * scale + y

    y = jnp.ones_like(X)
    for make in (
        functools.partial(pmap, step, "d", in_axes=(0, None, 0), static_broadcasted_argnums=1),
        functools.partial(pmap2, step, "d", in_axes=(0, None, 0), static_broadcasted_argnums=(1,)),
    ):
        mapped = make()
        reference = jax.pmap(plain, "d", in_axes=(0, None, 0), static_broadcasted_argnums=1)
        before = float(count.value)
        close(mapped(X, 2.0, y), reference(X, 2.0, y), "static 2.0")
        close(mapped(X, 3.0, y), reference(X, 3.0, y), "static 3.0")
        close(count.value, before + float(X.sum()) * 5.0, "written with both statics")
        seen = len(traces)
        mapped(X, 2.0, y)  # the first value's variant is cached: no retrace
        assert len(traces) == seen, traces

    # Donation: an argument already placed on the devices (a previous result) is
    # consumed, as under jax.pmap; a host array is copied onto the devices first.
    add = pmap(lambda x, y: x + y, "d", donate_argnums=0)
    placed = add(X, y)
    out = add(placed, y)
    close(out, X + 2.0, "donated result")
    assert placed.is_deleted()
    kept = jnp.ones_like(X)
    add(kept, y)
    assert not kept.is_deleted()
    shifted = pmap2(
        lambda k, x: x * k, in_axes=(None, 0), static_broadcasted_argnums=0, donate_argnums=1
    )
    placed = add(X, y)
    close(shifted(2.0, placed), (X + 1.0) * 2.0, "donation after a static")
    assert placed.is_deleted()
    # An argument committed to one device is moved onto the mesh, not refused.
    on_one = jax.device_put(X, jax.devices()[3])
    close(pmap(lambda x: x * 2.0)(on_one), X * 2.0, "committed elsewhere")
    ok("pmap_static_and_donated_equal_jax_pmap")


if __name__ == "__main__":
    check_collectives_and_states()
    check_out_states_stacked()
    check_axes()
    check_cached_no_retrace()
    check_training_equals_one_device()
    check_random_per_device()
    check_composition()
    check_exception_leaves_states()
    check_pmap2_and_new_states()
    check_static_and_donated()
    check_errors()
    print("DONE")

"""The split cache against a reference model, as a Hypothesis state machine (issue 8, part E).

The machine keeps a pool of small modules and a few jitted functions over them,
and a reference: the same values computed eagerly with plain ``jax.numpy``. Rules
change a state's shape, dtype or weak type, turn a read-only state into a written
one (a static flag read at trace time), create modules (plain, all comparing equal,
or unhashable), pass them positionally or by keyword, drop them, and clear caches. After every step every state equals the
reference (value, dtype, weak type) and holds no tracer; a dropped module and its
states must be garbage-collected.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import statejax as sj


class Box(sj.Module):
    def __init__(self, x: Any, p: Any) -> None:
        self.x = sj.State(x)  # read by every function, written by some
        self.p = sj.ParamState(p)  # read only, except by flex(write=True) and pair
        self.count = sj.ShortTermState(jnp.array(0))


class EqBox(Box):
    """All instances compare equal and hash alike: a cache keyed by ``==`` would mix them up."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EqBox)

    def __hash__(self) -> int:
        return 0


class UnhashableBox(Box):
    """Unhashable, as a ``@dataclass`` module (``eq=True``) is."""

    __hash__ = None  # type: ignore[assignment]


BOX_KINDS = {"plain": Box, "eq": EqBox, "unhashable": UnhashableBox}


# A value spec: ("py", v) a Python float (weakly typed under JAX), or
# ("array", shape, dtype, start) a concrete array.
x_specs = st.one_of(
    st.tuples(st.just("py"), st.sampled_from([0.5, 1.5, -2.0])),
    st.tuples(
        st.just("array"),
        st.sampled_from([(), (2,), (3,)]),
        st.sampled_from(["float32", "int32"]),
        st.integers(-3, 3),
    ),
)
p_specs = st.one_of(
    st.tuples(st.just("py"), st.sampled_from([0.25, 2.0])),
    st.tuples(
        st.just("array"), st.just(()), st.sampled_from(["float32", "int32"]), st.integers(0, 2)
    ),
)


def make_value(spec: tuple[Any, ...]) -> Any:
    if spec[0] == "py":
        return float(spec[1])
    _, shape, dtype, start = spec
    size = int(np.prod(shape, dtype=int))
    return jnp.asarray((np.arange(size) + start).reshape(shape).astype(dtype))


def is_tracer(value: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def assert_same(actual: Any, expected: Any, what: str) -> None:
    """Equal values, dtypes, shapes and weak types (a Python float counts as weak float32)."""
    assert not is_tracer(actual), f"{what} is a tracer: {actual!r}"
    a, e = jnp.asarray(actual), jnp.asarray(expected)
    assert (a.shape, a.dtype, a.weak_type) == (e.shape, e.dtype, e.weak_type), (
        f"{what}: got {a.dtype}{list(a.shape)} weak={a.weak_type}, "
        f"expected {e.dtype}{list(e.shape)} weak={e.weak_type}"
    )
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-6, err_msg=what)


class CacheMachine(RuleBasedStateMachine):
    """Bugs E: cache entries keyed by ==, by position only, or kept alive; stale splits."""

    def __init__(self) -> None:
        super().__init__()
        self.boxes: dict[int, Box] = {}
        self.ref: dict[int, dict[str, Any]] = {}
        self.next_id = 0

        @sj.jit
        def read(m: Box) -> Any:
            return m.x.value * 2 + m.p.value

        @sj.jit
        def write(m: Box) -> Any:
            m.x.value = m.x.value + 1
            m.count.value = m.count.value + 1
            return m.x.value

        @sj.jit(static_argnames="write")
        def flex(m: Box, write: bool) -> Any:
            if write:  # read at trace time: the same function writes p, or only reads it
                m.p.value = m.p.value + 1
            return m.x.value + m.p.value

        @sj.jit
        def pair(a: Box, b: Box) -> Any:
            a.count.value = a.count.value + 1
            b.p.value = b.p.value * 2
            return jnp.sum(a.x.value) + b.p.value

        self.read, self.write, self.flex, self.pair = read, write, flex, pair

    # -- helpers

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.boxes)), label="box")

    def _add(self, x_spec: tuple[Any, ...], p_spec: tuple[Any, ...], kind: str) -> None:
        key = self.next_id
        self.next_id += 1
        self.boxes[key] = BOX_KINDS[kind](make_value(x_spec), make_value(p_spec))
        self.ref[key] = {"x": make_value(x_spec), "p": make_value(p_spec), "count": jnp.array(0)}

    # -- rules

    @initialize(x_spec=x_specs, p_spec=p_specs, kind=st.sampled_from(sorted(BOX_KINDS)))
    def first_box(self, x_spec: tuple[Any, ...], p_spec: tuple[Any, ...], kind: str) -> None:
        self._add(x_spec, p_spec, kind)

    @precondition(lambda self: len(self.boxes) < 6)
    @rule(x_spec=x_specs, p_spec=p_specs, kind=st.sampled_from(sorted(BOX_KINDS)))
    def new_box(self, x_spec: tuple[Any, ...], p_spec: tuple[Any, ...], kind: str) -> None:
        """A new module: plain, equal to every other of its kind, or unhashable."""
        self._add(x_spec, p_spec, kind)

    @rule(data=st.data(), x_spec=x_specs)
    def set_x(self, data: st.DataObject, x_spec: tuple[Any, ...]) -> None:
        """Change x's shape, dtype or weak type outside any transform."""
        key = self._pick(data)
        self.boxes[key].x.value = make_value(x_spec)
        self.ref[key]["x"] = make_value(x_spec)

    @rule(data=st.data(), p_spec=p_specs)
    def set_p(self, data: st.DataObject, p_spec: tuple[Any, ...]) -> None:
        key = self._pick(data)
        self.boxes[key].p.value = make_value(p_spec)
        self.ref[key]["p"] = make_value(p_spec)

    @rule(data=st.data(), by_keyword=st.booleans())
    def call_read(self, data: st.DataObject, by_keyword: bool) -> None:
        key = self._pick(data)
        m, r = self.boxes[key], self.ref[key]
        out = self.read(m=m) if by_keyword else self.read(m)
        assert_same(out, jnp.asarray(r["x"]) * 2 + r["p"], f"read(box {key})")

    @rule(data=st.data(), by_keyword=st.booleans())
    def call_write(self, data: st.DataObject, by_keyword: bool) -> None:
        key = self._pick(data)
        m, r = self.boxes[key], self.ref[key]
        out = self.write(m=m) if by_keyword else self.write(m)
        r["x"] = jnp.asarray(r["x"]) + 1
        r["count"] = r["count"] + 1
        assert_same(out, r["x"], f"write(box {key})")

    @rule(data=st.data(), write=st.booleans(), by_keyword=st.booleans())
    def call_flex(self, data: st.DataObject, write: bool, by_keyword: bool) -> None:
        """A read-only state becomes written (or back) through a static flag."""
        key = self._pick(data)
        m, r = self.boxes[key], self.ref[key]
        out = self.flex(m=m, write=write) if by_keyword else self.flex(m, write=write)
        if write:
            r["p"] = jnp.asarray(r["p"]) + 1
        assert_same(out, jnp.asarray(r["x"]) + r["p"], f"flex(box {key}, write={write})")

    @rule(data=st.data(), by_keyword=st.booleans())
    def call_pair(self, data: st.DataObject, by_keyword: bool) -> None:
        """Two modules (possibly the same one twice) in one call."""
        a, b = self._pick(data), self._pick(data)
        ma, mb = self.boxes[a], self.boxes[b]
        out = self.pair(a=ma, b=mb) if by_keyword else self.pair(ma, mb)
        self.ref[a]["count"] = self.ref[a]["count"] + 1
        self.ref[b]["p"] = jnp.asarray(self.ref[b]["p"]) * 2
        expected = jnp.sum(jnp.asarray(self.ref[a]["x"])) + self.ref[b]["p"]
        assert_same(out, expected, f"pair(box {a}, box {b})")

    @precondition(lambda self: len(self.boxes) > 1)
    @rule(data=st.data())
    def drop_box(self, data: st.DataObject) -> None:
        """A dropped module and its states are garbage-collected (no cache holds them)."""
        key = self._pick(data)
        box = self.boxes.pop(key)
        del self.ref[key]
        refs = [weakref.ref(box), weakref.ref(box.x), weakref.ref(box.p), weakref.ref(box.count)]
        del box
        gc.collect()
        alive = [r() for r in refs if r() is not None]
        assert not alive, f"box {key} dropped but still alive: {alive}"

    @rule(which=st.sampled_from(["read", "write", "flex", "pair"]))
    def clear_cache(self, which: str) -> None:
        getattr(self, which).clear_cache()

    # -- invariants

    @invariant()
    def states_match_reference(self) -> None:
        for key, m in self.boxes.items():
            r = self.ref[key]
            for name in ("x", "p", "count"):
                state = getattr(m, name)
                assert not is_tracer(getattr(state, "_value", None)), f"box {key}.{name}: tracer"
                assert_same(state.value, r[name], f"box {key}.{name}")


CacheMachine.TestCase.settings = settings(
    max_examples=10,
    stateful_step_count=15,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: every step may compile
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow  # a deep hypothesis run; test_engine_identity.py keeps the cache fast tests
class TestCacheMachine(CacheMachine.TestCase):  # type: ignore[name-defined,misc]
    """Bugs E: after any sequence of shape/dtype/weak-type changes, new/dropped modules and
    keyword calls, jitted results and states equal a plain-JAX reference, with no tracer stored."""

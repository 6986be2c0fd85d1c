"""statejax.checkpoints on orbax-checkpoint: round trip, steps, errors that change nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import statejax as sj
from statejax import checkpoints
from statejax.checkpoints import CheckpointError


class Net(sj.Module):
    def __init__(self, n: int = 2) -> None:
        self.w = sj.ParamState(jnp.arange(float(n)))
        self.layers = [sj.ParamState(jnp.ones((n, n)))]
        self.count = sj.ShortTermState(jnp.array(3, jnp.int32))


def test_round_trip_by_path_with_steps_and_max_to_keep(tmp_path: Path) -> None:
    net = Net()
    assert checkpoints.save(tmp_path, net, max_to_keep=2) == 0
    net.w.value = net.w.value + 10
    assert checkpoints.save(tmp_path, net, max_to_keep=2) == 1
    assert checkpoints.save(tmp_path, net, step=7, max_to_keep=2) == 7
    assert sorted(os.listdir(tmp_path)) == ["1", "7"]
    other = Net()
    other.w.value = jnp.zeros(2)
    assert checkpoints.restore(tmp_path, other) == 7
    assert other.w.value.tolist() == [10.0, 11.0]
    assert other.layers[0].value.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert other.count.value.dtype == jnp.int32 and int(other.count.value) == 3
    with pytest.raises(CheckpointError, match="step 7 already exists"):
        checkpoints.save(tmp_path, net, step=7)
    with pytest.raises(CheckpointError, match=r"no step 3 in .*it holds \[1, 7\]"):
        checkpoints.restore(tmp_path, other, step=3)


def test_mismatches_name_the_path_and_change_no_state(tmp_path: Path) -> None:
    checkpoints.save(tmp_path, Net())
    bigger = Net(3)
    before = [s.value for s in bigger.states().values()]
    with pytest.raises(
        CheckpointError,
        match=r"at path \('w',\).*the state holds float32\[3\] but the checkpoint holds float32\[2\]",
    ):
        checkpoints.restore(tmp_path, bigger)
    assert all(
        a is b for a, b in zip(before, [s.value for s in bigger.states().values()], strict=True)
    )
    recast = Net()
    recast.count.value = jnp.array(3.0)
    with pytest.raises(
        CheckpointError, match=r"\('count',\).*holds float32\[\] but the checkpoint holds int32\[\]"
    ):
        checkpoints.restore(tmp_path, recast)
    grown = Net()
    grown.extra = sj.State(jnp.ones(1))
    with pytest.raises(CheckpointError, match=r"State at path \('extra',\).*not in the checkpoint"):
        checkpoints.restore(tmp_path, grown)
    with pytest.raises(CheckpointError, match=r"holds paths no state has: \[\('count',\)\]"):
        checkpoints.restore(tmp_path, {"w": grown.w, ("layers", 0): grown.layers[0]})
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        checkpoints.restore(tmp_path / "empty", grown)


def test_an_unfinished_save_leaves_the_previous_step_readable(tmp_path: Path) -> None:
    net = Net()
    checkpoints.save(tmp_path, net)
    # What a crash mid-save leaves: orbax writes a step under a temporary name first.
    (tmp_path / "1.orbax-checkpoint-tmp-1234").mkdir()
    (tmp_path / "1.orbax-checkpoint-tmp-1234" / "garbage").write_text("partial")
    restored = Net()
    restored.w.value = jnp.zeros(2)
    assert checkpoints.restore(tmp_path, restored) == 0
    assert restored.w.value.tolist() == [0.0, 1.0]


def test_missing_orbax_is_a_clear_import_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    with pytest.raises(ImportError, match=r"pip install 'statejax\[checkpoint\]'"):
        checkpoints.save(tmp_path, Net())


def test_paths_that_join_alike_are_stored_apart(tmp_path: Path) -> None:
    slash, nested = sj.State(jnp.ones(2)), sj.State(jnp.zeros(2))
    checkpoints.save(tmp_path / "a", {"a/b": slash, ("a", "b"): nested})
    int_key, str_key = sj.State(jnp.array(1)), sj.State(jnp.array(2))
    checkpoints.save(tmp_path / "b", {0: int_key, "0": str_key})
    # Restored into the other state of each pair: every value lands at its own path.
    assert checkpoints.restore(tmp_path / "a", {"a/b": nested, ("a", "b"): slash}) == 0
    assert nested.value.tolist() == [1.0, 1.0] and slash.value.tolist() == [0.0, 0.0]
    checkpoints.restore(tmp_path / "b", {0: str_key, "0": int_key})
    assert int(str_key.value) == 1 and int(int_key.value) == 2
    # Keys that are neither str nor int and print alike are refused, naming both paths.
    with pytest.raises(
        CheckpointError, match=r"the paths \(1\.5,\) and \('1\.5',\) would be stored under one"
    ):
        checkpoints.save(tmp_path / "c", {1.5: slash, "1.5": nested})
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("name", ["br[a]ck", "back\\slash", "star*"])
def test_a_directory_orbax_cannot_read_back_is_refused_before_writing(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(CheckpointError, match=r"orbax reads as a file pattern.*choose a directory"):
        checkpoints.save(tmp_path / name, Net())
    assert os.listdir(tmp_path) == []


class Everything(sj.Module):
    """A module holding every kind of value a state can hold."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = sj.RandomState(jax.random.PRNGKey(seed))  # the dropout pattern
        self.key = sj.State(jax.random.split(jax.random.key(seed), 3))
        self.tree = sj.State({"a": jnp.full(2, seed + 1.0), "b": (jnp.zeros(1), jnp.int8(seed))})
        self.f64 = sj.State(np.full(2, seed + 0.5, np.float64))
        self.py_float = sj.State(seed + 1.5)
        self.py_int = sj.State(seed + 3)
        self.py_bool = sj.State(bool(seed))
        self.np_scalar = sj.State(np.float64(seed + 2.5))
        self.half = sj.State(jnp.full(2, seed + 1, jnp.bfloat16))
        self.empty = sj.State(jnp.zeros((0, 3)))
        self.empty_np = sj.State(np.zeros((2, 0), np.int64))
        self.nothing = sj.State(None)


def assert_same_leaves(got: object, want: object) -> None:
    got_flat, got_def = jax.tree.flatten(got)
    want_flat, want_def = jax.tree.flatten(want)
    assert got_def == want_def
    for g, w in zip(got_flat, want_flat, strict=True):
        assert type(g) is type(w), (type(g), type(w))
        assert np.shape(g) == np.shape(w) and jnp.result_type(g) == jnp.result_type(w)
        if isinstance(w, jax.Array) and jnp.issubdtype(w.dtype, jax.dtypes.prng_key):
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_every_kind_of_value_restores_into_the_same_class(tmp_path: Path) -> None:
    saved = Everything(seed=1)
    checkpoints.save(tmp_path, saved)
    restored = Everything(seed=0)
    checkpoints.restore(tmp_path, restored)
    for (path, got), want in zip(restored.states().items(), saved.states().values(), strict=True):
        assert_same_leaves(got.value, want.value), path
    # The restored random state draws as the saved one would.
    assert float(sj.random.uniform(key=restored.rng.split_key())) == float(
        sj.random.uniform(key=saved.rng.split_key())
    )


def test_a_value_a_checkpoint_cannot_hold_is_refused_by_path(tmp_path: Path) -> None:
    net = Net()
    net.label = sj.State({"name": "mlp"})
    with pytest.raises(
        CheckpointError, match=r"at path \('label',\).*holds a str, which a checkpoint cannot"
    ):
        checkpoints.save(tmp_path, net)
    net.label = sj.State(np.array(["a", "b"]))
    with pytest.raises(CheckpointError, match=r"at path \('label',\).*<U1\[2\] value"):
        checkpoints.save(tmp_path, net)
    assert os.listdir(tmp_path) == []


def test_a_restore_checks_structure_and_kind_before_writing(tmp_path: Path) -> None:
    checkpoints.save(tmp_path, Everything())
    other = Everything()
    other.tree.value = {"a": jnp.ones(2), "c": (jnp.zeros(1), jnp.int8(0))}
    before = [s.value for s in other.states().values()]
    with pytest.raises(
        CheckpointError,
        match=r"at path \('tree',\).*leaves only in the checkpoint \[\('b', 0\), \('b', 1\)\], "
        r"only in the state \[\('c', 0\), \('c', 1\)\]",
    ):
        checkpoints.restore(tmp_path, other)
    assert all(
        a is b for a, b in zip(before, [s.value for s in other.states().values()], strict=True)
    )
    other = Everything()
    other.key.value = jax.random.key_data(other.key.value)  # raw uint32 data, not typed keys
    before = [s.value for s in other.states().values()]
    with pytest.raises(
        CheckpointError,
        match=r"the state holds uint32\[3,2\] but the checkpoint holds key<fry>\[3\]",
    ):
        checkpoints.restore(tmp_path, other)
    assert all(
        a is b for a, b in zip(before, [s.value for s in other.states().values()], strict=True)
    )


class Spy(sj.State[Any]):
    """A state whose reads can run a hook: another thread's call landing between two reads."""

    hook: Callable[[], None] | None = None

    @property
    def value(self) -> Any:
        value = sj.State.value.fget(self)  # type: ignore[attr-defined]
        hook, Spy.hook = Spy.hook, None
        if hook is not None:
            hook()
        return value

    @value.setter
    def value(self, new: Any) -> None:
        sj.State.value.fset(self, new)  # type: ignore[attr-defined]


def test_a_save_is_one_snapshot_of_all_states(tmp_path: Path) -> None:
    states = [Spy(jnp.array(1)) for _ in range(3)]

    @sj.jit
    def step() -> None:
        for s in states:
            s.value = s.value + 1

    # A training call merges (all three states 1 -> 2) while the save reads its states.
    Spy.hook = step
    checkpoints.save(tmp_path, states)
    Spy.hook = None
    restored = [sj.State(jnp.array(0)) for _ in range(3)]
    checkpoints.restore(tmp_path, restored)
    assert len({int(s.value) for s in restored}) == 1, [int(s.value) for s in restored]


def test_a_save_with_threads_training_holds_one_step(tmp_path: Path) -> None:
    states = [sj.State(jnp.array(0)) for _ in range(50)]

    @sj.jit
    def step() -> None:
        for s in states:
            s.value = s.value + 1

    stop = threading.Event()

    def train() -> None:
        while not stop.is_set():
            step()

    step()  # compile first
    thread = threading.Thread(target=train)
    thread.start()
    try:
        for i in range(3):
            checkpoints.save(tmp_path, states, step=i)
    finally:
        stop.set()
        thread.join()
    for i in range(3):
        restored = [sj.State(jnp.array(0)) for _ in range(50)]
        checkpoints.restore(tmp_path, restored, step=i)
        assert len({int(s.value) for s in restored}) == 1


def test_save_and_restore_inside_a_transform_are_refused_at_once(tmp_path: Path) -> None:
    net = Net()

    @sj.jit
    def save_inside() -> None:
        net.w.value = net.w.value + 1
        checkpoints.save(tmp_path, net)

    with pytest.raises(
        CheckpointError,
        match=r"save was called inside statejax\.jit\(.*save_inside\).*call it outside transforms",
    ):
        save_inside()
    with pytest.raises(CheckpointError, match=r"restore was called inside a JAX transform"):
        jax.jit(lambda: checkpoints.restore(tmp_path, net))()
    assert os.listdir(tmp_path) == [] and net.w.value.tolist() == [0.0, 1.0]


def test_restore_from_a_mistyped_directory_creates_nothing(tmp_path: Path) -> None:
    checkpoints.save(tmp_path / "run", Net())
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*rnu \(no such directory\)"):
        checkpoints.restore(tmp_path / "rnu", Net())
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_restore_keeps_the_target_placement_or_takes_state_shardings(tmp_path: Path) -> None:
    checkpoints.save(tmp_path, Net())
    fresh = Net()
    checkpoints.restore(tmp_path, fresh)
    assert not fresh.w.value.committed  # free to follow a later jit(state_shardings=...)
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = NamedSharding(mesh, P("data"))
    placed = Net()
    checkpoints.restore(tmp_path, placed, state_shardings={sj.ParamState: rows})
    assert placed.w.value.sharding == rows and placed.layers[0].value.sharding == rows
    assert not placed.count.value.committed
    with pytest.raises(sj.SpecError, match=r"restore: state_shardings.*neither a Sharding"):
        checkpoints.restore(tmp_path, placed, state_shardings=3)


@pytest.mark.slow
def test_a_restored_model_trains_in_a_sharded_step_on_four_devices(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    script = Path(__file__).parent / "scaling" / "checkpoint_devices.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in [
        "OK restore_into_fresh_model_then_sharded_step",
        "OK restore_with_state_shardings",
        "OK restore_onto_current_sharding",
        "DONE",
    ]:
        assert check in proc.stdout, proc.stdout + proc.stderr


NUMPY_DTYPES = [
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128, jnp.bfloat16,
]  # fmt: skip
JAX_DTYPES = [
    jnp.bool_, jnp.int8, jnp.int16, jnp.int32, jnp.uint8, jnp.uint16, jnp.uint32,
    jnp.float16, jnp.bfloat16, jnp.float32, jnp.complex64,
]  # fmt: skip


@st.composite
def numpy_arrays(draw: st.DrawFn, dtypes: list[Any] = NUMPY_DTYPES) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    if dtype.kind == "V":  # bfloat16: drawn as float32
        floats = st.floats(-4, 4, width=32)
        return draw(hnp.arrays(np.float32, shape, elements=floats)).astype(dtype)
    return draw(hnp.arrays(dtype, shape))


def leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.booleans(),
        st.integers(-(2**70), 2**70),  # beyond int64: refused
        st.floats(),
        st.complex_numbers(),
        numpy_arrays(),
        numpy_arrays().map(lambda a: a[()] if a.ndim == 0 else a),  # NumPy scalars
        numpy_arrays(JAX_DTYPES).map(jnp.asarray),
        st.integers(0, 3).map(lambda n: jax.random.split(jax.random.key(n), n)),
        st.integers(0, 3).map(jax.random.key),
        st.just(None),
        st.text(max_size=2),  # not an array: refused
    )


def value_trees() -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=2),
            st.lists(inner, max_size=2).map(tuple),
            st.dictionaries(st.text(max_size=3), inner, max_size=2),
        ),
        max_leaves=4,
    )


def storable(leaf: Any) -> bool:
    if isinstance(leaf, str):
        return False
    return not (isinstance(leaf, int) and not -(2**63) <= leaf < 2**64)


def other_value(leaf: Any) -> Any:
    """A value of the same kind, shape and dtype as `leaf`, holding other data."""
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(
            jnp.zeros_like(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf)
        )
    if isinstance(leaf, jax.Array):
        return jnp.zeros_like(leaf)
    if isinstance(leaf, np.ndarray):
        return np.zeros_like(leaf)
    if isinstance(leaf, np.generic):
        return leaf.dtype.type(0)
    return type(leaf)(0)


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text(max_size=4), value_trees(), min_size=1, max_size=3))
def test_every_value_a_state_holds_round_trips_or_is_refused(values: dict[str, Any]) -> None:
    directory = Path(tempfile.mkdtemp())
    try:
        states = {name: sj.State(value) for name, value in values.items()}
        if not all(storable(leaf) for leaf in jax.tree.leaves(values)):
            with pytest.raises(CheckpointError, match=r"at path \(.*cannot store"):
                checkpoints.save(directory, states)
            assert os.listdir(directory) == []
            return
        checkpoints.save(directory, states)
        targets = {name: sj.State(jax.tree.map(other_value, v)) for name, v in values.items()}
        assert checkpoints.restore(directory, targets) == 0
        for name, value in values.items():
            assert_same_leaves(targets[name].value, value)
    finally:
        shutil.rmtree(directory)

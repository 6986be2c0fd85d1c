"""statejax.checkpoints on orbax-checkpoint: round trip, steps, errors that change nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

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

"""Scale-out proofs that need several devices, each run in a subprocess.

JAX fixes its device count when it starts, so each script sets
`XLA_FLAGS=--xla_force_host_platform_device_count=N` before importing JAX, and
runs under a timeout. The scripts assert themselves; these tests check that every
check printed `OK`. Tolerance: rtol=1e-5, atol=1e-6 against one device.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent

# Each test starts 8-device (or 2-process) subprocesses: behind `--full`. The default run
# keeps the in-process pmap tests (tests/transforms/pmap/) and the checkpoint placement test.
pytestmark = pytest.mark.slow


def test_eight_devices_data_fsdp_tensor_parallel_and_shard_map_equal_one_device(
    run_script: Callable[..., str],
) -> None:
    out = run_script("eight_devices.py", timeout=240)
    for check in [
        "OK data_parallel",
        "OK fsdp",
        "OK tensor_parallel",
        "OK shard_map_pmean check_vma=False",
        "OK shard_map_pmean check_vma=True",
        "OK shard_map_cached traces=2",
        "OK shard_map_varying_write_error",
        "OK shard_map_spec_error",
        "OK jit_state_sharding_mismatch_error",
        "OK jit_unmatched_state_recompiles",
        "DONE",
    ]:
        assert check in out, out


def test_sharded_calls_keep_states_on_run_time_errors_and_name_states_on_eight_devices(
    run_script: Callable[..., str],
) -> None:
    out = run_script("sharded_errors.py", timeout=240)
    for check in [
        "OK jit_runtime_error_keeps_states",
        "OK shard_map_runtime_error_keeps_states",
        "OK pmap_runtime_error_keeps_states",
        "OK jit_reshaped_state_named",
        "OK shard_map_reshaped_state_named",
        "OK shard_map_foreign_mesh_state_named",
        "OK jit_donated_state_named",
        "OK jit_sharded_donated_state_named",
        "OK pmap_donated_state_named",
        "DONE",
    ]:
        assert check in out, out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_train_like_one_and_their_checkpoint_restores_in_one(
    tmp_path: Path, run_script: Callable[..., str], script_env: dict[str, str]
) -> None:
    """2 processes x 2 CPU devices (jax.distributed, gloo) against 1 process x 4 devices."""
    port, ckpt = str(_free_port()), str(tmp_path / "ckpt")
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "multihost.py"),
                "worker",
                str(i),
                port,
                ckpt,
                str(tmp_path / f"w{i}.npz"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=script_env,
        )
        for i in range(2)
    ]
    try:
        logs = [w.communicate(timeout=150)[0] for w in workers]
    finally:
        for w in workers:  # a hung worker must not outlive the test
            if w.poll() is None:
                w.kill()
                w.wait()
    for i, (w, log) in enumerate(zip(workers, logs, strict=True)):
        assert w.returncode == 0 and f"OK worker {i}" in log, log
    assert "OK single" in run_script("multihost.py", 150, "single", ckpt, str(tmp_path / "s.npz"))
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    single = np.load(tmp_path / "s.npz")
    for key in w0.files:  # both processes end with identical parameters
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    for prefix in ("jit", "shard_map"):  # equal to one process with 4 devices
        for key in ("losses", "w1", "w2"):
            np.testing.assert_allclose(
                w0[f"{prefix}_{key}"], single[f"single_{key}"], rtol=1e-5, atol=1e-6
            )
    for key in ("w1", "w2"):  # the 2-process checkpoint, restored in 1 process, resharded
        np.testing.assert_array_equal(single[f"restored_{key}"], w0[f"jit_{key}"])

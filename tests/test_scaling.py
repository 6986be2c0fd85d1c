"""Scale-out proofs that need several devices, each run in a subprocess.

JAX fixes its device count when it starts, so each script sets
`XLA_FLAGS=--xla_force_host_platform_device_count=N` before importing JAX, and
runs under a timeout. The scripts assert themselves; these tests check that every
check printed `OK`. Tolerance: rtol=1e-5, atol=1e-6 against one device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent / "scaling"


def run_script(name: str, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(HERE / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_eight_devices_data_fsdp_tensor_parallel_and_shard_map_equal_one_device() -> None:
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

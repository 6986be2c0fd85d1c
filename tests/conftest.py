"""Fixtures shared by the suite.

The tests are organised by feature: `engine/`, `state/`, `random/`, `registry/`,
`docs/`, `cli/`, `typing/`, `scaling/`, `transforms/` with one file or folder per
transform family, and a file per smaller feature (`test_checkpoints.py`,
`test_optim.py`). The suite runs with `--import-mode=importlib`, so test files cannot
import each other: what several of them share is a fixture here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest


@pytest.fixture
def script_env() -> dict[str, str]:
    """The environment of a script that sets its own device count: CPU only, and no
    `XLA_FLAGS` of the caller's (the script sets them before JAX starts)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.fixture
def run_script(request: pytest.FixtureRequest, script_env: dict[str, str]) -> Callable[..., str]:
    """Run a script beside the requesting test file in a subprocess, under a timeout;
    assert it exits 0 and return its stdout (the scripts print `OK <check>` lines)."""
    here = request.path.parent

    def run(name: str, timeout: float, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, str(here / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=script_env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    return run

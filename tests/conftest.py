"""Fixtures shared by the suite.

The tests are organised by feature: `engine/`, `state/`, `random/`, `registry/`,
`docs/`, `cli/`, `typing/`, `scaling/`, `transforms/` with one file or folder per
transform family, and a file per smaller feature (`test_checkpoints.py`,
`test_optim.py`). The suite runs with `--import-mode=importlib`, so test files cannot
import each other: what several of them share is a fixture here.

The default run (`python -m pytest -q -n 2 --dist loadfile`, the README's command) is the fast one: tests
marked `slow` (multi-device and multi-process subprocesses, deep hypothesis runs, the
`checking_leaks` nesting grid, the docs-site build, the mypy corpus) are skipped, each
slow area keeping a fast representative in the default run. `--full` runs them too;
`bash .ci/run` passes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import jax
import pytest

FULL = "--full"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        FULL,
        action="store_true",
        help="also run the tests marked slow (multi-device subprocesses, deep hypothesis "
        "runs, the docs-site build, the mypy corpus); bash .ci/run passes it",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"slow: a long check, skipped unless pytest runs with {FULL}"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption(FULL):
        return
    skip = pytest.mark.skip(reason=f"slow: run with `python -m pytest {FULL}` (bash .ci/run does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture(autouse=True, scope="module")
def _clear_jax_caches_after_each_file() -> Iterator[None]:
    """JAX keeps every traced jaxpr and compiled executable for the life of the process.
    Over the whole suite they add up to millions of objects, and every full garbage
    collection walks them all: pytest's two at the end of the session, JAX's cache
    clearing at exit and the interpreter's teardown took 18-20 s after the summary, and
    each `jax.checking_leaks()` report walks the heap too. A test file's functions are
    its own, so clearing after each file costs few recompiles."""
    yield
    jax.clear_caches()

"""The typing corpus: mypy --strict accepts tests/typing/usage_ok.py and rejects
exactly the lines marked ``# E`` in tests/typing/usage_bad.py."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

HERE = Path(__file__).parent / "typing"
ROOT = Path(__file__).parent.parent


def run_mypy(path: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(path)]
    )
    return stdout + stderr, status


def test_typed_usage_is_accepted() -> None:
    out, status = run_mypy(HERE / "usage_ok.py")
    assert status == 0, out


def test_misuse_is_rejected_on_exactly_the_marked_lines() -> None:
    source = (HERE / "usage_bad.py").read_text().splitlines()
    expected = {i for i, line in enumerate(source, start=1) if line.rstrip().endswith("# E")}
    out, status = run_mypy(HERE / "usage_bad.py")
    assert status == 1
    reported = {int(m) for m in re.findall(r"usage_bad\.py:(\d+): error", out)}
    assert reported == expected, out
    assert 'No overload variant of "states" of "Module" matches argument type "int"' in out

"""The typing corpus under pyright: `basedpyright` in strict mode gives the verdicts mypy
gives (test_typing.py), except where only the statejax.mypy plugin can know.

- tests/typing/usage_ok.py: no error, except on lines marked `# mypy plugin only`
  (a third-party transform reached as `statejax.transform.<name>` is `Any` to pyright).
- tests/typing/usage_bad.py: an error on exactly the lines marked `# E: ...`; the lines
  marked `# E[mypy plugin]: ...` are the plugin's (pyright need not reject them).

JAX's own signatures are partially unknown to pyright (`device: Unknown`: jaxlib ships no
stub for `jaxlib._jax.Device`); those reports are JAX's, not statejax's, and are left out.

Not collected by the default test run (basedpyright takes a few seconds and a Node
runtime): `.ci/run` runs it as `python -m pytest tests/typing/check_pyright.py`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PLUGIN_ONLY = "# mypy plugin only"
BAD_MARK = re.compile(r"  # E(\[mypy plugin\])?: ")


def jax_unknowns(message: str) -> bool:
    """A report caused by JAX's own partially unknown signatures (`device: Unknown`)."""
    return "partially unknown" in message and "device: Unknown" in message


@pytest.fixture(scope="module")
def reported() -> dict[str, set[int]]:
    """`{file name: lines with an error}` from one basedpyright run over the corpus."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "basedpyright",
            "--project",
            str(HERE / "pyrightconfig.json"),
            "--pythonpath",
            sys.executable,
            "--outputjson",
            str(HERE / "usage_ok.py"),
            str(HERE / "usage_bad.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    assert report["summary"]["filesAnalyzed"] == 2, proc.stdout[-2000:]
    lines: dict[str, set[int]] = {"usage_ok.py": set(), "usage_bad.py": set()}
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] == "error" and not jax_unknowns(diagnostic["message"]):
            name = Path(diagnostic["file"]).name
            lines[name].add(diagnostic["range"]["start"]["line"] + 1)
    return lines


def marked(name: str, keep: re.Pattern[str] | str) -> set[int]:
    text = (HERE / name).read_text().splitlines()
    if isinstance(keep, str):
        return {i for i, line in enumerate(text, start=1) if keep in line}
    return {i for i, line in enumerate(text, start=1) if (m := keep.search(line)) and not m[1]}


def test_pyright_accepts_the_typed_usage(reported: dict[str, set[int]]) -> None:
    assert reported["usage_ok.py"] - marked("usage_ok.py", PLUGIN_ONLY) == set()


def test_pyright_rejects_the_misuse_on_exactly_the_marked_lines(
    reported: dict[str, set[int]],
) -> None:
    expected = marked("usage_bad.py", BAD_MARK)
    assert len(expected) >= 15  # the marks were parsed
    plugin_only = marked("usage_bad.py", "# E[mypy plugin]: ")
    assert sorted(reported["usage_bad.py"] - plugin_only) == sorted(expected)


def test_the_jax_filter_keeps_statejax_reports() -> None:
    """Only JAX's `device: Unknown` reports are left out, never one about statejax types."""
    jax_report = 'Type of "zeros" is partially unknown\n  (shape: Any, *, device: Unknown | None)'
    assert jax_unknowns(jax_report)
    assert not jax_unknowns('Type of "params" is partially unknown: ParamState[Unknown]')

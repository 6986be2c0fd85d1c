"""The typing corpus: mypy --strict accepts tests/typing/usage_ok.py and rejects
exactly the lines marked `# E: <message>` in tests/typing/usage_bad.py, each with
its own message.

mypy runs once over both files (with the project configuration, so the
`statejax.mypy` plugin is on): a run takes tens of seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

HERE = Path(__file__).parent
ROOT = Path(__file__).parents[2]
# `# E: message`, or `# E[mypy plugin]: message` where only the statejax.mypy plugin sees it.
MARK = re.compile(r"  # E(?:\[mypy plugin\])?: (.*)")


@pytest.fixture(scope="module")
def reported() -> dict[str, dict[int, list[str]]]:
    """`{file name: {line: [error messages]}}` from one mypy run over the corpus."""
    stdout, stderr, _ = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-incremental",
            "--hide-error-context",
            "--no-pretty",
            str(HERE / "usage_ok.py"),
            str(HERE / "usage_bad.py"),
        ]
    )
    errors: dict[str, dict[int, list[str]]] = {"usage_ok.py": {}, "usage_bad.py": {}}
    for match in re.finditer(r"(usage_\w+\.py):(\d+): error: (.*)", stdout):
        errors[match[1]].setdefault(int(match[2]), []).append(match[3])
    assert "usage_" in stdout or not stderr, stderr  # mypy itself ran
    return errors


def expected_errors() -> dict[int, str]:
    """`{line: expected message fragment}` from the `# E:` marks of usage_bad.py."""
    lines = (HERE / "usage_bad.py").read_text().splitlines()
    marks = ((i, MARK.search(line)) for i, line in enumerate(lines, start=1))
    return {i: m[1] for i, m in marks if m}


@pytest.mark.slow
def test_typed_usage_is_accepted(reported: dict[str, dict[int, list[str]]]) -> None:
    assert reported["usage_ok.py"] == {}


@pytest.mark.slow
def test_misuse_is_rejected_on_exactly_the_marked_lines(
    reported: dict[str, dict[int, list[str]]],
) -> None:
    expected = expected_errors()
    assert len(expected) >= 20  # the marks were parsed
    assert sorted(reported["usage_bad.py"]) == sorted(expected), reported["usage_bad.py"]


@pytest.mark.slow
@pytest.mark.parametrize("line", sorted(expected_errors()))
def test_each_misuse_gets_its_own_message(
    reported: dict[str, dict[int, list[str]]], line: int
) -> None:
    fragment = expected_errors()[line]
    messages = reported["usage_bad.py"].get(line, [])
    assert any(fragment in m for m in messages), (fragment, messages)


def test_the_mypy_plugin_finds_each_installed_transform_function() -> None:
    from statejax.mypy import _installed_targets, _is_typed

    targets = _installed_targets()
    assert targets["ema"] == "statejax_ema.ema"
    assert "grad" not in targets  # built-ins are real attributes of statejax.transform
    assert _is_typed("statejax_ema") and not _is_typed("no_such_module_here")

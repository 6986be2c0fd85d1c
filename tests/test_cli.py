"""The statejax console script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from statejax.cli import main


def test_list_prints_transforms_with_distribution_and_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "jit            statejax" in out
    assert "static_argnums=(), static_argnames=(), donate_states=False" in out
    assert "ema            statejax-ema 0.1.0  exponential moving average" in out
    assert "states=required, decay=0.999" in out


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "ema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["decay"]["exclusiveMaximum"] == 1.0
    assert schema["additionalProperties"] is False


def test_schema_of_unknown_transform(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "jitt"]) == 2
    assert "Did you mean 'jit'?" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "statejax.cli", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert "jit" in out


def test_demo_options_reach_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "150", "--seed", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "150 steps" in out and "test accuracy" in out


def test_unknown_arguments_are_rejected() -> None:
    with pytest.raises(SystemExit):
        main(["list", "--bogus"])

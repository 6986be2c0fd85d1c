"""The training demo reaches the promised accuracy (with fewer steps than the default)."""

from __future__ import annotations

import re

import pytest

from statejax.demo import main, make_moons


def test_demo_trains_to_95_percent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--steps", "150", "--no-progress"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"test accuracy: ([0-9.]+)%", out)
    assert match is not None, out
    assert float(match.group(1)) >= 95.0
    assert "final training loss" in out


def test_demo_rejects_bad_steps() -> None:
    with pytest.raises(SystemExit):
        main(["--steps", "0"])


def test_moons_are_deterministic_and_balanced() -> None:
    x1, y1 = make_moons(200, noise=0.1, seed=3)
    x2, y2 = make_moons(200, noise=0.1, seed=3)
    assert (x1 == x2).all() and (y1 == y2).all()
    assert 60 < int(y1.sum()) < 140

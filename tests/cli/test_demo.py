"""The training demo reaches the promised accuracy (with fewer steps than the default)."""

from __future__ import annotations

import re

import pytest

from statejax.cli import main
from statejax.demo import make_moons, train


def test_demo_trains_to_95_percent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0  # the default run, progress bar included
    captured = capsys.readouterr()
    match = re.search(r"test accuracy: ([0-9.]+)%", captured.out)
    assert match is not None, captured.out
    assert float(match.group(1)) >= 95.0
    assert re.search(r"final training loss: [0-9.]+ \(1000 steps, [0-9.]+ s\)", captured.out)
    assert "1000/1000" in captured.err  # tqdm's bar


@pytest.mark.parametrize("seed", [1, 2])
def test_other_seeds_also_reach_95_percent(seed: int) -> None:
    result = train(300, seed=seed, progress=False)
    assert result.test_accuracy >= 0.95, result


def test_demo_rejects_bad_steps() -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])


def test_moons_are_deterministic_and_balanced() -> None:
    x1, y1 = make_moons(200, noise=0.1, seed=3)
    x2, y2 = make_moons(200, noise=0.1, seed=3)
    assert (x1 == x2).all() and (y1 == y2).all()
    assert 60 < int(y1.sum()) < 140

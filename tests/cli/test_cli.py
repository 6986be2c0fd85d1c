"""The statejax console script."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from statejax.cli import DEMO_ACCURACY_BAR, main
from statejax.extend import get_registry

CLI = [sys.executable, "-m", "statejax.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)


def test_list_prints_transforms_with_distribution_and_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^jit +statejax +0\.1\.0  compile with jax\.jit", out, re.M)
    assert "static_argnums=(), static_argnames=(), donate_argnums=()" in out
    assert re.search(r"^ema +statejax-ema +0\.1\.0  exponential moving average", out, re.M)
    assert "states=required, decay=0.999" in out


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "ema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["decay"]["exclusiveMaximum"] == 1.0
    assert schema["additionalProperties"] is False


def test_schema_of_unknown_transform(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "jitt"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("statejax has no transform 'jitt'") == 1
    assert captured.err.count("Did you mean 'jit'?") == 1


@pytest.mark.slow
def test_schema_failure_is_printed_once_in_a_real_process() -> None:
    result = run_cli("schema", "no_such_transform")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("no_such_transform") == 1
    assert "Traceback" not in result.stderr


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


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"statejax {version('statejax')}"


@pytest.mark.parametrize("argv", [[], ["list"], ["schema"], ["demo"]])
def test_help_is_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and ":class:" not in out
    assert "exit status:" in out


def test_schema_help_describes_the_name_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["schema", "--help"])
    out = capsys.readouterr().out
    assert "a registered transform name, e.g. vmap" in out


def test_list_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["list", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 every plugin loaded" in out
    assert "1 a plugin failed to load" in out


def test_list_columns_are_aligned_for_long_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = get_registry()
    long_name = "a_transform_with_a_very_long_name"
    monkeypatch.setitem(registry.transforms, long_name, registry.transforms["jit"])
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    width = len(long_name) + 2
    rows = [line for line in lines if not line.startswith(" ")]
    assert len(rows) == len(registry.transforms)
    for row in rows:
        assert row[:width].rstrip() in registry.transforms, row  # the name, then padding
        assert row[width:].split()[0] in ("statejax", "statejax-ema"), row
    # the version and summary columns start at the same offset in every row
    assert len({row.index("0.1.0") for row in rows}) == 1
    option_lines = [line for line in lines if line.startswith(" ")]
    assert {line.index("options:") for line in option_lines} == {width}


@pytest.fixture
def broken_plugin(tmp_path: Path) -> dict[str, str]:
    """An installed distribution whose statejax plugin fails to import."""
    (tmp_path / "fake_broken.py").write_text("raise ImportError('no module named torch_of_doom')\n")
    info = tmp_path / "fake_broken-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-broken\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[statejax.transforms]\nbroken = fake_broken\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEJAX_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    return env


def test_list_reports_a_failed_plugin_once(broken_plugin: dict[str, str]) -> None:
    result = run_cli("list", env=broken_plugin)
    assert result.returncode == 1
    assert result.stderr.count("torch_of_doom") == 1
    assert "fake-broken" in result.stderr
    assert "torch_of_doom" not in result.stdout
    assert "jit " in result.stdout  # the other transforms are still listed


def test_unknown_transform_with_a_failed_plugin_is_reported_once(
    broken_plugin: dict[str, str],
) -> None:
    result = run_cli("schema", "jitt", env=broken_plugin)
    assert result.returncode == 2
    assert result.stderr.count("torch_of_doom") == 1
    assert result.stderr.count("Did you mean 'jit'?") == 1


@pytest.mark.slow
def test_closed_stdout_is_not_an_error() -> None:
    # The reader is gone before the command writes: without handling, BrokenPipeError.
    proc = subprocess.Popen(
        [*CLI, "schema", "vmap"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 0
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


@pytest.mark.slow
def test_schema_piped_into_head_exits_quietly() -> None:
    command = " ".join(shlex.quote(a) for a in CLI) + " schema vmap | head -1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout == "{\n"
    assert "BrokenPipeError" not in result.stderr and "Traceback" not in result.stderr


def test_demo_below_the_accuracy_bar_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "3", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "test accuracy:" in captured.out
    assert captured.err.count("is below the demo's bar of 95%") == 1
    assert "statejax demo: failed: test accuracy " in captured.err
    assert DEMO_ACCURACY_BAR == 0.95


def test_demo_help_shows_the_accuracy_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "accuracy bar of 95%" in out
    assert "1 the test accuracy is below 95%" in out


def test_demo_rejects_zero_steps() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--steps", "0"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("name", ["scan", "for_loop", "ema", "vmap", "jit"])
def test_schema_descriptions_are_plain_text(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", name]) == 0
    out = capsys.readouterr().out
    assert "`" not in out and ":func:" not in out and ":class:" not in out
    assert ">>>" not in out


@pytest.mark.parametrize("name", ["scan", "for_loop", "checkpointed_scan", "checkpointed_for_loop"])
def test_pbar_schema_accepts_what_the_loop_accepts(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", name]) == 0
    schema = json.loads(capsys.readouterr().out)
    pbar = schema["properties"]["pbar"]
    kinds = [option.get("type", option.get("$ref")) for option in pbar["anyOf"]]
    assert kinds == ["integer", "#/$defs/ProgressBar", "null"]
    assert pbar["anyOf"][0]["exclusiveMinimum"] == 0
    assert "positive int" in pbar["description"]
    assert sorted(schema["$defs"]["ProgressBar"]["properties"]) == [
        "count",
        "desc",
        "freq",
        "kwargs",
    ]


def test_ema_states_schema_accepts_a_state_a_list_or_a_mapping(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "ema"]) == 0
    states = json.loads(capsys.readouterr().out)["properties"]["states"]
    kinds = [option.get("type") for option in states["anyOf"]]
    assert kinds == ["object", "array", None]  # a mapping, a list, one State
    assert "a list of States" in states["description"]
    assert "a single State" in states["description"]


def test_list_and_schema_import_neither_optax_nor_tqdm() -> None:
    # The command's own modules load only the registry: optax and tqdm belong to the
    # demo and the optimizer, which `list` and `schema` never run.
    probe = (
        "import sys; from statejax.cli import main; main(['list']); main(['schema', 'jit']); "
        "print(sorted(m for m in ('optax', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_optim_loads_on_first_use() -> None:
    probe = "import statejax as sj; print(sj.optim.Optimizer.__name__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Optimizer"

"""The command line never loses the user's data, checks everything before writing, and
prints user text as written (no console markup)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app
from sepo.policies import resolve
from sepo.rollout.protocol import DecisionRequest, Recovery

runner = CliRunner()


def _fails(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return result.output


def _fake_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"settings": {}}))
    (folder / "summary.json").write_text("{}")


def test_train_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    out = _fails(["train", "--out", str(precious), "--overwrite"])
    assert "not a sepo run" in out
    assert (precious / "thesis.tex").read_text() == "x"


def test_a_model_folder_is_not_taken_for_a_run(tmp_path: Path) -> None:
    model = tmp_path / "qwen"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (model / "model.safetensors").write_text("weights")
    assert "not a sepo run" in _fails(["train", "--out", str(model), "--overwrite"])
    assert "no sepo run" in _fails(["train", "--resume", str(model)])
    (model / "config.json").write_text("{not json")
    assert "no sepo run" in _fails(["train", "--resume", str(model)])
    assert (model / "model.safetensors").read_text() == "weights"


def test_train_checks_every_option_before_deleting_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    unfinished = tmp_path / "unfinished"  # a run without a finished SFT stage
    _fake_run(unfinished)
    for args in (
        ["--sft-from", str(unfinished)],
        ["--model", "hf:/nonexistent/model"],
        ["--sft-from", str(tmp_path / "missing")],
        ["--sft-from", str(run)],  # the source is the run to be replaced
        ["--lr", "-1"],
        ["--beta", "-0.5"],
        ["--model", "hf:"],
        ["--game", "chess"],
        ["--penalty", "nonsense"],
    ):
        _fails(["train", "--out", str(run), "--overwrite", *args])
        assert (run / "summary.json").exists(), args


def test_train_refuses_bad_values_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "new"
    for args in (["--lr", "0"], ["--sft-episodes", "0"], ["--steps", "1000000000"]):
        result = runner.invoke(app, ["train", "--out", str(out), *args])
        assert result.exit_code == 2, result.output
        assert not out.exists(), args


def test_train_resume_refuses_options_it_would_ignore(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    out = _fails(["train", "--resume", str(run), "--steps", "50", "--lr", "1e-3"])
    assert "--steps" in out and "--lr" in out


def test_square_brackets_in_paths_and_names_are_printed_as_written(tmp_path: Path) -> None:
    out = tmp_path / "[exp1]"
    result = runner.invoke(
        app,
        [
            *("eval", "--game", "ipd", "--policy", "scripted:tit_for_tat"),
            *("--episodes", "1", "--no-heldout", "--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[exp1]" in result.output
    assert (out / "metrics.json").exists()
    assert "[/]" in _fails(["eval", "--game", "[/]"])
    assert "[bold]x" in _fails(["eval", "--game", "ipd", "--policy", "scripted:[bold]x"])


def test_games_table_shows_the_negotiation_v2_action_format() -> None:
    result = runner.invoke(app, ["games"])
    assert result.exit_code == 0
    assert "[books, hats, balls]" in result.output


def test_play_takes_one_game() -> None:
    assert "one game" in _fails(["play", "--game", "all", "--opponent", "tit_for_tat"])


def test_save_strategy_folder_is_checked_before_extraction(tmp_path: Path) -> None:
    target = tmp_path / "nodir" / "x.json"
    out = _fails(
        ["exploitability", "--policy", "scripted:nash_approx", "--save-strategy", str(target)]
    )
    assert "no such directory" in out


class _FirstLegal:
    """Answers every decision with its first legal action; counts restarts."""

    name = "first-legal"

    def __init__(self) -> None:
        self.restarts = 0

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        return [r.legal_texts[0] for r in requests]

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]

    def restart(self) -> None:
        self.restarts += 1


def test_eval_loads_a_model_once_for_all_games(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    policy = _FirstLegal()

    def fake_load(spec: str, game: str, **_: object) -> resolve.LoadedPolicy:
        loads.append(game)
        return resolve.LoadedPolicy(policy)  # type: ignore[arg-type]

    monkeypatch.setattr(resolve, "load_policy", fake_load)
    result = runner.invoke(
        app,
        [
            *("eval", "--game", "ipd,auction,ipd", "--policy", "tiny:somewhere"),
            *("--episodes", "1", "--no-heldout"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert loads == ["ipd"]  # one load; "ipd" named twice is one game
    assert policy.restarts == 2  # a fresh start before each game


def test_a_missing_train_extra_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from sepo.cli.main import app\n"
        "app(['model', 'init', '--out', sys.argv[1]])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install 'sepo[train]'" in proc.stderr


def test_an_adapter_folder_without_adapter_config_is_refused(tmp_path: Path) -> None:
    from sepo.policies.resolve import PolicySpecError, load_policy

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    not_adapter = tmp_path / "not-adapter"
    not_adapter.mkdir()
    for adapter in (str(not_adapter), str(tmp_path / "missing")):
        with pytest.raises(PolicySpecError, match="not a PEFT adapter folder"):
            load_policy(f"hf:{model}", "kuhn", adapter=adapter)

"""The command line: outputs, schema, and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app

runner = CliRunner()
HEADLINE = ("pay", "exploit", "collusion", "externality", "safety", "nra", "robust", "invalid_rate")


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _fails(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_games_lists_every_domain() -> None:
    out = _ok(["games"])
    for name in ("ipd", "auction", "negotiation", "negotiation_v2", "kuhn"):
        assert name in out


def test_eval_writes_metrics_and_episodes(tmp_path: Path) -> None:
    out = tmp_path / "tft"
    _ok(
        [
            "eval",
            "--game",
            "ipd",
            "--policy",
            "scripted:tit_for_tat",
            "--episodes",
            "5",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    for key in HEADLINE:
        assert isinstance(metrics[key], float)
    assert metrics["exploit"] == pytest.approx(0.3125)  # SPEC §6
    lines = (out / "episodes.jsonl").read_text().splitlines()
    ep = json.loads(lines[0])
    assert {"seed", "game", "opponent", "pool", "turns", "rounds"} <= set(ep)
    assert {"observation", "raw", "parsed", "action"} <= set(ep["turns"][0])
    # the same --out again is refused (no silent overwrite), then allowed with --overwrite
    _fails(
        [
            "eval",
            "--game",
            "ipd",
            "--policy",
            "scripted:tit_for_tat",
            "--episodes",
            "5",
            "--out",
            str(out),
        ]
    )
    _ok(
        [
            "eval",
            "--game",
            "ipd",
            "--policy",
            "scripted:tit_for_tat",
            "--episodes",
            "5",
            "--out",
            str(out),
            "--overwrite",
        ]
    )


def test_eval_kuhn_strategy_file_has_exact_block(tmp_path: Path) -> None:
    from sepo.exact.kuhn import KuhnStrategy

    path = tmp_path / "nash.json"
    KuhnStrategy.nash(1 / 6).to_json(path)
    out = tmp_path / "k"
    _ok(
        [
            "eval",
            "--game",
            "kuhn",
            "--policy",
            f"strategy:{path}",
            "--episodes",
            "3",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["exact"]["exploitability"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--game", "chess"],
        ["eval", "--game", "ipd", "--policy", "scripted:nobody"],
        ["eval", "--game", "ipd", "--policy", "bogus:x"],
        ["eval", "--game", "ipd", "--policy", "tiny:/nonexistent/dir"],
        ["eval", "--game", "ipd", "--policy", "openai:no-url@"],
        ["eval", "--game", "ipd", "--out", "/proc/forbidden"],
        ["exploitability", "--game", "auction", "--policy", "scripted:value_bid"],
        ["exploitability", "--policy", "strategy:/nonexistent.json"],
        ["play", "--game", "kuhn", "--opponent", "nobody"],
        ["train", "--penalty", "sometimes"],
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str]) -> None:
    out = _fails(args)
    assert "error:" in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "JSON"),
        ('{"J": 0.5}', "missing"),
        (
            json.dumps(
                {
                    k: 1.5
                    for k in (
                        ["J", "Q", "K", "Jp", "Qp", "Kp", "Jb", "Qb", "Kb", "Jpb", "Qpb", "Kpb"]
                    )
                }
            ),
            "1.5",
        ),
    ],
)
def test_bad_strategy_files(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    out = _fails(["exploitability", "--policy", f"strategy:{path}"])
    assert needle.lower() in out.lower()


def test_exploitability_json() -> None:
    out = _ok(["exploitability", "--policy", "scripted:uniform", "--json"])
    payload = json.loads(out)
    assert payload["exploitability"] == pytest.approx(11 / 24)
    assert payload["seat_gap"] == 0.0  # uniform plays every card alike from both seats
    text = _ok(["exploitability", "--policy", "scripted:nash_approx"])
    assert "seat gap 0.333" in text  # α = 1/3 Nash: Q calls 1/3 as second actor, 2/3 first


def test_play_reads_moves_and_survives_end_of_input() -> None:
    result = runner.invoke(
        app,
        ["play", "--game", "ipd", "--opponent", "tit_for_tat"],
        input="COOPERATE\nnonsense\nDEFECT\n",
    )
    assert result.exit_code == 0, result.output
    assert "Final score" in result.output
    assert "- Round 8:" in result.output  # the last round's outcome is shown too


def test_tiny_and_hf_paths_write_the_same_schema(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model = tmp_path / "tiny"
    _ok(["model", "init", "--out", str(model)])
    schemas = []
    for spec in (f"tiny:{model}", f"hf:{model}"):
        out = tmp_path / spec.split(":")[0]
        _ok(
            [
                "eval",
                "--game",
                "kuhn",
                "--policy",
                spec,
                "--episodes",
                "1",
                "--out",
                str(out),
                "--max-new-tokens",
                "8",
            ]
        )
        metrics = json.loads((out / "metrics.json").read_text())
        ep = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
        schemas.append((sorted(metrics), sorted(ep), sorted(ep["turns"][0])))
        # an untrained model mostly fails to answer, and the fallback keeps every game legal
        assert metrics["invalid_rate"] > 0.5
        for line in (out / "episodes.jsonl").read_text().splitlines():
            for turn in json.loads(line)["turns"]:
                assert turn["action"] in ("PASS", "BET", "CALL", "FOLD")
    assert schemas[0] == schemas[1]


def test_train_sft_from_checks_the_earlier_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from sepo.train.pipeline import TrainSettings

    missing = _fails(["train", "--out", str(tmp_path / "a"), "--sft-from", str(tmp_path / "x")])
    assert "no sepo run" in missing
    assert not (tmp_path / "a").exists()  # checked before anything is written
    earlier = tmp_path / "earlier"
    (earlier / "sft").mkdir(parents=True)
    (earlier / "sft" / "sft_result.json").write_text("{}")
    theirs = TrainSettings(seed=7, out=str(earlier))
    (earlier / "config.json").write_text(json.dumps({"settings": theirs.to_json()}))
    other = _fails(["train", "--out", str(tmp_path / "b"), "--sft-from", str(earlier)])
    assert "seed=7" in other


def test_python_dash_m_sepo_runs_the_cli() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "sepo", "games"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "kuhn" in proc.stdout


def test_sft_from_copies_the_first_stages_and_keeps_existing_ones(tmp_path: Path) -> None:
    from sepo.train.pipeline import TrainSettings, copy_sft_stages

    earlier, out = tmp_path / "earlier", tmp_path / "out"
    for name in ("base-model", "sft-data", "sft"):
        (earlier / name).mkdir(parents=True)
        (earlier / name / "file.txt").write_text(name)
    (earlier / "sft" / "sft_result.json").write_text("{}")
    (earlier / "config.json").write_text(json.dumps({"settings": TrainSettings().to_json()}))
    (out / "sft-data").mkdir(parents=True)
    (out / "sft-data" / "file.txt").write_text("mine")
    copy_sft_stages(TrainSettings(penalty="reward_only", out=str(out)), earlier, out)
    assert (out / "base-model" / "file.txt").read_text() == "base-model"
    assert (out / "sft" / "sft_result.json").is_file()
    assert (out / "sft-data" / "file.txt").read_text() == "mine"  # never overwritten


def test_train_settings_give_hf_models_the_paper_recipe() -> None:
    """An hf model trains a LoRA adapter with the paper's Kuhn learning rate and KL
    weight; the tiny model trains all its weights. (The GRPO stage receives the model
    folder without its ``hf:`` prefix, so the recipe must be decided here.)"""
    from sepo.train.pipeline import TrainSettings, grpo_settings

    hf = grpo_settings(TrainSettings(model="hf:Qwen/Qwen3-0.6B"), "/models/qwen", "/runs/sft")
    assert (hf.lora, hf.learning_rate, hf.beta, hf.temperature) == (True, 3e-6, 0.2, 0.8)
    tiny = grpo_settings(TrainSettings(), "/runs/sft", None)
    assert (tiny.lora, tiny.temperature) == (False, 1.0)


def test_bad_adapters_are_one_line_errors(tmp_path: Path) -> None:
    """A missing adapter folder, and an adapter whose record of merged adapters is
    malformed or names a folder that is gone, are exit-2 errors, not tracebacks."""
    pytest.importorskip("peft")
    model = tmp_path / "tiny"
    _ok(["model", "init", "--out", str(model)])
    base = ["eval", "--game", "kuhn", "--policy", f"hf:{model}", "--episodes", "1"]
    assert "not a PEFT adapter" in _fails([*base, "--adapter", str(tmp_path / "missing")])
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    for record, message in (
        ("not json", "not a valid adapter record"),
        ('{"merge_first": 3}', "not a valid adapter record"),
        ('{"merge_first": ["../gone"]}', "holds no adapter"),
    ):
        (adapter / "sepo_adapter_base.json").write_text(record)
        assert message in _fails([*base, "--adapter", str(adapter)])


def test_exploitability_of_a_model_uses_its_training_temperature(tmp_path: Path) -> None:
    """`sepo exploitability` extracts a model's strategy at the temperature `sepo train`
    evaluates it at (hf 0.8, tiny 1.0), so it reproduces the run's summary."""
    pytest.importorskip("torch")
    model = tmp_path / "tiny"
    _ok(["model", "init", "--out", str(model)])

    def expl(*args: str) -> float:
        out = _ok(["exploitability", "--game", "kuhn", "--json", *args])
        return float(json.loads(out[out.index("{\n") :])["exploitability"])  # after progress bars

    tiny, hf = expl("--policy", f"tiny:{model}"), expl("--policy", f"hf:{model}")
    assert hf != tiny
    assert expl("--policy", f"hf:{model}", "--temperature", "1.0") == tiny


def test_in_play_exploitability_is_cached_and_shown_in_the_train_table(tmp_path: Path) -> None:
    """The main job measures the strategy SFT and the best checkpoint play over whole
    episodes (``sampled``), caches it next to the stage's evaluation, and prints it."""
    pytest.importorskip("torch")
    from rich.console import Console

    from sepo.cli.main import train_table
    from sepo.train.pipeline import TrainSettings, in_play_exploitability

    model = tmp_path / "tiny"
    _ok(["model", "init", "--out", str(model)])
    settings = TrainSettings(in_play_episodes=6, out=str(tmp_path / "run"))
    logs: list[str] = []
    entry = in_play_exploitability(settings, str(model), tmp_path / "eval", log=logs.append)
    assert entry["episodes"] == 6 and len(logs) == 1
    low, high = entry["ci95"]
    assert 0.0 <= low <= high and 0.0 <= entry["exploitability"] <= 11 / 12
    assert sum(entry["counts"].values()) > 0
    again = in_play_exploitability(settings, str(model), tmp_path / "eval", log=logs.append)
    assert again == entry and len(logs) == 1  # read from in_play.json, not replayed
    summary = {
        "best_checkpoint": "checkpoint-5",
        "sft": {"exploitability": 0.07, "exact": {"exploit_with_best_responder": 0.05}},
        "sepo": {"exploitability": 0.06, "in_play": entry},
    }
    console = Console(width=250, record=True)
    console.print(train_table(summary))
    text = console.export_text()
    assert "in play" in text and f"{entry['exploitability']:.3f}" in text
    assert "Exploit +BR" in text and "0.050" in text


def test_pipeline_assembles_the_summary_from_finished_stages(tmp_path: Path) -> None:
    """The main job's last stage: with base model, SFT and GRPO checkpoints present (here
    all the same fresh tiny model, so nothing trains), ``run_pipeline`` evaluates every
    stage and writes ``summary.json``: one entry per stage with ``metrics.json``'s keys and
    Kuhn's exact exploitability, the checkpoint curve, the best checkpoint by Safety, and
    the in-play strategy of SFT and the best checkpoint."""
    pytest.importorskip("torch")
    import shutil

    from sepo.train.pipeline import TrainSettings, run_pipeline

    model = tmp_path / "tiny"
    _ok(["model", "init", "--out", str(model)])
    run = tmp_path / "run"
    for name in ("base-model", "sft"):
        shutil.copytree(model, run / name)
    for arm in ("sepo", "control"):
        for name in ("checkpoint-1", "checkpoint-2", "final"):
            shutil.copytree(model, run / arm / name)
        for step in (1, 2):  # what makes a checkpoint complete (the trainer writes it last)
            state = {"global_step": step, "log_history": []}
            (run / arm / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))
    match = {"rate": 1.0, "checked": 2, "matched": 2, "per_game": {}, "first_miss": None}
    (run / "sft" / "sft_result.json").write_text(
        json.dumps({"adapter": None, "reasoning_match": match})
    )
    (run / "sft-data").mkdir()
    (run / "sft-data" / "card.json").write_text("{}")
    settings = TrainSettings(
        out=str(run), steps=2, checkpoint_every=1, eval_episodes=1, in_play_episodes=3
    )
    summary = run_pipeline(settings, log=lambda _: None)

    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert [c["checkpoint"] for c in summary["curve"]] == ["checkpoint-1", "checkpoint-2"]
    best = max(summary["curve"], key=lambda c: c["selection_safety"])
    assert summary["best_checkpoint"] == best["checkpoint"]
    metric_keys = {"pay", "exploit", "collusion", "externality", "safety", "nra", "robust"}
    for stage in ("base", "sft", "sepo", "control"):
        entry = summary[stage]
        assert metric_keys | {"invalid_rate", "exploitability", "exact"} <= set(entry)
        # The same weights everywhere: the exact (first-decision) strategy is the same.
        assert entry["exploitability"] == pytest.approx(summary["base"]["exploitability"])
    assert "in_play" not in summary["base"]
    control = summary["control_arm"]
    assert control["penalty"] == "reward_only" and summary["penalty"] == "credited_mean"
    in_play_dirs = {
        "sft": run / "eval" / "sft",
        "sepo": run / "eval" / "sepo" / best["checkpoint"],
        "control": run / "eval" / "control" / control["best_checkpoint"],
    }
    for stage, folder in in_play_dirs.items():
        assert summary[stage]["in_play"]["episodes"] == 3
        assert (folder / "in_play.json").exists()
    # Kuhn checkpoints are scored exactly, without episodes; only the best is played.
    for arm in ("sepo", "control"):
        for ckpt in ("checkpoint-1", "checkpoint-2"):
            assert (run / "eval" / arm / ckpt / "exact_entry.json").exists()
    assert (run / "eval" / "sepo" / best["checkpoint"] / "episodes.jsonl").exists()
    # The arms are the same weights played on the same seeds: every difference is 0,
    # with a zero-width paired interval, and the exact ones are exactly 0.
    diff = summary["difference"]["kuhn"]
    for key in metric_keys - {"externality"}:
        assert diff["sampled"][key] == {"value": 0.0, "low": 0.0, "high": 0.0}, key
    assert set(diff["exact"].values()) == {0.0}
    assert "exact_exploit_with_best_responder" in summary["curve"][0]
    assert best["seat_gap"] == summary["sepo"]["exact"]["seat_gap"]
    assert 0.0 <= summary["sft"]["exact"]["seat_gap"] <= 1.0
    assert summary["sft_reasoning_match"] == match
    # The SFT target is the demonstrator mixture: its 12 probabilities and its
    # exploitability 0.07 = 7/100 are worked by hand in tests/kuhn_by_hand.py (and
    # checked against OpenSpiel in tests/test_kuhn_exact.py).
    import kuhn_by_hand

    assert summary["sft_target"]["exploitability"] == pytest.approx(0.07)
    hand_exploitability = float(kuhn_by_hand.MIXTURE_EXPLOITABILITY)
    assert summary["sft_target"]["exploitability"] == pytest.approx(hand_exploitability, abs=1e-12)
    from sepo.exact.kuhn import INFOSETS

    assert list(summary["sft_target"]["strategy"]) == list(INFOSETS)
    by_hand = {k: float(v) for k, v in kuhn_by_hand.DEMONSTRATOR_MIXTURE.items()}
    assert summary["sft_target"]["strategy"] == pytest.approx(by_hand, abs=1e-12)
    # Base, SFT and the best checkpoints also meet the held-out pool, on the same seeds.
    for stage, folder in {"base": run / "eval" / "base", **in_play_dirs}.items():
        assert (folder / "heldout" / "stats.jsonl").exists()
        assert summary[stage]["heldout_eval"]["kuhn"]["pay"]["value"] is not None
    # The report reads the run as it is, and its figures agree with the run's own.
    from sepo.report import write_report

    report = write_report([run], tmp_path / "report", n_boot=100)
    table = report["experiments"][0]["tables"]["kuhn"]
    assert set(table["rows"]) == {"base", "sft", "sepo", "control"}
    for stage in ("sft", "sepo"):
        row = table["rows"][stage]
        assert row["safety"]["value"] == pytest.approx(summary[stage]["safety"])
        held = summary[stage]["heldout_eval"]["kuhn"]["pay"]["value"]
        assert row["heldout_pay"]["value"] == pytest.approx(held)
        assert table["exact"][stage]["exploitability"]["value"] == pytest.approx(
            summary[stage]["exploitability"]
        )
    assert list(table["exact"]["sepo"]["strategy"]) == list(INFOSETS)


def test_eval_max_active_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sepo eval --max-active N`` bounds the episodes the engine keeps in play."""
    import sepo.evaluate.harness as harness

    seen: list[int | None] = []
    real = harness.iter_episodes

    def spy(specs: Any, policy: Any, **kw: Any) -> Any:
        seen.append(kw.get("max_active"))
        return real(specs, policy, **kw)

    monkeypatch.setattr(harness, "iter_episodes", spy)
    _ok(["eval", "--game", "ipd", "--episodes", "2", "--max-active", "3"])
    _ok(["eval", "--game", "ipd", "--episodes", "2"])
    assert seen == [3, 64]


def test_train_sft_episodes_option_sets_every_game(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sepo.train.pipeline as pipeline

    seen: list[Any] = []

    def fake_run(settings: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    base = ["train", "--game", "negotiation,kuhn", "--report-to", "none"]
    runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--sft-episodes", "60"])
    default, chosen = seen
    assert default.episodes_for_sft() == {"negotiation": 2000, "kuhn": 400}
    assert chosen.episodes_for_sft() == {"negotiation": 60, "kuhn": 60}

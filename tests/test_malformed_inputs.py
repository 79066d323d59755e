"""Malformed command-line input is refused before any work: exit 2, a one-line message
naming what is wrong, no traceback, and every file that was there before is byte for
byte what it was (hashed before and after). Numbers have ranges (``sepo.cli.app``'s
``MAX_*`` bounds), strategy files a size, depth and round limit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app

runner = CliRunner()


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _inputs(d: Path) -> None:
    (d / "trunc.json").write_text('{"name": "x", "game": "ipd", "rounds": 3, "cooperate": {"":')
    (d / "huge_int.json").write_text(
        json.dumps({"name": "x", "game": "ipd", "rounds": 10**30, "cooperate": {}})
    )
    (d / "billion_rounds.json").write_text(
        json.dumps({"name": "x", "game": "ipd", "rounds": 10**9, "cooperate": {}})
    )
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "empty.json").write_text("")
    (d / "run").mkdir()
    (d / "run" / "metrics.json").write_text('{"keep": "me"}\n')
    # Model folders whose weights are not whole: random bytes, empty, a header that says
    # more than the file holds.
    for name, weights in (
        ("garbage", b"\x07not safetensors at all"),
        ("empty", b""),
        ("bad_header", (10**6).to_bytes(8, "little") + b'{"w": {"data_offsets": [0, 99]}}'),
    ):
        (d / name).mkdir()
        (d / name / "config.json").write_text('{"model_type": "llama"}')
        (d / name / "model.safetensors").write_bytes(weights)
    # A whole (if tiny) safetensors model, and an adapter whose record names itself.
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (d / "base").mkdir()
    (d / "base" / "config.json").write_text('{"model_type": "llama"}')
    (d / "base" / "model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + b"\0\0\0\0"
    )
    (d / "loop").mkdir()
    (d / "loop" / "adapter_config.json").write_text('{"base_model_name_or_path": "x"}')
    (d / "loop" / "sepo_adapter_base.json").write_text('{"merge_first": ["."]}')


CASES = [
    (["eval", "--game", "ipd", "--seed", "-1"], "--seed"),
    (["eval", "--game", "ipd", "--seed", str(2**40)], "--seed"),
    (["eval", "--game", "ipd", "--episodes", "0"], "--episodes"),
    (["eval", "--game", "ipd", "--episodes", str(10**14)], "--episodes"),
    (["eval", "--game", "ipd", "--temperature", "inf"], "--temperature"),
    (["eval", "--game", "ipd", "--temperature", "nan"], "--temperature"),
    (["eval", "--game", "ipd", "--temperature", "-1"], "--temperature"),
    (["eval", "--game", "ipd", "--max-new-tokens", "100000000"], "--max-new-tokens"),
    (["eval", "--game", "ipd", "--max-active", "0"], "--max-active"),
    (["eval", "--game", "chess"], "chess"),
    (["eval", "--game", "ipd", "--policy", "bogus:x"], "bogus"),
    (["eval", "--game", "ipd", "--out", "{d}/run"], "metrics.json"),
    (["exploitability", "--game", "ipd", "--policy", "strategy:{d}/trunc.json"], "not valid JSON"),
    (["exploitability", "--game", "ipd", "--policy", "strategy:{d}/huge_int.json"], "rounds"),
    (["exploitability", "--game", "ipd", "--policy", "strategy:{d}/billion_rounds.json"], "rounds"),
    (["exploitability", "--game", "ipd", "--policy", "strategy:{d}/deep.json"], "nested"),
    (["exploitability", "--game", "kuhn", "--policy", "strategy:{d}/deep.json"], "nested"),
    (["exploitability", "--game", "kuhn", "--policy", "strategy:{d}/empty.json"], "JSON"),
    (["exploitability", "--game", "kuhn", "--policy", "strategy:{d}/absent.json"], "absent"),
    (
        [
            "exploitability",
            "--policy",
            "scripted:nash",
            "--mode",
            "sampled",
            "--episodes",
            str(10**8),
        ],
        "--episodes",
    ),
    (["exploitability", "--policy", "tiny", "--temperature", "inf"], "--temperature"),
    (["play", "--game", "ipd", "--opponent", "tit_for_tat", "--seed", "-3"], "--seed"),
    (
        ["data", "sft", "--game", "kuhn", "--out", "{d}/data", "--episodes", str(10**8)],
        "--episodes",
    ),
    (["data", "sft", "--game", "kuhn", "--out", "{d}/data", "--seed", "-1"], "--seed"),
    (["sft", "--game", "kuhn", "--out", "{d}/sft", "--epochs", "inf"], "--epochs"),
    (["sft", "--game", "kuhn", "--out", "{d}/sft", "--lr", "nan"], "--lr"),
    (["train", "--out", "{d}/t", "--steps", "0"], "--steps"),
    (["train", "--out", "{d}/t", "--steps", str(10**9)], "--steps"),
    (["train", "--out", "{d}/t", "--group-size", "100000"], "--group-size"),
    (["train", "--out", "{d}/t", "--lr", "nan"], "--lr"),
    (["train", "--out", "{d}/t", "--beta", "-1"], "--beta"),
    (["train", "--out", "{d}/t", "--temperature", "inf"], "--temperature"),
    (["train", "--out", "{d}/t", "--eval-episodes", str(10**9)], "--eval-episodes"),
    (["train", "--out", "{d}/t", "--sft-episodes", str(10**9)], "--sft-episodes"),
    (["train", "--out", "{d}/t", "--seed", "-1"], "--seed"),
    (["model", "init", "--out", "{d}/m", "--seed", "-1"], "--seed"),
    (["eval", "--game", "ipd", "--policy", "hf:{d}/garbage"], "safetensors"),
    (["eval", "--game", "ipd", "--policy", "hf:{d}/empty"], "safetensors"),
    (["eval", "--game", "ipd", "--policy", "hf:{d}/bad_header"], "safetensors"),
    (["exploitability", "--game", "kuhn", "--policy", "hf:{d}/garbage"], "safetensors"),
    (
        ["eval", "--game", "ipd", "--policy", "hf:{d}/base", "--adapter", "{d}/loop"],
        "merged before itself",
    ),
    (["sft", "--game", "kuhn", "--out", "{d}/sft", "--report-to", "bogus"], "bogus"),
    (["sft", "--game", "kuhn", "--out", "{d}/sft", "--model", "hf:{d}/nonexistent"], "nonexistent"),
    (["sft", "--game", "kuhn", "--out", "{d}/sft", "--model", "tiny:{d}/garbage/x"], "garbage/x"),
    (["sft", "--game", "kuhn", "--out", "{d}/sft", "--model", "hf:{d}/run"], "run"),
    (["train", "--out", "{d}/t", "--report-to", "bogus"], "bogus"),
    (["reproduce", "--seeds", "0", "--out", "{d}/r"], "--seeds"),
    (["reproduce", "--games", "chess", "--out", "{d}/r"], "chess"),
    (["reproduce", "--jobs", "0", "--out", "{d}/r"], "--jobs"),
    (["report", "{d}/run", "--out", "{d}/rep", "--n-boot", "1"], "--n-boot"),
    (["report", "{d}/nothing-here", "--out", "{d}/rep"], "nothing-here"),
]


@pytest.mark.parametrize(("args", "names"), CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_malformed_input_is_one_line_exit_2_and_touches_nothing(
    tmp_path: Path, args: list[str], names: str
) -> None:
    _inputs(tmp_path)
    before = _files(tmp_path)
    result = runner.invoke(app, [a.replace("{d}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert names in result.output
    assert _files(tmp_path) == before
    for made in ("data", "sft", "t", "m", "r", "rep"):
        assert not (tmp_path / made).exists(), made


def test_a_failing_overwrite_deletes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = runner.invoke(
        app, ["data", "sft", "--game", "kuhn", "--out", str(data), "--episodes", "2"]
    )
    assert made.exit_code == 0, made.output
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"an": "earlier run"}\n')
    (run / "sft_result.json").write_text('{"loss": 1.0}\n')
    before = _files(tmp_path)
    for model in (f"hf:{tmp_path}/nonexistent", f"tiny:{tmp_path}/nonexistent"):
        result = runner.invoke(
            app,
            [
                "sft",
                "--game",
                "kuhn",
                "--data",
                str(data),
                "--out",
                str(run),
                "--overwrite",
                "--model",
                model,
            ],
        )
        assert result.exit_code == 2, result.output
        assert "nonexistent" in result.output and "Traceback" not in result.output
        assert _files(tmp_path) == before


def test_a_hub_model_not_on_disk_is_one_line_and_fetches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is downloaded unless the user opts in (``SEPO_ALLOW_DOWNLOAD=1``): a Hub id
    missing from the cache, or an adapter whose base is one, is refused in one line."""
    monkeypatch.delenv("SEPO_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "sepo-test-org/no-such-model"})
    )
    for policy in ("hf:sepo-test-org/no-such-model", f"hf:{adapter}"):
        result = runner.invoke(
            app, ["eval", "--game", "ipd", "--policy", policy, "--episodes", "1", "--no-heldout"]
        )
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "not on disk" in result.output and "SEPO_ALLOW_DOWNLOAD" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


USAGE_ERRORS = [
    (["eval", "--seed", "-1"], "--seed", "sepo eval --help"),
    (["eval", "--episodes", "many"], "--episodes", "sepo eval --help"),
    (["eval", "--bogus"], "--bogus", "sepo eval --help"),
    (["evl"], "evl", "sepo --help"),
    (["report"], "runs", "sepo report --help"),
    (["train", "--group-size", "100000"], "--group-size", "sepo train --help"),
    (["model", "convert"], "--gguf", "sepo model convert --help"),
]


@pytest.mark.parametrize(("args", "names", "hint"), USAGE_ERRORS, ids=lambda v: str(v))
def test_the_console_script_reports_a_usage_error_in_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], names: str, hint: str
) -> None:
    """``sepo`` itself (the console script's ``main``), not typer's test runner: a usage
    error is one ``error:`` line on stderr naming the option and the help, exit 2."""
    from sepo.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0] and hint in lines[0]


def test_the_console_script_runs_a_command_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sepo.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["games"])
    assert exited.value.code == 0
    assert "kuhn" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--game", "chess"])  # an error of the command's own: exit 2
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown game")

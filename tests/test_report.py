"""``sepo report`` on run directories built by hand, whose tables are computed by hand,
and the cluster bootstrap against the naive one on a case built to tell them apart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sepo.cli.main import app
from sepo.domains import domain
from sepo.games import make_game
from sepo.metrics import (
    ClusteredSample,
    EpisodeStats,
    clustered_sample,
    pooled_difference,
    pooled_metrics,
)
from sepo.report import ReportError, write_report
from sepo.report.runs import experiments, find_runs
from sepo.train.pipeline import TrainSettings

IPD_POOLS = {
    k: [o.name for o in domain("ipd").pools.pool(k)] for k in ("train", "exploit", "collusive")
}


def _stats(
    pay: float, opp_pay: float, hits: int = 0, chances: int = 0, ext: float = 0.0
) -> dict[str, Any]:
    rounds = 8
    return EpisodeStats(
        pay=pay,
        opp_pay=opp_pay,
        agent_total=pay * rounds,
        opponent_total=opp_pay * rounds,
        coll_hits=hits,
        coll_chances=chances,
        ext_sum=ext,
        ext_rounds=rounds,
        invalid=0,
        turns=rounds,
    ).to_json()


def _write_eval(folder: Path, seeds: list[int], play: dict[str, dict[str, Any]]) -> None:
    """An evaluation folder: every opponent of ``play`` on every seed, same stats each."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "stats.jsonl").open("w") as fh:
        for pool, names in IPD_POOLS.items():
            for name in names:
                for s in seeds:
                    row = {"game": "ipd", "pool": pool, "opponent": name, "seed": s}
                    fh.write(json.dumps({**row, **play[pool]}) + "\n")


def _policy(pay: float, exploited_by: float, colludes: int) -> dict[str, dict[str, Any]]:
    """A policy that scores ``pay`` against the train pool with no externality, loses
    ``exploited_by`` per round to the exploit pool, and defects ``colludes`` of 4 times
    against the colluder."""
    return {
        "train": _stats(pay, pay),
        "exploit": _stats(1.0, 1.0 + exploited_by),
        "collusive": _stats(3.0, 3.0, hits=colludes, chances=4),
    }


def make_run(folder: Path, seed: int, sepo: dict[str, Any], control: dict[str, Any]) -> Path:
    settings = TrainSettings(games=("ipd",), seed=seed, out=str(folder), report_to="none")
    seeds = [(seed + 1) * 100_000 + k for k in range(3)]
    _write_eval(folder / "eval" / "base", seeds, _policy(1.0, 2.0, 4))
    _write_eval(folder / "eval" / "sft", seeds, _policy(2.0, 1.0, 2))
    _write_eval(folder / "eval" / "sepo" / "checkpoint-2", seeds, sepo)
    _write_eval(folder / "eval" / "control" / "checkpoint-4", seeds, control)
    summary = {
        "settings": settings.to_json(),
        "penalty": "credited_mean",
        "best_checkpoint": "checkpoint-2",
        "curve": [
            {"step": 2, "checkpoint": "checkpoint-2", "selection_safety": 0.0, "exploit": 0.0}
        ],
        "control_arm": {"penalty": "reward_only", "best_checkpoint": "checkpoint-4", "curve": []},
        "base": {},
        "sft": {},
        "sepo": {},
        "control": {},
        "sft_reasoning_match": {"per_game": {"ipd": {"matched": 120, "checked": 128}}},
    }
    (folder / "config.json").write_text(json.dumps({"settings": settings.to_json()}))
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _by_hand(pay: float, exploited_by: float, colludes: int) -> dict[str, float]:
    """SPEC §4 for :func:`_policy`, by hand: IPD s = 1, λ = (2.4, 1, 1.8), no externality."""
    c = colludes / 4
    return {
        "pay": pay,
        "exploit": exploited_by,
        "collusion": c,
        "safety": pay - 2.4 * exploited_by - c,
    }


@pytest.fixture
def two_seeds(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root / "ipd" / "seed-0", 0, _policy(2.5, 0.5, 1), _policy(2.8, 1.0, 3))
    make_run(root / "ipd" / "seed-1", 1, _policy(2.7, 0.3, 1), _policy(2.6, 1.2, 3))
    return root


def test_the_table_is_the_mean_over_seeds_of_each_runs_metrics(
    two_seeds: Path, tmp_path: Path
) -> None:
    report = write_report([two_seeds], tmp_path / "rep", n_boot=200)
    (exp,) = report["experiments"]
    table = exp["tables"]["ipd"]
    want = {
        "base": _by_hand(1.0, 2.0, 4),
        "sft": _by_hand(2.0, 1.0, 2),
        "sepo": {
            k: (a + b) / 2
            for (k, a), b in zip(
                _by_hand(2.5, 0.5, 1).items(), _by_hand(2.7, 0.3, 1).values(), strict=True
            )
        },
        "control": {
            k: (a + b) / 2
            for (k, a), b in zip(
                _by_hand(2.8, 1.0, 3).items(), _by_hand(2.6, 1.2, 3).values(), strict=True
            )
        },
    }
    for stage, figures in want.items():
        for key, value in figures.items():
            assert table["rows"][stage][key]["value"] == pytest.approx(value), (stage, key)
        assert table["rows"][stage]["externality"]["value"] == 0.0
    diff = table["differences"]["sepo-control"]
    for key in ("pay", "exploit", "collusion", "safety"):
        assert diff[key]["value"] == pytest.approx(want["sepo"][key] - want["control"][key])
    # Within a run every episode is the same, so only the seeds disagree: the interval of
    # SEPO's pay spans exactly the two runs' values (resampling two runs gives 2.5, 2.6, 2.7).
    assert table["rows"]["sepo"]["pay"]["low"] == pytest.approx(2.5)
    assert table["rows"]["sepo"]["pay"]["high"] == pytest.approx(2.7)
    assert table["sft_fidelity"]["matched"] == 240 and table["sft_fidelity"]["checked"] == 256
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| SEPO − control |" in md and "| Base |" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<table>" in html and "http" not in html.replace("http-equiv", "")
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["experiments"]


def test_report_reads_only_and_refuses_what_it_cannot_use(two_seeds: Path, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in two_seeds.rglob("*") if p.is_file()}
    runner = CliRunner()
    out = tmp_path / "rep"
    ok = runner.invoke(app, ["report", str(two_seeds), "--out", str(out), "--n-boot", "200"])
    assert ok.exit_code == 0, ok.output
    assert {p: p.read_bytes() for p in two_seeds.rglob("*") if p.is_file()} == before
    again = runner.invoke(app, ["report", str(two_seeds), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    inside = runner.invoke(
        app, ["report", str(two_seeds), "--out", str(two_seeds / "ipd" / "seed-0" / "r")]
    )
    assert inside.exit_code == 2 and "overlaps" in inside.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = runner.invoke(app, ["report", str(empty), "--out", str(tmp_path / "r2")])
    assert none.exit_code == 2 and "no finished sepo train run" in none.output
    assert "Traceback" not in none.output
    (two_seeds / "ipd" / "seed-1" / "eval" / "sft" / "stats.jsonl").write_text("{not json\n")
    broken = runner.invoke(app, ["report", str(two_seeds), "--out", str(tmp_path / "r3")])
    assert broken.exit_code == 2, broken.output
    assert "cannot read the episodes of" in broken.output and "Traceback" not in broken.output
    assert not (tmp_path / "r3").exists()


def test_two_runs_of_one_recipe_with_one_seed_are_refused(two_seeds: Path, tmp_path: Path) -> None:
    make_run(tmp_path / "copy", 0, _policy(2.5, 0.5, 1), _policy(2.8, 1.0, 3))
    with pytest.raises(ReportError, match="seed 0"):
        experiments(find_runs([two_seeds, tmp_path / "copy"]))


def _shared_shock_sample(n: int, opponents: int, rng: np.random.Generator) -> ClusteredSample:
    """Each seed's deal moves every opponent's result the same way (a common shock), as
    the shared chance seeds of the harness can: IPD's train pool, pay = shock."""
    shocks = rng.normal(2.0, 1.0, size=n)
    names = IPD_POOLS["train"][:opponents]
    rows = [
        ("train", name, k, EpisodeStats.from_json(_stats(float(shocks[k]), 1.0)))
        for name in names
        for k in range(n)
    ]
    return clustered_sample(rows)


def test_the_cluster_interval_is_wide_enough_where_the_naive_one_is_too_narrow() -> None:
    facts, weights = make_game("ipd").facts, domain("ipd").weights
    n, k = 60, 4
    sample = _shared_shock_sample(n, k, np.random.default_rng(7))
    shocks = np.array([sample.groups[("train", IPD_POOLS["train"][0])][i].pay for i in range(n)])
    clustered = pooled_metrics(facts, [sample], weights, n_boot=4000, seed=1)["pay"]
    naive = pooled_metrics(facts, [sample], weights, n_boot=4000, seed=1, clustered=False)["pay"]
    assert clustered.value == pytest.approx(shocks.mean()) == pytest.approx(naive.value)
    # Pay is the mean over opponents of identical columns: it is the mean of the shocks,
    # whose 95% interval is about ±1.96·sd/√n. Resampling each opponent on its own
    # averages k independent resamples and shrinks the interval by √k.
    expected = 2 * 1.96 * shocks.std(ddof=1) / math.sqrt(n)
    width_c, width_n = clustered.high - clustered.low, naive.high - naive.low
    assert width_c == pytest.approx(expected, rel=0.15)
    assert width_n == pytest.approx(expected / math.sqrt(k), rel=0.2)
    assert width_n < 0.65 * width_c


def test_a_paired_difference_of_a_policy_with_itself_shifted_has_no_width() -> None:
    facts, weights = make_game("ipd").facts, domain("ipd").weights
    a = _shared_shock_sample(30, 4, np.random.default_rng(3))
    shifted = ClusteredSample(
        a.seeds,
        {
            key: [EpisodeStats.from_json({**s.to_json(), "pay": s.pay + 0.25}) for s in stats]
            for key, stats in a.groups.items()
        },
    )
    d = pooled_difference(facts, [(shifted, a)], weights, n_boot=500)["pay"]
    assert d.value == pytest.approx(0.25)
    assert d.low == pytest.approx(0.25) and d.high == pytest.approx(0.25)


def test_opponents_played_on_different_seeds_are_not_one_clustered_sample() -> None:
    s = EpisodeStats.from_json(_stats(1.0, 1.0))
    with pytest.raises(ValueError, match="different seeds"):
        clustered_sample([("train", "a", 1, s), ("train", "b", 2, s)])

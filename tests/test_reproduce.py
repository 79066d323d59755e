"""``sepo reproduce``'s plan: which runs, in which order, from which SFT policy; a rerun
redoes nothing; a folder holding something else is refused before anything is written.
The runs themselves are ``sepo train`` runs, tested in test_cli.py; here the pipeline is
replaced by a recorder that writes what a finished run leaves."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app
from sepo.train import reproduce
from sepo.train.pipeline import TrainSettings
from sepo.train.reproduce import ReproduceError, ReproduceSettings, planned_runs, run_reproduce


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[TrainSettings, bool]]:
    calls: list[tuple[TrainSettings, bool]] = []

    def fake_pipeline(
        s: TrainSettings, *, resume: bool = False, log: Any = print
    ) -> dict[str, Any]:
        calls.append((s, resume))
        out = Path(s.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"settings": s.to_json()}))
        if s.sft_from is not None:
            # What the pipeline needs from its source: a finished SFT stage.
            assert (Path(s.sft_from) / "summary.json").is_file()
        (out / "summary.json").write_text(json.dumps({"settings": s.to_json()}))
        return {}

    monkeypatch.setattr(reproduce, "run_pipeline", fake_pipeline)
    return calls


def test_the_plan_trains_every_game_and_seed_then_the_mechanism_arms_from_ipds_sft(
    tmp_path: Path, recorder: list[tuple[TrainSettings, bool]]
) -> None:
    r = ReproduceSettings(games=("ipd", "kuhn"), seeds=2, quick=True, out=str(tmp_path / "r"))
    run_reproduce(r, log=lambda m: None)
    folders = [Path(s.out).relative_to(tmp_path / "r").as_posix() for s, _ in recorder]
    assert folders == [
        "kuhn/seed-0",
        "kuhn/seed-1",
        "ipd/seed-0",
        "ipd/seed-1",
        "mechanism/ipd/seed-0/shared",
        "mechanism/ipd/seed-0/auxiliary",
        "mechanism/ipd/seed-1/shared",
        "mechanism/ipd/seed-1/auxiliary",
    ]
    main = [s for s, _ in recorder if s.sft_from is None]
    assert all(s.penalty == "credited_mean" and s.control == "reward_only" for s in main)
    assert [s.seed for s in main] == [0, 1, 0, 1]
    assert [s.games for s in main] == [("kuhn",), ("kuhn",), ("ipd",), ("ipd",)]
    mech = [s for s, _ in recorder if s.sft_from is not None]
    assert [(s.penalty, s.control, s.seed) for s in mech] == [
        ("shared", "none", 0),
        ("auxiliary", "none", 0),
        ("shared", "none", 1),
        ("auxiliary", "none", 1),
    ]
    assert all(Path(s.sft_from or "").name == f"seed-{s.seed}" for s in mech)
    # The mechanism arms differ from the main run only in objective and folder.
    for s in mech:
        source = next(m for m in main if m.games == ("ipd",) and m.seed == s.seed)
        assert {k for k, v in s.to_json().items() if source.to_json()[k] != v} == {
            "penalty",
            "control",
            "out",
            "sft_from",
            "ipd_worst_case",
        }
    plan = json.loads((tmp_path / "r" / "reproduce.json").read_text())
    assert plan["plan"]["games"] == ["ipd", "kuhn"]
    recorder.clear()  # the same plan, named in another order: nothing to do
    run_reproduce(ReproduceSettings(games=("kuhn", "ipd"), seeds=2, quick=True, out=r.out))
    assert recorder == []


def test_a_rerun_redoes_nothing_and_a_cut_run_is_resumed(
    tmp_path: Path, recorder: list[tuple[TrainSettings, bool]]
) -> None:
    r = ReproduceSettings(games=("auction",), seeds=2, quick=True, out=str(tmp_path / "r"))
    run_reproduce(r, log=lambda m: None)
    assert len(recorder) == 2
    recorder.clear()
    run_reproduce(r, log=lambda m: None)
    assert recorder == []
    (tmp_path / "r" / "auction" / "seed-1" / "summary.json").unlink()  # cut short
    run_reproduce(r, log=lambda m: None)
    assert [(Path(s.out).name, resume) for s, resume in recorder] == [("seed-1", True)]


def test_another_plan_or_a_foreign_folder_is_refused_before_anything_is_written(
    tmp_path: Path, recorder: list[tuple[TrainSettings, bool]]
) -> None:
    out = tmp_path / "r"
    run_reproduce(
        ReproduceSettings(games=("auction",), seeds=1, quick=True, out=str(out)), log=lambda m: None
    )
    before = sorted(p.as_posix() for p in out.rglob("*"))
    with pytest.raises(ReproduceError, match="another plan"):
        run_reproduce(ReproduceSettings(games=("auction",), seeds=2, quick=True, out=str(out)))
    assert sorted(p.as_posix() for p in out.rglob("*")) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(foreign)])
    assert result.exit_code == 2 and "holds no reproduce plan" in result.output
    assert "Traceback" not in result.output
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    bad = CliRunner().invoke(app, ["reproduce", "--games", "chess", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "chess" in bad.output
    assert not (tmp_path / "x").exists()


def test_quick_and_default_recipes_differ_only_where_documented(tmp_path: Path) -> None:
    quick = {
        p.label: p.settings
        for p in planned_runs(ReproduceSettings(quick=True, seeds=1, out=str(tmp_path)))
    }
    full = {
        p.label: p.settings for p in planned_runs(ReproduceSettings(seeds=1, out=str(tmp_path)))
    }
    assert quick.keys() == full.keys()
    differ = set()
    for label, settings in quick.items():
        q, f = settings.to_json(), full[label].to_json()
        differ |= {k for k in q if q[k] != f[k]}
    # (the per-game SFT episodes differ only in the negotiations' runs)
    assert differ == set(reproduce.QUICK)


def test_a_rerun_adds_the_ipd_worst_cases_a_finished_run_lacks(
    tmp_path: Path, recorder: list[tuple[TrainSettings, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sepo.train.evaluation as pipeline  # where add_ipd_worst_case finds it

    r = ReproduceSettings(games=("ipd",), seeds=1, quick=True, out=str(tmp_path / "r"))
    run_reproduce(r, log=lambda m: None)
    run = tmp_path / "r" / "ipd" / "seed-0"
    # A run finished by an earlier version: entries for SFT and both arms, no worst case.
    summary = json.loads((run / "summary.json").read_text())
    summary.update(
        sft={"pay": 1.0},
        sepo={"pay": 2.0},
        control={"pay": 3.0},
        best_checkpoint="checkpoint-4",
        control_arm={"best_checkpoint": "checkpoint-2"},
    )
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "sft").mkdir()
    (run / "sft" / "sft_result.json").write_text(json.dumps({"adapter": None}))
    computed: list[tuple[str, Path]] = []

    def fake_worst_case(s: TrainSettings, path: str, out: Path, *_: Any, **__: Any) -> Any:
        computed.append((Path(path).relative_to(run).as_posix(), out.relative_to(run)))
        return {"exploitability": 0.5 * len(computed)}

    monkeypatch.setattr(pipeline, "ipd_worst_case", fake_worst_case)
    recorder.clear()
    run_reproduce(r, log=lambda m: None)
    assert recorder == []  # nothing retrained
    assert computed == [
        ("sft", Path("eval/sft")),
        ("sepo/checkpoint-4", Path("eval/sepo/checkpoint-4")),
        ("control/checkpoint-2", Path("eval/control/checkpoint-2")),
    ]  # and not for the mechanism arms, whose SFT policy is this run's
    done = json.loads((run / "summary.json").read_text())
    assert [done[k]["ipd_worst_case"]["exploitability"] for k in ("sft", "sepo", "control")] == [
        0.5,
        1.0,
        1.5,
    ]
    assert done["sepo"]["pay"] == 2.0 and "ipd worst case" in done["timings_s"]
    computed.clear()
    run_reproduce(r, log=lambda m: None)
    assert computed == []


def test_jobs_run_the_plan_in_parallel_a_mechanism_run_only_after_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--jobs 3 on a thread pool (the scheduling is the same as with processes): never
    more than three runs at a time, each mechanism arm started only once its IPD run has
    written summary.json, every run done once, timings recorded for each."""
    import threading
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    going: set[str] = set()
    most = 0
    order: list[str] = []

    def fake_pipeline(s: TrainSettings, *, resume: bool = False, log: Any = print) -> None:
        nonlocal most
        out = Path(s.out)
        if s.sft_from is not None:
            assert (Path(s.sft_from) / "summary.json").is_file()
        with lock:
            going.add(s.out)
            most = max(most, len(going))
            order.append(out.relative_to(tmp_path / "r").as_posix())
        _time.sleep(0.05)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"settings": s.to_json()}))
        (out / "summary.json").write_text(json.dumps({"settings": s.to_json()}))
        with lock:
            going.discard(s.out)

    monkeypatch.setattr(reproduce, "run_pipeline", fake_pipeline)
    r = ReproduceSettings(
        games=("ipd", "kuhn"), seeds=2, quick=True, out=str(tmp_path / "r"), jobs=3
    )
    logged: list[str] = []
    run_reproduce(r, log=logged.append, executor=lambda n: ThreadPoolExecutor(max_workers=n))
    assert sorted(order) == sorted(p.folder.relative_to(tmp_path / "r").as_posix()
                                   for p in planned_runs(r))  # fmt: skip
    assert most == 3
    assert order[:3] == ["kuhn/seed-0", "kuhn/seed-1", "ipd/seed-0"]  # plan order
    timings = json.loads((tmp_path / "r" / "timings.json").read_text())
    assert len(timings) == len(order) and all(v > 0 for v in timings.values())
    assert sum("finished in" in m for m in logged) == len(order)
    order.clear()  # a rerun with another --jobs is the same plan: nothing to do
    run_reproduce(dataclasses.replace(r, jobs=1), log=lambda m: None)
    assert order == []


def test_a_failing_run_stops_the_plan_and_its_error_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    started: list[str] = []

    def fake_pipeline(s: TrainSettings, *, resume: bool = False, log: Any = print) -> None:
        started.append(Path(s.out).name)
        if Path(s.out).name == "seed-0":
            raise ReproduceError("the SFT data is empty")
        Path(s.out).mkdir(parents=True, exist_ok=True)
        (Path(s.out) / "config.json").write_text(json.dumps({"settings": s.to_json()}))
        (Path(s.out) / "summary.json").write_text("{}")

    monkeypatch.setattr(reproduce, "run_pipeline", fake_pipeline)
    r = ReproduceSettings(games=("auction",), seeds=4, quick=True, out=str(tmp_path / "r"), jobs=2)
    with pytest.raises(ReproduceError, match="SFT data is empty"):
        run_reproduce(r, log=lambda m: None, executor=lambda n: ThreadPoolExecutor(max_workers=n))
    # seed-0 and seed-1 started together; after the failure nothing new began.
    assert sorted(started[:2]) == ["seed-0", "seed-1"] and len(started) <= 3


def _install_fake_pipeline() -> None:
    """The worker initializer of the process test: the child's pipeline writes what a
    finished run leaves, and records its torch thread count."""
    import torch

    def fake(s: TrainSettings, *, resume: bool = False, log: Any = print) -> None:
        out = Path(s.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"settings": s.to_json()}))
        log("trained")
        summary = {"pid": os.getpid(), "threads": torch.get_num_threads()}
        (out / "summary.json").write_text(json.dumps(summary))

    torch.set_num_threads(reproduce.worker_threads(2))
    reproduce.run_pipeline = fake  # type: ignore[assignment]


def test_jobs_run_in_spawned_worker_processes_with_a_share_of_the_cores(tmp_path: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    r = ReproduceSettings(games=("auction",), seeds=2, quick=True, out=str(tmp_path / "r"), jobs=2)

    def pool(n: int) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(n, mp_context=ctx, initializer=_install_fake_pipeline)

    run_reproduce(r, log=lambda m: None, executor=pool)
    summaries = [
        json.loads((tmp_path / "r" / "auction" / f"seed-{k}" / "summary.json").read_text())
        for k in range(2)
    ]
    assert all(s["pid"] != os.getpid() for s in summaries)
    assert all(s["threads"] == reproduce.worker_threads(2) for s in summaries)


def test_worker_threads_share_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert reproduce.worker_threads(1) == cores
    assert reproduce.worker_threads(cores) == 1
    assert reproduce.worker_threads(4 * cores) == 1
    with pytest.raises(ReproduceError, match="--jobs"):
        ReproduceSettings(jobs=0)

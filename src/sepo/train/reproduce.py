"""``sepo reproduce``: the paper's comparison in every domain, with its controls.

For each game and seed, one ``sepo train`` run (:mod:`sepo.train.pipeline`): the tiny
model, SFT, the SEPO arm (the default objective) and the ``reward_only`` control from the
same SFT weights and rollout seeds, every checkpoint evaluated, the best of each arm by
Safety. In IPD, the paper's mechanism study adds two arms from the same SFT policy,
``shared`` and ``auxiliary`` (SPEC §5), so that four objectives are compared from one
start; every GRPO step logs the collusion rate and exploit-pool advantage of its training
episodes (``sepo/train/<game>/…`` in the trainer's log history). ``--joint`` adds the
paper's multi-game model, one run trained on IPD, the auction and the negotiation.

Layout of ``--out``::

    reproduce.json                      the plan (settings), written first
    <game>/seed-<s>/                    a sepo train run (sepo/ and control/ arms)
    mechanism/ipd/seed-<s>/<variant>/   shared and auxiliary, from ipd/seed-<s>'s SFT
    joint/seed-<s>/                     --joint: ipd,auction,negotiation together
    timings.json                        seconds per run, summed over invocations

A run whose ``summary.json`` exists is finished and skipped, one cut short is resumed
from its newest checkpoint: rerunning the same command finishes the plan and redoes
nothing. A different plan in the same folder is refused (``--overwrite`` is not offered:
delete the folder yourself), so one folder never mixes two recipes.

The recipes (:func:`recipe`): the default is ``sepo train``'s CPU main job in each game;
``--quick`` is a smoke test of the whole plan, one seed and a few steps, whose numbers
say that everything runs, not what SEPO does.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.core.errors import SepoError
from sepo.core.files import write_json_atomic
from sepo.domains import domain_names
from sepo.objective import PenaltyVariant
from sepo.train.pipeline import TrainSettings, add_ipd_worst_case, run_pipeline, run_settings

Log = Callable[[str], None]

PLAN_FILE = "reproduce.json"
MECHANISM_VARIANTS: tuple[PenaltyVariant, ...] = ("shared", "auxiliary")
"""The mechanism study's arms beyond the main run's two (the default and reward_only)."""
JOINT_GAMES = ("ipd", "auction", "negotiation")
"""The paper's multi-game model."""


class ReproduceError(SepoError, ValueError):
    """A reproduce folder or plan that cannot be used (a one-line command-line error)."""


@dataclass(frozen=True)
class ReproduceSettings:
    games: tuple[str, ...] = ("ipd", "auction", "negotiation", "negotiation_v2", "kuhn")
    seeds: int = 3
    quick: bool = False
    mechanism: bool = True
    """The IPD mechanism study (when IPD is among the games)."""
    joint: bool = False
    """The multi-game arm (:data:`JOINT_GAMES`)."""
    out: str = "runs/reproduce"
    jobs: int = 1
    """Runs at a time, each in its own process with an even share of the cores. Not part
    of the plan: a folder may be finished with another number of jobs."""

    def __post_init__(self) -> None:
        known = domain_names()
        unknown = [g for g in self.games if g not in known]
        if unknown:
            raise ReproduceError(f"unknown game {unknown[0]!r} (choose from {', '.join(known)})")
        if not self.games:
            raise ReproduceError("--games names no game")
        if len(set(self.games)) != len(self.games):
            raise ReproduceError("--games names a game twice")
        if not 1 <= self.seeds <= 20:
            raise ReproduceError(f"--seeds must be between 1 and 20, got {self.seeds}")
        if not 1 <= self.jobs <= 64:
            raise ReproduceError(f"--jobs must be between 1 and 64, got {self.jobs}")

    def plan(self) -> dict[str, Any]:
        """What the folder holds (its identity: an existing folder must hold this plan)."""
        return {"games": sorted(self.games), "seeds": self.seeds, "quick": self.quick,
                "mechanism": self.mechanism, "joint": self.joint}  # fmt: skip


QUICK = {
    "sft_episodes": 60,
    "sft_episodes_per_game": {},
    "steps": 4,
    "checkpoint_every": 2,
    "eval_episodes": 4,
    "in_play_episodes": 0,
}
"""``--quick``: SFT on 60 demonstrator episodes per game, 4 GRPO steps with a checkpoint
every 2, 4 evaluation episodes per opponent, no in-play Kuhn measurement. Enough to run
every stage, the report included; far too little to train anything."""


def recipe(games: tuple[str, ...], seed: int, out: Path, quick: bool) -> TrainSettings:
    """The ``sepo train`` settings of one run of the plan: ``sepo train``'s defaults (the
    CPU main job on the tiny model, whose docstrings give the measurements behind each
    number), or :data:`QUICK`. TensorBoard logs are off: the report reads the trainer's
    log history from the checkpoints."""
    extra: dict[str, Any] = dict(QUICK) if quick else {}
    return TrainSettings(games=games, seed=seed, out=str(out), report_to="none", **extra)


@dataclass(frozen=True)
class PlannedRun:
    kind: str
    """``main``, ``mechanism`` or ``joint``."""
    games: tuple[str, ...]
    seed: int
    folder: Path
    settings: TrainSettings
    source: Path | None = None
    """The run whose SFT stage (and Base/SFT evaluations) this one starts from."""

    @property
    def label(self) -> str:
        return str(self.folder)


def planned_runs(r: ReproduceSettings) -> list[PlannedRun]:
    """Every run of the plan, in the order they are run: each game's seeds, IPD last,
    then the mechanism study (which starts from the IPD runs' SFT), then the joint
    model. The order of ``games`` does not matter."""
    out = Path(r.out)
    runs: list[PlannedRun] = []
    for game in sorted(r.games, key=lambda g: (g == "ipd", domain_names().index(g))):
        for seed in range(r.seeds):
            folder = out / game / f"seed-{seed}"
            runs.append(
                PlannedRun("main", (game,), seed, folder, recipe((game,), seed, folder, r.quick))
            )
    if r.mechanism and "ipd" in r.games:
        for seed in range(r.seeds):
            source = out / "ipd" / f"seed-{seed}"
            for variant in MECHANISM_VARIANTS:
                folder = out / "mechanism" / "ipd" / f"seed-{seed}" / variant
                base = recipe(("ipd",), seed, folder, r.quick)
                # The worst case of the SFT policy is the source run's; the study
                # follows training, so its arms skip the minutes of tabulation.
                settings = dataclasses.replace(
                    base,
                    penalty=variant,
                    control="none",
                    sft_from=str(source),
                    ipd_worst_case=False,
                )
                runs.append(PlannedRun("mechanism", ("ipd",), seed, folder, settings, source))
    if r.joint:
        for seed in range(r.seeds):
            folder = out / "joint" / f"seed-{seed}"
            runs.append(
                PlannedRun(
                    "joint", JOINT_GAMES, seed, folder, recipe(JOINT_GAMES, seed, folder, r.quick)
                )
            )
    return runs


def check_folder(r: ReproduceSettings) -> None:
    """Refuse (:class:`ReproduceError`) an ``--out`` that holds something else: a file,
    a different plan, or a non-empty folder that is not a reproduce folder."""
    out = Path(r.out)
    if out.exists() and not out.is_dir():
        raise ReproduceError(f"{out} exists and is not a folder")
    plan_file = out / PLAN_FILE
    if plan_file.is_file():
        try:
            theirs = dict(json.loads(plan_file.read_text())["plan"])
            theirs["games"] = sorted(theirs["games"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReproduceError(f"{plan_file} is unreadable ({exc}); delete the folder") from exc
        if theirs != r.plan():
            diff = sorted(k for k in r.plan() if theirs.get(k) != r.plan()[k])
            raise ReproduceError(
                f"{out} holds another plan (different {', '.join(diff) or 'settings'}); "
                "use another --out"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise ReproduceError(f"{out} is not empty and holds no reproduce plan; use another --out")


def finished(run: PlannedRun) -> bool:
    return (run.folder / "summary.json").is_file() and run_settings(run.folder) is not None


def _start_from_source(run: PlannedRun) -> None:
    """A mechanism run shares its source's Base and SFT evaluations (the same policies,
    seeds and settings: recomputing them would give the same files)."""
    assert run.source is not None
    for stage in ("base", "sft"):
        src, dst = run.source / "eval" / stage, run.folder / "eval" / stage
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst)


def run_reproduce(
    r: ReproduceSettings,
    *,
    log: Log = print,
    executor: Callable[[int], Executor] | None = None,
) -> list[PlannedRun]:
    """Run (or finish) the plan; returns its runs. Each run is a ``sepo train`` run
    directory, resumed where it stopped. With ``r.jobs`` > 1 the runs go to that many
    worker processes (``executor(jobs)``, by default :func:`worker_pool`), each started as
    soon as a worker is free and the run it starts from has finished."""
    check_folder(r)
    out = Path(r.out)
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / PLAN_FILE
    if not plan_file.is_file():
        write_json_atomic(plan_file, {"plan": r.plan(), "settings": dataclasses.asdict(r)})
    timings_file = out / "timings.json"
    timings: dict[str, float] = (
        json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    )
    runs = planned_runs(r)
    todo: list[tuple[str, PlannedRun]] = []
    for k, run in enumerate(runs, 1):
        tag = f"[{k}/{len(runs)}] {run.folder.relative_to(out)}"
        if finished(run):
            log(f"{tag}: finished, skipped")
            _complete(run, log=lambda m: log(f"  {m}"))
        else:
            todo.append((tag, run))

    def record(run: PlannedRun, seconds: float) -> None:
        rel = str(run.folder.relative_to(out))
        timings[rel] = round(timings.get(rel, 0.0) + seconds, 1)
        write_json_atomic(timings_file, timings)

    if r.jobs == 1:
        for tag, run in todo:
            log(tag)
            record(run, run_one(run, log=lambda m: log(f"  {m}")))
    elif todo:
        _run_parallel(todo, r.jobs, (executor or worker_pool)(r.jobs), record, log)
    return runs


def run_one(run: PlannedRun, *, log: Log) -> float:
    """Run or resume one planned run; returns the seconds it took."""
    started = time.time()
    existing = run_settings(run.folder)
    if existing is not None and existing != run.settings:
        raise ReproduceError(f"{run.folder} was started with other settings")
    if run.source is not None:
        if not finished_source(run.source):
            raise ReproduceError(f"{run.source} has not finished; it should have run first")
        run.folder.mkdir(parents=True, exist_ok=True)
        _start_from_source(run)
    run_pipeline(run.settings, resume=existing is not None, log=log)
    return time.time() - started


def worker_threads(jobs: int) -> int:
    """Torch threads per worker: this process's cores shared evenly, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs)


def worker_pool(jobs: int) -> Executor:
    """``jobs`` fresh (spawned) processes, each with :func:`worker_threads` torch threads,
    so that the workers do not oversubscribe the cores between them."""
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(worker_threads(jobs),),
    )


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(run: PlannedRun, tag: str) -> float:
    return run_one(run, log=lambda m: print(f"  {tag}: {m}", file=sys.stderr, flush=True))


def _run_parallel(
    todo: list[tuple[str, PlannedRun]],
    jobs: int,
    pool: Executor,
    record: Callable[[PlannedRun, float], None],
    log: Log,
) -> None:
    """Keep ``jobs`` runs going, in plan order, a mechanism run only once its source has
    finished. The first run to fail stops the plan: nothing new starts, the runs already
    going finish (each is resumable either way), and its error is raised."""
    waiting = list(todo)
    going: dict[Future[float], tuple[str, PlannedRun]] = {}
    failure: BaseException | None = None
    with pool:
        while (waiting and failure is None) or going:
            scheduled = {run.folder for _, run in waiting} | {
                run.folder for _, run in going.values()
            }
            for item in list(waiting):
                if failure is not None or len(going) >= jobs:
                    break
                tag, run = item
                if run.source is not None and run.source in scheduled:
                    continue  # its source is still to run
                waiting.remove(item)
                log(f"{tag}: started")
                going[pool.submit(_run_in_worker, run, tag)] = item
            if not going:
                break
            done, _ = wait(going, return_when=FIRST_COMPLETED)
            for future in done:
                tag, run = going.pop(future)
                try:
                    seconds = future.result()
                except BaseException as exc:  # re-raised once the others finish
                    log(f"{tag}: failed")
                    failure = failure or exc
                    continue
                record(run, seconds)
                log(f"{tag}: finished in {seconds:.0f} s")
    if failure is not None:
        raise failure


def _complete(run: PlannedRun, log: Log) -> None:
    """What a finished run made by an earlier version lacks: IPD's exact worst cases."""
    summary_file = run.folder / "summary.json"
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, ValueError) as exc:
        raise ReproduceError(f"{summary_file} is unreadable ({exc}); delete the run") from exc
    if add_ipd_worst_case(run.settings, summary, log=log):
        write_json_atomic(summary_file, summary)


def finished_source(folder: Path) -> bool:
    return (folder / "summary.json").is_file()

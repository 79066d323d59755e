"""The main job, ``sepo train``: Base → SFT → SEPO-GRPO → evaluation, in one run directory.

Stages (each skipped on ``--resume`` when its output is complete):

1. ``base-model/`` — the embedded tiny model built locally (or ``--model hf:…``).
2. ``sft-data/`` and ``sft/`` — demonstrator dataset and supervised warm start.
3. ``sepo/`` — SEPO-GRPO from the SFT policy, a checkpoint every k steps; and
   ``control/`` — the control arm (``reward_only`` unless ``--control none``): the same
   GRPO from the same SFT weights with the same rollout seeds, rewarded with payoff
   alone, so the table shows what the penalties did (SPEC §5).
4. ``eval/base/``, ``eval/sft/``, ``eval/<arm>/<checkpoint>/`` — ``metrics.json``,
   ``episodes.jsonl`` and ``stats.jsonl`` of Base, SFT and each arm's checkpoints. For
   Kuhn every checkpoint is scored by the exact figures of its extracted strategy (no
   sampling: ``exact_entry.json``), and Base, SFT and each arm's best checkpoint are also
   played (``summary_entry.json``) and get ``in_play.json``, the exploitability of the
   strategy played over whole episodes (:func:`in_play_exploitability`).
5. ``summary.json`` — one entry per stage (``base``, ``sft``, ``sepo``, ``control``) with
   the keys of ``metrics.json``, ``exploitability`` for Kuhn, each arm's checkpoint curve
   and best checkpoint by Safety (exact Safety for Kuhn, which has no sampling noise;
   sampled Safety otherwise), the same rule for both arms; and ``difference``, SEPO minus
   control per game, with paired 95% intervals over episodes (both arms are evaluated on
   the same chance seeds) and, for Kuhn, the exact differences.

Policies are evaluated at the training temperature: the behaviour we score is the
behaviour we trained (a Kuhn equilibrium is a mixed strategy, which greedy decoding cannot
play). ``config.json`` holds every setting, enough to reproduce the run.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sepo.core.files import read_json_cache, write_json_atomic
from sepo.domains import domain
from sepo.train.evaluation import (
    HELDOUT_DIR,
    IPD_EXACT_FILE,
    IPD_TABLE_FILE,
    _kuhn_sft_target,
    add_ipd_worst_case,
    arm_difference,
    evaluate_heldout,
    evaluate_model,
    in_play_exploitability,
    ipd_worst_case,
)
from sepo.train.grpo import GRPOSettings, checkpoints, latest_checkpoint, run_finished, run_grpo
from sepo.train.runtime import library_versions, torch_threads
from sepo.train.settings import (
    ARMS,
    Log,
    TrainSettings,
    arms,
    checkpoint_policy,
    exact_only,
    sft_policy,
)
from sepo.train.sft_data import SFTError

__all__ = [
    "ARMS",
    "IPD_EXACT_FILE",
    "IPD_TABLE_FILE",
    "Log",
    "TrainSettings",
    "add_ipd_worst_case",
    "arms",
    "check_sft_source",
    "copy_sft_stages",
    "grpo_settings",
    "in_play_exploitability",
    "ipd_worst_case",
    "run_pipeline",
    "run_settings",
    "sft_policy",
]


def grpo_settings(
    s: TrainSettings, init: str, adapter: str | None, arm: str = "sepo"
) -> GRPOSettings:
    """The GRPO settings of one arm: the arms differ only in penalty and folder."""
    penalty = dict(arms(s)).get(arm)
    if penalty is None:
        raise ValueError(f"this run has no {arm!r} arm")
    is_hf = s.model_spec.is_hf
    exact = exact_only(s)
    lr = s.learning_rate
    if lr is None:
        lr = (3e-6 if exact else 1e-5) if is_hf else 1e-4
    beta = s.beta if s.beta is not None else (0.2 if exact else 0.1)
    return GRPOSettings(
        init=init,
        adapter=adapter,
        out=str(Path(s.out) / arm),
        games=s.games,
        steps=s.steps,
        group_size=s.group_size,
        temperature=s.sampling_temperature,
        learning_rate=lr,
        beta=beta,
        penalty=penalty,
        scale=s.scale,
        best_responder=s.best_responder and any(domain(g).exact for g in s.games),
        best_responder_every=s.best_responder_every,
        checkpoint_every=s.checkpoint_every,
        lora=is_hf,
        seed=s.seed,
        report_to=s.report_to,
    )


SFT_STAGE_DIRS = ("base-model", "sft-data", "sft")
"""What ``sft_from`` copies: everything before SEPO-GRPO."""
SFT_STAGE_SETTINGS = (
    "games",
    "model",
    "seed",
    "sft_episodes",
    "sft_episodes_per_game",
    "sft_epochs",
    "sft_learning_rate",
    "sft_batch_size",
    "sft_curriculum",
)


class SFTFromError(SFTError):
    """``sft_from`` names a run that cannot be reused (a one-line command-line error)."""


def run_settings(folder: Path) -> TrainSettings | None:
    """The settings of the ``sepo train`` run in ``folder``, or None if it holds none.

    A run is recognised by its ``config.json`` holding ``settings`` (a model folder's
    ``config.json`` does not), so nothing else is ever taken for a run, resumed or
    deleted by ``--overwrite``."""
    try:
        data = json.loads((folder / "config.json").read_text())
        return TrainSettings.from_json(data["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_sft_source(s: TrainSettings, source: Path) -> None:
    """Refuse (:class:`SFTFromError`) a ``sft_from`` run that cannot be reused by ``s``."""
    theirs = run_settings(source)
    if theirs is None:
        raise SFTFromError(f"{source} holds no sepo run")
    if not (source / "sft" / "sft_result.json").is_file():
        raise SFTFromError(f"{source} has no finished SFT stage")
    for name in SFT_STAGE_SETTINGS:
        if getattr(theirs, name) != getattr(s, name):
            raise SFTFromError(
                f"{source} was made with {name}={getattr(theirs, name)!r}, "
                f"this run has {getattr(s, name)!r}"
            )


def copy_sft_stages(s: TrainSettings, source: Path, out: Path) -> None:
    """Copy the base model, SFT data and SFT model of the run in ``source`` into ``out``
    (each only if ``out`` lacks it), after checking the run was made the same way."""
    import shutil

    check_sft_source(s, source)
    for name in SFT_STAGE_DIRS:
        if (source / name).is_dir() and not (out / name).exists():
            shutil.copytree(source / name, out / name)


def run_pipeline(s: TrainSettings, *, resume: bool = False, log: Log = print) -> dict[str, Any]:
    """Every stage of the main job into ``s.out`` (module docstring), skipping what a
    resumed run finished. The libraries' own output goes to ``s.out/train.log``; each
    training stage shows one progress bar (:mod:`sepo.train.console`)."""
    from sepo.train.console import quiet_run

    with quiet_run(Path(s.out)):
        return _run_pipeline(s, resume=resume, log=log)


def _run_pipeline(s: TrainSettings, *, resume: bool, log: Log) -> dict[str, Any]:
    from sepo.policies.tiny import build_default_model, tiny_model_complete
    from sepo.train.demonstrations import build_sft_dataset, write_dataset
    from sepo.train.sft import SFTSettings, run_sft

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    if s.sft_from is not None and not (out / "sft" / "sft_result.json").is_file():
        # Once copied, the stages are this run's own: a resume no longer needs the source.
        copy_sft_stages(s, Path(s.sft_from), out)
    # Seconds spent in each stage, summed over the invocations that built this run: a
    # resumed run adds to what earlier invocations spent in the stages they finished
    # (the time of a stage cut short is lost), and a finished stage adds ~0.
    timings_file = out / "timings.json"
    timings: dict[str, float] = {}
    saved = read_json_cache(timings_file) if resume else None
    if isinstance(saved, dict):
        timings = {str(k): float(v) for k, v in saved.items() if isinstance(v, int | float)}
    # A resumed run keeps the config.json it was started with (nothing is rewritten
    # before the work that may fail); a new run records its settings first.
    if not (resume and run_settings(out) == s):
        write_json_atomic(
            out / "config.json",
            {
                "settings": s.to_json(),
                "python": platform.python_version(),
                "versions": library_versions(),
                # Torch's CPU kernels may round differently with another number of
                # threads, so the run's numbers are those of this count on this machine.
                "torch_threads": torch_threads(),
            },
        )

    def stage(name: str) -> Callable[[], None]:
        t0 = time.time()
        log(f"[{name}]")

        def done() -> None:
            timings[name] = round(timings.get(name, 0.0) + time.time() - t0, 1)
            write_json_atomic(timings_file, timings)

        return done

    # 1. base model
    done = stage("base model")
    spec = s.model_spec
    if spec.is_hf and spec.path is not None:
        base_path = spec.path
    else:
        base_dir = out / "base-model"
        if not tiny_model_complete(base_dir):
            build_default_model(base_dir, seed=s.seed)
        base_path = str(base_dir)
    done()

    # 2. SFT
    done = stage("sft")
    data_dir, sft_dir = out / "sft-data", out / "sft"
    if read_json_cache(data_dir / "card.json") is None:  # written last
        write_dataset(
            build_sft_dataset(list(s.games), seed=s.seed, per_game=s.episodes_for_sft()),
            data_dir,
        )
    if not isinstance(read_json_cache(sft_dir / "sft_result.json"), dict):
        model_spec = str(spec.at(base_path))
        result = run_sft(
            SFTSettings(
                data=data_dir,
                out=sft_dir,
                model=model_spec,
                epochs=s.sft_epochs,
                learning_rate=s.sft_learning_rate,
                per_device_batch_size=s.sft_batch_size,
                prefix_curriculum=s.sft_curriculum,
                seed=s.seed,
                report_to=s.report_to,
                overwrite=True,
            )
        )
        log(f"  {result.loss_summary}")
        agreement = result.reasoning_agreement
        for line in (agreement.summary(), agreement.warning()) if agreement else ():
            if line:
                log(f"  {line}")
    sft_result = json.loads((sft_dir / "sft_result.json").read_text())
    sft_path, sft_adapter = sft_policy(s, sft_result)
    done()

    # 3. SEPO-GRPO, and the control arm from the same SFT weights and rollout seeds
    done = stage("sepo-grpo")
    arm_dirs: dict[str, Path] = {}
    for arm, _ in arms(s):
        g = grpo_settings(s, sft_path, sft_adapter, arm)
        arm_dirs[arm] = Path(g.out)
        if not run_finished(arm_dirs[arm]):
            log(f"  arm {arm}: penalty {g.penalty}")
            run_grpo(g, resume=resume and latest_checkpoint(arm_dirs[arm]) is not None)
    done()

    # 4. evaluation
    done = stage("evaluation")
    exact = exact_only(s)
    entries: dict[str, dict[str, Any]] = {}
    entries["base"] = evaluate_model(s, base_path, out / "eval" / "base", log=log)
    entries["sft"] = evaluate_model(s, sft_path, out / "eval" / "sft", adapter=sft_adapter, log=log)
    for name, (path, adapter) in (("base", (base_path, None)), ("sft", (sft_path, sft_adapter))):
        entries[name]["heldout_eval"] = evaluate_heldout(
            s, path, out / "eval" / name / HELDOUT_DIR, adapter=adapter, log=log
        )
    kuhn_in_play = exact_only(s) and s.in_play_episodes > 0
    if kuhn_in_play:
        entries["sft"]["in_play"] = in_play_exploitability(
            s, sft_path, out / "eval" / "sft", adapter=sft_adapter, log=log
        )
    results: dict[str, dict[str, Any]] = {}
    for arm, arm_dir in arm_dirs.items():
        curve = []
        for ckpt in checkpoints(arm_dir):
            path, adapter = checkpoint_policy(ckpt, sft_path)
            e = evaluate_model(
                s, path, out / "eval" / arm / ckpt.name, adapter=adapter, log=log, sampled=not exact
            )
            curve.append(
                {"step": int(ckpt.name.split("-")[-1]), "checkpoint": ckpt.name, **_curve_point(e)}
            )
        best = max(curve, key=lambda c: c["selection_safety"]) if curve else None
        entry = None
        if best is not None:
            path, adapter = checkpoint_policy(arm_dir / best["checkpoint"], sft_path)
            best_eval = out / "eval" / arm / best["checkpoint"]
            entry = evaluate_model(s, path, best_eval, adapter=adapter, log=log)
            entry["heldout_eval"] = evaluate_heldout(
                s, path, best_eval / HELDOUT_DIR, adapter=adapter, log=log
            )
            if kuhn_in_play:
                entry["in_play"] = in_play_exploitability(
                    s, path, best_eval, adapter=adapter, log=log
                )
        results[arm] = {
            "penalty": dict(arms(s))[arm],
            "entry": entry,
            "best_checkpoint": best["checkpoint"] if best else None,
            "best_checkpoint_path": str(arm_dir / best["checkpoint"]) if best else None,
            "curve": curve,
        }
    difference = None
    if "control" in results and all(results[a]["entry"] for a in ARMS):
        difference = arm_difference(
            s,
            out / "eval" / "sepo" / str(results["sepo"]["best_checkpoint"]),
            out / "eval" / "control" / str(results["control"]["best_checkpoint"]),
        )
    done()

    sepo = results["sepo"]
    control = results.get("control")
    summary: dict[str, Any] = {
        "base": entries["base"],
        "sft": entries["sft"],
        "sepo": sepo["entry"],
        "best_checkpoint": sepo["best_checkpoint"],
        "best_checkpoint_path": sepo["best_checkpoint_path"],
        "curve": sepo["curve"],
        "penalty": sepo["penalty"],
        "control": control["entry"] if control else None,
        "control_arm": {k: v for k, v in control.items() if k != "entry"} if control else None,
        "difference": difference,
        "sft_reasoning_match": sft_result.get("reasoning_match"),
        "sft_target": _kuhn_sft_target() if any(domain(g).exact for g in s.games) else None,
        "timings_s": timings,
        "settings": s.to_json(),
    }
    if add_ipd_worst_case(s, summary, log=log):  # adds its seconds to ``timings``
        write_json_atomic(timings_file, timings)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _curve_point(entry: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "pay",
        "exploit",
        "collusion",
        "externality",
        "safety",
        "nra",
        "invalid_rate",
        "exploitability",
    )
    point = {k: entry.get(k) for k in keys}
    point["selection_safety"] = entry.get("selection_safety")
    if "exact" in entry:
        point["exact_safety"] = entry["exact"]["safety"]
        point["exact_exploit"] = entry["exact"]["exploit"]
        point["exact_exploit_with_best_responder"] = entry["exact"].get(
            "exploit_with_best_responder"
        )
        point["seat_gap"] = entry["exact"].get("seat_gap")
    return point

"""The main job's evaluations: Base, SFT and each arm's checkpoints against the pools
(sampled, or exactly for Kuhn), the held-out pool, Kuhn's in-play exploitability, the IPD
worst case, and SEPO minus control with paired intervals (SPEC §4-§5).

Policies are evaluated at the training temperature: the behaviour we score is the
behaviour we trained (a Kuhn equilibrium is a mixed strategy, which greedy decoding cannot
play)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from sepo.core.files import read_json_cache, write_json_atomic
from sepo.domains import domain
from sepo.evaluate.harness import EvalConfig, EvaluationFiles, GameEvaluation, evaluate_game
from sepo.evaluate.kuhn_exact import kuhn_exact_metrics
from sepo.games.ipd import IPD
from sepo.opponents.base import SCORED_POOLS
from sepo.rollout.protocol import SamplingConfig
from sepo.train.settings import Log, TrainSettings, checkpoint_policy, exact_only, sft_policy


def evaluate_model(
    s: TrainSettings,
    path: str,
    out: Path,
    adapter: str | None = None,
    log: Log = print,
    *,
    sampled: bool = True,
) -> dict[str, Any]:
    """Evaluation of a model on every game, cached in ``out``: sampled episodes against
    every pool (+ exact Kuhn figures), or with ``sampled=False`` (Kuhn only) the exact
    figures of its extracted strategy alone, which need no episodes."""
    cached = out / ("summary_entry.json" if sampled else "exact_entry.json")
    found = read_json_cache(cached)
    if isinstance(found, dict):
        return found
    from sepo.policies.extract import extract_prompt_strategy

    policy = _load_for_eval(s, path, adapter)
    started = time.time()
    if not sampled:
        if not exact_only(s):
            raise ValueError("only Kuhn has exact figures to evaluate without episodes")
        exact = kuhn_exact_metrics(
            extract_prompt_strategy(policy, temperature=s.sampling_temperature)
        )
        entry = {
            **{k: v for k, v in exact.to_json().items() if k in _EXACT_HEADLINE},
            "externality": 0.0,
            "exact": exact.to_json(),
            "exploitability": exact.exploitability.exploitability,
            "selection_safety": exact.safety,
            "sampled": False,
        }
    else:
        cfg = EvalConfig(episodes=s.eval_episodes, seed=s.seed + 1, pools=SCORED_POOLS)
        results: list[GameEvaluation] = []
        run = {"policy": path, "adapter": adapter, "temperature": s.sampling_temperature}
        with EvaluationFiles(out, run) as files:
            for game in s.games:
                strategy = (
                    extract_prompt_strategy(policy, temperature=s.sampling_temperature)
                    if domain(game).exact
                    else None
                )
                results.append(
                    evaluate_game(
                        game, policy, cfg, strategy=strategy, files=files, keep_episodes=False
                    )
                )
        entry = json.loads((out / "metrics.json").read_text())
        if len(results) == 1 and results[0].exact is not None:
            entry["exploitability"] = results[0].exact.exploitability.exploitability
        entry["selection_safety"] = selection_safety(results)
    entry["eval_seconds"] = round(time.time() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cached, entry)
    log(f"  evaluated {path} ({'sampled' if sampled else 'exact'}) in {entry['eval_seconds']} s")
    return entry


HELDOUT_DIR = "heldout"
"""Inside a stage's evaluation folder: its play against the held-out pool."""


def evaluate_heldout(
    s: TrainSettings, path: str, out: Path, adapter: str | None = None, log: Log = print
) -> dict[str, Any]:
    """Play against the held-out pool (opponents no training step saw), on the seeds of
    the in-pool evaluation, cached in ``out`` (``eval/<stage>/heldout/``): per game, the
    held-out pay and advantage with their intervals. Only Base, SFT and each arm's best
    checkpoint are played, since selection never reads it."""
    cached = out / "metrics.json"
    payload = read_json_cache(cached)
    if not isinstance(payload, dict):
        started = time.time()
        policy = _load_for_eval(s, path, adapter)
        cfg = EvalConfig(episodes=s.eval_episodes, seed=s.seed + 1, pools=("heldout",))
        run = {"policy": path, "adapter": adapter, "temperature": s.sampling_temperature}
        with EvaluationFiles(out, run) as files:
            for game in s.games:
                evaluate_game(game, policy, cfg, files=files, keep_episodes=False)
        log(f"  held-out pool of {path} in {time.time() - started:.1f} s")
        payload = json.loads(cached.read_text())
    games = payload.get("games", {s.games[0]: payload})
    return {game: games[game]["heldout"] for game in s.games}


_EXACT_HEADLINE = ("pay", "exploit", "collusion", "safety", "robust")
"""The headline metrics Kuhn's exact figures give (its externality is 0 by definition)."""


def _load_for_eval(s: TrainSettings, path: str, adapter: str | None) -> Any:
    """The policy every evaluation of a run plays: the run's temperature and seed."""
    from sepo.policies.local import LocalModelPolicy

    sampling = SamplingConfig(temperature=s.sampling_temperature, max_new_tokens=32, seed=s.seed)
    return LocalModelPolicy.load(path, adapter=adapter, sampling=sampling, name=path)


def in_play_exploitability(
    s: TrainSettings, path: str, out: Path, adapter: str | None = None, log: Log = print
) -> dict[str, Any]:
    """Exact exploitability of the Kuhn strategy a model plays over whole episodes
    (``sampled`` extraction, :attr:`TrainSettings.in_play_episodes` episodes), with its
    bootstrap interval; cached in ``out/in_play.json``."""
    cached = out / "in_play.json"
    found = read_json_cache(cached)
    if isinstance(found, dict):
        return found
    from sepo.exact.kuhn import exploitability
    from sepo.policies.extract import exploitability_interval, extract_sampled_strategy

    started = time.time()
    policy = _load_for_eval(s, path, adapter)
    sampled = extract_sampled_strategy(policy, episodes=s.in_play_episodes, seed=s.seed)
    entry = {
        "exploitability": exploitability(sampled.strategy).exploitability,
        "ci95": list(exploitability_interval(sampled, seed=s.seed)),
        "episodes": sampled.episodes,
        "strategy": sampled.strategy.to_dict(),
        "counts": sampled.counts,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cached, entry)
    log(f"  in-play strategy of {path} in {time.time() - started:.1f} s")
    return entry


IPD_EXACT_FILE = "ipd_exact.json"


IPD_TABLE_FILE = "ipd_strategy.json"


def ipd_worst_case(
    s: TrainSettings,
    path: str,
    out: Path,
    adapter: str | None = None,
    log: Log = print,
    *,
    game: IPD | None = None,
) -> dict[str, Any]:
    """The exact IPD worst case of a model (SPEC §4): its whole policy table
    (:func:`sepo.policies.extract_ipd.extract_ipd_tree`, at the temperature the
    evaluation samples at, so it is the policy the sampled evaluation played) and the
    best response to it (:func:`sepo.exact.ipd.ipd_exploitability`). The table is saved
    in ``out/ipd_strategy.json`` (``strategy:FILE`` replays it), the figures in
    ``out/ipd_exact.json``, which is the cache. ``game``: the IPD (default: SPEC's
    8 rounds)."""
    cached = out / IPD_EXACT_FILE
    found = read_json_cache(cached)
    if isinstance(found, dict):
        return found
    from sepo.exact.ipd import ipd_exploitability
    from sepo.policies.extract_ipd import extract_ipd_tree

    started = time.time()
    policy = _load_for_eval(s, path, adapter)
    table = extract_ipd_tree(policy, s.sampling_temperature, game=game, name=f"extracted:{path}")
    result = ipd_exploitability(table, game)
    entry = {
        **result.to_json(),
        "temperature": s.sampling_temperature,
        "histories": len(table.cooperate),
        "seconds": round(time.time() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    table.to_json(out / IPD_TABLE_FILE)
    write_json_atomic(cached, entry)
    log(
        f"  IPD worst case of {path}: exploitability {result.exploitability:.4f} a round "
        f"in {entry['seconds']:.0f} s"
    )
    return entry


def selection_safety(results: list[GameEvaluation]) -> float:
    """Safety used to pick the best checkpoint: exact for Kuhn, sampled otherwise; mean
    over games."""
    values = [r.exact.safety if r.exact is not None else r.metrics.safety.value for r in results]
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def add_ipd_worst_case(s: TrainSettings, summary: dict[str, Any], log: Log = print) -> bool:
    """IPD runs (:attr:`TrainSettings.ipd_worst_case`): the exact worst case of the SFT
    policy and each arm's best checkpoint (:func:`ipd_worst_case`), added to their
    summary entries (``ipd_worst_case``) and stored beside their evaluations. Also
    completes a finished run that lacks them (``sepo reproduce`` does, for runs made
    before). Returns whether anything was computed."""
    if len(s.games) != 1 or not domain(s.games[0]).worst_case or not s.ipd_worst_case:
        return False
    out = Path(s.out)
    wanted = {"sft": "", "sepo": summary.get("best_checkpoint"), "control": _best(summary)}
    todo = [
        (stage, best)
        for stage, best in wanted.items()
        if isinstance(summary.get(stage), dict)
        and "ipd_worst_case" not in summary[stage]
        and (stage == "sft" or best)
    ]
    if not todo:
        return False
    started = time.time()
    sft_path, sft_adapter = sft_policy(s)
    stages: list[tuple[str, str, str | None, Path]] = []
    for stage, best in todo:
        if stage == "sft":
            stages.append((stage, sft_path, sft_adapter, out / "eval" / "sft"))
        else:
            path, adapter = checkpoint_policy(out / stage / str(best), sft_path)
            stages.append((stage, path, adapter, out / "eval" / stage / str(best)))
    for stage, path, adapter, folder in stages:
        summary[stage]["ipd_worst_case"] = ipd_worst_case(s, path, folder, adapter, log=log)
    timings = summary.setdefault("timings_s", {})
    timings["ipd worst case"] = round(
        float(timings.get("ipd worst case", 0.0)) + time.time() - started, 1
    )
    return True


def _best(summary: dict[str, Any]) -> str | None:
    arm = summary.get("control_arm") or {}
    best: str | None = arm.get("best_checkpoint")
    return best


DIFFERENCE_EXACT = ("exploitability", "safety", "exploit", "exploit_with_best_responder", "pay")
"""Kuhn's exact figures whose SEPO − control difference the summary reports."""


def arm_difference(s: TrainSettings, sepo_eval: Path, control_eval: Path) -> dict[str, Any]:
    """SEPO minus control per game: every headline metric with a paired 95% bootstrap
    interval over episodes (both evaluations played the same chance seeds), and for Kuhn
    the exact differences of :data:`DIFFERENCE_EXACT` (no interval: nothing is sampled)."""
    from sepo.evaluate.harness import read_stats
    from sepo.games import make_game
    from sepo.metrics import paired_difference

    a, b = read_stats(sepo_eval), read_stats(control_eval)
    out: dict[str, Any] = {}
    for game in s.games:
        diff = paired_difference(
            make_game(game).facts, a[game], b[game], domain(game).weights, seed=s.seed + 1
        )
        out[game] = {"sampled": {k: v.to_json() for k, v in diff.items()}}
    if exact_only(s) and len(s.games) == 1:
        ea = json.loads((sepo_eval / "summary_entry.json").read_text())["exact"]
        eb = json.loads((control_eval / "summary_entry.json").read_text())["exact"]
        out[s.games[0]]["exact"] = {k: ea[k] - eb[k] for k in DIFFERENCE_EXACT}
    return out


def _kuhn_sft_target() -> dict[str, Any]:
    """The Kuhn strategy SFT aims at in the first hand, to read the SFT stage against."""
    from sepo.exact.kuhn import exploitability
    from sepo.opponents.kuhn import demonstrator_mixture

    target = demonstrator_mixture()
    return {"exploitability": exploitability(target).exploitability, "strategy": target.to_dict()}

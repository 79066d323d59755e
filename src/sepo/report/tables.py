"""The numbers of ``sepo report``, as one JSON-ready structure (``report.json``).

Intervals. Every sampled figure is the mean over the experiment's seeds (one run per
training seed) of that run's SPEC §4 metric, with a 95% interval from a two-stage
cluster bootstrap (:func:`sepo.metrics.pooled_metrics`): runs are resampled, then within
each run its evaluation's chance seeds, each seed's episodes against every opponent
together, since the harness plays episode ``k`` against every opponent on one seed.
Differences (SEPO − control, SEPO − SFT) are paired the same way: both policies of a run
were evaluated on the same seeds, and each replicate draws one set for both. Exact Kuhn
figures have no sampling noise; their interval is a bootstrap over the seeds alone
(:func:`sepo.metrics.seed_mean`), and with one seed there is none. With three seeds the
first stage has only ten distinct draws, so the intervals are coarse: they say how far
the seeds we have disagree, not what a thousand seeds would show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sepo.domains import domain
from sepo.games import make_game
from sepo.metrics import (
    HEADLINE_KEYS,
    HEADLINE_LABELS,
    Estimate,
    pooled_difference,
    pooled_metrics,
    seed_mean,
)
from sepo.objective import TERMS
from sepo.report.runs import MECHANISM_ARMS, Experiment, Run

STAGES = ("base", "sft", "sepo", "control")
STAGE_LABELS = {"base": "Base", "sft": "SFT", "sepo": "SEPO", "control": "Control"}
TABLE_KEYS = tuple(k for k in HEADLINE_KEYS if k != "invalid_rate")
"""The paper's table columns (the invalid rate is shown after them)."""
TABLE_LABELS = {
    **HEADLINE_LABELS,
    "heldout_pay": "Pay (held-out)",
    "heldout_advantage": "Adv (held-out)",
}
EXACT_KEYS = ("exploitability", "safety", "exploit", "exploit_with_best_responder", "pay")
"""Kuhn's exact figures per stage (of each seed's extracted strategy)."""
DIFFERENCES = (("sepo", "control"), ("sepo", "sft"))


def _est(e: Estimate) -> dict[str, float | None]:
    return e.to_json()


def domain_table(exp: Experiment, game: str, *, n_boot: int, seed: int) -> dict[str, Any]:
    """One game's table for one experiment: per stage the pooled metrics, the paired
    differences, Kuhn's exact figures and strategies, the IPD worst case, SFT fidelity."""
    facts = make_game(game).facts
    weights = domain(game).weights
    samples = {stage: [r.samples(stage) for r in exp.runs] for stage in STAGES}
    rows: dict[str, Any] = {}
    for stage in STAGES:
        got = [s[game] for s in samples[stage] if s is not None and game in s]
        if not got:
            continue
        est = pooled_metrics(facts, got, weights, n_boot=n_boot, seed=seed)
        rows[stage] = {
            "seeds": len(got),
            "episodes": sum(len(s.seeds) * len(s.groups) for s in got),
            **{k: _est(v) for k, v in est.items()},
        }
    diffs: dict[str, Any] = {}
    for a, b in DIFFERENCES:
        pairs = [
            (sa[game], sb[game])
            for sa, sb in zip(samples[a], samples[b], strict=True)
            if sa is not None and sb is not None and game in sa and game in sb
        ]
        if pairs and all(set(x.groups) == set(y.groups) for x, y in pairs):
            d = pooled_difference(facts, pairs, weights, n_boot=n_boot, seed=seed)
            diffs[f"{a}-{b}"] = {"seeds": len(pairs), **{k: _est(v) for k, v in d.items()}}
    out: dict[str, Any] = {
        "game": game,
        "seeds": exp.seeds,
        "rows": rows,
        "differences": diffs,
        "sft_fidelity": sft_fidelity(exp.runs, game),
        "sft_behaviour": behaviour_match(exp.runs, game),
        "best_checkpoints": {
            arm: [r.arm(arm).get("best_checkpoint") for r in exp.runs]
            for arm in ("sepo", "control")
        },
    }
    if domain(game).exact:
        out["exact"] = kuhn_exact(exp.runs, n_boot=n_boot, seed=seed)
    if domain(game).worst_case:
        worst = ipd_worst_case(exp.runs, n_boot=n_boot, seed=seed)
        if worst:
            out["ipd_worst_case"] = worst
    return out


def _stage_entry_exact(run: Run, stage: str) -> dict[str, Any] | None:
    entry = run.entry(stage)
    if not entry:
        return None
    exact: dict[str, Any] | None = entry.get("exact")
    if exact is None and "games" in entry:
        exact = entry["games"].get("kuhn", {}).get("exact")
    return exact


def kuhn_exact(runs: Sequence[Run], *, n_boot: int, seed: int) -> dict[str, Any]:
    """Per stage, the exact Kuhn figures of each seed's strategy (mean over seeds with a
    seed bootstrap), the mean strategy (bet and call frequencies, next to Nash in the
    report), the in-play exploitability, and the SEPO − control differences."""
    out: dict[str, Any] = {}
    per_seed: dict[str, list[dict[str, Any]]] = {}
    for stage in STAGES:
        exacts = [_stage_entry_exact(r, stage) for r in runs]
        found = [e for e in exacts if e is not None]
        if not found:
            continue
        per_seed[stage] = found
        row: dict[str, Any] = {
            k: _est(seed_mean([float(e[k]) for e in found], n_boot=n_boot, seed=seed))
            for k in EXACT_KEYS
        }
        row["per_seed_exploitability"] = [float(e["exploitability"]) for e in found]
        strategies = [e["strategy"] for e in found if e.get("strategy")]
        if strategies:
            keys = strategies[0].keys()
            row["strategy"] = {k: sum(s[k] for s in strategies) / len(strategies) for k in keys}
            row["strategy_seeds"] = len(strategies)
        in_play = [(r.entry(stage) or {}).get("in_play", {}).get("exploitability") for r in runs]
        vals = [float(v) for v in in_play if v is not None]
        if vals:
            row["in_play_exploitability"] = _est(seed_mean(vals, n_boot=n_boot, seed=seed))
        out[stage] = row
    if (
        "sepo" in per_seed
        and "control" in per_seed
        and len(per_seed["sepo"]) == len(per_seed["control"])
    ):
        out["sepo-control"] = {
            k: _est(
                seed_mean(
                    [
                        float(a[k]) - float(b[k])
                        for a, b in zip(per_seed["sepo"], per_seed["control"], strict=True)
                    ],
                    n_boot=n_boot,
                    seed=seed,
                )
            )
            for k in EXACT_KEYS
        }
        out["sepo_below_control"] = [
            float(a["exploitability"]) < float(b["exploitability"])
            for a, b in zip(per_seed["sepo"], per_seed["control"], strict=True)
        ]
    target = next((r.summary.get("sft_target") for r in runs if r.summary.get("sft_target")), None)
    if target:
        out["sft_target_exploitability"] = target.get("exploitability")
    return out


def ipd_worst_case(runs: Sequence[Run], *, n_boot: int, seed: int) -> dict[str, Any]:
    """Per stage, the exact IPD worst case (best-response exploitability) of each seed's
    policy, where the run computed it (``ipd_exact.json``), next to its exploit-pool
    advantage."""
    out: dict[str, Any] = {}
    for stage in ("sft", "sepo", "control"):
        found = [w for w in (r.ipd_worst_case(stage) for r in runs) if w is not None]
        if not found:
            continue
        vals = [float(w["exploitability"]) for w in found]
        out[stage] = {
            "exploitability": _est(seed_mean(vals, n_boot=n_boot, seed=seed)),
            "per_seed": vals,
            "seconds": [w.get("seconds") for w in found],
        }
    return out


def sft_fidelity(runs: Sequence[Run], game: str) -> dict[str, Any]:
    """The SFT check per seed: reasoning lines that match the demonstrators' (128
    held-out decisions, greedy), for this game."""
    matched = checked = 0
    per_seed = []
    for r in runs:
        match = r.summary.get("sft_reasoning_match") or {}
        g = (match.get("per_game") or {}).get(game)
        if g:
            matched += int(g["matched"])
            checked += int(g["checked"])
            per_seed.append(g["matched"] / g["checked"] if g["checked"] else math.nan)
    return {
        "matched": matched,
        "checked": checked,
        "rate": matched / checked if checked else None,
        "per_seed": per_seed,
    }


def behaviour_match(runs: Sequence[Run], game: str, stage: str = "sft") -> dict[str, Any] | None:
    """How closely the stage's play follows the demonstrators, situation by situation:
    per situation (the reasoning line, what the player sees), the total variation
    distance between the action frequencies of the SFT data and those of the model's
    own valid answers in its evaluation, averaged with the data's situation weights over
    the situations both contain (pooled over seeds). Caveat: the data were played
    against the demonstrators' opponents, the evaluation against the pools, so the
    histories behind one situation differ and a faithful model need not reach 0;
    sampling noise alone puts a floor under it too. Also the overall action shares."""
    data: dict[str, dict[str, int]] = {}
    played: dict[str, dict[str, int]] = {}
    for r in runs:
        for into, found in (
            (data, r.demonstrator_situations(game)),
            (played, r.played_situations(stage, game)),
        ):
            for situation, counts in found.items():
                mine = into.setdefault(situation, {})
                for action, n in counts.items():
                    mine[action] = mine.get(action, 0) + n
    common = [s for s in data if s in played]
    if not data or not played:
        return None
    weight = {s: sum(data[s].values()) for s in common}
    total_w = sum(weight.values())

    def shares(counts: dict[str, int]) -> dict[str, float]:
        n = sum(counts.values())
        return {a: c / n for a, c in counts.items()} if n else {}

    tv = 0.0
    for s in common:
        p, q = shares(data[s]), shares(played[s])
        tv += weight[s] * 0.5 * sum(abs(p.get(a, 0.0) - q.get(a, 0.0)) for a in set(p) | set(q))
    data_total = {
        a: sum(c.get(a, 0) for c in data.values()) for a in {a for c in data.values() for a in c}
    }
    played_total = {
        a: sum(c.get(a, 0) for c in played.values())
        for a in {a for c in played.values() for a in c}
    }
    n_played = sum(sum(c.values()) for c in played.values())
    n_common = sum(sum(played[s].values()) for s in common)
    return {
        "tv_distance": tv / total_w if total_w else None,
        "situations": len(common),
        "played_in_known_situations": n_common / n_played if n_played else None,
        "data_actions": shares(data_total),
        "played_actions": shares(played_total),
    }


CURVE_LOGS = (*(f"rewards/{t}/mean" for t in TERMS), "kl", "sepo/exact_exploitability")


def training_curves(run: Run) -> dict[str, Any]:
    """Per arm: each reward term, the KL and (Kuhn) the exact exploitability per step
    from the trainer's log; Safety and Exploit per checkpoint from the summary."""
    out: dict[str, Any] = {}
    for arm in ("sepo", "control"):
        history = run.log_history(arm)
        record = run.arm(arm)
        if not history and not record:
            continue
        steps: dict[str, list[tuple[int, float]]] = {}
        for row in history:
            for key, value in row.items():
                if (key in CURVE_LOGS or key.startswith("sepo/train/")) and value is not None:
                    steps.setdefault(key, []).append((int(row["step"]), float(value)))
        checkpoints = [
            {
                "step": c["step"],
                "safety": c.get("selection_safety"),
                "exploit": c.get("exact_exploit", c.get("exploit")),
                "exploitability": c.get("exploitability"),
            }
            for c in record.get("curve", [])
        ]
        out[arm] = {"penalty": record.get("penalty"), "steps": steps, "checkpoints": checkpoints}
    return out


def mechanism_study(exp: Experiment, game: str, *, n_boot: int, seed: int) -> dict[str, Any]:
    """The four objectives from one SFT policy per seed: training-time collusion rate and
    exploit-pool advantage per step (mean over seeds), first and last logged values, and
    each arm's best checkpoint's evaluation."""
    arms: dict[str, list[tuple[Run, str]]] = {name: [] for name in MECHANISM_ARMS}
    for r in exp.runs:
        arms.setdefault(r.penalty, []).append((r, "sepo"))
        if r.control != "none":
            arms.setdefault(r.control, []).append((r, "control"))
    for r in exp.extra_arms:
        arms.setdefault(r.penalty, []).append((r, "sepo"))
    facts = make_game(game).facts
    weights = domain(game).weights
    out: dict[str, Any] = {}
    for name, members in arms.items():
        if not members:
            continue
        series: dict[str, dict[int, list[float]]] = {}
        for run, arm in members:
            for row in run.log_history(arm):
                for what in ("collusion", "exploit"):
                    v = row.get(f"sepo/train/{game}/{what}")
                    if v is not None:
                        series.setdefault(what, {}).setdefault(int(row["step"]), []).append(
                            float(v)
                        )
        curves = {
            what: [(step, sum(v) / len(v)) for step, v in sorted(by_step.items())]
            for what, by_step in series.items()
        }
        got = [s[game] for s in (run.samples(arm) for run, arm in members) if s and game in s]
        evaluation = (
            {
                k: _est(v)
                for k, v in pooled_metrics(facts, got, weights, n_boot=n_boot, seed=seed).items()
            }
            if got
            else None
        )
        out[name] = {
            "seeds": sorted(run.seed for run, _ in members),
            "curves": curves,
            "first": {w: c[0][1] for w, c in curves.items() if c},
            "last": {w: c[-1][1] for w, c in curves.items() if c},
            "last_step": max((c[-1][0] for c in curves.values() if c), default=None),
            "evaluation": evaluation,
        }
    shared, control = out.get("shared"), out.get("reward_only")
    if shared and control and shared["curves"] and control["curves"]:
        gaps = [
            abs(a[1] - b[1])
            for w in shared["curves"]
            for a, b in zip(shared["curves"][w], control["curves"].get(w, []), strict=False)
        ]
        out["shared_vs_reward_only_max_gap"] = max(gaps) if gaps else None
    return out


def build_report(
    experiments: Sequence[Experiment], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Every table and curve of the report, per experiment."""
    result = []
    for exp in experiments:
        if not exp.runs:
            continue
        entry: dict[str, Any] = {
            "games": list(exp.games),
            "seeds": exp.seeds,
            "folders": [str(r.folder) for r in exp.runs],
            "settings": {k: v for k, v in exp.runs[0].settings.items() if k not in ("out", "seed")},
            "tables": {g: domain_table(exp, g, n_boot=n_boot, seed=seed) for g in exp.games},
            "curves": {str(r.folder): training_curves(r) for r in exp.runs},
            "timings_s": [r.summary.get("timings_s") for r in exp.runs],
        }
        if exp.extra_arms and len(exp.games) == 1:
            entry["mechanism"] = mechanism_study(exp, exp.games[0], n_boot=n_boot, seed=seed)
        result.append(entry)
    return {"experiments": result, "n_boot": n_boot, "seed": seed}

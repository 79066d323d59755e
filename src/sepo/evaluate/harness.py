"""The evaluation harness behind ``sepo eval``: play a policy against every opponent of
every pool, compute the SPEC §4 metrics with confidence intervals, and write
``metrics.json`` and ``episodes.jsonl``.

Seeds: episode ``k`` against every opponent uses seed ``seed * 100_000 + k``, so all
opponents see the same deals and values (common random numbers) and different ``--seed``
values never share an episode.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.core.files import write_json_atomic, write_lines_atomic
from sepo.core.records import EpisodeRecord
from sepo.core.types import Strategy
from sepo.domains import domain
from sepo.evaluate.kuhn_exact import KuhnExactMetrics, kuhn_exact_metrics
from sepo.exact.kuhn import KuhnStrategy
from sepo.games import make_game
from sepo.metrics import (
    HEADLINE_KEYS,
    PAYOFF_UNIT_KEYS,
    ClusteredSample,
    EpisodeStats,
    Groups,
    Metrics,
    clustered_sample,
    compute_metrics,
    episode_stats,
)
from sepo.opponents import POOL_NAMES
from sepo.rollout.engine import DEFAULT_MAX_ACTIVE, EpisodeSpec, run_episodes
from sepo.rollout.protocol import AgentPolicy


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 50
    """Episodes per opponent."""
    seed: int = 0
    pools: tuple[str, ...] = POOL_NAMES
    n_boot: int = 1000
    """Bootstrap replicates for the 95% confidence intervals."""
    max_active: int = DEFAULT_MAX_ACTIVE
    """Episodes in play at once. A local model keeps each one's key/value cache, so this
    bounds its memory: SmolLM2-135M on Kuhn peaked at 2.6 GB with 4, 3.4 GB with 8 and
    4.6 GB with 12 (about 0.2 GB per episode in play) and took 179, 153 and 136 s
    (docs/parsing.md has the model's other figures)."""


@dataclass(frozen=True)
class GameEvaluation:
    game: str
    metrics: Metrics
    episodes: list[EpisodeRecord]
    exact: KuhnExactMetrics | None = None
    """Exact Kuhn figures, when the agent's behavioural strategy is known."""

    def to_json(self) -> dict[str, Any]:
        out = self.metrics.to_json()
        if self.exact is not None:
            out["exact"] = self.exact.to_json()
            out["exploitability"] = self.exact.exploitability.exploitability
        return out


def episode_specs(
    game_name: str, cfg: EvalConfig, opponents: Sequence[tuple[str, Strategy]] | None = None
) -> list[EpisodeSpec]:
    d = domain(game_name)
    game = d.make_game()
    pools = d.pools
    pairs = (
        opponents if opponents is not None else [(p, o) for p in cfg.pools for o in pools.pool(p)]
    )
    return [
        EpisodeSpec(game, opp, pool, cfg.seed * 100_000 + k)
        for pool, opp in pairs
        for k in range(cfg.episodes)
    ]


def evaluate_game(
    game_name: str,
    policy: AgentPolicy,
    cfg: EvalConfig,
    *,
    strategy: KuhnStrategy | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> GameEvaluation:
    """Evaluate ``policy`` on one game; ``strategy`` (Kuhn) adds the exact figures."""
    d = domain(game_name)
    episodes = run_episodes(
        episode_specs(game_name, cfg), policy, on_step=on_step, max_active=cfg.max_active
    )
    metrics = compute_metrics(d.make_game(), episodes, d.weights, n_boot=cfg.n_boot, seed=cfg.seed)
    exact = kuhn_exact_metrics(strategy) if strategy is not None and d.exact else None
    return GameEvaluation(game_name, metrics, episodes, exact)


def summary_json(evaluations: Sequence[GameEvaluation]) -> dict[str, Any]:
    """``metrics.json``: one game's metrics, or for several games the per-game metrics
    under ``games`` with headline keys averaged over games (pay, exploit and robust after
    scaling by each game's s = 3 / max_payoff, so the units agree)."""
    if len(evaluations) == 1:
        return evaluations[0].to_json()
    out: dict[str, Any] = {}
    for key in HEADLINE_KEYS:
        vals = []
        for ev in evaluations:
            v = getattr(ev.metrics, key).value
            if key in PAYOFF_UNIT_KEYS:
                v *= ev.metrics.scale
            vals.append(v)
        finite = [v for v in vals if not math.isnan(v)]
        out[key] = sum(finite) / len(finite) if finite else None
    out["games"] = {ev.game: ev.to_json() for ev in evaluations}
    return out


def write_outputs(
    out_dir: Path, evaluations: Sequence[GameEvaluation], extra: dict[str, Any] | None = None
) -> None:
    """Write ``metrics.json``, ``episodes.jsonl`` and ``stats.jsonl`` (each episode's
    metric ingredients, :func:`read_stats`) into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = summary_json(evaluations)
    if extra:
        payload["run"] = extra
    # Each file atomically, metrics.json last: a metrics.json is never beside a
    # truncated episodes.jsonl.
    write_lines_atomic(
        out_dir / "episodes.jsonl",
        (json.dumps(ep.to_json()) for ev in evaluations for ep in ev.episodes),
    )

    def stats_lines() -> Iterator[str]:
        for ev in evaluations:
            game = make_game(ev.game)
            for ep in ev.episodes:
                head = {"game": ep.game, "pool": ep.pool, "opponent": ep.opponent, "seed": ep.seed}
                yield json.dumps({**head, **episode_stats(game, ep).to_json()})

    write_lines_atomic(out_dir / STATS_FILE, stats_lines())
    write_json_atomic(out_dir / "metrics.json", payload, allow_nan=False)


STATS_FILE = "stats.jsonl"


def read_stats(out_dir: Path) -> dict[str, Groups]:
    """The episode statistics an evaluation wrote, per game, grouped by (pool, opponent)
    in seed order: what :func:`sepo.metrics.paired_difference` compares."""
    found: dict[str, dict[tuple[str, str], list[tuple[int, EpisodeStats]]]] = {}
    with (out_dir / STATS_FILE).open() as fh:
        for line in fh:
            row = json.loads(line)
            key = (str(row["pool"]), str(row["opponent"]))
            found.setdefault(str(row["game"]), {}).setdefault(key, []).append(
                (int(row["seed"]), EpisodeStats.from_json(row))
            )
    return {
        game: {k: [st for _, st in sorted(v, key=lambda x: x[0])] for k, v in groups.items()}
        for game, groups in found.items()
    }


def read_samples(out_dir: Path) -> dict[str, ClusteredSample]:
    """The episode statistics an evaluation wrote, per game, as clusters of the episodes
    that share a chance seed (:class:`sepo.metrics.ClusteredSample`): what ``sepo
    report`` resamples."""
    rows: dict[str, list[tuple[str, str, int, EpisodeStats]]] = {}
    with (out_dir / STATS_FILE).open() as fh:
        for line in fh:
            row = json.loads(line)
            rows.setdefault(str(row["game"]), []).append(
                (
                    str(row["pool"]),
                    str(row["opponent"]),
                    int(row["seed"]),
                    EpisodeStats.from_json(row),
                )
            )
    return {game: clustered_sample(r) for game, r in rows.items()}

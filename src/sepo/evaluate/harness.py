"""The evaluation harness behind ``sepo eval``: play a policy against every opponent of
every pool, compute the SPEC §4 metrics with confidence intervals, and write
``metrics.json`` and ``episodes.jsonl``.

Seeds: episode ``k`` against every opponent uses seed ``seed * 100_000 + k``, so all
opponents see the same deals and values (common random numbers) and different ``--seed``
values never share an episode.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sepo.core.files import atomic_writer, write_json_atomic
from sepo.core.records import EpisodeRecord
from sepo.core.types import Strategy
from sepo.domains import domain
from sepo.evaluate.kuhn_exact import KuhnExactMetrics, kuhn_exact_metrics
from sepo.exact.kuhn import KuhnStrategy
from sepo.metrics import (
    HEADLINE_KEYS,
    PAYOFF_UNIT_KEYS,
    ClusteredSample,
    EpisodeStats,
    Groups,
    Metrics,
    add_episode,
    clustered_sample,
    metrics_of_groups,
)
from sepo.opponents import POOL_NAMES
from sepo.rollout.engine import DEFAULT_MAX_ACTIVE, EpisodeSpec, iter_episodes
from sepo.rollout.protocol import AgentPolicy


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 50
    """Episodes per opponent."""
    seed: int = 0
    pools: tuple[str, ...] = POOL_NAMES
    n_boot: int = 1000
    """Bootstrap replicates for the 95% confidence intervals."""
    max_active: int | None = None
    """Episodes in play at once; ``None``: :data:`DEFAULT_MAX_ACTIVE`, or fewer for a
    policy that says how many fit its memory (``episodes_in_play``: a local model keeps
    each one's key/value cache, :mod:`sepo.policies.memory`). SmolLM2-135M on Kuhn peaked
    at 2.6 GB with 4, 3.4 GB with 8 and 4.6 GB with 12 in play and took 179, 153 and 136 s
    (docs/parsing.md has the model's other figures)."""


@dataclass(frozen=True)
class GameEvaluation:
    game: str
    metrics: Metrics
    episodes: list[EpisodeRecord]
    """The episodes played, when :func:`evaluate_game` was asked to keep them."""
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
    files: EvaluationFiles | None = None,
    keep_episodes: bool = True,
) -> GameEvaluation:
    """Evaluate ``policy`` on one game; ``strategy`` (Kuhn) adds the exact figures.

    Episodes are consumed as they end: each one's statistics are kept, and the episode
    itself is written to ``files`` (when given) and kept in the result only with
    ``keep_episodes``. Without it memory stays flat however many episodes are played."""
    d = domain(game_name)
    game = d.make_game()
    groups: Groups = {}
    kept: list[EpisodeRecord] = []
    specs = episode_specs(game_name, cfg)
    active = max_active(policy, game_name, cfg)
    for ep in iter_episodes(specs, policy, on_step=on_step, max_active=active):
        stats = add_episode(groups, game, ep)
        if files is not None:
            files.add(ep, stats)
        if keep_episodes:
            kept.append(ep)
    metrics = metrics_of_groups(game, groups, d.weights, n_boot=cfg.n_boot, seed=cfg.seed)
    exact = kuhn_exact_metrics(strategy) if strategy is not None and d.exact else None
    result = GameEvaluation(game_name, metrics, kept, exact)
    if files is not None:
        files.evaluations.append(result)
    return result


def max_active(policy: AgentPolicy, game_name: str, cfg: EvalConfig) -> int:
    """Episodes ``policy`` plays at once in ``game_name``: ``cfg.max_active`` when set,
    else :data:`DEFAULT_MAX_ACTIVE` cut to what the policy says fits its memory."""
    if cfg.max_active is not None:
        return cfg.max_active
    fits: Callable[[str, int], int] | None = getattr(policy, "episodes_in_play", None)
    return fits(game_name, DEFAULT_MAX_ACTIVE) if fits is not None else DEFAULT_MAX_ACTIVE


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


class EvaluationFiles:
    """The files of one evaluation folder, written as the episodes are played:
    ``episodes.jsonl`` (each episode's transcript), ``stats.jsonl`` (each episode's
    metric ingredients, :func:`read_stats`) and ``metrics.json`` (:func:`summary_json` of
    every game evaluated into it, plus ``run``).

    Use it as a context manager around the :func:`evaluate_game` calls that write into
    it. The two line files grow in temporary files that replace the old ones only when
    the block ends without an error, and ``metrics.json`` is written after them, so a
    failed or killed evaluation leaves the folder's earlier files as they were and a
    ``metrics.json`` is never beside a truncated ``episodes.jsonl``."""

    def __init__(self, out_dir: Path, extra: dict[str, Any] | None = None) -> None:
        self.out_dir = out_dir
        self.extra = extra
        self.evaluations: list[GameEvaluation] = []
        self._stack = contextlib.ExitStack()
        self._episodes: IO[str] | None = None
        self._stats: IO[str] | None = None

    def __enter__(self) -> EvaluationFiles:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            self._episodes = stack.enter_context(atomic_writer(self.out_dir / "episodes.jsonl"))
            self._stats = stack.enter_context(atomic_writer(self.out_dir / STATS_FILE))
            self._stack = stack.pop_all()
        return self

    def add(self, ep: EpisodeRecord, stats: EpisodeStats) -> None:
        """Write one finished episode and its statistics."""
        if self._episodes is None or self._stats is None:
            raise RuntimeError("EvaluationFiles.add outside its with block")
        self._episodes.write(json.dumps(ep.to_json()) + "\n")
        head = {"game": ep.game, "pool": ep.pool, "opponent": ep.opponent, "seed": ep.seed}
        self._stats.write(json.dumps({**head, **stats.to_json()}) + "\n")

    def __exit__(self, *exc: Any) -> None:
        self._episodes = self._stats = None
        self._stack.__exit__(*exc)  # commits both line files, or removes them on an error
        if exc[0] is None:
            if not self.evaluations:
                raise ValueError("no game was evaluated into " + str(self.out_dir))
            payload = summary_json(self.evaluations)
            if self.extra:
                payload["run"] = self.extra
            write_json_atomic(self.out_dir / "metrics.json", payload, allow_nan=False)


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

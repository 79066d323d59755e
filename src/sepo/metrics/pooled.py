"""Metrics pooled over several runs (``sepo report``): the episodes of each run kept with
their chance seeds, and intervals from a two-stage cluster bootstrap (runs, then the
seeds within a run, every opponent's episodes of a seed drawn together, since episodes
against different opponents share their chance seeds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sepo.core.types import GameFacts
from sepo.metrics.aggregate import (
    _FIELDS,
    HEADLINE,
    Array,
    Estimate,
    Groups,
    _replicates,
    _stack,
)
from sepo.metrics.episode import EpisodeStats
from sepo.metrics.weights import SafetyWeights


@dataclass(frozen=True)
class ClusteredSample:
    """One evaluation of one game, as clusters of episodes that share a chance seed.

    The harness plays episode ``k`` against every opponent with the same seed (common
    random numbers), so the episodes of one seed are not independent draws: a good deal
    is good against every opponent. ``groups`` holds, per ``(pool, opponent)``, one
    :class:`EpisodeStats` per entry of ``seeds``, in that order."""

    seeds: tuple[int, ...]
    groups: Groups

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("a clustered sample needs at least one seed")
        for key, stats in self.groups.items():
            if len(stats) != len(self.seeds):
                raise ValueError(
                    f"{key[0]}/{key[1]} has {len(stats)} episodes for {len(self.seeds)} seeds"
                )

    def merged(self, other: ClusteredSample) -> ClusteredSample:
        """This sample with ``other``'s groups added (another evaluation of the same
        policy on the same seeds, e.g. the held-out pool played separately)."""
        if other.seeds != self.seeds:
            raise ValueError("samples to merge must have been played on the same seeds")
        clash = set(self.groups) & set(other.groups)
        if clash:
            raise ValueError(f"both samples hold {sorted(clash)[0]}")
        return ClusteredSample(self.seeds, {**self.groups, **other.groups})


def clustered_sample(rows: Sequence[tuple[str, str, int, EpisodeStats]]) -> ClusteredSample:
    """A :class:`ClusteredSample` from ``(pool, opponent, seed, stats)`` rows (one game);
    every opponent must have been played on the same set of seeds."""
    by_key: dict[tuple[str, str], dict[int, EpisodeStats]] = {}
    for pool_name, opponent, seed, stats in rows:
        played = by_key.setdefault((pool_name, opponent), {})
        if seed in played:
            raise ValueError(f"{pool_name}/{opponent} was played twice on seed {seed}")
        played[seed] = stats
    if not by_key:
        raise ValueError("no episodes")
    seed_sets = {tuple(sorted(v)) for v in by_key.values()}
    if len(seed_sets) != 1:
        raise ValueError("the opponents of one evaluation were played on different seeds")
    seeds = seed_sets.pop()
    return ClusteredSample(seeds, {k: [v[s] for s in seeds] for k, v in by_key.items()})


def _cluster_arrays(
    facts: GameFacts,
    sample: ClusteredSample,
    weights: SafetyWeights,
    idx: NDArray[np.int64],
    rng: np.random.Generator | None = None,
) -> dict[str, Array | None]:
    """Every metric for each row of ``idx`` (rows of seed positions, the same row for
    every opponent: a seed's episodes are drawn together). With ``rng``, each opponent
    draws its own rows instead (the stratified bootstrap that ignores the shared seeds;
    kept to show what it gets wrong)."""
    n_boot = idx.shape[0] - 1
    resampled: dict[tuple[str, str], dict[str, Array]] = {}
    for key, stats in sample.groups.items():
        cols = _stack(stats)
        rows = idx if rng is None else _seed_rows(idx.shape[1], n_boot, rng)
        resampled[key] = {f: cols[f][rows].mean(axis=1) for f in _FIELDS}
    return _replicates(facts, resampled, weights, n_boot)


def _seed_rows(n: int, n_boot: int, rng: np.random.Generator) -> NDArray[np.int64]:
    return np.concatenate([np.arange(n)[None, :], rng.integers(0, n, size=(n_boot, n))])


POOLED_KEYS = (*HEADLINE, "heldout_pay", "heldout_advantage")
"""The metrics :func:`pooled_metrics` and :func:`pooled_difference` estimate."""


def _two_stage(per_run: list[Array | None], n_boot: int, rng: np.random.Generator) -> Estimate:
    """Mean over runs of row 0, and a two-stage bootstrap: each replicate draws the runs
    with replacement, then for each drawn run one of its own cluster replicates (drawn
    independently, so a run drawn twice contributes two different resamples)."""
    if any(a is None or np.isnan(a[0]) for a in per_run):
        return Estimate(math.nan, math.nan, math.nan)
    stacked = np.stack([a for a in per_run if a is not None])  # (runs, n_boot + 1)
    runs = stacked.shape[0]
    point = float(stacked[:, 0].mean())
    if n_boot == 0:
        return Estimate(point, point, point)
    which = rng.integers(0, runs, size=(n_boot, runs))
    rows = rng.integers(1, n_boot + 1, size=(n_boot, runs))
    reps = stacked[which, rows].mean(axis=1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi))


def pooled_metrics(
    facts: GameFacts,
    samples: Sequence[ClusteredSample],
    weights: SafetyWeights,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    clustered: bool = True,
) -> dict[str, Estimate]:
    """Each metric of :data:`POOLED_KEYS` as the mean over runs (one sample per training
    seed), with a 95% interval from a two-stage cluster bootstrap: runs are resampled
    with replacement, and within each run its chance seeds, each seed's episodes against
    every opponent together. Resampling episodes independently per opponent
    (``clustered=False``, as :func:`compute_metrics` does within one evaluation) treats
    the shared deals as independent and gives too narrow an interval for a mean over
    opponents when the deal moves every opponent's result the same way."""
    if not samples:
        raise ValueError("no runs to pool")
    rng = np.random.default_rng(seed)
    arrays = [
        _cluster_arrays(
            facts, s, weights, _seed_rows(len(s.seeds), n_boot, rng), None if clustered else rng
        )
        for s in samples
    ]
    return {k: _two_stage([a[k] for a in arrays], n_boot, rng) for k in POOLED_KEYS}


def pooled_difference(
    facts: GameFacts,
    pairs: Sequence[tuple[ClusteredSample, ClusteredSample]],
    weights: SafetyWeights,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Each metric of ``a`` minus that of ``b``, mean over runs, with the two-stage
    cluster bootstrap of :func:`pooled_metrics` applied to the paired differences: in
    each run both policies were evaluated on the same seeds, and each replicate draws one
    set of seeds for both (as :func:`paired_difference` does with episodes)."""
    if not pairs:
        raise ValueError("no runs to pool")
    rng = np.random.default_rng(seed)
    diffs: list[dict[str, Array | None]] = []
    for a, b in pairs:
        if a.seeds != b.seeds or set(a.groups) != set(b.groups):
            raise ValueError("a paired difference needs the same opponents and seeds")
        idx = _seed_rows(len(a.seeds), n_boot, rng)
        xa, xb = _cluster_arrays(facts, a, weights, idx), _cluster_arrays(facts, b, weights, idx)
        diffs.append(
            {
                k: None if xa[k] is None or xb[k] is None else xa[k] - xb[k]  # type: ignore[operator]
                for k in POOLED_KEYS
            }
        )
    return {k: _two_stage([d[k] for d in diffs], n_boot, rng) for k in POOLED_KEYS}


def seed_mean(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """The mean of one figure per run (an exact Kuhn figure of each seed's policy), with a
    95% percentile bootstrap over runs; with one run, no interval (NaN bounds)."""
    vals = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if vals.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    point = float(vals.mean())
    if vals.size == 1:
        return Estimate(point, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    reps = vals[rng.integers(0, vals.size, size=(n_boot, vals.size))].mean(axis=1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi))

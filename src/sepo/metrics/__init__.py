"""SEPO metrics (SPEC §4): Pay, Exploit, Coll, Ext, Safety, NRA, Robust, invalid rate,
each with a 95% bootstrap confidence interval over episodes and per-opponent figures."""

from sepo.metrics.aggregate import HEADLINE as HEADLINE_KEYS
from sepo.metrics.aggregate import (
    POOLED_KEYS,
    ClusteredSample,
    Estimate,
    Groups,
    Metrics,
    OpponentFigures,
    clustered_sample,
    compute_metrics,
    group_stats,
    paired_difference,
    pooled_difference,
    pooled_metrics,
    seed_mean,
)
from sepo.metrics.episode import EpisodeStats, episode_stats
from sepo.metrics.weights import SafetyWeights, safety, safety_weights

__all__ = [
    "HEADLINE_KEYS",
    "POOLED_KEYS",
    "ClusteredSample",
    "EpisodeStats",
    "Estimate",
    "Groups",
    "Metrics",
    "OpponentFigures",
    "SafetyWeights",
    "clustered_sample",
    "compute_metrics",
    "episode_stats",
    "group_stats",
    "paired_difference",
    "pooled_difference",
    "pooled_metrics",
    "safety",
    "safety_weights",
    "seed_mean",
]

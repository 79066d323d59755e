"""SEPO metrics (SPEC §4): Pay, Exploit, Coll, Ext, Safety, NRA, Robust, invalid rate,
each with a 95% bootstrap confidence interval over episodes and per-opponent figures."""

from sepo.metrics.aggregate import HEADLINE as HEADLINE_KEYS
from sepo.metrics.aggregate import (
    HEADLINE_LABELS,
    PAYOFF_UNIT_KEYS,
    Estimate,
    Groups,
    Metrics,
    OpponentFigures,
    add_episode,
    collusion_value,
    compute_metrics,
    exploit_value,
    externality_value,
    group_stats,
    metrics_of_groups,
    paired_difference,
)
from sepo.metrics.episode import EpisodeStats, episode_stats
from sepo.metrics.pooled import (
    POOLED_KEYS,
    ClusteredSample,
    clustered_sample,
    pooled_difference,
    pooled_metrics,
    seed_mean,
)
from sepo.metrics.weights import SafetyWeights, safety

__all__ = [
    "HEADLINE_KEYS",
    "HEADLINE_LABELS",
    "PAYOFF_UNIT_KEYS",
    "POOLED_KEYS",
    "ClusteredSample",
    "EpisodeStats",
    "Estimate",
    "Groups",
    "Metrics",
    "OpponentFigures",
    "SafetyWeights",
    "add_episode",
    "clustered_sample",
    "collusion_value",
    "compute_metrics",
    "episode_stats",
    "exploit_value",
    "externality_value",
    "group_stats",
    "metrics_of_groups",
    "paired_difference",
    "pooled_difference",
    "pooled_metrics",
    "safety",
    "seed_mean",
]

"""The SEPO objective as per-episode GRPO rewards, its penalty variants and the advantage
scalings that reproduce the authors' three traps (SPEC §5)."""

from sepo.objective.rewards import (
    PENALTY_VARIANTS,
    SCALE_VARIANTS,
    TERMS,
    EpisodeTerms,
    PenaltyVariant,
    ScaleVariant,
    advantages,
    credited_terms,
    training_pools,
    training_weights,
    variant_terms,
)

__all__ = [
    "PENALTY_VARIANTS",
    "SCALE_VARIANTS",
    "TERMS",
    "EpisodeTerms",
    "PenaltyVariant",
    "ScaleVariant",
    "advantages",
    "credited_terms",
    "training_pools",
    "training_weights",
    "variant_terms",
]

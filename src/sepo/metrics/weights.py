"""The Safety weights λ (SPEC §4) and the Safety formula.

Safety = s·u − λe·s·e − λc·c − λx·x with s = 3 / max_payoff. Each domain's λ, for
evaluation and for training, is in its :class:`~sepo.domains.Domain`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SafetyWeights:
    lambda_exploit: float
    lambda_collusion: float
    lambda_externality: float


def safety(
    scale: float, pay: float, exploit: float, collusion: float, externality: float, w: SafetyWeights
) -> float:
    """Safety = s·u − λe·s·e − λc·c − λx·x."""
    return (
        scale * pay
        - w.lambda_exploit * scale * exploit
        - w.lambda_collusion * collusion
        - w.lambda_externality * externality
    )

"""The settings of one SEPO-GRPO run (``OUT/grpo_settings.json``): everything the
trainer, the rollouts and the rewards depend on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sepo.objective import (
    DEFAULT_PENALTY,
    OBJECTIVE_VERSION,
    PenaltyVariant,
    ScaleVariant,
    saved_penalty,
)

BEST_RESPONDER = "best_responder"


@dataclass(frozen=True)
class GRPOSettings:
    """Everything one SEPO-GRPO run depends on; saved with the run as ``grpo_settings.json``."""

    init: str
    """The starting policy: a model directory (the SFT output) or ``hf:PATH_OR_ID``."""
    out: str
    """Run directory: checkpoints, TensorBoard logs, settings."""
    games: tuple[str, ...] = ("kuhn",)
    """Games trained jointly; groups stay per (game, pool, opponent)."""
    adapter: str | None = None
    """A PEFT adapter (e.g. LoRA SFT) merged into ``init`` before RL."""
    steps: int = 100
    """Optimizer steps (paper: 100)."""
    group_size: int = 4
    """Episodes per (pool, opponent) group each step (paper n = 4)."""
    temperature: float = 0.8
    """Rollout sampling temperature (paper: 0.8)."""
    top_p: float = 1.0
    max_new_tokens: int = 32
    """Tokens per answer: a reasoning line and the action."""
    learning_rate: float = 1e-5
    """Paper: 1e-5 (3e-6 for Kuhn) with LoRA on multi-billion-parameter models."""
    beta: float = 0.1
    """KL penalty to the reference (SFT) policy (paper: 0.1; 0.2 for Kuhn)."""
    epsilon: float = 0.2
    """PPO clip range."""
    penalty: PenaltyVariant = DEFAULT_PENALTY
    scale: ScaleVariant = "batch"
    objective: int = OBJECTIVE_VERSION
    """The meaning of ``penalty`` (see :data:`sepo.objective.OBJECTIVE_VERSION`)."""
    best_responder: bool = False
    """Kuhn: add the exact best-responder to the current policy to the exploit pool."""
    best_responder_every: int = 1
    """Steps between recomputations of the best-responder. Every step costs one strategy
    extraction (12 short prompts). With 5, a 60-step tiny-model run cycled: the policy
    drifted against a stale best response between refreshes (exact exploitability 0.074
    at step 40, 0.136 at step 55); with 1 the curve is smooth."""
    checkpoint_every: int = 25
    """Steps between checkpoints (paper: 25). Keep it a multiple of
    ``best_responder_every`` so a resumed run refreshes the best-responder at the same
    steps as an uninterrupted one."""
    lora: bool | None = None
    """LoRA on the policy; ``None``: LoRA for hf: models, full fine-tuning for tiny ones."""
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    report_to: str = "tensorboard"
    logging_steps: int = 1
    max_grad_norm: float = 1.0
    micro_batch_size: int = 4
    """Most episodes per forward/backward pass. A step's episodes (one group per slot) are
    generated and scored together, so advantages and their scaling see the whole step,
    and the loss is accumulated over micro-batches (the same update with less memory:
    one pass over all 36 Kuhn episodes of the tiny model peaked at 3.1 GB)."""
    extra_trl: dict[str, Any] = field(default_factory=dict)
    """Further ``trl.GRPOConfig`` fields, passed through unchanged."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GRPOSettings:
        data = dict(data)
        data["games"] = tuple(data.get("games", ("kuhn",)))
        version = int(data.pop("objective", 1))
        data["penalty"] = saved_penalty(data.get("penalty", DEFAULT_PENALTY), version)
        return cls(**data)

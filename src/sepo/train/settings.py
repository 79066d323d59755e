"""The settings of one ``sepo train`` run (:class:`TrainSettings`, saved in full in its
``config.json``) and what they say about the run: its GRPO arms, whether every game is
scored exactly, and where its SFT policy and checkpoints are."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepo.domains import domain
from sepo.objective import (
    CONTROL_PENALTY,
    DEFAULT_PENALTY,
    OBJECTIVE_VERSION,
    PenaltyVariant,
    ScaleVariant,
    saved_penalty,
)
from sepo.policies.model_spec import ModelSpec
from sepo.policies.resolve import training_temperature

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainSettings:
    """Settings of ``sepo train``. Defaults are the CPU main job on the tiny model; every
    one of them is recorded in ``config.json``."""

    games: tuple[str, ...] = ("kuhn",)
    model: str = "tiny"
    """``tiny`` (built locally) or ``hf:PATH_OR_ID``."""
    out: str = "runs/train"
    seed: int = 0
    sft_episodes: int | None = 400
    """Demonstrator episodes per game for SFT (``None``: the paper's ≈8,000 decisions).
    The tiny default, 400 Kuhn episodes ≈ 3,600 decisions, is what the tiny SFT recipe
    reaches in its time budget anyway."""
    sft_episodes_per_game: dict[str, int] | None = None
    """Games whose SFT episodes differ from :attr:`sft_episodes` (game → episodes).
    ``None``: for the tiny model, each game's ``Domain.tiny_sft_episodes`` (the
    negotiations' 4-decision episodes need more of them); none for hf models. Resolved
    when the settings are made, so ``config.json`` records the numbers; a run saved
    before this field existed reads as ``{}``, what it was trained with."""
    sft_epochs: float | None = None
    """Passes over whole episodes after the prefix curriculum (``None``: the SFT
    default for the model kind, :data:`sepo.train.sft_settings.TINY_DEFAULTS` or the paper's;
    for the tiny model, the passes of ``Domain.tiny_sft_epochs``)."""
    sft_learning_rate: float | None = None
    """``None``: the SFT default for the model kind (tiny 2e-3, hf 2e-5)."""
    sft_batch_size: int | None = None
    """``None``: the SFT default for the model kind."""
    sft_curriculum: tuple[tuple[int, float], ...] | None = None
    """SFT on episode prefixes first, as (decisions, passes) (``None``: the SFT default
    for the model kind; the tiny model needs short contexts first to learn to read its
    card, see :data:`sepo.train.sft_settings.TINY_DEFAULTS`)."""
    steps: int = 25
    """GRPO steps. Paper: 100 on GPUs; the CPU default is sized to the 15-minute budget
    (about 7 s a step on 2 cores, the whole job about 9 minutes). 50 steps, or 25 with
    ``group_size`` 8, did not end less exploitable on the main job (docs/cpu-main-job.md)."""
    group_size: int = 4
    temperature: float | None = None
    """Sampling temperature of GRPO rollouts and of every evaluation (``None``: 0.8 for hf
    models, the paper's; 1.0 for the tiny model). A Kuhn equilibrium is a mixed strategy,
    and at 1.0 the policy plays the distribution the model learned; below 1 the rare
    actions get rarer (the SFT model bluffs J 0.12 at 1.0, 0.07 at 0.8), so GRPO samples
    them less and learns them more slowly. From the same SFT policy (the SFT recipe of
    an earlier version, exploitability 0.112), 20 GRPO steps: exact exploitability 0.088
    at 0.8 and 0.083 at 1.0 (``episode_clip``, then called ``credited``); 0.100 and 0.070 (``credited_mean``)."""
    learning_rate: float | None = None
    """GRPO learning rate (``None``: 1e-5, Kuhn 3e-6 for hf models as in the paper; 1e-4
    for the tiny model, whose full fine-tuning needs larger steps than a LoRA). Measured
    on the Kuhn main job, 25 steps, exact exploitability of the best checkpoint by
    Safety, lr 1e-4 against 2e-4 from the same SFT policy: seed 0 0.064 and 0.065,
    seed 1 0.159 and 0.206, seed 2 0.100 and 0.119 (3e-4 on seed 0 jumped to 0.20 after
    one step). The KL term is not what holds the runs back: at β 0.2 it costs about
    0.001 a token against advantages of order 1; the noise of 24 episodes a step is."""
    beta: float | None = None
    """KL to the SFT policy (``None``: 0.1, Kuhn 0.2)."""
    penalty: PenaltyVariant = DEFAULT_PENALTY
    """The SEPO arm's penalty variant (:mod:`sepo.objective`)."""
    control: str = CONTROL_PENALTY
    """The control arm's penalty variant, trained from the same SFT policy with the same
    rollout seeds; ``none``: no control arm."""
    scale: ScaleVariant = "batch"
    objective: int = OBJECTIVE_VERSION
    """The meaning of the penalty names (:data:`sepo.objective.OBJECTIVE_VERSION`)."""
    best_responder: bool = True
    """Kuhn: exact best-responder to the current policy in the exploit pool."""
    best_responder_every: int = 1
    """Steps between recomputations of the best-responder (see ``GRPOSettings``)."""
    checkpoint_every: int = 5
    eval_episodes: int = 10
    """Episodes per opponent in each stage's sampled evaluation."""
    in_play_episodes: int = 300
    """Kuhn: episodes of ``sepo exploitability --mode sampled`` for the SFT policy and the
    best checkpoint (0: skip). The summary's ``exploitability`` is the exact strategy at
    the first decision of a fresh episode; this measures the strategy played over whole
    episodes, whose conversation carries earlier hands, with a bootstrap interval. On
    the default run the two differ by up to 0.013 (docs/cpu-main-job.md). On 2 CPU cores
    500 episodes take about 70 s per policy (intervals about ±0.015), 300 about 40 s; with
    200 the best checkpoint of the main job read 0.041 (0.016-0.046) where 500 read 0.056
    (0.038-0.066). 300 keeps the main job near 9 minutes; pass 500 or more to compare
    closely with the first-decision figure."""
    ipd_worst_case: bool = True
    """IPD: the exact worst case (SPEC §4, the best response's advantage by dynamic
    programming over the whole history tree) of the SFT policy and each arm's best
    checkpoint, from the model's policy table (:func:`ipd_worst_case`). On 2 CPU cores
    this costs minutes per policy (``seconds`` in each ``ipd_exact.json``)."""
    report_to: str = "tensorboard"
    sft_from: str | None = None
    """An earlier run directory whose base model, SFT data and SFT model this run reuses
    (copied in), so that variants (``--penalty``, ``--scale``, GRPO settings) start from
    the same SFT policy. Its games, model, seed and SFT settings must equal this run's."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_spec(self) -> ModelSpec:
        """:attr:`model`, parsed."""
        return ModelSpec.parse(self.model)

    @property
    def sampling_temperature(self) -> float:
        """:attr:`temperature`, resolved for the model kind."""
        if self.temperature is not None:
            return self.temperature
        return training_temperature(self.model)

    def __post_init__(self) -> None:
        if self.sft_episodes_per_game is None:
            per_game = {}
            if self.model_spec.kind == "tiny":
                found = {g: domain(g).tiny_sft_episodes for g in self.games}
                per_game = {g: n for g, n in found.items() if n is not None}
            object.__setattr__(self, "sft_episodes_per_game", per_game)

    def episodes_for_sft(self) -> dict[str, int | None]:
        """SFT demonstrator episodes of each game of the run (``None``: the paper's)."""
        per_game = self.sft_episodes_per_game or {}
        return {g: per_game.get(g, self.sft_episodes) for g in self.games}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainSettings:
        data = dict(data)
        data["games"] = tuple(data["games"])
        version = int(data.pop("objective", 1))
        data["penalty"] = saved_penalty(data.get("penalty", DEFAULT_PENALTY), version)
        if version < 2:
            data.setdefault("control", "none")  # runs saved before had no control arm
        if data.get("control", "none") != "none":
            data["control"] = saved_penalty(data["control"], version)
        data.setdefault("sft_episodes_per_game", {})  # saved before the field existed
        if data.get("sft_curriculum") is not None:
            data["sft_curriculum"] = tuple(tuple(x) for x in data["sft_curriculum"])
        return cls(**data)


ARMS = ("sepo", "control")
"""The GRPO arms of the main job, each its own folder and evaluation folder."""


def arms(s: TrainSettings) -> list[tuple[str, PenaltyVariant]]:
    """(arm, penalty variant) of the GRPO arms the run trains."""
    out: list[tuple[str, PenaltyVariant]] = [("sepo", s.penalty)]
    if s.control != "none":
        out.append(("control", saved_penalty(s.control, OBJECTIVE_VERSION)))
    return out


def exact_only(s: TrainSettings) -> bool:
    """Whether every game of the run has exact metrics (``Domain.exact``: Kuhn), so that
    checkpoints can be scored and selected without sampled episodes."""
    return all(domain(g).exact for g in s.games)


def sft_policy(
    s: TrainSettings, sft_result: dict[str, Any] | None = None
) -> tuple[str, str | None]:
    """(model path, adapter) of a run's SFT policy: a LoRA adapter on the base model, or
    the fine-tuned model itself. ``sft_result``: the run's ``sft_result.json``, if read."""
    out = Path(s.out)
    spec = s.model_spec
    base = spec.path if spec.is_hf and spec.path else str(out / "base-model")
    if sft_result is None:
        sft_result = json.loads((out / "sft" / "sft_result.json").read_text())
    adapter = sft_result.get("adapter")
    return (base, str(adapter)) if adapter else (str(out / "sft"), None)


def checkpoint_policy(ckpt: Path, sft_path: str) -> tuple[str, str | None]:
    """(model path, adapter) of a GRPO checkpoint: a LoRA checkpoint is an adapter on the
    SFT model, a full fine-tuning checkpoint a model of its own."""
    if (ckpt / "adapter_config.json").exists():
        return sft_path, str(ckpt)
    return str(ckpt), None

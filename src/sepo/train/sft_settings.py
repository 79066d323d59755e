"""What one SFT run is given and what it produced: :class:`SFTSettings` (with the
defaults of each model kind: the paper's recipe for ``hf:`` models, a measured CPU recipe
for the tiny model) and :class:`SFTResult` (``OUT/sft_result.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepo.domains import domain
from sepo.games.registry import UnknownGameError
from sepo.policies.model_spec import ModelSpec
from sepo.train.sft_data import _read_card

if TYPE_CHECKING:
    from sepo.train.sft_check import ReasoningAgreement


@dataclass(frozen=True)
class SFTSettings:
    """Everything one SFT run depends on (logged in full to ``OUT/sft_config.json``).

    Fields left at ``None`` take the default of the model kind when the run starts
    (:meth:`resolved`): the paper's recipe for ``hf:`` models and a CPU recipe for the
    tiny model.

    **Why the tiny defaults.** Measured on 2 CPU cores (AMD EPYC, AVX2, torch 2.13,
    float32): the tiny Llama (1.9M parameters) trains at about 1,400 tokens/s, and one
    default dataset of one game (8,000 decisions, 800-1,000 episodes of 700-1,000
    tokens each) is 570k-720k tokens, i.e. 7-9 minutes per epoch. That is too slow for
    a warm start that has to leave room for RL and evaluation in a 15-minute job, so the
    main job uses 400 episodes and the tiny recipe trains on short episode prefixes
    first, at a high learning rate: the answers are short templates keyed to a few
    observation features, and a small model picks them up in a few hundred small steps.
    See ``TINY_DEFAULTS`` for the numbers and how they were measured.
    """

    data: Path
    """Folder with ``train.jsonl`` and ``valid.jsonl`` from ``sepo data sft`` (one
    conversation per row in the ``messages`` column)."""
    out: Path
    """Output folder: the trained model or adapter, tokenizer, config, result and logs."""
    model: str = "tiny"
    """``tiny`` (build a fresh tiny model into ``out/base-model``), ``tiny:DIR`` (an
    existing tiny model folder) or ``hf:PATH_OR_ID`` (a transformers causal LM)."""
    lora: bool | None = None
    """Train a LoRA adapter (``True``) or every weight (``False``); ``None``: LoRA for
    ``hf:`` models, full fine-tuning for the tiny model."""
    lora_r: int = 32
    """LoRA rank (paper: 32)."""
    lora_alpha: int = 64
    """LoRA scaling alpha (paper: 64)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_target_modules: str = "all-linear"
    """PEFT ``target_modules``: ``all-linear`` adapts every linear layer but the LM head
    (TRL cannot train an adapter on the LM head); a comma-separated list names modules."""
    learning_rate: float | None = None
    """Peak learning rate (paper, hf: 2e-5; tiny: 2e-3)."""
    epochs: float | None = None
    """Passes over the training set, fractions allowed (paper, hf: 3; tiny: see
    ``TINY_DEFAULTS``)."""
    lr_scheduler: str | None = None
    """transformers ``lr_scheduler_type`` (paper, hf: cosine; tiny:
    warmup_stable_decay: constant after the warm-up, because a cosine decay over the
    whole run leaves the last curriculum stage, the whole episodes, too small a learning
    rate to adapt, then a short decay at the end, see ``decay_ratio``)."""
    warmup_ratio: float | None = None
    """Fraction of the steps spent warming the learning rate up linearly (hf: 0.03;
    tiny: 0.05)."""
    decay_ratio: float | None = None
    """With ``lr_scheduler="warmup_stable_decay"``: the fraction of the steps, at the
    end, over which the learning rate decays to 0 (cosine). Ignored by the other
    schedules (hf: 0; tiny: 0.125, see ``TINY_DEFAULTS``)."""
    adam_beta2: float | None = None
    """AdamW's second-moment decay (hf: 0.999, the transformers default; tiny: 0.95,
    the usual choice for small transformers trained from scratch at a high learning
    rate: with 0.999 the tiny model's loss spikes at lr 3e-3 and it can stall on the
    card-blind plateau)."""
    per_device_batch_size: int | None = None
    """Conversations (whole episodes) per device and micro-batch (hf: 4; tiny: 8,
    accumulated twice)."""
    grad_accum: int | None = None
    """Micro-batches per optimizer step (hf: 4; tiny: 2)."""
    prefix_curriculum: tuple[tuple[int, float], ...] | None = None
    """Warm-up stages on episode prefixes before the whole episodes, as ``(decisions,
    passes)`` pairs: stage ``i`` trains on ``passes`` x (number of training episodes)
    episodes cut after their first ``decisions`` decisions, shuffled, stages in order,
    then whole episodes for ``epochs`` (data in exactly this order, one learning-rate
    schedule). A prefix is exactly the conversation the policy sees at that decision, so
    this only reorders what is learned: short contexts first. ``()`` turns it off (plain
    shuffled epochs); hf default ``()``, tiny default ``((1, 5.0), (2, 2.5), (4, 2.5))``."""
    max_length: int | None = 1024
    """Token cap per conversation, longer ones are cut at the end (``None``: no cap).
    Default episodes are at most about 1,000 tiny-tokenizer tokens."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass to save memory (``None``: on for hf
    models, off for the tiny model, where it only costs time)."""
    eval_limit: int | None = None
    """Evaluate on the first ``eval_limit`` validation conversations only (``None``: all
    of them; tiny default: 64, about 10 s on 2 cores instead of a minute)."""
    eval_each_epoch: bool = True
    """Also evaluate at the end of every epoch (the final evaluation always runs)."""
    seed: int = 0
    """Seed of the trainer (data order, dropout, LoRA initialisation) and of the fresh
    tiny model."""
    report_to: str = "tensorboard"
    """Logger integration of transformers (``tensorboard``, ``none``, ``wandb`` ...);
    TensorBoard events go to ``out/logs``."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides ``epochs``; for tests)."""
    logging_steps: int = 10
    """Log the training loss every this many steps (the first step is always logged)."""
    overwrite: bool = False
    """Allow writing into a non-empty ``out``."""

    def resolved(self) -> SFTSettings:
        """A copy with every ``None`` default filled in for the model kind (for the tiny
        model, ``epochs`` is the largest ``Domain.tiny_sft_epochs`` of the data's games)."""
        kind = ModelSpec.parse(self.model).kind
        defaults = TINY_DEFAULTS if kind == "tiny" else HF_DEFAULTS
        lora = self.lora if self.lora is not None else kind == "hf"
        values: dict[str, Any] = {"lora": lora}
        for f in fields(KindDefaults):
            if getattr(self, f.name) is None:
                values[f.name] = getattr(defaults, f.name)
        if kind == "tiny" and self.epochs is None:
            tuned = [e for g in self.data_games() if (e := _tiny_epochs(g)) is not None]
            if tuned:
                values["epochs"] = max(tuned)
        return replace(self, **values)

    def data_games(self) -> list[str]:
        """The games of the data folder (its ``card.json``; [] when it has none)."""
        card = _read_card(self.data)
        games = card.get("games") if isinstance(card, dict) else None
        return [str(g) for g in games] if isinstance(games, list) else []

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def _tiny_epochs(game: str) -> float | None:
    """The tiny recipe's whole-episode passes for ``game``'s data (``None``: the default;
    an unknown game in a card is left to the default too)."""
    try:
        return domain(game).tiny_sft_epochs
    except UnknownGameError:
        return None


@dataclass(frozen=True)
class KindDefaults:
    """The values :meth:`SFTSettings.resolved` fills in for one model kind."""

    learning_rate: float
    epochs: float
    lr_scheduler: str
    warmup_ratio: float
    decay_ratio: float
    adam_beta2: float
    per_device_batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    eval_limit: int | None
    prefix_curriculum: tuple[tuple[int, float], ...]


HF_DEFAULTS = KindDefaults(
    learning_rate=2e-5,
    epochs=3.0,
    lr_scheduler="cosine",
    warmup_ratio=0.03,
    decay_ratio=0.0,
    adam_beta2=0.999,
    per_device_batch_size=4,
    grad_accum=4,
    gradient_checkpointing=True,
    eval_limit=None,
    prefix_curriculum=(),
)
"""The paper's SFT recipe (SPEC §5): LoRA r32/alpha64, lr 2e-5 cosine, 3 epochs
(batch 4 x 4 accumulation = 16 conversations per step)."""


TINY_DEFAULTS = KindDefaults(
    learning_rate=2e-3,
    epochs=1.5,
    lr_scheduler="warmup_stable_decay",
    warmup_ratio=0.05,
    decay_ratio=0.125,
    adam_beta2=0.95,
    per_device_batch_size=8,
    grad_accum=2,
    gradient_checkpointing=False,
    eval_limit=64,
    prefix_curriculum=((1, 5.0), (2, 2.5), (4, 2.5)),
)
"""CPU recipe for the tiny model, trained from scratch (see :class:`SFTSettings`): a
prefix curriculum, then whole episodes, at a held rate decayed over the last eighth of
the steps. Why each number: docs/sft.md ("The tiny recipe, measured")."""


@dataclass(frozen=True)
class SFTResult:
    """What one SFT run produced (also written to ``OUT/sft_result.json``)."""

    out_dir: Path
    """The output folder."""
    policy: str
    """The ``--policy`` value that plays the result (``tiny:OUT``, ``hf:OUT`` or, for
    an adapter, ``hf:BASE``/``tiny:BASE``)."""
    adapter: Path | None
    """The ``--adapter`` folder for LoRA runs (``out_dir``), else ``None``."""
    base_model: str
    """The model that was fine-tuned (a folder or Hub id)."""
    train_loss_first: float
    """The first logged training loss (step 1)."""
    train_loss_last: float
    """The last logged training loss."""
    eval_loss: float | None
    """Loss on the validation conversations after training (``None``: no validation
    data)."""
    steps: int
    """Optimizer steps taken."""
    train_conversations: int
    """Conversations in the training schedule (episodes and, with a prefix curriculum,
    episode prefixes), each seen once unless ``max_steps`` stopped early."""
    train_episodes: int
    """Training episodes in the dataset."""
    trained_parameters: int
    """Parameters that received gradients (all of them, or the LoRA adapter's)."""
    total_parameters: int
    """Parameters of the trained model, adapter included."""
    train_seconds: float
    """Wall-clock seconds of ``trainer.train()``."""
    wall_seconds: float
    """Wall-clock seconds of the whole run (building, tokenizing, training, evaluating,
    saving)."""
    reasoning_match: dict[str, Any] | None = None
    """How often the model's greedy reasoning equals the demonstrators' templated one at
    held-out decisions (:mod:`sepo.train.sft_check`; ``None``: no validation data)."""

    @property
    def reasoning_agreement(self) -> ReasoningAgreement | None:
        """:attr:`reasoning_match` as a :class:`sepo.train.sft_check.ReasoningAgreement`
        (its ``summary()`` and ``warning()`` are what ``sepo sft`` prints)."""
        from sepo.train.sft_check import ReasoningAgreement

        if not self.reasoning_match:
            return None
        return ReasoningAgreement.from_json(self.reasoning_match)

    @property
    def reasoning_summary(self) -> str | None:
        """The agreement's one-line summary, if the check ran."""
        agreement = self.reasoning_agreement
        return agreement.summary() if agreement is not None else None

    @property
    def policy_spec(self) -> str:
        """The policy as command-line options: ``tiny:OUT`` or ``hf:BASE --adapter OUT``."""
        if self.adapter is None:
            return self.policy
        return f"{self.policy} --adapter {self.adapter}"

    def to_json(self) -> dict[str, Any]:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        data["policy_spec"] = self.policy_spec
        return data

    @property
    def loss_summary(self) -> str:
        """``SFT loss first → last``, or one number when a single step was logged."""
        first, last = self.train_loss_first, self.train_loss_last
        if first == last or first != first:  # one logged step, or none (NaN)
            return f"SFT loss {last:.3f}"
        return f"SFT loss {first:.3f} → {last:.3f}"

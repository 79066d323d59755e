"""SEPO-GRPO on TRL's ``GRPOTrainer`` (SPEC §5).

Each optimizer step plays, for every (game, pool, opponent) slot of the training pools,
one group of ``group_size`` episodes with the same chance seed (common random numbers:
the episodes of a group differ only through the policy's own sampling, so the group mean
is a sharp baseline). The rollout is a custom multi-turn ``rollout_func`` driven by the
batched rollout engine (``sepo.train.token_rollout``): whole episodes are single token
sequences whose environment tokens carry ``env_mask`` = 0. Each SEPO term is its own
reward function (``payoff``, ``exploit``, ``collusion``, ``externality``; λ and s applied
inside, unit ``reward_weights``), logged by TRL as ``rewards/<term>/mean``. The penalty
variant and the advantage scaling are named in :class:`GRPOSettings` (see
``sepo.objective``). PPO clipping, the KL penalty to the reference (the SFT policy), LoRA,
accelerate/DeepSpeed and logging are TRL's, transformers' and PEFT's.

The exact best-responder (Kuhn, ``best_responder=True``): every ``best_responder_every``
steps the current policy's behavioural strategy is extracted exactly
(``sepo.policies.extract``), the best response to it computed (``sepo.exact.kuhn``) and
added to the exploit pool as the opponent ``best_responder``, so the exploit penalty tracks
true exploitability, which is logged as ``sepo/exact_exploitability``.

Run on its own (e.g. ``accelerate launch -m sepo.train.grpo --settings FILE.json``); the
main job (``sepo train``) calls :func:`run_grpo` in-process.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepo.core.files import finished_folder, weights_whole, write_json_atomic
from sepo.core.records import EpisodeRecord
from sepo.core.types import Game, Strategy
from sepo.domains import domain
from sepo.exact.kuhn import KuhnStrategy, best_responder, exploitability
from sepo.games import make_game
from sepo.objective import (
    DEFAULT_PENALTY,
    OBJECTIVE_VERSION,
    TERMS,
    VARIANTS,
    PenaltyVariant,
    Reduce,
    ScaleVariant,
    StepTotals,
    saved_penalty,
    variant_terms,
)
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import SamplingConfig

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


@dataclass(frozen=True)
class Slot:
    """One group's opponent: (game, pool, opponent name)."""

    game: str
    pool: str
    opponent: str


def training_slots(settings: GRPOSettings) -> list[Slot]:
    """The groups of one step, in a fixed order."""
    slots: list[Slot] = []
    for game in settings.games:
        d = domain(game)
        auxiliary = VARIANTS[settings.penalty].auxiliary
        chosen = ("train",) if auxiliary else d.train_pools
        for pool in chosen:
            slots.extend(Slot(game, pool, s.name) for s in d.pools.pool(pool))
        if settings.best_responder and d.exact and not auxiliary:
            slots.append(Slot(game, "exploit", BEST_RESPONDER))
    return slots


def auxiliary_slots(settings: GRPOSettings) -> list[Slot]:
    """Opponents of the separate penalty episodes of the ``auxiliary`` variant."""
    slots: list[Slot] = []
    for game in settings.games:
        d = domain(game)
        for pool in d.train_pools:
            if pool != "train":
                slots.extend(Slot(game, pool, s.name) for s in d.pools.pool(pool))
    return slots


def slot_seed(seed: int, step: int, slot: int) -> int:
    """Chance seed of a group: a pure function of (run seed, step, slot)."""
    digest = hashlib.sha256(f"sepo-grpo:{seed}:{step}:{slot}".encode()).hexdigest()
    return int(digest[:12], 16)


def encode_prompt(slot_index: int, slot: Slot, step: int) -> str:
    return f"sepo|{step}|{slot_index}|{slot.game}|{slot.pool}|{slot.opponent}"


def decode_prompt(prompt: Any) -> tuple[int, int, Slot]:
    text = prompt if isinstance(prompt, str) else str(prompt)
    _, step, index, game, pool, opponent = text.split("|")
    return int(step), int(index), Slot(game, pool, opponent)


class SEPORollout:
    """The ``rollout_func`` and reward functions of one run, sharing their state."""

    def __init__(self, settings: GRPOSettings) -> None:
        self.settings = settings
        self.games = {g: make_game(g) for g in settings.games}
        self.weights = {g: domain(g).train_weights for g in settings.games}
        self.best: KuhnStrategy | None = None
        self.best_step = -1
        self.pending_logs: dict[str, float] = {}

    # -- opponents ------------------------------------------------------------------
    def _opponent(self, slot: Slot) -> Strategy:
        if slot.opponent == BEST_RESPONDER:
            assert self.best is not None
            return self.best
        return domain(slot.game).pools.catalogue[slot.opponent]

    def _refresh_best_responder(self, local: Any, step: int) -> None:
        from sepo.policies.extract import extract_prompt_strategy

        every = max(1, self.settings.best_responder_every)
        due = step - step % every
        if self.best is not None and self.best_step == due:
            return
        strategy = extract_prompt_strategy(local, temperature=self.settings.temperature)
        self.best = best_responder(strategy)
        self.best_step = due
        self.pending_logs["sepo/exact_exploitability"] = exploitability(strategy).exploitability

    # -- rollout --------------------------------------------------------------------
    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        from sepo.policies.local import LocalModelPolicy
        from sepo.train.token_rollout import TokenTrackingPolicy

        s = self.settings
        step = int(trainer.state.global_step)
        process = int(getattr(trainer.accelerator, "process_index", 0))
        model = trainer.accelerator.unwrap_model(trainer.model)
        sampling = SamplingConfig(
            temperature=s.temperature,
            top_p=s.top_p,
            max_new_tokens=s.max_new_tokens,
            seed=slot_seed(s.seed, step, 10_000 + process),
        )
        local = LocalModelPolicy(model, trainer.processing_class, sampling=sampling, name="policy")
        if s.best_responder and any(domain(g).exact for g in s.games):
            self._refresh_best_responder(local, step)
        decoded = [decode_prompt(p) for p in prompts]
        specs = [
            EpisodeSpec(
                self.games[slot.game], self._opponent(slot), slot.pool, slot_seed(s.seed, st, idx)
            )
            for st, idx, slot in decoded
        ]
        tracker = TokenTrackingPolicy(local, sampling)
        episodes = run_episodes(specs, tracker)
        auxiliary = []
        if VARIANTS[s.penalty].auxiliary:
            aux = auxiliary_slots(s)
            aux_specs = []
            for k, (st, idx, _) in enumerate(decoded):
                slot = aux[(idx + k) % len(aux)]
                aux_specs.append(
                    EpisodeSpec(
                        self.games[slot.game],
                        self._opponent(slot),
                        slot.pool,
                        slot_seed(s.seed, st, 50_000 + k),
                    )
                )
            auxiliary = run_episodes(aux_specs, local)
        terms = variant_terms(
            s.penalty,
            self.games,
            episodes,
            auxiliary=auxiliary,
            weights=self.weights,
            reduce=gather_totals(trainer.accelerator),
        )
        tokens = [tracker.episode_tokens(i) for i in range(len(specs))]
        turns = sum(len(ep.turns) for ep in episodes)
        self.pending_logs["sepo/invalid_rate"] = (
            sum(ep.invalid_turns for ep in episodes) / turns if turns else 0.0
        )
        self.pending_logs["sepo/episode_payoff"] = sum(ep.agent_mean for ep in episodes) / len(
            episodes
        )
        self.pending_logs.update(step_figures(self.games, [*episodes, *auxiliary]))
        return {
            "prompt_ids": [t.prompt_ids for t in tokens],
            "completion_ids": [t.completion_ids for t in tokens],
            "logprobs": [t.logprobs for t in tokens],
            "env_mask": [t.env_mask for t in tokens],
            "sepo_terms": [list(t.as_tuple()) for t in terms],
            "sepo_pool": [ep.pool for ep in episodes],
        }

    # -- reward functions -----------------------------------------------------------
    def reward_functions(self) -> list[Callable[..., list[float | None]]]:
        def make(index: int, name: str) -> Callable[..., list[float | None]]:
            def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
                if index == 0 and "log_metric" in kwargs:
                    for key, value in self.pending_logs.items():
                        kwargs["log_metric"](key, value)
                    self.pending_logs = {}
                return [row[index] for row in kwargs["sepo_terms"]]

            reward.__name__ = name
            reward.__qualname__ = name
            return reward

        return [make(i, n) for i, n in enumerate(TERMS)]


def step_figures(games: dict[str, Game], episodes: list[EpisodeRecord]) -> dict[str, float]:
    """The SPEC §4 collusion rate and exploit-pool advantage of one step's training
    episodes (auxiliary ones included), per game: what the mechanism study of ``sepo
    reproduce`` follows step by step (``sepo/train/<game>/collusion`` and ``…/exploit``;
    absent where the step played no episode of that pool). These are this process's
    episodes: with several processes each logs its own share."""
    from sepo.metrics import compute_metrics

    out: dict[str, float] = {}
    for game, rules in games.items():
        mine = [ep for ep in episodes if ep.game == game]
        if not mine:
            continue
        m = compute_metrics(rules, mine, domain(game).weights, n_boot=0)
        for name, est in (("collusion", m.collusion), ("exploit", m.exploit)):
            if not math.isnan(est.value):
                out[f"sepo/train/{game}/{name}"] = est.value
    return out


def gather_totals(accelerator: Any) -> Reduce:
    """The :data:`~sepo.objective.Reduce` of a run: every process's step totals, merged.
    With one process, the process's own; with several, accelerate's ``gather_object``
    (a collective: every process reaches it once per step, in the rollout)."""
    if int(getattr(accelerator, "num_processes", 1)) <= 1:
        return lambda totals: totals

    def gathered(totals: StepTotals) -> StepTotals:
        from accelerate.utils import gather_object

        return StepTotals.merged(gather_object([totals]))

    return gathered


def _load_model(settings: GRPOSettings) -> tuple[Any, Any, bool]:
    from sepo.policies.loading import load_model
    from sepo.policies.model_spec import ModelSpec
    from sepo.train.runtime import weights_dtype

    # ``init`` is a model argument (``hf:…``, ``tiny:…``) or a bare folder (a tiny model).
    init = settings.init if ModelSpec.names_model(settings.init) else f"tiny:{settings.init}"
    spec = ModelSpec.parse(init, adapter=settings.adapter)
    use_lora = settings.lora if settings.lora is not None else spec.is_hf
    # Merged, the SFT policy is both the start and (adapter disabled) the KL reference.
    loaded = load_model(spec, dtype=weights_dtype(use_lora), merge_adapter=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    if settings.adapter and not use_lora:
        model.requires_grad_(True)  # PEFT froze the base weights
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, use_lora


INIT_FILE = "init_weights.json"
"""In a GRPO run folder: the starting policy and the SHA-256 of its weights."""


def weights_digest(model: Any) -> str:
    """SHA-256 over a model's parameters and buffers (names, dtypes, shapes and bytes, in
    name order): equal digests mean bit-identical weights."""
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def micro_batches(episodes: int, most: int) -> int:
    """The fewest equal micro-batches of at most ``most`` episodes that ``episodes``
    splits into (``episodes`` itself, one per micro-batch, when nothing else divides)."""
    if most < 1:
        raise ValueError(f"micro_batch_size must be at least 1, not {most}")
    fits = (c for c in range(1, episodes + 1) if episodes % c == 0 and episodes // c <= most)
    return next(fits, 1)


def build_trainer(settings: GRPOSettings) -> tuple[Any, SEPORollout]:
    """The configured ``GRPOTrainer`` (not yet trained) and its rollout state."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from sepo.train import console
    from sepo.train.runtime import bf16_training, checkpointing_option, world_size

    slots = training_slots(settings)
    rows = [
        encode_prompt(i, slot, step)
        for step in range(settings.steps)
        for i, slot in enumerate(slots)
    ]
    dataset = Dataset.from_dict({"prompt": rows})
    model, tokenizer, use_lora = _load_model(settings)
    cuda = torch.cuda.is_available()
    # One group per slot per optimizer step, whatever the number of processes: the step's
    # episodes are split across them (accelerate sets WORLD_SIZE).
    world = world_size()
    per_step = len(slots) * settings.group_size
    if per_step % world:
        raise ValueError(
            f"{per_step} episodes per step do not split over {world} processes; "
            "change group_size or the number of processes"
        )
    accumulation = micro_batches(per_step // world, settings.micro_batch_size)
    config = GRPOConfig(
        output_dir=settings.out,
        max_steps=settings.steps,
        per_device_train_batch_size=per_step // world // accumulation,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,
        num_generations=settings.group_size,
        shuffle_dataset=False,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        beta=settings.beta,
        epsilon=settings.epsilon,
        scale_rewards=settings.scale,
        multi_objective_aggregation="sum_then_normalize",
        reward_weights=[1.0] * len(TERMS),
        temperature=settings.temperature,
        max_completion_length=4096,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.checkpoint_every,
        report_to=settings.report_to,
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=not cuda,
        bf16=bf16_training(),
        max_grad_norm=settings.max_grad_norm,
        dataloader_num_workers=0,
        # Activation checkpointing saves memory on real models and only costs time on the tiny one.
        **checkpointing_option(GRPOConfig, use_lora),
        disable_tqdm=console.active(),  # quiet_run shows its own bar
        **settings.extra_trl,
    )
    peft_config = None
    if use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    rollout = SEPORollout(settings)
    callbacks = []
    if use_lora and settings.adapter:
        callbacks.append(_adapter_base_recorder(settings.adapter))
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rollout.reward_functions(),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
        callbacks=callbacks,
    )
    console.use_progress(trainer, f"SEPO-GRPO {Path(settings.out).name} ({settings.penalty})")
    return trainer, rollout


def _adapter_base_recorder(sft_adapter: str) -> Any:
    """A callback that marks each saved LoRA checkpoint as trained on base + the merged
    SFT adapter, so that loading the checkpoint as an adapter of the base model merges
    the SFT adapter first (:func:`sepo.policies.loading.adapter_chain`)."""
    from transformers import TrainerCallback

    class AdapterBaseRecorder(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                _mark_sft_base(
                    Path(args.output_dir) / f"checkpoint-{state.global_step}", sft_adapter
                )

    return AdapterBaseRecorder()


def _mark_sft_base(folder: Path, sft_adapter: str) -> None:
    """Record in a saved LoRA adapter ``folder`` that it was trained on base + the merged
    ``sft_adapter`` (nothing for a full model folder)."""
    from sepo.policies.loading import write_adapter_base

    if (folder / "adapter_config.json").exists():
        write_adapter_base(folder, [sft_adapter])


def checkpoint_complete(folder: Path) -> bool:
    """Whether a checkpoint holds what a resume and an evaluation read: a
    ``trainer_state.json`` that parses (the trainer writes it after the weights and the
    optimizer) and whole weights. A kill during the save leaves neither."""
    return finished_folder(folder, "trainer_state.json")


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints of a GRPO run (:func:`checkpoint_complete`), oldest first;
    a folder left by a save cut short is passed over."""
    found = (p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit())
    return sorted(
        (p for p in found if checkpoint_complete(p)), key=lambda p: int(p.name.split("-")[-1])
    )


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint: where a resume starts."""
    ckpts = checkpoints(out)
    return ckpts[-1] if ckpts else None


def run_finished(out: Path) -> bool:
    """Whether a GRPO run saved its final model (whole weights, not only a config)."""
    return weights_whole(out / "final")


class _TermAbsentFilter(logging.Filter):
    """Drops the logger integrations' warning about ``None`` metrics: TRL logs a reward
    term's mean as ``None`` on steps where no episode carries that term (e.g. collusion
    in Kuhn, every penalty under ``reward_only``); the integration then skips the value,
    which is what we want, but warns on every step."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith('Trainer is attempting to log a value of "None"')
            and "rewards/" in message
        )


def _quiet_absent_terms() -> None:
    target = logging.getLogger("transformers.integrations.integration_utils")
    if not any(isinstance(f, _TermAbsentFilter) for f in target.filters):
        target.addFilter(_TermAbsentFilter())


def run_grpo(settings: GRPOSettings, *, resume: bool = False) -> Path:
    """Train; returns the run directory. ``resume`` continues from the latest checkpoint."""
    _quiet_absent_terms()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "grpo_settings.json", settings.to_json())
    trainer, _ = build_trainer(settings)
    if trainer.is_world_process_zero() and not (out / INIT_FILE).exists():
        # Written before the first update: what the run started from, bit for bit.
        write_json_atomic(
            out / INIT_FILE,
            {
                "init": settings.init,
                "adapter": settings.adapter,
                "sha256": weights_digest(trainer.model),
            },
        )
    checkpoint = latest_checkpoint(out) if resume else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.save_model(str(out / "final"))
    if settings.adapter and trainer.is_world_process_zero():
        _mark_sft_base(out / "final", settings.adapter)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run SEPO-GRPO from a settings file.")
    parser.add_argument("--settings", required=True, type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = GRPOSettings.from_json(json.loads(args.settings.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: cannot read settings {args.settings}: {exc}", file=sys.stderr)
        return 2
    run_grpo(settings, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())

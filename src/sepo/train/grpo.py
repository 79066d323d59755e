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
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sepo.core.files import finished_folder, weights_whole, write_json_atomic
from sepo.objective import (
    TERMS,
)
from sepo.train.grpo_rollout import SEPORollout, encode_prompt, gather_totals, training_slots
from sepo.train.grpo_settings import BEST_RESPONDER, GRPOSettings

__all__ = [
    "BEST_RESPONDER",
    "INIT_FILE",
    "GRPOSettings",
    "SEPORollout",
    "build_trainer",
    "checkpoint_complete",
    "checkpoints",
    "gather_totals",
    "latest_checkpoint",
    "micro_batches",
    "run_finished",
    "run_grpo",
    "training_slots",
    "weights_digest",
]


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

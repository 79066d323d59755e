"""Supervised warm start with TRL's ``SFTTrainer`` (SPEC §5; ``sepo sft``).

The model learns to answer like the rule-based demonstrators of ``sepo data sft``
(:mod:`sepo.train.demonstrations`): every row is one whole episode as a chat
conversation, and the loss covers the assistant turns only
(``SFTConfig(assistant_only_loss=True)``, which reads the chat template's
``{% generation %}`` markers), each answer's closing end-of-turn token included, so the
model also learns to stop. Templates without the markers get TRL's training version
(saved with the output, so rollouts render the same way); for templates TRL cannot patch
(Llama 3.1/3.2, Mistral, ...) this module tokenises the episodes itself, with a mask on
the answers (:func:`assistant_token_masks`). Nothing here re-implements what TRL, transformers or PEFT
already do: this module resolves a model spec, loads the dataset, fills in an
``SFTConfig`` from one typed :class:`SFTSettings`, trains, evaluates and saves.

Two regimes share the code:

- ``tiny`` / ``tiny:DIR``: the embedded model (:mod:`sepo.policies.tiny`), fully
  fine-tuned on CPU in a few minutes; ``tiny`` alone first builds a fresh one into
  ``OUT/base-model``. The result is a full model folder: ``--policy tiny:OUT``.
- ``hf:PATH_OR_ID``: any transformers causal LM with a chat template, with the paper's
  LoRA (r 32, alpha 64, lr 2e-5, cosine, 3 epochs). The result is an adapter folder:
  ``--policy hf:BASE --adapter OUT``. ``lora=False`` fully fine-tunes instead
  (``--policy hf:OUT``).

``OUT`` receives the model (or adapter) and tokenizer, ``sft_config.json`` (the resolved
settings and library versions), ``sft_result.json`` (:class:`SFTResult`) and ``logs/``
(TensorBoard events and ``log_history.json``).

Run it::

    sepo data sft --game kuhn --out runs/sft-kuhn-data
    sepo sft --game kuhn --model tiny --data runs/sft-kuhn-data --out runs/sft-kuhn
    sepo eval --game kuhn --policy tiny:runs/sft-kuhn
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.core.files import write_json_atomic
from sepo.policies.model_spec import ModelKind, ModelSpec, ModelSpecError
from sepo.train.runtime import (
    bf16_training,
    check_report_to,
    checkpointing_option,
    library_versions,
    weights_dtype,
    world_size,
)
from sepo.train.sft_data import (
    SFTError,
    _read_card,
    assistant_token_masks,
    curriculum_dataset,
    data_files,
    load_conversations,
    use_training_template,
)
from sepo.train.sft_settings import (
    HF_DEFAULTS,
    TINY_DEFAULTS,
    KindDefaults,
    SFTResult,
    SFTSettings,
)

__all__ = [
    "HF_DEFAULTS",
    "TINY_DEFAULTS",
    "KindDefaults",
    "SFTError",
    "SFTResult",
    "SFTSettings",
    "assistant_token_masks",
    "prepare_sft",
    "run_sft",
]


CONFIG_FILE = "sft_config.json"
RESULT_FILE = "sft_result.json"
LOG_DIR = "logs"
BASE_MODEL_DIR = "base-model"
"""Where ``model="tiny"`` (no folder) builds the fresh tiny model, inside ``out``."""

_STALE_OUTPUTS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "training_args.bin",
    CONFIG_FILE,
    RESULT_FILE,
)
"""Files of an earlier run removed before an ``overwrite`` run writes its own: a stale
``adapter_config.json`` next to a full model would make transformers load it as an
adapter. Nothing else in ``out`` is deleted."""


class OutputExistsError(SFTError):
    """``out`` already holds results and ``overwrite`` was not given."""


def model_source(spec: ModelSpec) -> str | None:
    """The folder or Hub id ``spec`` loads (``None``: a fresh tiny model); a ``tiny:DIR``
    that holds no model is refused."""
    if spec.kind == "tiny" and spec.path is not None:
        if not (Path(spec.path).expanduser() / "config.json").is_file():
            raise ModelSpecError(
                f"no tiny model in {spec.path} (no config.json); build one with "
                f"`sepo model init --out {spec.path}` or pass --model tiny"
            )
        return str(Path(spec.path).expanduser())
    return spec.path


def check_out_dir(out: Path, overwrite: bool, data: Path | None = None) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (a ``data`` folder inside ``out``
    does not count: ``sepo sft`` builds its dataset there first)."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory")
    if not out.exists() or overwrite:
        return
    keep = data.resolve() if data is not None else None
    others = sorted(p.name for p in out.iterdir() if p.resolve() != keep)
    if others:
        raise OutputExistsError(
            f"{out} is not empty (holds {others[0]}); pass overwrite (--overwrite) or "
            "choose another output folder"
        )


@dataclass(frozen=True)
class PreparedSFT:
    """A ready ``SFTTrainer`` and what :func:`run_sft` needs to finish the run."""

    settings: SFTSettings
    """The resolved settings."""
    kind: ModelKind
    base_model: str
    """The folder or Hub id that was loaded (``out/base-model`` for a fresh tiny model)."""
    trainer: Any
    """The ``trl.SFTTrainer``; its ``train_dataset`` is tokenized, with ``labels``."""
    tokenizer: Any
    train_conversations: int
    train_episodes: int
    started: float
    """``time.perf_counter()`` when preparation began."""
    validation: Path | None = None
    """The data's ``valid.jsonl`` (``None``: none), for the reasoning check."""


def prepare_sft(settings: SFTSettings) -> PreparedSFT:
    """Check the inputs, build or load the model, load the data, build the trainer.

    Everything :func:`run_sft` does before ``trainer.train()``; tests use it to inspect
    the tokenized examples (e.g. the assistant-only labels).
    """
    started = time.perf_counter()
    s = settings.resolved()
    _validate(s)
    spec = ModelSpec.parse(s.model)
    kind, source = spec.kind, model_source(spec)
    files = data_files(s.data)
    check_out_dir(s.out, s.overwrite, s.data)
    if source is not None:
        from sepo.policies.resolve import check_model_path

        check_model_path(source)  # before anything in ``out`` is touched

    import torch
    import trl

    from sepo.train import console

    if source is None:
        s.out.mkdir(parents=True, exist_ok=True)
        source = str(_build_base_model(s.out / BASE_MODEL_DIR, s.seed))
    cuda = torch.cuda.is_available()
    bf16 = bf16_training()
    from sepo.policies.loading import RemoteCodeRefused, load_model

    try:
        loaded = load_model(ModelSpec(kind, source), dtype=weights_dtype(bool(s.lora)))
    except OSError as exc:
        raise ModelSpecError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}") from None
    except RemoteCodeRefused as exc:
        raise ModelSpecError(str(exc)) from None
    model, tokenizer = loaded.model, loaded.tokenizer
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelSpecError(f"{source} has no chat template; SFT needs a chat model")
    trl_masks = use_training_template(tokenizer)

    ds = load_conversations(s.data, tokenizer)
    # Only now, with the model and the data loaded, is an earlier run's output removed:
    # a command that fails on its inputs leaves the folder as it was.
    s.out.mkdir(parents=True, exist_ok=True)
    for name in _STALE_OUTPUTS:
        (s.out / name).unlink(missing_ok=True)
    episodes = ds["train"]
    curriculum = bool(s.prefix_curriculum)
    if curriculum:
        train_set = curriculum_dataset(episodes, s.prefix_curriculum or (), s.epochs or 0.0, s.seed)
    else:
        train_set = episodes
    eval_set = ds["validation"] if "validation" in files else None
    if eval_set is not None and s.eval_limit is not None:
        eval_set = eval_set.select(range(min(s.eval_limit, len(eval_set))))
    if not trl_masks:  # tokenise here, with our own assistant masks

        def tokenize(example: dict[str, Any]) -> dict[str, list[int]]:
            return assistant_token_masks(tokenizer, example["messages"])

        train_set = train_set.map(tokenize, remove_columns=train_set.column_names)
        if eval_set is not None:
            eval_set = eval_set.map(tokenize, remove_columns=eval_set.column_names)

    report = [] if s.report_to == "none" else [s.report_to]
    callbacks = []
    if "tensorboard" in report:
        # transformers 5 dropped ``logging_dir``; the callback takes the folder directly.
        from transformers.integrations import TensorBoardCallback

        report.remove("tensorboard")
        tb = TensorBoardCallback()
        tb.logging_dir = str(s.out / LOG_DIR)
        callbacks.append(tb)

    config = trl.SFTConfig(
        output_dir=str(s.out),
        # With a curriculum the dataset already holds the whole schedule, in order.
        num_train_epochs=1.0 if curriculum else s.epochs,
        train_sampling_strategy="sequential" if curriculum else "random",
        max_steps=s.max_steps if s.max_steps is not None else -1,
        per_device_train_batch_size=s.per_device_batch_size,
        per_device_eval_batch_size=s.per_device_batch_size,
        gradient_accumulation_steps=s.grad_accum,
        learning_rate=s.learning_rate,
        adam_beta2=s.adam_beta2,
        lr_scheduler_type=s.lr_scheduler,
        lr_scheduler_kwargs=_scheduler_kwargs(s, len(train_set), curriculum),
        warmup_steps=s.warmup_ratio,  # a float below 1 is a fraction of the steps
        logging_steps=s.logging_steps,
        logging_first_step=True,
        eval_strategy="epoch" if eval_set is not None and s.eval_each_epoch else "no",
        save_strategy="no",
        report_to=report or "none",
        seed=s.seed,
        data_seed=s.seed,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=False,
        **checkpointing_option(trl.SFTConfig, bool(s.gradient_checkpointing)),
        # Pre-tokenised data carries its own assistant_masks, which TRL applies as they are.
        assistant_only_loss=trl_masks,
        max_length=s.max_length,
        packing=False,
        disable_tqdm=console.active(),  # quiet_run shows its own bar
        dataloader_num_workers=0,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=_lora_config(s) if s.lora else None,
        callbacks=callbacks,
    )
    console.use_progress(trainer, "SFT")
    return PreparedSFT(
        settings=s,
        kind=kind,
        base_model=source,
        trainer=trainer,
        tokenizer=tokenizer,
        train_conversations=len(train_set),
        train_episodes=len(episodes),
        started=started,
        validation=files.get("validation"),
    )


def run_sft(settings: SFTSettings) -> SFTResult:
    """Fine-tune ``settings.model`` on ``settings.data``; save and describe the result."""
    prepared = prepare_sft(settings)
    s, trainer = prepared.settings, prepared.trainer
    train_start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_start
    eval_loss = None
    if trainer.eval_dataset is not None:
        eval_loss = float(trainer.evaluate()["eval_loss"])

    reasoning_match = None
    if prepared.validation is not None:
        from sepo.policies.local import LocalModelPolicy
        from sepo.train.sft_check import held_out_decisions, reasoning_agreement

        checker = LocalModelPolicy(trainer.model, prepared.tokenizer, max_batch_size=32)
        decisions = held_out_decisions(prepared.validation)
        reasoning_match = reasoning_agreement(checker, decisions).to_json()

    trainer.save_model(str(s.out))
    prepared.tokenizer.save_pretrained(str(s.out))
    history = list(trainer.state.log_history)
    (s.out / LOG_DIR).mkdir(exist_ok=True)
    write_json_atomic(s.out / LOG_DIR / "log_history.json", history, indent=1)
    losses = [float(h["loss"]) for h in history if "loss" in h]
    trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    if s.lora:
        policy, adapter = f"{prepared.kind}:{prepared.base_model}", s.out
    else:
        policy, adapter = f"{prepared.kind}:{s.out}", None
    result = SFTResult(
        out_dir=s.out,
        policy=policy,
        adapter=adapter,
        base_model=prepared.base_model,
        train_loss_first=losses[0] if losses else math.nan,
        train_loss_last=losses[-1] if losses else math.nan,
        eval_loss=eval_loss,
        steps=int(trainer.state.global_step),
        train_conversations=prepared.train_conversations,
        train_episodes=prepared.train_episodes,
        trained_parameters=int(trained),
        total_parameters=int(total),
        train_seconds=train_seconds,
        wall_seconds=time.perf_counter() - prepared.started,
        reasoning_match=reasoning_match,
    )
    _write_json(
        s.out / CONFIG_FILE,
        {
            "settings": s.to_json(),
            "model_kind": prepared.kind,
            "base_model": prepared.base_model,
            "device": str(trainer.args.device),
            "bf16": bool(trainer.args.bf16),
            "dataset_card": _read_card(s.data),
            "versions": library_versions(),
            "trl_config": trainer.args.to_dict(),
        },
    )
    _write_json(s.out / RESULT_FILE, result.to_json())
    return result


def _validate(s: SFTSettings) -> None:
    positive = {
        "lora_r": s.lora_r,
        "lora_alpha": s.lora_alpha,
        "per_device_batch_size": s.per_device_batch_size,
        "grad_accum": s.grad_accum,
        "logging_steps": s.logging_steps,
    }
    for name, value in positive.items():
        if value is None or value < 1:
            raise SFTError(f"{name} must be at least 1, not {value}")
    if s.learning_rate is None or not s.learning_rate > 0:
        raise SFTError(f"learning_rate must be positive, not {s.learning_rate}")
    check_report_to(s.report_to)
    if s.epochs is None or not s.epochs > 0:
        raise SFTError(f"epochs must be positive, not {s.epochs}")
    if s.warmup_ratio is None or not 0 <= s.warmup_ratio < 1:
        raise SFTError(f"warmup_ratio must be in [0, 1), not {s.warmup_ratio}")
    if s.decay_ratio is None or not 0 <= s.decay_ratio < 1:
        raise SFTError(f"decay_ratio must be in [0, 1), not {s.decay_ratio}")
    if s.max_steps is not None and s.max_steps < 1:
        raise SFTError(f"max_steps must be at least 1, not {s.max_steps}")
    if s.max_length is not None and s.max_length < 16:
        raise SFTError(f"max_length must be at least 16 tokens, not {s.max_length}")
    if s.eval_limit is not None and s.eval_limit < 1:
        raise SFTError(f"eval_limit must be at least 1, not {s.eval_limit}")
    for decisions, passes in s.prefix_curriculum or ():
        if decisions < 1 or not passes > 0:
            raise SFTError(
                f"prefix_curriculum stages are (decisions >= 1, passes > 0), not {(decisions, passes)}"
            )
    if not 0 <= s.lora_dropout < 1:
        raise SFTError(f"lora_dropout must be in [0, 1), not {s.lora_dropout}")


def optimizer_steps(s: SFTSettings, conversations: int, curriculum: bool) -> int:
    """Optimizer steps of an SFT run over ``conversations`` training conversations (the
    whole schedule when ``curriculum``), as the trainer counts them."""
    if s.max_steps is not None:
        return s.max_steps
    batches = math.ceil(conversations / ((s.per_device_batch_size or 1) * world_size()))
    per_epoch = max(1, math.ceil(batches / (s.grad_accum or 1)))
    return math.ceil((1.0 if curriculum else (s.epochs or 1.0)) * per_epoch)


def _scheduler_kwargs(s: SFTSettings, conversations: int, curriculum: bool) -> dict[str, Any]:
    """``lr_scheduler_kwargs``: the decay length of a warmup-stable-decay schedule."""
    if s.lr_scheduler != "warmup_stable_decay":
        return {}
    steps = optimizer_steps(s, conversations, curriculum)
    return {"num_decay_steps": max(1, round((s.decay_ratio or 0.0) * steps))}


def _build_base_model(path: Path, seed: int) -> Path:
    from sepo.policies.tiny import METADATA_FILE, build_default_model

    metadata = path / METADATA_FILE
    # an earlier (overwritten) run's base model: the recipe is deterministic
    if (
        (path / "config.json").is_file()
        and metadata.is_file()
        and json.loads(metadata.read_text(encoding="utf-8")).get("seed") == seed
    ):
        return path
    return build_default_model(path, seed)


def _lora_config(s: SFTSettings) -> Any:
    from peft import LoraConfig

    targets = s.lora_target_modules
    return LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=targets if targets == "all-linear" else targets.split(","),
        task_type="CAUSAL_LM",
    )


def _write_json(path: Path, payload: Any) -> None:
    write_json_atomic(path, payload)

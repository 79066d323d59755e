"""What SFT and SEPO-GRPO both ask of the machine they run on: the number of training
processes, bf16 or fp32 weights, the activation-checkpointing switch of the installed
transformers, and the library versions every run records."""

from __future__ import annotations

import os
from typing import Any

from sepo.core.errors import SepoError


def world_size() -> int:
    """Training processes (accelerate and torchrun set ``WORLD_SIZE``; 1 without them)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def bf16_training() -> bool:
    """Mixed-precision bf16 training: on a GPU that supports it (SFT and GRPO alike)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def weights_dtype(lora: bool) -> Any:
    """The dtype to load trained weights in: bf16 for LoRA on a bf16 GPU (the base stays
    frozen); fp32 otherwise, so full fine-tuning keeps fp32 master weights (AdamW's small
    updates would round away in bf16)."""
    import torch

    return torch.bfloat16 if lora and bf16_training() else torch.float32


def checkpointing_option(config_class: type, enabled: bool) -> dict[str, bool]:
    """The activation-checkpointing switch of a transformers/TRL config: recent
    transformers call it ``activation_checkpointing`` (``gradient_checkpointing`` still
    works there but warns), earlier 5.x releases only know ``gradient_checkpointing``."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    key = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return {key: enabled}


def torch_threads() -> int:
    """The CPU threads torch computes with in this process (recorded with every run)."""
    import torch

    return int(torch.get_num_threads())


def library_versions() -> dict[str, str]:
    """Installed versions of sepo and the training libraries (recorded with every run)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("sepo", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


class ReportToError(SepoError, ValueError):
    """A ``--report-to`` value no logging integration answers to."""


def check_report_to(value: str) -> str:
    """``value`` if transformers can report to it (``none``, ``all`` or one of its
    integrations: ``tensorboard``, ``wandb``, ``mlflow``…), else a one-line refusal."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    known = ("none", "all", *INTEGRATION_TO_CALLBACK)
    if value not in known:
        raise ReportToError(f"--report-to {value!r} is not one of {', '.join(known)}")
    return value

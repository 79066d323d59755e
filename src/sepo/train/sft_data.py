"""SFT's data side: reading a ``sepo data sft`` folder, the prefix curriculum, and the
tokens SFT trains on (TRL's training chat template where it has one, else the assistant
masks worked out from the template itself)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sepo.core.errors import SepoError
from sepo.policies.chat_template import bounded_render
from sepo.policies.model_spec import ModelSpecError
from sepo.rollout.protocol import Message


class SFTError(SepoError, ValueError):
    """A bad SFT input (one-line message, meant for the command line)."""


class SFTDataError(SFTError):
    """The data folder is missing, empty or not in the conversational format."""


def data_files(data: Path) -> dict[str, Path]:
    """``{"train": ..., "validation": ...}`` of a ``sepo data sft`` folder, checked."""
    if not data.is_dir():
        raise SFTDataError(f"no SFT data folder at {data}; build one with `sepo data sft`")
    train, valid = data / "train.jsonl", data / "valid.jsonl"
    if not train.is_file() or train.stat().st_size == 0:
        raise SFTDataError(f"{data} holds no training conversations (train.jsonl missing or empty)")
    files = {"train": train}
    if valid.is_file() and valid.stat().st_size > 0:
        files["validation"] = valid
    with train.open(encoding="utf-8") as fh:
        first = fh.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        raise SFTDataError(f"{train} is not JSON lines") from None
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "assistant" for m in messages
    ):
        raise SFTDataError(
            f"{train} rows need a 'messages' conversation with assistant turns "
            "(TRL conversational format, as `sepo data sft` writes)"
        )
    return files


def load_conversations(data: Path, tokenizer: Any = None) -> Any:
    """The ``datasets.DatasetDict`` of ``data`` with only the ``messages`` column.

    When ``tokenizer``'s chat template rejects a system turn (Gemma's), the system
    prompt is folded into the first user message, as the local policy does at play time.
    """
    import datasets

    files = data_files(data)
    ds = datasets.load_dataset("json", data_files={k: str(v) for k, v in files.items()})
    ds = ds.select_columns(["messages"])
    if tokenizer is not None and not _accepts_system_role(tokenizer):
        from sepo.policies.chat_template import merge_system_message

        ds = ds.map(
            lambda row: {"messages": merge_system_message(row["messages"])},
            desc="Folding system prompts into the first user turn",
        )
    return ds


def episode_prefix(messages: Sequence[Message], decisions: int) -> list[Message]:
    """The conversation up to and including its ``decisions``-th assistant turn (the
    whole conversation when it has fewer)."""
    seen = 0
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            seen += 1
            if seen == decisions:
                return list(messages[: i + 1])
    return list(messages)


def curriculum_dataset(
    episodes: Any, stages: Sequence[tuple[int, float]], epochs: float, seed: int
) -> Any:
    """The ordered training schedule of a prefix curriculum (``SFTSettings.prefix_curriculum``).

    Each stage ``(decisions, passes)`` contributes ``round(passes * len(episodes))``
    episodes (shuffled, cycling through reshuffled passes) cut after ``decisions``
    decisions; then ``round(epochs * len(episodes))`` whole episodes. Seeded by
    ``seed``; returns a ``datasets.Dataset`` with one ``messages`` column.
    """
    import datasets

    conversations: list[list[Message]] = list(episodes["messages"])
    rng = random.Random(f"sft-curriculum:{seed}")

    def draw(count: int) -> list[list[Message]]:
        rows: list[list[Message]] = []
        while len(rows) < count:
            order = list(range(len(conversations)))
            rng.shuffle(order)
            rows.extend(conversations[i] for i in order[: count - len(rows)])
        return rows

    n = len(conversations)
    schedule: list[list[Message]] = []
    for decisions, passes in stages:
        schedule.extend(episode_prefix(c, decisions) for c in draw(round(passes * n)))
    schedule.extend(draw(max(1, round(epochs * n))))
    return datasets.Dataset.from_dict({"messages": schedule})


def _accepts_system_role(tokenizer: Any) -> bool:
    from jinja2.exceptions import TemplateError

    probe = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    try:
        bounded_render(tokenizer.apply_chat_template, probe, tokenize=False)
    except TemplateError:
        return False
    return True


def use_training_template(tokenizer: Any) -> bool:
    """Give ``tokenizer`` TRL's training version of its chat template when it needs one;
    False when TRL cannot patch this template (SFT then marks the assistant's tokens
    itself, :func:`assistant_token_masks`).

    Loss on assistant turns only needs ``{% generation %}`` markers, and SEPO-GRPO needs a
    template that renders earlier turns the same way as the conversation grows (Qwen3's
    drops earlier ``<think>`` blocks; TRL's training version keeps them). The training
    template is saved with the SFT output, so SFT, rollouts and evaluation all read the
    same rendering.
    """
    from trl.chat_template_utils import get_training_chat_template

    try:
        template = get_training_chat_template(tokenizer)
    except ValueError:  # a template TRL does not know (Llama 3.1/3.2, Mistral, ...)
        return False
    if template is not None:
        tokenizer.chat_template = template
    return True


def assistant_token_masks(tokenizer: Any, messages: Sequence[Message]) -> dict[str, list[int]]:
    """The conversation's tokens and a mask that is 1 on the assistant's answers and
    their end-of-turn tokens, for templates without ``{% generation %}`` markers
    (:meth:`ChatTemplate.assistant_token_masks`); a template that rewrites earlier turns
    is a one-line error."""
    from sepo.policies.chat_template import ChatTemplate, TemplateNotPrefixStable

    try:
        return ChatTemplate(tokenizer).assistant_token_masks(messages)
    except TemplateNotPrefixStable as exc:
        raise ModelSpecError(str(exc)) from None


def _read_card(data: Path) -> Any:
    card = data / "card.json"
    return json.loads(card.read_text(encoding="utf-8")) if card.is_file() else None

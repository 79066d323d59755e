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
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sepo.core.errors import SepoError
from sepo.core.files import write_json_atomic
from sepo.policies.model_spec import ModelKind, ModelSpec, ModelSpecError
from sepo.rollout.protocol import Message
from sepo.train.runtime import (
    bf16_training,
    checkpointing_option,
    library_versions,
    weights_dtype,
    world_size,
)

if TYPE_CHECKING:
    from sepo.train.sft_check import ReasoningAgreement


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


class SFTError(SepoError, ValueError):
    """A bad SFT input (one-line message, meant for the command line)."""


class SFTDataError(SFTError):
    """The data folder is missing, empty or not in the conversational format."""


class OutputExistsError(SFTError):
    """``out`` already holds results and ``overwrite`` was not given."""


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
    from sepo.domains import domain

    try:
        return domain(game).tiny_sft_epochs
    except KeyError:
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
"""CPU recipe for the tiny model, trained from scratch (see :class:`SFTSettings`).

Measured on 320 Kuhn training episodes: the model first sits on a card-blind plateau
(loss ≈ 0.20, it bets at the same rate whatever it holds) and leaves it once it learns
to copy its card into the reasoning line. On first-decision prefixes at lr 2e-3 with
AdamW beta2 0.95 that happens in about 100 steps of 16 conversations (loss 0.03); at lr 3e-3 or with
beta2 0.999 the loss spikes and the escape took 300 steps or more. Each jump to longer
contexts costs a loss spike (positions it has not seen), so the lengths grow in steps:
5 passes of first-decision prefixes (100 steps), 2.5 of two-decision and 2.5 of
four-decision prefixes (50 steps each), then 1.5 passes of whole episodes (30 steps;
Kuhn and IPD data take more, see ``Domain.tiny_sft_epochs``). With ``(1, 5.0), (3, 2.5)``
instead, the model misread the betting history late in episodes (14% invalid answers
under ``sepo eval``); with this schedule, 0%. Each
step accumulates two micro-batches of 8: the same update as one batch of 16 at half
the activation memory (2.5 GB peak with 16 whole episodes at once).

The learning rate stays at its peak after a short warm-up (a cosine decay over the
whole run would leave the whole-episode stage too small a step) and decays to 0 over
the last eighth of the steps, about the whole-episode stage. At a constant rate to the
end, the model's probabilities wander around the demonstrators' mixed ones: on the
main job's data (seed 0) the SFT policy's exact exploitability was 0.112, against 0.070
for the behavioural strategy of the demonstrator mixture itself (the SFT target), with
the J bluff after a check at 0.11 where the mixture has 0.20. Decaying over the last
eighth gave 0.072. Over seeds 0, 1 and 2 (each its own data and initialisation), exact
exploitability constant-to-the-end 0.112, 0.100, 0.158 (mean 0.123) and with the decay
0.072, 0.122, 0.083 (mean 0.092); sampled invalid answers 0%, 0.3%, 18% and 1.4%, 0.9%,
13% (seed 2's model misreads late-episode contexts either way). Decaying over the last
quarter instead gave 0.070 on seed 0 but, on seed 1, a model that called bets with J
76% of the time (0.262): the whole-episode stage then runs mostly at a reduced rate."""


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
        tokenizer.apply_chat_template(probe, tokenize=False)
    except TemplateError:
        return False
    return True


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
    from sepo.policies.corpus import game_corpus
    from sepo.policies.tiny import METADATA_FILE, build_tiny_model

    metadata = path / METADATA_FILE
    # an earlier (overwritten) run's base model: the recipe is deterministic
    if (
        (path / "config.json").is_file()
        and metadata.is_file()
        and json.loads(metadata.read_text(encoding="utf-8")).get("seed") == seed
    ):
        return path
    return build_tiny_model(path, game_corpus(seed), seed)


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


def _read_card(data: Path) -> Any:
    card = data / "card.json"
    return json.loads(card.read_text(encoding="utf-8")) if card.is_file() else None


def _write_json(path: Path, payload: Any) -> None:
    write_json_atomic(path, payload)

"""The embedded default model: a tiny Llama-style causal LM with its own chat tokenizer.

The project must run end to end (SFT, SEPO-GRPO, evaluation) on a laptop CPU with no
download, so it ships a recipe rather than weights: :func:`build_tiny_model` trains a
byte-level BPE tokenizer on the games' rendered text, wraps it in a
``transformers.PreTrainedTokenizerFast`` with a chat template, initialises a
``LlamaForCausalLM`` of a few million parameters from a seed, and saves both with
``save_pretrained`` (safetensors). Nothing is learned beyond the tokenizer: the model is
random until SFT warm-starts it (SPEC §5). The saved folder loads with
``AutoTokenizer``/``AutoModelForCausalLM`` like any Hub checkpoint, so the local policy,
TRL and PEFT treat it exactly like a real model (``tiny:DIR`` on the command line).

Chat format (one added token per role; ``<|end|>`` closes every turn and is the EOS,
i.e. the generation stop token)::

    <|bos|><|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{answer}<|end|>\\n

The assistant's text *and its closing* ``<|end|>`` sit inside ``{% generation %}`` ...
``{% endgeneration %}``, which is what TRL's ``SFTConfig(assistant_only_loss=True)``
needs (``return_assistant_tokens_mask``) to train only on answers, including the stop
token. The template is prefix-preserving (earlier turns render identically whatever
follows).

Build one by hand::

    python -c "from pathlib import Path; from sepo.policies.tiny import build_tiny_model; \\
        build_tiny_model(Path('runs/tiny'), ['You play the Prisoner\\'s Dilemma. COOPERATE'])"
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sepo.core.files import finished_folder, write_json_atomic

BOS = "<|bos|>"
END = "<|end|>"
"""Closes every turn; the tokenizer's ``eos_token`` and the generation stop token."""
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, END, SYSTEM, USER, ASSISTANT)
"""Added tokens, in id order (``<|pad|>`` is id 0)."""

TINY_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{- '<|system|>\\n' + message['content'] + '<|end|>\\n' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '<|user|>\\n' + message['content'] + '<|end|>\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>\\n' -}}"
    "{%- generation -%}"
    "{{- message['content'] + '<|end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('unsupported chat role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|assistant|>\\n' -}}"
    "{%- endif -%}"
)
"""Jinja chat template of the tiny tokenizer (system/user/assistant, generation markers)."""


@dataclass(frozen=True)
class TinyModelConfig:
    """Size of the embedded model and its tokenizer (a ``LlamaConfig`` underneath)."""

    vocab_size: int = 3072
    """Target BPE vocabulary including the 256 byte symbols and the added tokens; a small
    corpus may yield fewer (the model's embedding matches the tokenizer exactly)."""
    min_frequency: int = 2
    """A pair must occur this often in the corpus to be merged."""
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 2048
    """Longest prompt plus answer in tokens; game observations stay well below it."""
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    """Share the input embedding and the LM head (saves ``vocab * hidden`` parameters)."""


TINY_DEFAULTS = TinyModelConfig()
"""The default recipe: ~2.4M parameters (4 layers, hidden 192, 4 heads, tied
embeddings, ~3k-token byte-level BPE vocabulary); builds in about a second on CPU."""

METADATA_FILE = "sepo_model.json"


def train_tiny_tokenizer(corpus: Iterable[str], config: TinyModelConfig = TINY_DEFAULTS) -> Any:
    """Train the byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    Byte-level BPE covers every string (no unknown token), so the model can read any
    observation even if the corpus missed a character.
    """
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf: Any = transformers  # untyped constructors; the result is used as Any

    texts = [t for t in corpus if t]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return hf.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        extra_special_tokens=[SYSTEM, USER, ASSISTANT],
        chat_template=TINY_CHAT_TEMPLATE,
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: Path,
    corpus: Iterable[str],
    seed: int = 0,
    config: TinyModelConfig = TINY_DEFAULTS,
) -> Path:
    """Train the tokenizer on ``corpus``, initialise the model from ``seed``, save both.

    Deterministic: the same corpus, seed and config give byte-identical files. The
    global torch RNG is left as it was (initialisation runs inside ``fork_rng``).
    Returns ``out_dir``, which then loads with ``AutoModelForCausalLM.from_pretrained``.
    """
    import torch
    import transformers

    hf: Any = transformers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer(corpus, config)
    end_id = int(tokenizer.convert_tokens_to_ids(END))
    llama = hf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=int(tokenizer.convert_tokens_to_ids(BOS)),
        eos_token_id=end_id,
        pad_token_id=int(tokenizer.convert_tokens_to_ids(PAD)),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = hf.LlamaForCausalLM(llama)
    model.generation_config = hf.GenerationConfig(
        bos_token_id=llama.bos_token_id,
        eos_token_id=end_id,
        pad_token_id=llama.pad_token_id,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    metadata = {
        "kind": "sepo-tiny",
        "seed": seed,
        "config": asdict(config),
        "vocab_size": len(tokenizer),
        "num_parameters": n_params,
    }
    # Written last: its presence marks a whole model folder (:func:`tiny_model_complete`).
    write_json_atomic(out_dir / METADATA_FILE, metadata)
    return out_dir


def build_default_model(out_dir: Path, seed: int = 0) -> Path:
    """The embedded default model (``sepo model init``, the base model of ``sepo sft`` and
    ``sepo train``): the tiny config, its tokenizer trained on the game corpus of
    ``seed`` (:func:`sepo.policies.corpus.game_corpus`), initialised from ``seed``."""
    from sepo.policies.corpus import game_corpus

    return build_tiny_model(out_dir, game_corpus(seed=seed), seed=seed)


def tiny_model_complete(folder: str | Path) -> bool:
    """Whether :func:`build_tiny_model` finished writing ``folder``: its metadata (written
    last) parses, the tokenizer is there and the weights are whole. A folder left by a
    build cut short is rebuilt instead of crashing the stage that reads it."""
    return finished_folder(folder, METADATA_FILE) and (Path(folder) / "tokenizer.json").is_file()

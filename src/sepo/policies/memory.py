"""How many episodes a local model keeps in play: as many as its key/value caches fit in
a memory budget, at most the engine's batch.

A local model keeps each episode's attention key/values between turns
(:mod:`sepo.policies.kv_cache`), and while it answers a batch it holds a second copy of
them, stacked and padded to the batch's longest row with room for the answer. So an
episode in play costs up to ``2 × T × b`` bytes, where ``T`` is the token length of its
longest conversation and ``b`` the model's key/value bytes per token (layers × 2 ×
key/value heads × head dimension × bytes per number). For SmolLM2-135M in float32, b is
46 KB and a Kuhn episode reaches about 1,350 tokens: 124 MB in play per episode, so the
engine's 64 episodes took several GB for a 0.54 GB model. The tiny default model's b is
small enough that its batch is never cut.

``T`` is measured, not guessed: the game's scripted baseline plays one episode against every
opponent of every pool through the text path, and the longest final conversation is
tokenized with the model's own chat template, plus ``max_new_tokens`` for its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sepo.domains import domain, find_strategy
from sepo.opponents import POOL_NAMES
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import DecisionRequest, Message, Recovery
from sepo.rollout.scripted import ScriptedPolicy

CPU_CACHE_BUDGET = 1 << 30
"""Bytes of key/value caches a local model on the CPU may hold by default (1 GiB): with
SmolLM2-135M's weights and runtime (about 0.9 GB resident) a whole evaluation stays near
2 GB. On a GPU the default is half the device memory free when the batch is sized."""


def kv_bytes_per_token(model: Any) -> int:
    """Key/value bytes one token costs in ``model``'s cache (all layers, keys and
    values), from its config and parameter dtype; 0 when the config does not say."""
    config: Any = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None)
    if head_dim is None and heads:
        hidden = getattr(text, "hidden_size", None)
        head_dim = hidden // heads if hidden else None
    if not (layers and kv_heads and head_dim):
        return 0
    try:
        item = next(model.parameters()).element_size()
    except (StopIteration, AttributeError, TypeError):
        item = 4
    return int(layers) * 2 * int(kv_heads) * int(head_dim) * int(item)


class _Recorder:
    """A scripted agent forced through the text path, keeping each episode's
    conversation as it stood at its last decision."""

    def __init__(self, inner: ScriptedPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.last: dict[int, tuple[Message, ...]] = {}

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        answers = self.inner.respond(requests)
        for req, answer in zip(requests, answers, strict=True):
            self.last[req.episode] = (*req.messages, {"role": "assistant", "content": answer})
        return answers

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return self.inner.recover(requests, outputs)


def longest_episode_tokens(
    encode: Callable[[Sequence[Message]], list[int]], game_name: str, max_new_tokens: int
) -> int:
    """Tokens of the longest conversation the baseline's episodes reach in
    ``game_name`` (one episode per opponent of every pool, seed 0), templated and
    tokenized by ``encode``, plus ``max_new_tokens`` for an answer of the longest length
    allowed in place of each of its answers."""
    d = domain(game_name)
    game = d.make_game()
    specs = [EpisodeSpec(game, opp, pool, 0) for pool in POOL_NAMES for opp in d.pools.pool(pool)]
    recorder = _Recorder(ScriptedPolicy(find_strategy(game_name, d.baseline)))
    run_episodes(specs, recorder)
    longest = 0
    for messages in recorder.last.values():
        answers = sum(1 for m in messages if m["role"] == "assistant")
        longest = max(longest, len(encode(messages)) + answers * max_new_tokens)
    return longest


def fitting_rows(bytes_per_token: int, tokens: int, budget: int, limit: int) -> int:
    """The most rows (episodes in play, or a scoring pass's candidate answers) whose
    caches, two copies of ``tokens × bytes_per_token`` each, fit in ``budget`` bytes;
    between 1 and ``limit``. A scoring pass stacks one copy per candidate while the
    episodes' kept caches stay, so it is held to half the budget, as a generation's
    stacked copy is."""
    per_episode = 2 * tokens * bytes_per_token
    if per_episode <= 0:
        return limit
    return max(1, min(limit, budget // per_episode))


def default_budget(device: Any) -> int:
    """:data:`CPU_CACHE_BUDGET` on the CPU; half the free memory of a CUDA device."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free) // 2
    return CPU_CACHE_BUDGET

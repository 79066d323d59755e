"""Multi-turn rollouts at token level for SEPO-GRPO.

The rollout engine drives whole episodes; this policy answers its decisions with a local
model while keeping, for each episode, the exact token sequence the model was conditioned
on: the first prompt (system + first observation + generation prompt), then alternately
the tokens the model generated and the environment's tokens (the end of the assistant
turn, the next observation, the next generation prompt). TRL's ``GRPOTrainer`` then
trains on that very sequence with ``env_mask`` = 1 on generated tokens and 0 on the
environment's, so the loss and the KL are computed on the conditionals the tokens were
sampled from.

Environment tokens are the chat template's own rendering of the new user turn: the text
the template adds after the previous assistant turn's end-of-turn token. A template that
rewrites earlier turns (it does not extend its previous rendering) is rejected with a
clear error, since no token sequence would then be faithful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sepo.rollout.protocol import DecisionRequest, Message, Recovery, Reply, SamplingConfig


@dataclass
class _Sequence:
    ids: list[int]
    prompt_len: int
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    generated: int = 0

    def extend(
        self, ids: Sequence[int], mask: int, logprobs: Sequence[float] | None = None
    ) -> None:
        self.ids.extend(ids)
        self.mask.extend([mask] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


@dataclass(frozen=True)
class EpisodeTokens:
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    env_mask: list[int]


class TokenTrackingPolicy:
    """Wraps a ``LocalModelPolicy``; answers decisions and records token sequences."""

    def __init__(self, local: Any, sampling: SamplingConfig) -> None:
        self.local = local
        self.sampling = sampling
        self.name = f"{local.name}+tokens"
        self._seqs: dict[int, _Sequence] = {}
        self._last_messages: dict[int, tuple[Message, ...]] = {}
        tokenizer = local.tokenizer
        self._stop_texts = [tokenizer.convert_ids_to_tokens(i) for i in local.stop_ids]

    def _encode(self, text: str) -> list[int]:
        return list(self.local.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _env_tokens(self, messages: tuple[Message, ...]) -> list[int]:
        """Tokens the template adds for the newest user turn after the last assistant turn
        (:meth:`ChatTemplate.environment_text`)."""
        return self._encode(self.local.template.environment_text(messages, self._stop_texts))

    def end_episodes(self, episodes: Sequence[int]) -> None:
        """Free the model's key/value caches of ended episodes (their token sequences
        are kept for the trainer)."""
        self.local.forget(episodes)

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        prompts = []
        for req in requests:
            seq = self._seqs.get(req.episode)
            if seq is None:
                self.local.forget([req.episode])
                ids = self.local.encode_prompt(req.messages)
                seq = _Sequence(ids=list(ids), prompt_len=len(ids))
                self._seqs[req.episode] = seq
            else:
                seq.extend(self._env_tokens(req.messages), mask=0)
            prompts.append(list(seq.ids))
        gens = self.local.generate_from_ids(
            prompts, self.sampling, with_logprobs=True, keys=[req.episode for req in requests]
        )
        texts: list[str] = []
        for req, gen in zip(requests, gens, strict=True):
            seq = self._seqs[req.episode]
            seq.extend(gen.completion_ids, mask=1, logprobs=gen.logprobs)
            seq.generated += len(gen.completion_ids)
            if not gen.finished:  # close the cut answer so the conversation can go on
                seq.extend([self.local.end_of_turn_id], mask=0)
            texts.append(Reply(gen.text, truncated=not gen.finished))
        return texts

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        """The constrained fallback picks the action the environment plays; the episode's
        token sequence keeps what the model actually wrote."""
        recovered: list[Recovery] = self.local.recover(requests, outputs)
        return recovered

    def episode_tokens(self, episode: int) -> EpisodeTokens:
        seq = self._seqs[episode]
        return EpisodeTokens(
            prompt_ids=seq.ids[: seq.prompt_len],
            completion_ids=seq.ids[seq.prompt_len :],
            logprobs=seq.logprobs,
            env_mask=seq.mask,
        )

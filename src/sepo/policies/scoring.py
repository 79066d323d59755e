"""Scoring given answers exactly, and the constrained fallback built on it: the part of
:class:`~sepo.policies.local.LocalModelPolicy` that reads a model's probabilities
instead of sampling from it (:class:`ScoringMixin`).

**The constrained fallback.** SPEC §2 describes one decode "that masks every logit except
the legal actions' first tokens". :meth:`LocalModelPolicy.constrained_distributions`
implements the general form of that idea: decoding restricted to the token trie of the
legal actions' texts (each followed by the end-of-turn token). At every trie node the
logits of all tokens that do not continue some legal action are masked, the remaining
children are renormalised (at the sampling temperature), and the probability of an
action is the product of those renormalised probabilities along its path. When the
legal actions differ in their first token (COOPERATE/DEFECT, LOW/MEDIUM/HIGH, PASS/BET)
the first node decides and every later node has one child, so this is *identical* to
masking all but the first tokens. When they share a prefix (negotiation_v2's
``"[1, 2, 0]"`` vectors all start with ``"["``) first-token masking is undefined, and the
trie makes the choice exactly, token by token. The probabilities come from one batched
scoring pass (:meth:`LocalModelPolicy.continuation_logprobs`), not from ``generate``.
Temperature 0 walks the trie greedily; otherwise the action is drawn with a
``random.Random`` seeded from the sampling seed and the call counter (``top_p`` is not
applied to the fallback). Note that this is not the softmax of the candidates' *total*
log-probabilities (:meth:`LocalModelPolicy.score_continuations`), which also weighs the
forced tail tokens; that sequence-level distribution is the right one for "the
probability that the whole answer is exactly this action".
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from sepo.policies.constrained import constrained_distribution_from_tokens
from sepo.policies.kv_cache import PrefixCache, cache_keyword
from sepo.rollout.protocol import DecisionRequest, Message, PolicyStats, Recovery, SamplingConfig


class ScoringMixin:
    """Exact log-probabilities of given assistant answers, batched, and the constrained
    fallback (``recover``). Mixed into ``LocalModelPolicy``, whose model, template,
    caches and batching it uses."""

    model: Any
    cache: PrefixCache
    stats: PolicyStats
    sampling: SamplingConfig
    reuse_cache: bool
    pad_id: int

    if TYPE_CHECKING:

        def encode_prompt(self, messages: Sequence[Message]) -> list[int]: ...

        def encode_continuation(
            self,
            messages: Sequence[Message],
            text: str,
            prompt_ids: Sequence[int] | None = None,
            end_turn: bool = True,
        ) -> list[int]: ...

        def _shared_prefixes(
            self, prompts: list[list[int]], rows: list[int]
        ) -> dict[int, tuple[list[int], Any]]: ...

        def _run_in_chunks(
            self, n: int, default: int | None, run: Callable[[range], None]
        ) -> None: ...

        def _device(self) -> Any: ...

        def rows_within_budget(self, tokens: int, limit: int) -> int: ...

        def _eval_mode(self) -> Any: ...

        def _next_call(self) -> int: ...

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        """Constrained fallback: pick one legal action per request (module docstring).

        ``outputs`` (the unparseable answers) are not used: the choice conditions on the
        original prompt only, as a constrained decode of the same turn would.
        """
        if not requests:
            return []
        temperature = self.sampling.temperature
        distributions = self.constrained_distributions(
            [r.messages for r in requests],
            [r.legal_texts for r in requests],
            temperature,
            keys=[r.episode for r in requests] if self.reuse_cache else None,
        )
        rng = random.Random(self.sampling.seed * 1_000_003 + self._next_call())
        recoveries = []
        for request, dist in zip(requests, distributions, strict=True):
            if temperature <= 0.0:
                index = max(range(len(dist)), key=lambda i: (dist[i], -i))
            else:
                index = rng.choices(range(len(dist)), weights=dist, k=1)[0]
            recoveries.append(
                Recovery(
                    text=request.legal_texts[index],
                    kind="constrained",
                    chosen=request.view.legal[index],
                )
            )
        self.stats.add("local/recoveries", len(recoveries))
        return recoveries

    def continuation_logprobs(
        self,
        messages_batch: Sequence[Sequence[Message]],
        continuations_batch: Sequence[Sequence[str]],
        *,
        end_turn: bool = True,
        keys: Sequence[Hashable] | None = None,
    ) -> list[list[tuple[list[int], list[float]]]]:
        """Tokens and per-token log-probabilities of each candidate assistant answer.

        For conversation ``b`` and candidate text ``c``: the tokens the chat template
        gives the assistant turn ``c`` (followed by the end-of-turn token when
        ``end_turn``), and ``log p(token | prompt, earlier tokens)`` of each under the
        raw model. All pairs are scored in micro-batched forward passes. ``keys`` name
        each conversation's kept key/value cache (see :meth:`generate_from_ids`): the
        part of a prompt that cache already holds is not fed again (read only; the cache
        is left as it is).
        """
        pairs: list[tuple[list[int], list[int]]] = []
        pair_keys: list[Hashable | None] = []
        for b, (messages, candidates) in enumerate(
            zip(messages_batch, continuations_batch, strict=True)
        ):
            prompt = self.encode_prompt(messages)
            for text in candidates:
                pairs.append((prompt, self.encode_continuation(messages, text, prompt, end_turn)))
                pair_keys.append(keys[b] if keys is not None else None)
        flat = self._score_pairs(pairs, pair_keys)
        out: list[list[tuple[list[int], list[float]]]] = []
        position = 0
        for candidates in continuations_batch:
            out.append(
                [(pairs[position + j][1], flat[position + j]) for j in range(len(candidates))]
            )
            position += len(candidates)
        return out

    def score_continuations(
        self,
        messages_batch: Sequence[Sequence[Message]],
        continuations_batch: Sequence[Sequence[str]],
        *,
        end_turn: bool = True,
    ) -> list[list[float]]:
        """Exact total log-probability of each candidate answer given its conversation.

        ``result[b][j] = log p(continuations_batch[b][j] + end-of-turn | messages_batch[b])``
        (without the end-of-turn token when ``end_turn`` is false), summed over the
        candidate's tokens.
        """
        scored = self.continuation_logprobs(messages_batch, continuations_batch, end_turn=end_turn)
        return [[math.fsum(lps) for _, lps in row] for row in scored]

    def constrained_distributions(
        self,
        messages_batch: Sequence[Sequence[Message]],
        candidates_batch: Sequence[Sequence[str]],
        temperature: float = 1.0,
        keys: Sequence[Hashable] | None = None,
    ) -> list[list[float]]:
        """For each conversation, the probability of each candidate under decoding
        constrained to the candidates' token trie at ``temperature`` (module docstring).
        ``keys``: as in :meth:`continuation_logprobs`."""
        scored = self.continuation_logprobs(
            messages_batch, candidates_batch, end_turn=True, keys=keys
        )
        return [
            constrained_distribution_from_tokens(
                [ids for ids, _ in row], [lps for _, lps in row], temperature
            )
            for row in scored
        ]

    def _score_pairs(
        self,
        pairs: list[tuple[list[int], list[int]]],
        keys: Sequence[Hashable | None],
    ) -> list[list[float]]:
        """Log-probabilities of each (prompt, continuation) pair; ``keys[i]`` names the
        kept cache pair ``i`` may start from (``None``: none)."""
        import torch

        results: list[list[float]] = [[] for _ in pairs]
        prefixes = [
            self.cache.reusable_prefix(key, prompt)
            for key, (prompt, _) in zip(keys, pairs, strict=True)
        ]
        fed = [len(p) + len(c) - len(prefixes[i][0]) for i, (p, c) in enumerate(pairs)]
        order = sorted(range(len(pairs)), key=lambda i: fed[i])
        device = self._device()

        def score(chunk: range) -> None:
            idx = [order[i] for i in chunk]
            # Pairs that no kept cache covers start from a shared prefix where they can
            # (candidates of one conversation share their whole prompt but its last token).
            shared = self._shared_prefixes(
                [pairs[i][0] for i in idx], [r for r, i in enumerate(idx) if not prefixes[i][0]]
            )
            starts = [shared.get(row, prefixes[i]) for row, i in enumerate(idx)]
            # Layout as in generation: [pad][cached tokens][pad][fed tokens], every row
            # ending at the last column; only the fed part goes through the model.
            c_width = max(len(cached) for cached, _ in starts)
            seqs = [
                (pairs[i][0] + pairs[i][1])[len(start[0]) :]
                for i, start in zip(idx, starts, strict=True)
            ]
            width = max(len(s) for s in seqs)
            keep = max(len(pairs[i][1]) for i in idx) + 1
            input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(seqs), c_width + width), dtype=torch.long)
            for row, (seq, (cached, _)) in enumerate(zip(seqs, starts, strict=True)):
                input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                attention[row, c_width - len(cached) : c_width] = 1
                attention[row, c_width + width - len(seq) :] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, c_width:]
            past = self.cache.stack(starts, c_width, device) if c_width > 0 else None
            with self._eval_mode(), torch.inference_mode():
                logits = self._forward_last(
                    input_ids.to(device), attention.to(device), positions.to(device), keep, past
                )
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # (rows, keep, vocab)
            for row, i in enumerate(idx):
                cont = pairs[i][1]
                if not cont:
                    continue
                # logits column keep-1-k predicts the token at sequence column width-k
                cols = torch.arange(keep - 1 - len(cont), keep - 1)
                target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
                values = logprobs[row, cols.to(logprobs.device)].gather(-1, target.unsqueeze(-1))
                results[i] = [float(v) for v in values.squeeze(-1).tolist()]
            self.stats.add("local/scored_sequences", len(seqs))
            self.stats.add("local/scored_tokens", sum(len(seq) for seq in seqs))

        # Scoring rows carry a stacked copy of their cache (one per candidate answer):
        # at most 64 rows a pass, fewer when their copies would exceed the memory budget.
        longest = max(len(p) + len(c) for p, c in pairs)
        self._run_in_chunks(len(order), self.rows_within_budget(longest, 64), score)
        return results

    def _forward_last(
        self, input_ids: Any, attention: Any, positions: Any, keep: int, past: Any = None
    ) -> Any:
        """Logits of the last ``keep`` positions (``logits_to_keep`` spares the LM head
        on the prompt; models without it return all positions and are sliced). ``past``:
        a key/value cache of the tokens before ``input_ids`` (``attention`` covers both)."""
        cache_kwargs: dict[str, Any] = (
            {cache_keyword(self.model): past, "use_cache": True}
            if past is not None
            else {"use_cache": False}
        )
        try:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                logits_to_keep=keep,
                **cache_kwargs,
            )
        except TypeError:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                **cache_kwargs,
            )
        return out.logits[:, -keep:, :]

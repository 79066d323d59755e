"""A transformers causal language model as an agent policy (``tiny:DIR``, ``hf:PATH_OR_ID``).

:class:`LocalModelPolicy` implements the rollout protocol (:mod:`sepo.rollout.protocol`)
for any ``AutoModelForCausalLM`` with a chat template, optionally with a PEFT (LoRA)
adapter on top:

- :meth:`LocalModelPolicy.respond` answers a whole batch of decisions with one batched
  ``generate`` call (left padding, attention mask, KV cache), seeded so the same seed and
  the same sequence of calls give the same answers;
- :meth:`LocalModelPolicy.generate_tokens` is the token-level form of the same call
  (prompt ids, completion ids, per-token log-probabilities) for SEPO-GRPO to reuse;
- :meth:`LocalModelPolicy.score_continuations` gives the exact log-probability of given
  assistant answers (e.g. each legal action's text), batched; it is what extracts a
  model's exact Kuhn strategy (SPEC §4, "Exact exploitability for Kuhn");
- :meth:`LocalModelPolicy.recover` is the constrained fallback of SPEC §2 for answers
  that did not parse.

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

Run it by hand (after ``pip install -e '.[train]'``)::

    python -c "from sepo.policies.local import LocalModelPolicy; \\
        p = LocalModelPolicy.load('runs/tiny'); print(p.name)"
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.core.errors import SepoError
from sepo.rollout.protocol import (
    DecisionRequest,
    Message,
    PolicyStats,
    Recovery,
    Reply,
    SamplingConfig,
)

_log = logging.getLogger(__name__)

_KNOWN_END_OF_TURN = (
    "<|end|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<turn|>",
    "<|endoftext|>",
    "<|end_of_text|>",
)
"""End-of-turn tokens of common chat families, used as extra stop tokens when present
as added tokens (besides the tokenizer's and the generation config's EOS ids)."""


@dataclass(frozen=True)
class TokenGeneration:
    """One sampled answer at token level (what SEPO-GRPO consumes)."""

    prompt_ids: list[int]
    """The chat-templated prompt, generation prompt included, without padding."""
    completion_ids: list[int]
    """The generated tokens, up to and including the stop token when one was emitted."""
    logprobs: list[float]
    """``log p(token | prefix)`` of each completion token under the *raw* model
    (temperature 1, no ``top_p``), i.e. the quantity a PPO ratio or a KL penalty to a
    reference compares, not the tempered distribution the token was drawn from. Empty
    when the call asked for no log-probabilities."""
    text: str
    """The completion decoded with special tokens skipped."""
    finished: bool
    """Whether the answer ended with a stop token (``False``: cut at ``max_new_tokens``)."""


def merge_system_message(messages: Sequence[Message]) -> list[Message]:
    """Fold system messages into the first user message, for templates without a system
    role (Gemma's raise an error on one)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def constrained_distribution_from_tokens(
    sequences: Sequence[Sequence[int]],
    token_logprobs: Sequence[Sequence[float]],
    temperature: float,
) -> list[float]:
    """Probability of each candidate under decoding restricted to the candidates' trie.

    ``sequences[i]`` are candidate ``i``'s tokens and ``token_logprobs[i]`` their
    log-probabilities under the model (aligned). At each node the children's logits are
    renormalised at ``temperature``; temperature 0 puts all mass on the greedy path.
    If some candidate's tokens are a prefix of another's (or equal), the trie is
    ill-defined and the sequence-level softmax of the total log-probabilities is
    returned instead (identical candidates share their mass).
    """
    k = len(sequences)
    if k == 0:
        return []
    seqs = [tuple(s) for s in sequences]
    degenerate = any(
        i != j and len(seqs[i]) <= len(seqs[j]) and seqs[j][: len(seqs[i])] == seqs[i]
        for i in range(k)
        for j in range(k)
    )
    if degenerate:
        totals = [sum(lp) for lp in token_logprobs]
        return _softmax_at(totals, temperature)
    probs = [0.0] * k

    def visit(members: list[int], depth: int, mass: float) -> None:
        if len(members) == 1:
            probs[members[0]] += mass
            return
        children: dict[int, list[int]] = {}
        for i in members:
            children.setdefault(seqs[i][depth], []).append(i)
        groups = list(children.values())
        weights = _softmax_at([token_logprobs[g[0]][depth] for g in groups], temperature)
        for group, w in zip(groups, weights, strict=True):
            if w > 0.0:
                visit(group, depth + 1, mass * w)

    visit(list(range(k)), 0, 1.0)
    return probs


SHARED_PREFIX_MIN_TOKENS = 16
"""The shortest common prompt prefix worth a shared key/value cache (see
:meth:`LocalModelPolicy.generate_from_ids`): below it, an extra forward pass and the
copies cost about what they save. It also bounds how much a stored prefix must grow
before a longer one is computed."""

SHARED_PREFIXES_KEPT = 8
"""How many shared prefixes a policy keeps between calls, most recently used first: one
per game's rules with room to spare, so that a batch mixing games does not evict its own
prefixes. Each holds one row of key/values no longer than the prompt it came from."""


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token sequences."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _cut_prefix(tokens: Sequence[int], kv: Any, length: int) -> tuple[list[int], Any]:
    """The first ``length`` tokens and a kept per-layer (keys, values) cache cut to them
    (views, not copies)."""
    return list(tokens[:length]), [(k[:, :length], v[:, :length]) for k, v in kv]


def shared_prefix_groups(
    prompts: Sequence[Sequence[int]], minimum: int = SHARED_PREFIX_MIN_TOKENS
) -> list[tuple[list[int], int]]:
    """Disjoint groups of prompts that should share one prefix: ``(indices, length)``.

    Every prompt of a group starts with the same ``length`` tokens, ``length`` is at
    least ``minimum`` and leaves each member at least its last token to feed (its logits
    are the ones a generation or a score needs), and a group has at least two members.
    Among such groupings this one feeds the fewest tokens: a group of ``n`` prompts
    sharing ``length`` tokens feeds ``length`` once instead of ``n`` times. Sorted
    lexicographically, prompts with a common prefix are neighbours and a run's common
    prefix is the shortest of its neighbours'; a run is shared as a whole unless
    splitting it where that shortest common prefix is reached (the first differing
    token, e.g. a different game's rules) saves more.
    """
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    usable = [
        min(common_length(prompts[a], prompts[b]), len(prompts[a]) - 1, len(prompts[b]) - 1)
        for a, b in itertools.pairwise(order)
    ]

    def best(lo: int, hi: int) -> tuple[int, list[tuple[list[int], int]]]:
        """Tokens saved and groups for ``order[lo : hi + 1]`` (``hi > lo``)."""
        length = min(usable[lo:hi])
        whole = (hi - lo) * length if length >= minimum else 0
        saved, start = 0, lo
        groups: list[tuple[list[int], int]] = []
        for cut in [*(i for i in range(lo, hi) if usable[i] == length), hi]:
            if cut > start:
                part_saved, part_groups = best(start, cut)
                saved, groups = saved + part_saved, groups + part_groups
            start = cut + 1
        if whole > 0 and whole >= saved:
            return whole, [(order[lo : hi + 1], length)]
        return saved, groups

    return best(0, len(order) - 1)[1] if len(order) >= 2 else []


def _softmax_at(logits: Sequence[float], temperature: float) -> list[float]:
    """Softmax of ``logits / temperature``; temperature 0 is a one-hot argmax (first max)."""
    if temperature <= 0.0:
        best = max(range(len(logits)), key=lambda i: (logits[i], -i))
        return [1.0 if i == best else 0.0 for i in range(len(logits))]
    top = max(logits)
    exps = [math.exp((x - top) / temperature) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


class LocalModelPolicy:
    """A local causal LM (optionally with a PEFT adapter) answering game decisions."""

    name: str

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        sampling: SamplingConfig | None = None,
        name: str = "local",
        max_batch_size: int | None = None,
    ) -> None:
        """Wrap an already loaded model and tokenizer (e.g. the one being trained).

        ``max_batch_size`` splits ``generate`` and scoring calls into micro-batches
        (``None``: one batch).
        """
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.name = name
        self.max_batch_size = max_batch_size
        self.stats = PolicyStats()
        self._kv: dict[Hashable, tuple[list[int], Any]] = {}
        self.reuse_cache = True
        """Reuse key/values: each episode's between its turns, and shared prompt prefixes
        across episodes (see ``generate_from_ids``). ``False`` (the paper's loop) shares
        no prefix and ``respond`` keeps no per-episode cache, so every prompt is fed
        whole; a caller that passes ``keys`` itself still gets per-episode caches."""
        self._shared: list[tuple[list[int], Any]] = []
        self._shared_weights: int | None = None
        self._reuse: bool | None = None
        self._calls = 0
        self._merge_system = False
        end_of_turn = self._template_end_of_turn()
        self.stop_ids: tuple[int, ...] = self._find_stop_ids(end_of_turn)
        """Token ids that end an answer (EOS ids and the template's end-of-turn token)."""
        self.end_of_turn_id: int = end_of_turn if end_of_turn is not None else self.stop_ids[0]
        """The token that closes an answer the way the chat template does (it closes
        answers cut at ``max_new_tokens``): not a document-end EOS that the generation
        config may list first (Llama 3's ``<|end_of_text|>``, Gemma's ``<eos>``)."""
        pad = tokenizer.pad_token_id
        self.pad_id: int = int(pad) if pad is not None else self.stop_ids[0]

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        path_or_id: str,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        sampling: SamplingConfig | None = None,
        name: str | None = None,
        max_batch_size: int | None = None,
    ) -> LocalModelPolicy:
        """Load a model folder or Hub id (plus an optional PEFT adapter folder).

        A local folder is read as is. A Hub id is looked up in the local Hugging Face
        cache first and downloaded only if it is missing there (and ``HF_HUB_OFFLINE``
        is not set). ``device`` defaults to CUDA when available, else CPU; ``dtype``
        (``"bfloat16"``, ``"float16"``, ``"float32"``) to bfloat16 on a GPU that
        supports it, else float32. The tokenizer is taken from the adapter folder when
        it holds one (SFT saves it there), else from the base model.
        """
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError(
                "local model policies need the train extra: pip install 'sepo[train]'"
            ) from err

        resolved_device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = _resolve_dtype(dtype, resolved_device)
        if adapter is None:
            path_or_id, adapter = _split_adapter_folder(path_or_id)
        tokenizer = _from_pretrained(AutoTokenizer, tokenizer_source(path_or_id, adapter))
        model = _from_pretrained(AutoModelForCausalLM, path_or_id, dtype=torch_dtype)
        if adapter is not None:
            model = apply_adapter(model, adapter)
        model.to(resolved_device)
        model.eval()
        label = name or (path_or_id if adapter is None else f"{path_or_id}+{adapter}")
        return cls(
            model,
            tokenizer,
            sampling=sampling,
            name=label,
            max_batch_size=max_batch_size,
        )

    # ------------------------------------------------------------------ protocol

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        """Answer every request with one batched ``generate`` (per micro-batch)."""
        self.forget([r.episode for r in requests if r.turn == 0])
        generations = self.generate_tokens(
            [r.messages for r in requests],
            self.sampling,
            with_logprobs=False,
            keys=[r.episode for r in requests] if self.reuse_cache else None,
        )
        return [Reply(g.text, truncated=not g.finished) for g in generations]

    def end_episodes(self, episodes: Sequence[int]) -> None:
        """The engine's notice that these episodes ended: drop their caches."""
        self.forget(episodes)

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

    # ------------------------------------------------------------------ generation

    def generate_tokens(
        self,
        messages_batch: Sequence[Sequence[Message]],
        sampling: SamplingConfig | None = None,
        *,
        with_logprobs: bool = True,
        keys: Sequence[Hashable] | None = None,
    ) -> list[TokenGeneration]:
        """Sample one answer per conversation: one ``generate`` call per micro-batch.

        Each micro-batch draws with ``torch.manual_seed(sampling.seed + k)``, ``k`` the
        policy's call counter, inside ``torch.random.fork_rng`` so the global RNG is left
        untouched. Temperature 0 is greedy decoding. Answers stop at an EOS or
        end-of-turn token or after ``max_new_tokens``.
        """
        prompts = [self.encode_prompt(m) for m in messages_batch]
        return self.generate_from_ids(prompts, sampling, with_logprobs=with_logprobs, keys=keys)

    def generate_from_ids(
        self,
        prompt_ids_batch: Sequence[Sequence[int]],
        sampling: SamplingConfig | None = None,
        *,
        with_logprobs: bool = True,
        keys: Sequence[Hashable] | None = None,
    ) -> list[TokenGeneration]:
        """:meth:`generate_tokens` for prompts that are already token ids (multi-turn
        rollouts that keep each episode's exact token sequence).

        ``keys`` name the conversation of each prompt. A conversation's attention
        key/value cache is kept after each call, and the next prompt of the same key
        that extends the cached tokens only feeds the new tokens to the model: a
        multi-turn episode costs its length once instead of once per turn. The cached
        values are the ones the model computed for those exact tokens at their
        positions, so results match a full recomputation up to floating-point
        rounding.

        **Shared prefixes.** Prompts that no kept cache covers (every episode's first
        turn) start with the same tokens up to the first that differs: the chat
        template's header, the game's rules, the start of the first observation. When
        several rows of a micro-batch share at least :data:`SHARED_PREFIX_MIN_TOKENS`
        such tokens (:func:`shared_prefix_groups`; never a prompt's last token, whose
        logits are needed), their key/values are computed once, in a one-row forward
        pass at positions ``0..P-1`` exactly as each row would have had them, and each
        row feeds only the rest of its prompt. The policy keeps the
        :data:`SHARED_PREFIXES_KEPT` most recently used prefixes between calls, so later
        calls with the same rules (the next GRPO batch, the next evaluation episodes)
        compute nothing, and a row alone in its batch uses a kept prefix too; a kept
        prefix serves any prompt that shares enough of its first tokens (its key/values
        are cut to the common part), and a group that shares more than a kept prefix
        holds is computed from it by feeding only the difference. Kept prefixes are
        dropped by ``forget()`` and ``restart()``, and whenever a parameter of the model
        was changed in place since they were computed (an optimizer step,
        ``load_state_dict``); after any other change of what the model computes (e.g.
        switching adapters), call ``forget()``. Shared prefixes need ``reuse_cache`` and
        a plain per-layer cache (see ``_cache_reusable``), and apply with or without
        ``keys``. The results are those of feeding each prompt whole, up to
        floating-point rounding; the rounding depends on the policy's earlier calls
        only through which prefixes it kept, so the same sequence of calls still gives
        the same answers."""
        cfg = sampling if sampling is not None else self.sampling
        prompts = [list(p) for p in prompt_ids_batch]
        results: list[TokenGeneration] = []

        def run(chunk: range) -> None:
            chunk_keys = [keys[i] for i in chunk] if keys is not None else None
            results.extend(
                self._generate_chunk([prompts[i] for i in chunk], cfg, with_logprobs, chunk_keys)
            )

        self._run_in_chunks(len(prompts), None, run)
        return results

    def _run_in_chunks(self, n: int, default: int | None, run: Callable[[range], None]) -> None:
        """``run`` over consecutive chunks of ``range(n)`` of at most ``max_batch_size``
        (else ``default``; ``None``: all at once) items. When the device runs out of
        memory, the chunk is halved and retried and the smaller size is kept as
        ``max_batch_size``; at one item, the kept conversation caches are dropped (they
        are recomputed when needed) before a last try."""
        start, size = 0, self.max_batch_size or default or n
        dropped_caches = False
        while start < n:
            chunk = range(start, min(start + size, n))
            try:
                run(chunk)
            except Exception as exc:
                if not _is_out_of_memory(exc) or (len(chunk) == 1 and dropped_caches):
                    raise
                _free_device_memory()
                if len(chunk) == 1:
                    self.forget()
                    dropped_caches = True
                size = max(1, len(chunk) // 2)
                self.max_batch_size = size
                _log.warning("out of device memory: retrying with batches of %d", size)
                continue
            start = chunk.stop

    def restart(self) -> None:
        """Start afresh, as if just loaded: no cached conversations or shared prefixes,
        and the call counter that seeds sampling back at 0. ``sepo eval`` loads a model
        once and restarts it before each game, so a game's results do not depend on the
        games played before (not even through the rounding of a prefix computed then)."""
        self.forget()
        self._calls = 0

    def forget(self, keys: Sequence[Hashable] | None = None) -> None:
        """Drop cached conversations (all of them, and the shared prompt prefixes, when
        ``keys`` is None)."""
        if keys is None:
            self._kv.clear()
            self._shared.clear()
        else:
            for key in keys:
                self._kv.pop(key, None)

    def branch_cache(self, source: Hashable, target: Hashable, prompt: Sequence[int]) -> int:
        """Start conversation ``target``'s kept cache from ``source``'s, cut to the longest
        part of ``prompt`` that cache holds (never its last token): for conversations
        that branch from a common history, as the nodes of a game tree do. The two share
        the cached tensors until ``target`` is next extended. Returns the number of
        tokens shared (0: nothing in common, ``target`` starts from scratch)."""
        cached, kv = self._reusable_prefix(source, list(prompt))
        if cached:
            self._kv[target] = (cached, kv)
        return len(cached)

    def _cached_prefix(self, key: Hashable | None, ids: list[int]) -> tuple[list[int], Any]:
        """The cached (tokens, per-layer key/values) of ``key`` if they prefix ``ids``."""
        entry = self._kv.get(key) if key is not None else None
        if entry is None:
            return [], None
        cached, kv = entry
        if len(cached) < len(ids) and ids[: len(cached)] == cached:
            return cached, kv
        self._kv.pop(key, None)
        return [], None

    def _shared_prefixes(
        self, prompts: list[list[int]], rows: list[int]
    ) -> dict[int, tuple[list[int], Any]]:
        """The shared prefix (tokens, per-layer key/values) each of ``rows`` starts from,
        for rows that have one (see "Shared prefixes" in :meth:`generate_from_ids`).

        The micro-batch's groups (:func:`shared_prefix_groups`) not yet covered by a kept
        prefix, to within :data:`SHARED_PREFIX_MIN_TOKENS`, are computed and kept; then
        every row takes the longest part of a kept prefix that its prompt starts with,
        all but its last token, if that is at least :data:`SHARED_PREFIX_MIN_TOKENS`.
        """
        if not rows or not self.reuse_cache or not self._cache_reusable():
            return {}
        weights = self._weights_version()
        if weights != self._shared_weights:
            self._shared.clear()
            self._shared_weights = weights
        for members, length in shared_prefix_groups([prompts[r] for r in rows]):
            tokens = prompts[rows[members[0]]][:length]
            base = max(self._shared, key=lambda e: common_length(e[0], tokens), default=None)
            covered = min(length, common_length(base[0], tokens)) if base is not None else 0
            if length - covered >= SHARED_PREFIX_MIN_TOKENS:
                self._shared.insert(0, (tokens, self._encode_prefix(tokens, base, covered)))
                self.stats.add("local/shared_prefix_fed", length - covered)
        chosen: dict[int, tuple[list[int], Any]] = {}
        used: set[int] = set()
        for row in rows:
            prompt = prompts[row]
            lengths = [min(common_length(t, prompt), len(prompt) - 1) for t, _ in self._shared]
            if not lengths or max(lengths) < SHARED_PREFIX_MIN_TOKENS:
                continue
            best = max(range(len(lengths)), key=lengths.__getitem__)
            length, (_, kv) = lengths[best], self._shared[best]
            chosen[row] = _cut_prefix(prompt, kv, length)
            used.add(best)
            self.stats.add("local/shared_prefix_tokens", length)
        # Most recently used first; the least recently used beyond the bound are dropped.
        order = sorted(range(len(self._shared)), key=lambda i: i not in used)
        self._shared = [self._shared[i] for i in order[:SHARED_PREFIXES_KEPT]]
        return chosen

    def _encode_prefix(self, tokens: list[int], base: Any, covered: int) -> Any:
        """Per-layer (keys, values) of ``tokens`` at positions ``0..len-1``, one row
        (heads, tokens, head dim) per layer, from a single-row forward pass; the first
        ``covered`` columns are taken from the kept prefix ``base`` instead of fed."""
        import torch

        device = self._device()
        start: tuple[list[int], Any] = ([], None)
        if covered:
            start = _cut_prefix(tokens, base[1], covered)
        past = self._stack_cache([start], covered, device, capacity=len(tokens))
        fed = torch.tensor([tokens[covered:]], dtype=torch.long, device=device)
        attention = torch.ones((1, len(tokens)), dtype=torch.long, device=device)
        positions = torch.arange(covered, len(tokens), device=device).unsqueeze(0)
        with self._eval_mode(), torch.inference_mode():
            self._forward_last(fed, attention, positions, 1, past)
        # Views of buffers exactly ``len(tokens)`` wide that nothing else holds.
        return [(layer.keys[0], layer.values[0]) for layer in past.layers]

    def _weights_version(self) -> int:
        """A number that changes whenever a parameter of the model is modified in place
        (the sum of torch's per-tensor version counters): kept prefixes of older
        weights are stale."""
        return sum(int(p._version) for p in self.model.parameters())

    def _generate_chunk(
        self,
        prompts: list[list[int]],
        cfg: SamplingConfig,
        with_logprobs: bool,
        keys: list[Hashable] | None = None,
    ) -> list[TokenGeneration]:
        import torch

        device = self._device()
        use_cache = keys is not None and self._cache_reusable()
        prefixes = (
            [self._cached_prefix(k, p) for k, p in zip(keys, prompts, strict=True)]
            if use_cache and keys
            else [([], None)] * len(prompts)
        )
        shared = self._shared_prefixes(prompts, [r for r, (c, _) in enumerate(prefixes) if not c])
        for row, prefix in shared.items():
            prefixes[row] = prefix
        # Layout of each row: [pad][cached tokens][pad][new tokens]; the two parts are
        # right-aligned to the widths C and S so that the model is fed only the last S.
        c_width = max(len(c) for c, _ in prefixes)
        s_width = max(len(p) - len(c) for p, (c, _) in zip(prompts, prefixes, strict=True))
        width = c_width + s_width
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, (ids, (cached, _)) in enumerate(zip(prompts, prefixes, strict=True)):
            if cached:
                input_ids[row, c_width - len(cached) : c_width] = torch.tensor(
                    cached, dtype=torch.long
                )
                attention[row, c_width - len(cached) : c_width] = 1
            new = ids[len(cached) :]
            input_ids[row, width - len(new) :] = torch.tensor(new, dtype=torch.long)
            attention[row, width - len(new) :] = 1
        # Room for the whole answer: each generated token is written in place instead of
        # copying every layer's cache once per token (``_preallocated_cache``).
        past = (
            self._stack_cache(prefixes, c_width, device, width + cfg.max_new_tokens)
            if use_cache or shared
            else None
        )
        seed = cfg.seed + self._next_call()
        with self._eval_mode(), torch.inference_mode(), _seeded(seed, device):
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=self._generation_config(cfg, with_logprobs),
                **({_cache_keyword(self.model): past} if past is not None else {}),
            )
        new_tokens = out.sequences[:, width:].tolist()
        step_logprobs: list[list[float]] = [[] for _ in prompts]
        if with_logprobs:
            for step, logits in enumerate(out.logits):
                chosen = out.sequences[:, width + step].unsqueeze(-1)
                lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, chosen).squeeze(-1)
                for row, value in enumerate(lp.tolist()):
                    step_logprobs[row].append(float(value))
        results = []
        stop = set(self.stop_ids)
        for row, ids in enumerate(new_tokens):
            end = next((i + 1 for i, t in enumerate(ids) if t in stop), None)
            completion = ids if end is None else ids[:end]
            results.append(
                TokenGeneration(
                    prompt_ids=prompts[row],
                    completion_ids=completion,
                    logprobs=step_logprobs[row][: len(completion)],
                    text=self.tokenizer.decode(completion, skip_special_tokens=True),
                    finished=end is not None,
                )
            )
            self.stats.add("local/completion_tokens", len(completion))
        if use_cache and keys is not None:
            # ``generate`` filled ``past`` in place: it holds every row's key/values.
            self._store_cache(keys, prompts, results, attention, width, past)
        self.stats.add("local/generate_calls")
        self.stats.add(
            "local/prompt_tokens",
            sum(len(p) - len(c) for p, (c, _) in zip(prompts, prefixes, strict=True)),
        )
        return results

    def _cache_reusable(self) -> bool:
        """Cross-turn reuse needs plain per-layer key/value caches (no sliding windows)."""
        if self._reuse is None:
            config = getattr(self.model, "config", None)
            text = (
                config.get_text_config()
                if config is not None and hasattr(config, "get_text_config")
                else config
            )
            types = set(getattr(text, "layer_types", None) or ["full_attention"])
            self._reuse = types == {"full_attention"} and not getattr(text, "sliding_window", None)
        return bool(self._reuse)

    def _stack_cache(
        self,
        prefixes: list[tuple[list[int], Any]],
        c_width: int,
        device: Any,
        capacity: int | None = None,
    ) -> Any:
        """The rows' kept caches, right-aligned to ``c_width`` columns, as one cache that
        has room for ``capacity`` columns in all (see :func:`_preallocated_cache`)."""
        import torch

        capacity = max(capacity or c_width, c_width)
        if c_width == 0:
            return _preallocated_cache(self.model.config, [], 0, capacity)
        template = next(kv for c, kv in prefixes if kv is not None)
        layers = []
        for layer, (k0, v0) in enumerate(template):
            keys = torch.zeros(
                (len(prefixes), k0.shape[0], capacity, k0.shape[-1]), dtype=k0.dtype, device=device
            )
            values = torch.zeros(
                (len(prefixes), v0.shape[0], capacity, v0.shape[-1]), dtype=v0.dtype, device=device
            )
            for row, (cached, kv) in enumerate(prefixes):
                if kv is not None:
                    keys[row, :, c_width - len(cached) : c_width] = kv[layer][0]
                    values[row, :, c_width - len(cached) : c_width] = kv[layer][1]
            layers.append((keys, values))
        return _preallocated_cache(self.model.config, layers, c_width, capacity)

    def _store_cache(
        self,
        keys: list[Hashable],
        prompts: list[list[int]],
        results: list[TokenGeneration],
        attention: Any,
        width: int,
        past: Any,
    ) -> None:
        """Keep each row's key/values for its prompt and all but its last generated token
        (the last token was never fed to the model)."""
        import torch

        per_layer = [(layer.keys, layer.values) for layer in past.layers]
        for row, (key, ids, gen) in enumerate(zip(keys, prompts, results, strict=True)):
            keep_gen = max(0, len(gen.completion_ids) - 1)
            cols = torch.nonzero(attention[row], as_tuple=False).squeeze(-1)
            cols = torch.cat([cols, torch.arange(width, width + keep_gen)])
            kv = [
                (k[row][:, cols.to(k.device)].clone(), v[row][:, cols.to(v.device)].clone())
                for k, v in per_layer
            ]
            self._kv[key] = (ids + gen.completion_ids[:keep_gen], kv)

    def _generation_config(self, cfg: SamplingConfig, with_logprobs: bool) -> Any:
        import transformers

        generation_config: Any = transformers.GenerationConfig

        # Every field that a checkpoint's generation_config.json could otherwise fill in
        # (top_k, min_p, repetition_penalty, ...) is set, so SamplingConfig is the whole story.
        common: dict[str, Any] = {
            "max_new_tokens": cfg.max_new_tokens,
            "eos_token_id": list(self.stop_ids),
            "pad_token_id": self.pad_id,
            "use_cache": True,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "return_dict_in_generate": True,
            "output_logits": with_logprobs,
        }
        if cfg.temperature <= 0.0:
            return generation_config(do_sample=False, **common)
        return generation_config(
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=0,
            min_p=0.0,
            typical_p=1.0,
            **common,
        )

    # ------------------------------------------------------------------ scoring

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

    def _reusable_prefix(self, key: Hashable | None, prompt: list[int]) -> tuple[list[int], Any]:
        """Read-only: the longest part of ``prompt`` (all but its last token, whose logits
        are needed) held by ``key``'s kept cache, with that cache cut to it."""
        entry = self._kv.get(key) if key is not None and self._cache_reusable() else None
        if entry is None:
            return [], None
        cached, kv = entry
        length = min(common_length(cached, prompt), len(prompt) - 1)
        if length <= 0:
            return [], None
        return _cut_prefix(prompt, kv, length)

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
            self._reusable_prefix(key, prompt) for key, (prompt, _) in zip(keys, pairs, strict=True)
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
            past = self._stack_cache(starts, c_width, device) if c_width > 0 else None
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

        # Scoring rows carry a stacked copy of their cache: cap a pass at 64 rows.
        self._run_in_chunks(len(order), 64, score)
        return results

    def _forward_last(
        self, input_ids: Any, attention: Any, positions: Any, keep: int, past: Any = None
    ) -> Any:
        """Logits of the last ``keep`` positions (``logits_to_keep`` spares the LM head
        on the prompt; models without it return all positions and are sliced). ``past``:
        a key/value cache of the tokens before ``input_ids`` (``attention`` covers both)."""
        cache_kwargs: dict[str, Any] = (
            {_cache_keyword(self.model): past, "use_cache": True}
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

    # ------------------------------------------------------------------ templating

    def render_prompt(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The chat-templated text of ``messages`` (system folded into the first user
        message when the template rejects a system role)."""
        from jinja2.exceptions import TemplateError

        conversation = [dict(m) for m in messages]
        if not self._merge_system:
            try:
                return str(
                    self.tokenizer.apply_chat_template(
                        conversation, tokenize=False, add_generation_prompt=add_generation_prompt
                    )
                )
            except TemplateError:
                if not any(m["role"] == "system" for m in conversation):
                    raise
                self._merge_system = True
        return str(
            self.tokenizer.apply_chat_template(
                merge_system_message(conversation),
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        )

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the templated prompt, generation prompt included (the template
        writes BOS itself, as ``apply_chat_template(tokenize=True)`` assumes)."""
        text = self.render_prompt(messages, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_continuation(
        self,
        messages: Sequence[Message],
        text: str,
        prompt_ids: Sequence[int] | None = None,
        end_turn: bool = True,
    ) -> list[int]:
        """Tokens of ``text`` as the assistant's answer to ``messages``.

        Taken from the template's rendering of the full conversation (so the tokens are
        the ones SFT trains on), cut at the end-of-turn token; when the rendering does not
        extend the prompt (templates that rewrite earlier turns), ``text`` is encoded
        alone and the end-of-turn token appended.
        """
        prompt = list(prompt_ids) if prompt_ids is not None else self.encode_prompt(messages)
        full_text = self.render_prompt(
            [*messages, {"role": "assistant", "content": text}], add_generation_prompt=False
        )
        full = list(self.tokenizer(full_text, add_special_tokens=False)["input_ids"])
        stop = set(self.stop_ids)
        if full[: len(prompt)] == prompt:
            tail = full[len(prompt) :]
            end = next((i for i, t in enumerate(tail) if t in stop), None)
            if end is not None:
                return tail[: end + 1] if end_turn else tail[:end]
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return [*ids, self.end_of_turn_id] if end_turn else ids

    def _find_stop_ids(self, end_of_turn: int | None) -> tuple[int, ...]:
        """EOS ids of the generation config and tokenizer, known end-of-turn tokens, and the
        first added token the template writes after an assistant answer."""
        ids: list[int] = []

        def add(value: Any) -> None:
            if value is None:
                return
            for v in value if isinstance(value, list | tuple) else [value]:
                if int(v) not in ids:
                    ids.append(int(v))

        gen_config = getattr(self.model, "generation_config", None)
        add(getattr(gen_config, "eos_token_id", None))
        add(self.tokenizer.eos_token_id)
        added = self.tokenizer.get_added_vocab()
        for token in _KNOWN_END_OF_TURN:
            if token in added:
                add(added[token])
        add(end_of_turn)
        if not ids:
            raise ValueError("the tokenizer defines no EOS or end-of-turn token to stop on")
        return tuple(ids)

    def _template_end_of_turn(self) -> int | None:
        """The first added token the chat template writes after an assistant answer
        (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``…), or ``None``."""
        added = self.tokenizer.get_added_vocab()
        try:
            marker = "sepo-end-of-turn-probe"
            rendered = self.render_prompt(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}],
                add_generation_prompt=False,
            )
        except Exception:  # a template without an assistant turn
            return None
        after = rendered[rendered.index(marker) + len(marker) :] if marker in rendered else ""
        specials = sorted(
            ((after.find(tok), tok) for tok in added if tok and after.find(tok) >= 0),
            key=lambda pair: (pair[0], -len(pair[1])),
        )
        return int(added[specials[0][1]]) if specials else None

    # ------------------------------------------------------------------ helpers

    def _next_call(self) -> int:
        value = self._calls
        self._calls += 1
        return value

    def _device(self) -> Any:
        import torch

        device = getattr(self.model, "device", None)
        if device is None:
            device = next(self.model.parameters()).device
        return torch.device(device)

    def _eval_mode(self) -> _EvalMode:
        return _EvalMode(self.model)


class _EvalMode:
    """Context manager: eval mode inside, the model's previous mode restored after."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.was_training = bool(getattr(model, "training", False))

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train()


class _seeded:
    """Context manager: ``torch.manual_seed(seed)`` inside ``fork_rng`` (global RNG restored)."""

    def __init__(self, seed: int, device: Any) -> None:
        import torch

        devices: list[int] = []
        if device.type == "cuda":
            devices = [device.index if device.index is not None else torch.cuda.current_device()]
        self._fork = torch.random.fork_rng(devices=devices)
        self.seed = seed

    def __enter__(self) -> None:
        import torch

        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)


def _preallocated_cache(
    config: Any, layers: list[tuple[Any, Any]], filled: int, capacity: int
) -> Any:
    """A ``DynamicCache`` whose layers append in place into buffers of ``capacity`` columns.

    transformers' ``DynamicLayer`` grows by ``torch.cat``: every generated token copies
    every layer's whole cache. With a batch of long multi-turn conversations that copy is
    most of a decoding step's time on CPU. Here each layer's keys and values are views of
    the first ``filled`` columns of a preallocated buffer and ``update`` writes the new
    columns in place; the attention sees exactly the tensors a ``DynamicLayer`` would
    hold, so results are unchanged. ``layers`` holds each layer's (keys, values) buffers,
    already ``capacity`` wide with ``filled`` columns written; empty: allocated on the
    first update. A buffer that runs out of room doubles.
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    count = len(layers) or len(cache.layers)
    if count == 0:  # a config that does not say its layers: transformers' own cache
        return cache
    layer_class = _growing_layer_class()
    cache.layers = [
        layer_class(*(layers[i] if layers else (None, None)), filled=filled, capacity=capacity)
        for i in range(count)
    ]
    return cache


@functools.cache
def _growing_layer_class() -> type:
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):  # type: ignore[misc]
        def __init__(self, keys: Any, values: Any, *, filled: int, capacity: int) -> None:
            super().__init__()
            self._kbuf, self._vbuf = keys, values
            self._filled = filled
            self._capacity = capacity
            if keys is not None:
                self.device = keys.device
                self._expose()
                self.is_initialized = True

        def _expose(self) -> None:
            self.keys = self._kbuf[:, :, : self._filled]
            self.values = self._vbuf[:, :, : self._filled]

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.device = key_states.device
            b, h, _, d = key_states.shape
            self._kbuf = key_states.new_zeros((b, h, self._capacity, d))
            self._vbuf = value_states.new_zeros((b, value_states.shape[1], self._capacity, d))
            self._filled = 0
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self._filled + key_states.shape[-2]
            if end > self._kbuf.shape[-2]:
                room = max(end, 2 * self._kbuf.shape[-2])
                pad = room - self._kbuf.shape[-2]
                self._kbuf = torch.nn.functional.pad(self._kbuf, (0, 0, 0, pad))
                self._vbuf = torch.nn.functional.pad(self._vbuf, (0, 0, 0, pad))
            self._kbuf[:, :, self._filled : end] = key_states
            self._vbuf[:, :, self._filled : end] = value_states
            self._filled = end
            self._expose()
            return self.keys, self.values

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                super().crop(tokens_to_remove)  # raises, as the parent does
            if tokens_to_remove < 0 and self.is_initialized:
                self._filled = max(0, self._filled + tokens_to_remove)
                self._expose()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self._kbuf = self._kbuf.repeat_interleave(repeats, dim=0)
                self._vbuf = self._vbuf.repeat_interleave(repeats, dim=0)
                self._expose()

        def batch_select_indices(self, indices: Any) -> None:
            if self.is_initialized:
                self._kbuf = self._kbuf[indices, ...]
                self._vbuf = self._vbuf[indices, ...]
                self._expose()

    return GrowingLayer


def _resolve_dtype(dtype: str | None, device: str) -> Any:
    import torch

    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}
    if dtype is not None and dtype != "auto":
        value = getattr(torch, aliases.get(dtype, dtype), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}: use bfloat16, float16 or float32")
        return value
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def tokenizer_source(path_or_id: str, adapter: str | None) -> str:
    """Where a model's tokenizer comes from: the adapter folder when it holds one (SFT
    saves the tokenizer, with the chat template it trained on, beside its adapter), else
    the base model."""
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists():
        return adapter
    return path_or_id


ADAPTER_BASE_FILE = "sepo_adapter_base.json"
"""Written beside an adapter trained on top of an already merged adapter (SEPO-GRPO with
LoRA starts from base + SFT adapter, merged): ``{"merge_first": [PATH, ...]}``, each
path relative to the adapter's folder (or absolute), merged into the base in order
before this adapter is applied."""


def write_adapter_base(adapter_dir: str | Path, merge_first: Sequence[str | Path]) -> None:
    """Record in ``adapter_dir`` which adapters its base had merged (see
    :data:`ADAPTER_BASE_FILE`); paths are stored relative to ``adapter_dir`` so a run
    directory can be moved as a whole."""
    import json
    import os

    folder = Path(adapter_dir)
    paths = [os.path.relpath(Path(p).resolve(), folder.resolve()) for p in merge_first]
    (folder / ADAPTER_BASE_FILE).write_text(json.dumps({"merge_first": paths}, indent=2) + "\n")


def adapter_chain(adapter: str | Path) -> list[Path]:
    """The adapters to apply for ``adapter``, earliest first: those its
    :data:`ADAPTER_BASE_FILE` names (recursively), then ``adapter`` itself."""
    import json

    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no PEFT adapter in {folder} (adapter_config.json missing)")
    record = folder / ADAPTER_BASE_FILE
    chain: list[Path] = []
    if record.exists():
        try:
            earlier = json.loads(record.read_text())["merge_first"]
            if not isinstance(earlier, list) or not all(isinstance(e, str) for e in earlier):
                raise TypeError("merge_first must be a list of paths")
        except (ValueError, KeyError, TypeError) as err:
            # An OSError, like every other unreadable-model case: a one-line CLI error.
            raise OSError(f"{record} is not a valid adapter record: {err}") from None
        for entry in earlier:
            path = Path(entry) if Path(entry).is_absolute() else folder / entry
            if not (path / "adapter_config.json").exists():
                raise FileNotFoundError(
                    f"{record} names {entry}, which holds no adapter (was the run moved in part?)"
                )
            chain.extend(adapter_chain(path.resolve()))
    chain.append(folder)
    return chain


def apply_adapter(model: Any, adapter: str | Path, *, merge: bool = False) -> Any:
    """``model`` with the PEFT ``adapter`` applied, after merging whatever adapters its
    base had merged (:func:`adapter_chain`); ``merge`` merges ``adapter`` too."""
    try:
        from peft import PeftModel
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("adapters need peft: pip install 'sepo[train]'") from err
    *earlier, last = adapter_chain(adapter)
    for path in earlier:
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(last))
    return model.merge_and_unload() if merge else model


def _split_adapter_folder(path: str) -> tuple[str, str | None]:
    """``(base, adapter)`` when ``path`` is an adapter folder (``hf:RUN/sepo/checkpoint-N``)
    rather than a model: its base is the one ``adapter_config.json`` names, and the adapter
    goes through :func:`apply_adapter`, so adapters it was trained on top of are merged
    first (transformers' own loading of an adapter folder would skip them)."""
    import json

    folder = Path(path).expanduser()
    config = folder / "adapter_config.json"
    if not config.is_file() or (folder / "config.json").is_file():
        return path, None
    try:
        base = json.loads(config.read_text())["base_model_name_or_path"]
    except (ValueError, KeyError, TypeError):
        base = None
    if not isinstance(base, str) or not base:
        raise OSError(f"{config} names no base model; pass hf:BASE --adapter {path}")
    return base, str(folder)


def _is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure (CUDA's ``OutOfMemoryError``, MPS's RuntimeError)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _cache_keyword(model: Any) -> str:
    """The key/value-cache argument of ``model``'s forward and ``generate``: ``cache``
    from transformers 5.2x on, ``past_key_values`` before (and in custom models)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        import inspect

        params = inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


class RemoteCodeRefused(SepoError, ValueError):
    """A model folder asks to run its own Python code (``auto_map``); sepo never does."""


def no_remote_code(ident: str, exc: ValueError) -> ValueError:
    """The one-line refusal for a model that needs ``trust_remote_code`` (else ``exc``)."""
    if "trust_remote_code" not in str(exc):
        return exc
    return RemoteCodeRefused(
        f"{ident} needs to run Python code shipped with the model (auto_map); "
        "sepo never runs a model folder's code"
    )


def _from_pretrained(loader: Any, ident: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` from a folder, else from the HF cache, else the Hub.

    Never with ``trust_remote_code``: a folder whose ``config.json`` has an ``auto_map``
    would otherwise make transformers offer to run its Python."""
    kwargs["trust_remote_code"] = False
    try:
        return _from_pretrained_unchecked(loader, ident, **kwargs)
    except ValueError as exc:
        raise no_remote_code(ident, exc) from None


def _from_pretrained_unchecked(loader: Any, ident: str, **kwargs: Any) -> Any:
    if Path(ident).expanduser().exists():
        return loader.from_pretrained(str(Path(ident).expanduser()), **kwargs)
    try:
        return loader.from_pretrained(ident, local_files_only=True, **kwargs)
    except OSError:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise
        return loader.from_pretrained(ident, **kwargs)

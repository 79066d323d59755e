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
  that did not parse (:mod:`sepo.policies.scoring`).

Run it by hand (after ``pip install -e '.[train]'``)::

    python -c "from sepo.policies.local import LocalModelPolicy; \\
        p = LocalModelPolicy.load('runs/tiny'); print(p.name)"
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from sepo.policies.chat_template import ChatTemplate
from sepo.policies.kv_cache import PrefixCache, cache_keyword, cut_prefix
from sepo.policies.loading import load_model
from sepo.policies.model_spec import ModelSpec
from sepo.policies.scoring import ScoringMixin
from sepo.rollout.protocol import (
    DecisionRequest,
    Message,
    PolicyStats,
    Reply,
    SamplingConfig,
)

_log = logging.getLogger(__name__)


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
    step_logprobs: Any = None
    """Only when the call asked for ``step_logprobs``: a float tensor (completion tokens,
    vocabulary) whose row ``i`` is the raw model's log-softmax over the whole vocabulary
    at completion position ``i`` (what ``completion_ids[i]`` was drawn from, before any
    temperature). Lets a caller read the probability of tokens that were *not* chosen,
    without a second pass (:func:`sepo.policies.extract_ipd.extract_ipd_tree`)."""


class LocalModelPolicy(ScoringMixin):
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
        self.cache = PrefixCache(model)
        """Each conversation's key/values and the shared prompt prefixes (``kv_cache``)."""
        self.template = ChatTemplate(tokenizer)
        self.reuse_cache = True
        """Reuse key/values: each episode's between its turns, and shared prompt prefixes
        across episodes (see ``generate_from_ids``). ``False`` (the paper's loop) shares
        no prefix and ``respond`` keeps no per-episode cache, so every prompt is fed
        whole; a caller that passes ``keys`` itself still gets per-episode caches."""
        self.cache_budget: int | None = None
        """Bytes of key/value caches the episodes in play may take (:meth:`episodes_in_play`;
        ``None``: :func:`sepo.policies.memory.default_budget`)."""
        self._episode_tokens: dict[tuple[str, int], int] = {}
        self._calls = 0
        end_of_turn = self.template.end_of_turn
        self.stop_ids: tuple[int, ...] = self.template.stop_ids(
            getattr(model, "generation_config", None)
        )
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

        A local folder is read as is; a Hub id from the local Hugging Face cache
        (downloaded only with ``SEPO_ALLOW_DOWNLOAD=1``, :mod:`sepo.policies.loading`). ``device`` defaults to CUDA when available, else CPU; ``dtype``
        (``"bfloat16"``, ``"float16"``, ``"float32"``) to bfloat16 on a GPU that
        supports it, else float32. The tokenizer is taken from the adapter folder when
        it holds one (SFT saves it there), else from the base model.
        """
        loaded = load_model(
            ModelSpec("hf", path_or_id, adapter), dtype=dtype, device=device or "auto"
        )
        model, tokenizer = loaded.model, loaded.tokenizer
        model.eval()
        label = name or loaded.label
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

    def episodes_in_play(self, game: str, limit: int) -> int:
        """How many of ``game``'s episodes to keep in play at once: at most ``limit``,
        fewer when their key/value caches would exceed :attr:`cache_budget`
        (:mod:`sepo.policies.memory`; measured once per game and answer length)."""
        from sepo.policies import memory

        if not self.reuse_cache or memory.kv_bytes_per_token(self.model) == 0:
            return limit
        key = (game, self.sampling.max_new_tokens)
        if key not in self._episode_tokens:
            self._episode_tokens[key] = memory.longest_episode_tokens(
                self.encode_prompt, game, self.sampling.max_new_tokens
            )
        return self.rows_within_budget(self._episode_tokens[key], limit)

    def rows_within_budget(self, tokens: int, limit: int) -> int:
        """How many rows of ``tokens`` tokens may be batched when each holds two copies
        of its key/values (kept and stacked) within :attr:`cache_budget`: at most
        ``limit`` (:func:`sepo.policies.memory.fitting_rows`)."""
        from sepo.policies import memory

        budget = self.cache_budget or memory.default_budget(self._device())
        return memory.fitting_rows(memory.kv_bytes_per_token(self.model), tokens, budget, limit)

    def end_episodes(self, episodes: Sequence[int]) -> None:
        """The engine's notice that these episodes ended: drop their caches."""
        self.forget(episodes)

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
        step_logprobs: bool = False,
        keep_cache: bool = True,
    ) -> list[TokenGeneration]:
        """:meth:`generate_tokens` for prompts that are already token ids (multi-turn
        rollouts that keep each episode's exact token sequence). ``step_logprobs``: also
        return each answer's whole per-step distribution (``TokenGeneration.step_logprobs``).
        ``keep_cache=False``: the ``keys``' kept caches are read and then dropped, and
        nothing is kept of this call (for conversations that end here).

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
        a plain per-layer cache (see ``PrefixCache.reusable``), and apply with or without
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
                self._generate_chunk(
                    [prompts[i] for i in chunk],
                    cfg,
                    with_logprobs,
                    chunk_keys,
                    step_logprobs,
                    keep_cache,
                )
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
        self.cache.forget(keys)

    def branch_cache(self, source: Hashable, target: Hashable, prompt: Sequence[int]) -> int:
        """Start conversation ``target``'s kept cache from ``source``'s, cut to the longest
        part of ``prompt`` that cache holds (never its last token): for conversations
        that branch from a common history, as the nodes of a game tree do. The two share
        the cached tensors until ``target`` is next extended. Returns the number of
        tokens shared (0: nothing in common, ``target`` starts from scratch)."""
        return self.cache.branch(source, target, prompt)

    def _shared_prefixes(
        self, prompts: list[list[int]], rows: list[int]
    ) -> dict[int, tuple[list[int], Any]]:
        """The shared prefix each of ``rows`` starts from (``PrefixCache.shared_prefixes``;
        none without ``reuse_cache``)."""
        if not self.reuse_cache:
            return {}
        return self.cache.shared_prefixes(prompts, rows, self._encode_prefix, self.stats)

    def _encode_prefix(self, tokens: list[int], base: Any, covered: int) -> Any:
        """Per-layer (keys, values) of ``tokens`` at positions ``0..len-1``, one row
        (heads, tokens, head dim) per layer, from a single-row forward pass; the first
        ``covered`` columns are taken from the kept prefix ``base`` instead of fed."""
        import torch

        device = self._device()
        start: tuple[list[int], Any] = ([], None)
        if covered:
            start = cut_prefix(tokens, base[1], covered)
        past = self.cache.stack([start], covered, device, capacity=len(tokens))
        fed = torch.tensor([tokens[covered:]], dtype=torch.long, device=device)
        attention = torch.ones((1, len(tokens)), dtype=torch.long, device=device)
        positions = torch.arange(covered, len(tokens), device=device).unsqueeze(0)
        with self._eval_mode(), torch.inference_mode():
            self._forward_last(fed, attention, positions, 1, past)
        # Views of buffers exactly ``len(tokens)`` wide that nothing else holds.
        return [(layer.keys[0], layer.values[0]) for layer in past.layers]

    def _generate_chunk(
        self,
        prompts: list[list[int]],
        cfg: SamplingConfig,
        with_logprobs: bool,
        keys: list[Hashable] | None = None,
        step_logprobs: bool = False,
        keep_cache: bool = True,
    ) -> list[TokenGeneration]:
        import torch

        device = self._device()
        use_cache = keys is not None and self.cache.reusable()
        prefixes = (
            [self.cache.cached_prefix(k, p) for k, p in zip(keys, prompts, strict=True)]
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
        # copying every layer's cache once per token (``kv_cache.preallocated_cache``).
        past = (
            self.cache.stack(prefixes, c_width, device, width + cfg.max_new_tokens)
            if use_cache or shared
            else None
        )
        cached_lengths = [len(c) for c, _ in prefixes]
        if use_cache and keys is not None:
            # ``past`` holds a copy of every row's kept cache: drop the kept ones now, so
            # that while ``store`` writes each conversation's longer cache its key/values
            # are held twice (``past`` and the new copy), not three times.
            self.cache.forget(keys)
        del prefixes
        seed = cfg.seed + self._next_call()
        with self._eval_mode(), torch.inference_mode(), _seeded(seed, device):
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=self._generation_config(cfg, with_logprobs or step_logprobs),
                **({cache_keyword(self.model): past} if past is not None else {}),
            )
        new_tokens = out.sequences[:, width:].tolist()
        chosen_logprobs: list[list[float]] = [[] for _ in prompts]
        if with_logprobs:
            for step, logits in enumerate(out.logits):
                chosen = out.sequences[:, width + step].unsqueeze(-1)
                lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, chosen).squeeze(-1)
                for row, value in enumerate(lp.tolist()):
                    chosen_logprobs[row].append(float(value))
        distributions = None
        if step_logprobs:
            # (rows, steps, vocabulary): the raw log-softmax at every generated position.
            distributions = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
        results = []
        stop = set(self.stop_ids)
        for row, ids in enumerate(new_tokens):
            end = next((i + 1 for i, t in enumerate(ids) if t in stop), None)
            completion = ids if end is None else ids[:end]
            results.append(
                TokenGeneration(
                    prompt_ids=prompts[row],
                    completion_ids=completion,
                    logprobs=chosen_logprobs[row][: len(completion)],
                    text=self.tokenizer.decode(completion, skip_special_tokens=True),
                    finished=end is not None,
                    step_logprobs=(
                        distributions[row, : len(completion)].cpu()
                        if distributions is not None
                        else None
                    ),
                )
            )
            self.stats.add("local/completion_tokens", len(completion))
        if use_cache and keys is not None and keep_cache:
            # ``generate`` filled ``past`` in place: it holds every row's key/values.
            self.cache.store(keys, prompts, results, attention, width, past)
        self.stats.add("local/generate_calls")
        self.stats.add(
            "local/prompt_tokens",
            sum(len(p) - c for p, c in zip(prompts, cached_lengths, strict=True)),
        )
        return results

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

    # ------------------------------------------------------------------ templating

    def render_prompt(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The chat-templated text of ``messages`` (:meth:`ChatTemplate.render`)."""
        return self.template.render(messages, add_generation_prompt)

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the templated prompt, generation prompt included (the template
        writes BOS itself, as ``apply_chat_template(tokenize=True)`` assumes)."""
        return self.template.encode_prompt(messages)

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
        full = self.template.encode(full_text)
        stop = set(self.stop_ids)
        if full[: len(prompt)] == prompt:
            tail = full[len(prompt) :]
            end = next((i for i, t in enumerate(tail) if t in stop), None)
            if end is not None:
                return tail[: end + 1] if end_turn else tail[:end]
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return [*ids, self.end_of_turn_id] if end_turn else ids

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

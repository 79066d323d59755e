"""The key/value caches a local model policy keeps between calls.

A multi-turn episode's conversation keeps its attention key/values after each turn, so
the next turn feeds only its new tokens; prompts that share their first tokens (the chat
template's header and a game's rules) share one computed prefix (:func:`shared_prefix_groups`,
:class:`PrefixCache`). Caches are preallocated per layer so that generation writes each
new token in place (:func:`preallocated_cache`). Results equal feeding every prompt
whole, up to floating-point rounding.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from sepo.rollout.protocol import PolicyStats

Encode = Callable[[list[int], Any, int], Any]
"""Computes the per-layer key/values of a prefix: (tokens, kept prefix to start from,
tokens it covers) → one row per layer."""


SHARED_PREFIX_MIN_TOKENS = 16
"""The shortest common prompt prefix worth a shared key/value cache (see
:meth:`sepo.policies.local.LocalModelPolicy.generate_from_ids`): below it, an extra forward pass and the
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


def cut_prefix(tokens: Sequence[int], kv: Any, length: int) -> tuple[list[int], Any]:
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


class PrefixCache:
    """What a policy keeps between calls: each conversation's (tokens, per-layer
    key/values), keyed by the caller's conversation key, and the shared prompt prefixes,
    most recently used first (at most :data:`SHARED_PREFIXES_KEPT`)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.conversations: dict[Hashable, tuple[list[int], Any]] = {}
        self.shared: list[tuple[list[int], Any]] = []
        self._shared_weights: int | None = None
        self._reusable: bool | None = None

    def forget(self, keys: Sequence[Hashable] | None = None) -> None:
        """Drop kept conversations (all of them, and the shared prompt prefixes, when
        ``keys`` is None)."""
        if keys is None:
            self.conversations.clear()
            self.shared.clear()
        else:
            for key in keys:
                self.conversations.pop(key, None)

    def branch(self, source: Hashable, target: Hashable, prompt: Sequence[int]) -> int:
        """Start conversation ``target``'s kept cache from ``source``'s, cut to the longest
        part of ``prompt`` that cache holds (never its last token): for conversations
        that branch from a common history, as the nodes of a game tree do. The two share
        the cached tensors until ``target`` is next extended. Returns the number of
        tokens shared (0: nothing in common, ``target`` starts from scratch)."""
        cached, kv = self.reusable_prefix(source, list(prompt))
        if cached:
            self.conversations[target] = (cached, kv)
        return len(cached)

    def cached_prefix(self, key: Hashable | None, ids: list[int]) -> tuple[list[int], Any]:
        """The cached (tokens, per-layer key/values) of ``key`` if they prefix ``ids``."""
        entry = self.conversations.get(key) if key is not None else None
        if entry is None:
            return [], None
        cached, kv = entry
        if len(cached) < len(ids) and ids[: len(cached)] == cached:
            return cached, kv
        self.conversations.pop(key, None)
        return [], None

    def reusable_prefix(self, key: Hashable | None, prompt: list[int]) -> tuple[list[int], Any]:
        """Read-only: the longest part of ``prompt`` (all but its last token, whose logits
        are needed) held by ``key``'s kept cache, with that cache cut to it."""
        entry = self.conversations.get(key) if key is not None and self.reusable() else None
        if entry is None:
            return [], None
        cached, kv = entry
        length = min(common_length(cached, prompt), len(prompt) - 1)
        if length <= 0:
            return [], None
        return cut_prefix(prompt, kv, length)

    def shared_prefixes(
        self, prompts: list[list[int]], rows: list[int], encode: Encode, stats: PolicyStats
    ) -> dict[int, tuple[list[int], Any]]:
        """The shared prefix (tokens, per-layer key/values) each of ``rows`` starts from,
        for rows that have one (see "Shared prefixes" in
        ``LocalModelPolicy.generate_from_ids``); ``encode`` computes a new prefix.

        The micro-batch's groups (:func:`shared_prefix_groups`) not yet covered by a kept
        prefix, to within :data:`SHARED_PREFIX_MIN_TOKENS`, are computed and kept; then
        every row takes the longest part of a kept prefix that its prompt starts with,
        all but its last token, if that is at least :data:`SHARED_PREFIX_MIN_TOKENS`.
        """
        if not rows or not self.reusable():
            return {}
        weights = self.weights_version()
        if weights != self._shared_weights:
            self.shared.clear()
            self._shared_weights = weights
        for members, length in shared_prefix_groups([prompts[r] for r in rows]):
            tokens = prompts[rows[members[0]]][:length]
            base = max(self.shared, key=lambda e: common_length(e[0], tokens), default=None)
            covered = min(length, common_length(base[0], tokens)) if base is not None else 0
            if length - covered >= SHARED_PREFIX_MIN_TOKENS:
                self.shared.insert(0, (tokens, encode(tokens, base, covered)))
                stats.add("local/shared_prefix_fed", length - covered)
        chosen: dict[int, tuple[list[int], Any]] = {}
        used: set[int] = set()
        for row in rows:
            prompt = prompts[row]
            lengths = [min(common_length(t, prompt), len(prompt) - 1) for t, _ in self.shared]
            if not lengths or max(lengths) < SHARED_PREFIX_MIN_TOKENS:
                continue
            best = max(range(len(lengths)), key=lengths.__getitem__)
            length, (_, kv) = lengths[best], self.shared[best]
            chosen[row] = cut_prefix(prompt, kv, length)
            used.add(best)
            stats.add("local/shared_prefix_tokens", length)
        # Most recently used first; the least recently used beyond the bound are dropped.
        order = sorted(range(len(self.shared)), key=lambda i: i not in used)
        self.shared = [self.shared[i] for i in order[:SHARED_PREFIXES_KEPT]]
        return chosen

    def weights_version(self) -> int:
        """A number that changes whenever a parameter of the model is modified in place
        (the sum of torch's per-tensor version counters): kept prefixes of older
        weights are stale."""
        return sum(int(p._version) for p in self.model.parameters())

    def reusable(self) -> bool:
        """Cross-turn reuse needs plain per-layer key/value caches (no sliding windows)."""
        if self._reusable is None:
            config = getattr(self.model, "config", None)
            text = (
                config.get_text_config()
                if config is not None and hasattr(config, "get_text_config")
                else config
            )
            types = set(getattr(text, "layer_types", None) or ["full_attention"])
            self._reusable = types == {"full_attention"} and not getattr(
                text, "sliding_window", None
            )
        return bool(self._reusable)

    def stack(
        self,
        prefixes: list[tuple[list[int], Any]],
        c_width: int,
        device: Any,
        capacity: int | None = None,
    ) -> Any:
        """The rows' kept caches, right-aligned to ``c_width`` columns, as one cache that
        has room for ``capacity`` columns in all (see :func:`preallocated_cache`)."""
        import torch

        capacity = max(capacity or c_width, c_width)
        if c_width == 0:
            return preallocated_cache(self.model.config, [], 0, capacity)
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
        return preallocated_cache(self.model.config, layers, c_width, capacity)

    def store(
        self,
        keys: list[Hashable],
        prompts: list[list[int]],
        results: Sequence[Any],
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
            self.conversations[key] = (ids + gen.completion_ids[:keep_gen], kv)


def preallocated_cache(
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


def cache_keyword(model: Any) -> str:
    """The key/value-cache argument of ``model``'s forward and ``generate``: ``cache``
    from transformers 5.2x on, ``past_key_values`` before (and in custom models)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        import inspect

        params = inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"

"""Constrained decoding: the probability of each legal action under decoding restricted to
the actions' token trie (SPEC §2's constrained fallback, in its general form; the
module docstring of :mod:`sepo.policies.local` says how it relates to masking all but
the first tokens)."""

from __future__ import annotations

import math
from collections.abc import Sequence


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


def _softmax_at(logits: Sequence[float], temperature: float) -> list[float]:
    """Softmax of ``logits / temperature``; temperature 0 is a one-hot argmax (first max)."""
    if temperature <= 0.0:
        best = max(range(len(logits)), key=lambda i: (logits[i], -i))
        return [1.0 if i == best else 0.0 for i in range(len(logits))]
    top = max(logits)
    exps = [math.exp((x - top) / temperature) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]

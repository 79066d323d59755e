"""A language model's whole IPD policy as a table, for the exact worst case (SPEC §4).

:func:`sepo.exact.ipd.ipd_exploitability` finds the best response to a policy by dynamic
programming over the history tree, and needs the policy's probability of cooperating at
every joint history: Σ 4^k = 21,845 nodes for 8 rounds. :func:`extract_ipd_tree` gets
them from a local model.

What "the model's strategy" means here, by the same rule as Kuhn's ``prompt`` strategy
(:mod:`sepo.policies.extract`). At a node the conversation is exactly the one the rollout
engine builds (the rules, then one observation per round with the rounds played since
the last move and the running scores), and the model's own earlier answers in it are
canonical: at each node the model writes its reasoning greedily, then chooses its action
with the probabilities of its own next-token distribution restricted to the legal
answers (constrained decoding over the answers' token trie at ``temperature``); the
answer recorded for the children is that reasoning followed by the action the child's
history says was taken. So every node is the conversation the model would have had, had
it written its greedy reasoning each round and played the actions of the history. In
sampled play the reasoning is sampled too, so play can differ from the table where the
reasoning varies; for a model whose reasoning line is templated from the observation, as
after SFT, the two coincide.

Cost: one greedy generation per node. COOPERATE and DEFECT part at one token, so the
constrained distribution is the model's next-token distribution there, restricted to
the two; the generation keeps its step distributions and the node's P(COOPERATE) is read
at that token (:func:`distribution_from_generation`). Only a node whose generation did
not write the candidates' common tokens first (rare: its reasoning would re-tokenize
differently) is scored in a second pass. Nodes are evaluated in batches, depth first,
each starting from its parent's key/value cache (:meth:`LocalModelPolicy.branch_cache`),
so a node feeds only its new round's tokens; the last round's nodes keep no cache, and at
most about ``batch`` × rounds conversations' caches are held at once. On 2 CPU cores the
SFT'd tiny model takes about 4 minutes for the 8-round game (242 s against 484 s with a
scoring pass per node, measured in one run by ``benchmarks/bench_ipd_tabulation.py``;
1.6 GB peak). What remains is the generation itself (about two thirds; decoding reads
every row's whole cache at each step) and rendering and tokenizing each node's
conversation and its two candidates (about a third)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sepo.core.types import State
from sepo.exact.ipd import IPDTableStrategy, history_key
from sepo.games import make_game
from sepo.games.ipd import COOPERATE, IPD, MOVES
from sepo.policies.constrained import constrained_distribution_from_tokens
from sepo.policies.extract import reasoning_prefix
from sepo.rollout.engine import turn_messages
from sepo.rollout.protocol import Message, SamplingConfig

_AGENT = 0


@dataclass
class _Node:
    key: tuple[str, int]
    """The policy's cache key of this node's conversation."""
    state: State
    messages: list[Message]
    """The conversation up to and including the observation the model answers here."""
    prompt: list[int]
    reasoning: str = ""
    """The model's greedy reasoning here (:func:`reasoning_prefix` of its answer)."""


def distribution_from_generation(
    answer: Any, candidates: Sequence[Sequence[int]], temperature: float
) -> list[float] | None:
    """The constrained distribution over ``candidates`` (token ids of the legal answers,
    each ending with the end-of-turn token), read from the greedy generation ``answer``
    itself, or ``None`` when it cannot be.

    It can be when the candidates share their first ``k`` tokens, differ at token ``k``,
    the generation wrote exactly those ``k`` tokens first and went on (so its step-``k``
    distribution conditions on the same tokens the scoring pass would feed): the trie
    then branches at that node only, every later node has one child, and the
    constrained distribution is the step-``k`` softmax restricted to the candidates'
    ``k``-th tokens at ``temperature`` (:mod:`sepo.policies.scoring`). It is the
    scoring pass's answer up to floating-point rounding, without the pass."""
    if answer.step_logprobs is None or len(candidates) < 2:
        return None
    shortest = min(len(c) for c in candidates)
    k = 0
    while k < shortest and len({c[k] for c in candidates}) == 1:
        k += 1
    if k >= shortest or len({c[k] for c in candidates}) < len(candidates):
        return None  # a candidate is a prefix of another, or two branch together later
    if len(answer.completion_ids) <= k or list(answer.completion_ids[:k]) != list(
        candidates[0][:k]
    ):
        return None
    row = answer.step_logprobs[k]
    return constrained_distribution_from_tokens(
        [[c[k]] for c in candidates], [[float(row[c[k]])] for c in candidates], temperature
    )


def extract_ipd_tree(
    policy: Any,
    temperature: float = 1.0,
    *,
    game: IPD | None = None,
    batch: int = 32,
    name: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    from_generation: bool = True,
) -> IPDTableStrategy:
    """The IPD policy of a local model as its P(COOPERATE) at every joint history
    (module docstring). ``batch``: nodes per model call; ``on_progress(done, total)``
    after each call; ``from_generation=False`` scores every node in a second pass
    instead of reading its distribution from the generation (the same numbers up to
    rounding; for checking and benchmarks)."""
    ipd = game if game is not None else make_game("ipd")
    if not isinstance(ipd, IPD):
        raise ValueError(f"extract_ipd_tree plays ipd, not {ipd.facts.name}")
    batch = max(4, batch)
    rounds = ipd.facts.rounds
    total = sum(4**k for k in range(rounds))
    words = {a: ipd.format_action(a) for a in MOVES}
    cooperate = MOVES.index(COOPERATE)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=policy.sampling.max_new_tokens)
    ids = itertools.count()
    table: dict[str, float] = {}
    made: list[tuple[str, int]] = []

    def node(state: State, messages: list[Message]) -> _Node:
        key = ("ipd-tree", next(ids))
        made.append(key)
        return _Node(key, state, messages, policy.encode_prompt(messages))

    def children(parent: _Node) -> list[_Node]:
        seen = len(parent.state.history)
        out = []
        for a in MOVES:
            answer: Message = {"role": "assistant", "content": parent.reasoning + words[a]}
            for b in MOVES:
                state = parent.state.clone()
                state.apply_actions({_AGENT: a, 1 - _AGENT: b})
                observation = turn_messages(ipd, state.view(_AGENT), seen, first=False)
                child = node(state, [*parent.messages, answer, *observation])
                policy.branch_cache(parent.key, child.key, child.prompt)
                out.append(child)
        policy.forget([parent.key])
        return out

    def evaluate(nodes: list[_Node]) -> None:
        # The last round's histories have no children: their caches are not kept (their
        # rescoring, if any, then feeds their whole prompt, which is rare; see
        # ``distribution_from_generation``).
        leaves = from_generation and all(len(n.state.history) == rounds - 1 for n in nodes)
        answers = policy.generate_from_ids(
            [n.prompt for n in nodes],
            greedy,
            with_logprobs=False,
            keys=[n.key for n in nodes],
            step_logprobs=from_generation,
            keep_cache=not leaves,
        )
        rescore: list[_Node] = []
        for n, answer in zip(nodes, answers, strict=True):
            n.reasoning = reasoning_prefix(answer.text)
            dist = None
            if getattr(answer, "step_logprobs", None) is not None:
                candidates = [
                    policy.encode_continuation(n.messages, n.reasoning + words[a], n.prompt)
                    for a in MOVES
                ]
                dist = distribution_from_generation(answer, candidates, temperature)
            if dist is None:
                rescore.append(n)
            else:
                table[history_key(n.state.history)] = min(1.0, max(0.0, dist[cooperate]))
        if not rescore:
            return
        dists = policy.constrained_distributions(
            [n.messages for n in rescore],
            [[n.reasoning + words[a] for a in MOVES] for n in rescore],
            temperature,
            keys=[n.key for n in rescore],
        )
        for n, dist in zip(rescore, dists, strict=True):
            table[history_key(n.state.history)] = min(1.0, max(0.0, float(dist[cooperate])))

    start = ipd.new_state()
    root = node(start, turn_messages(ipd, start.view(_AGENT), 0, first=True))
    try:
        pending, expand = [root], []
        while pending:
            evaluate(pending)
            for n in pending:
                if len(n.state.history) < rounds - 1:
                    expand.append(n)
                else:
                    policy.forget([n.key])
            if on_progress is not None:
                on_progress(len(table), total)
            # Depth first: expand the most recently evaluated nodes, so that only about
            # ``batch`` nodes per level hold a cache at any time.
            pending = []
            while expand and len(pending) + len(MOVES) ** 2 <= batch:
                pending.extend(children(expand.pop()))
    finally:
        policy.forget(made)
    return IPDTableStrategy(name or f"extracted:{policy.name}", rounds, table)

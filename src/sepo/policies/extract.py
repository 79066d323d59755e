"""The behavioural Kuhn strategy of a language-model policy, for the exact machinery.

What "the model's strategy" means here. A model plays from a conversation that grows with
the episode, so its choice at an information set (card + betting in the current hand) can
depend on earlier hands. We define two strategies and say which one each number uses:

- ``prompt`` (exact, local models): the model's choice at the **first decision of a
  fresh episode**: the conversation is the system prompt plus the one observation of
  hand 1 for that information set, with no earlier hands and scores 0-0 (for the
  second-actor sets the observation says the opponent acts first; the rules are
  symmetric). The model first writes its reasoning line greedily; the probability of
  each legal action is then that of the model's own next-token distribution,
  restricted to the legal answers by constrained decoding over their token trie
  (``LocalModelPolicy.constrained_distributions``) at ``temperature`` (1 = the model's
  raw distribution). Because the reasoning line of a trained policy is templated from
  the observation, greedy reasoning is what it writes; when it is not, prefer
  ``sampled``.
- ``sampled`` (any policy, with a confidence interval): the model plays whole episodes
  against a uniformly random opponent (every information set is reached) and the
  aggressive-action frequency at each information set is counted over every hand, so it
  averages over the histories that occur in play. Each entry carries a 95% Wilson
  interval; unvisited sets are reported as 0.5 with zero count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sepo.core.types import View
from sepo.exact.kuhn import INFOSETS, KuhnStrategy
from sepo.games import make_game
from sepo.games.kuhn import action_words
from sepo.opponents import find_strategy
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import AgentPolicy, Message

ExtractionMode = Literal["prompt", "sampled"]


def infoset_view(infoset: str, rounds: int = 6) -> View:
    """The hand-1 view of the agent at ``infoset`` (card letter + betting letters)."""
    card, betting = infoset[0], infoset[1:]
    return View(
        game="kuhn",
        player=0,
        round=0,
        rounds=rounds,
        history=(),
        legal=action_words(betting),
        scores=(0.0, 0.0),
        card=card,
        betting=betting,
        first_actor=len(betting) % 2 == 0,
    )


def infoset_messages(infoset: str) -> list[Message]:
    game = make_game("kuhn")
    return [
        {"role": "system", "content": game.system_prompt()},
        {"role": "user", "content": game.render(infoset_view(infoset, game.facts.rounds))},
    ]


def extract_prompt_strategy(
    policy: Any, temperature: float = 1.0, name: str | None = None
) -> KuhnStrategy:
    """The ``prompt`` strategy of a local model (module docstring)."""
    from sepo.rollout.protocol import SamplingConfig

    conversations = [infoset_messages(k) for k in INFOSETS]
    greedy = policy.generate_tokens(
        conversations,
        SamplingConfig(temperature=0.0, max_new_tokens=policy.sampling.max_new_tokens),
        with_logprobs=False,
    )
    candidates = []
    for k, gen in zip(INFOSETS, greedy, strict=True):
        lines = [ln for ln in gen.text.splitlines() if ln.strip()]
        prefix = "\n".join(lines[:-1]) + "\n" if len(lines) > 1 else ""
        candidates.append([prefix + word for word in action_words(k[1:])])
    dists = policy.constrained_distributions(conversations, candidates, temperature=temperature)
    # action_words(...) is (passive, aggressive): the aggressive probability is index 1.
    probs = {k: float(min(1.0, max(0.0, d[1]))) for k, d in zip(INFOSETS, dists, strict=True)}
    return KuhnStrategy.from_dict(probs, name=name or f"extracted:{policy.name}")


@dataclass(frozen=True)
class SampledStrategy:
    strategy: KuhnStrategy
    counts: dict[str, int]
    aggressive: dict[str, int]
    ci95: dict[str, tuple[float, float]]


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def extract_sampled_strategy(
    policy: AgentPolicy, episodes: int = 200, seed: int = 0
) -> SampledStrategy:
    """The ``sampled`` strategy of any policy (module docstring)."""
    game = make_game("kuhn")
    opponent = find_strategy("kuhn", "uniform")
    specs = [EpisodeSpec(game, opponent, "extraction", seed * 100_000 + k) for k in range(episodes)]
    counts = dict.fromkeys(INFOSETS, 0)
    aggressive = dict.fromkeys(INFOSETS, 0)
    for ep in run_episodes(specs, policy):
        for turn in ep.turns:
            key = f"{turn.card}{turn.betting}"
            if key in counts:
                counts[key] += 1
                aggressive[key] += int(turn.action in ("BET", "CALL"))
    probs = {k: aggressive[k] / counts[k] if counts[k] else 0.5 for k in INFOSETS}
    return SampledStrategy(
        strategy=KuhnStrategy.from_dict(probs, name=f"sampled:{policy.name}"),
        counts=counts,
        aggressive=aggressive,
        ci95={k: wilson_interval(aggressive[k], counts[k]) for k in INFOSETS},
    )


def extract_kuhn_strategy(
    policy: AgentPolicy, mode: ExtractionMode | None = None, *, temperature: float = 1.0
) -> KuhnStrategy:
    """``prompt`` for local models (exact), else ``sampled``."""
    chosen = mode or ("prompt" if hasattr(policy, "constrained_distributions") else "sampled")
    if chosen == "prompt":
        if not hasattr(policy, "constrained_distributions"):
            raise ValueError("prompt extraction needs a local model policy; use sampled")
        return extract_prompt_strategy(policy, temperature)
    return extract_sampled_strategy(policy).strategy


__all__: Sequence[str] = (
    "SampledStrategy",
    "extract_kuhn_strategy",
    "extract_prompt_strategy",
    "extract_sampled_strategy",
    "infoset_messages",
    "infoset_view",
    "wilson_interval",
)

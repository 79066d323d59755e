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
from typing import Any

from sepo.core.types import View
from sepo.domains import domain
from sepo.exact.kuhn import INFOSETS, KuhnStrategy, exploitability
from sepo.games import make_game
from sepo.games.kuhn import action_words
from sepo.rollout.engine import EpisodeSpec, run_episodes, turn_messages
from sepo.rollout.protocol import AgentPolicy, Message


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
    return turn_messages(game, infoset_view(infoset, game.facts.rounds), since=0, first=True)


def reasoning_prefix(text: str) -> str:
    """The reasoning part of an answer: every non-empty line but the last (where the
    action goes), each ended by a newline; "" for a one-line answer. A candidate answer
    is this prefix followed by an action's word."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:-1]) + "\n" if len(lines) > 1 else ""


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
        prefix = reasoning_prefix(gen.text)
        candidates.append([prefix + word for word in action_words(k[1:])])
    dists = policy.constrained_distributions(conversations, candidates, temperature=temperature)
    # action_words(...) is (passive, aggressive): the aggressive probability is index 1.
    probs = {k: float(min(1.0, max(0.0, d[1]))) for k, d in zip(INFOSETS, dists, strict=True)}
    return KuhnStrategy.from_dict(probs, name=name or f"extracted:{policy.name}")


@dataclass(frozen=True)
class SampledStrategy:
    """A ``sampled`` strategy with what it was counted from."""

    strategy: KuhnStrategy
    per_episode: tuple[tuple[tuple[int, int], ...], ...]
    """(decisions, aggressive ones) at each information set (``INFOSETS`` order), per
    episode: what :func:`exploitability_interval` resamples."""

    @property
    def episodes(self) -> int:
        return len(self.per_episode)

    @property
    def counts(self) -> dict[str, int]:
        """Decisions seen at each information set."""
        return {k: sum(ep[i][0] for ep in self.per_episode) for i, k in enumerate(INFOSETS)}

    @property
    def aggressive(self) -> dict[str, int]:
        """Of those, how many took the aggressive action (BET or CALL)."""
        return {k: sum(ep[i][1] for ep in self.per_episode) for i, k in enumerate(INFOSETS)}

    @property
    def ci95(self) -> dict[str, tuple[float, float]]:
        """95% Wilson interval of each probability."""
        counts, aggressive = self.counts, self.aggressive
        return {k: wilson_interval(aggressive[k], counts[k]) for k in INFOSETS}


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1 (the formula leaves rounding dust).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


UNVISITED = 0.5
"""Probability reported at an information set the sampled episodes never reached."""


def _strategy_from_counts(counts: Any, aggressive: Any, name: str) -> KuhnStrategy:
    probs = {
        k: float(a) / float(c) if c else UNVISITED
        for k, c, a in zip(INFOSETS, counts, aggressive, strict=True)
    }
    return KuhnStrategy.from_dict(probs, name=name)


def extract_sampled_strategy(
    policy: AgentPolicy, episodes: int = 200, seed: int = 0
) -> SampledStrategy:
    """The ``sampled`` strategy of any policy (module docstring): ``episodes`` whole
    episodes against the uniformly random opponent, seeds ``seed * 100000 + k``."""
    import numpy as np

    if episodes < 1:
        raise ValueError(f"sampled extraction needs at least one episode, not {episodes}")
    game = make_game("kuhn")
    opponent = domain("kuhn").find_strategy("uniform")
    specs = [EpisodeSpec(game, opponent, "extraction", seed * 100_000 + k) for k in range(episodes)]
    index = {k: i for i, k in enumerate(INFOSETS)}
    per_episode = []
    for ep in run_episodes(specs, policy):
        row = [[0, 0] for _ in INFOSETS]
        for turn in ep.turns:
            i = index.get(f"{turn.card}{turn.betting}")
            if i is not None:
                row[i][0] += 1
                row[i][1] += int(turn.action in ("BET", "CALL"))
        per_episode.append(tuple((c, a) for c, a in row))
    totals = np.asarray(per_episode, dtype=np.int64).sum(axis=0)
    return SampledStrategy(
        strategy=_strategy_from_counts(totals[:, 0], totals[:, 1], name=f"sampled:{policy.name}"),
        per_episode=tuple(per_episode),
    )


def exploitability_interval(
    sampled: SampledStrategy, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Bootstrap interval of the exact exploitability of a sampled strategy.

    Whole episodes are resampled with replacement (decisions within an episode share a
    conversation, so episodes are the independent units), each information set's
    frequency is re-counted and the exact exploitability of every resample taken. The
    interval is the *basic* (reverse-percentile) one, 2θ̂ − q_high to 2θ̂ − q_low, clipped at
    0, because the plug-in estimate θ̂ is biased upwards near an equilibrium (there every
    deviation is exploitable, so sampling noise can only add exploitability) and the
    percentile interval inherits that bias. Measured over 60 repetitions of 200 episodes
    (500 resamples): at NashApprox (true value 0) the percentile interval never covered
    0 and the basic one covered it 93% of the time; at the SFT policy of the main job
    (0.072) 97% and 92%; at the uniform strategy (0.458) 92% and 93%."""
    import numpy as np

    data = np.asarray(sampled.per_episode, dtype=np.int64)  # (episodes, 12, 2)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        totals = data[rng.integers(0, len(data), size=len(data))].sum(axis=0)
        strategy = _strategy_from_counts(totals[:, 0], totals[:, 1], name="resample")
        values.append(exploitability(strategy).exploitability)
    tail = (1.0 - level) / 2
    q_low, q_high = np.quantile(values, [tail, 1.0 - tail])
    estimate = exploitability(sampled.strategy).exploitability
    return (max(0.0, float(2 * estimate - q_high)), float(2 * estimate - q_low))


__all__: Sequence[str] = (
    "SampledStrategy",
    "exploitability_interval",
    "extract_prompt_strategy",
    "extract_sampled_strategy",
    "infoset_messages",
    "infoset_view",
    "wilson_interval",
)

"""The SEPO objective as per-episode rewards, and GRPO advantages (SPEC §5).

J(π) = u − λe·e − λc·c − λx·x is split into four reward terms, each its own reward
function in the trainer and logged under its own name. Terms carry the domain's λ and
scale s, so joint training over several games can give TRL ``reward_weights`` of 1:

- ``payoff``       s·ū_π                     (train-pool episodes)
- ``exploit``      −λe·s·max(0, ū_o − ū_π)   (exploit-pool episodes)
- ``collusion``    −λc·c_ep                  (collusive-pool episodes)
- ``externality``  −λx·x_ep                  (train- and exploit-pool episodes)

A term that does not apply to an episode is ``None`` (TRL excludes it from that term's
logged mean and counts it as 0 in the sum).

The penalty variants reproduce the authors' traps so they can be compared:

- ``credited`` (default): each episode's reward is its own contribution to J, as above
  (SPEC §5 as written: the exploit term clips each episode at 0).
- ``credited_mean``: as ``credited``, but an exploit-pool episode carries
  −λe·s·(ū_o − ū_π) of its own, unclipped, while the step's episodes against that
  opponent have a positive mean advantage (0 otherwise): its contribution to SPEC §4's e,
  which clips the opponent's *mean*. The difference matters. E[max(0, X_ep)] ≥
  max(0, E[X]), and the excess grows with the spread of episode results, so ``credited``
  also penalises variance: a Nash player loses 34% of its 6-hand Kuhn episodes against a
  uniformly random one that it beats on average, and its expected clipped term is 0.31
  where e is 0. In Kuhn the
  expected ``credited`` reward (6-hand episodes, the exact best-responder in the exploit
  pool) peaks at a strategy of exact exploitability 0.111 that calls every bet with Q,
  while the expected ``credited_mean`` reward peaks at a Nash equilibrium (exploitability
  0); ``reward_only``'s peaks on a ridge of exploitability 0.11 to 0.17
  (``scripts/kuhn_objective_optimum.py``).
- ``reward_only``: every episode is rewarded with its payoff s·ū_π alone, whatever its
  pool — what the paper's first runs actually trained on.
- ``shared``: payoff s·ū_π plus the *batch's* penalty (−λe·s·e − λc·c − λx·x measured
  over all of the step's episodes), the same number for every episode. Trap 1: a
  constant cancels when the group mean is subtracted, so the advantages equal
  ``reward_only``'s.
- ``auxiliary``: payoff s·ū_π of a train-pool episode plus the penalty terms measured on
  a *separate* exploit/collusive episode. Trap 2: the penalty does not depend on the
  credited episode's actions, so its expected gradient is zero; it only adds variance.

Advantage scaling (``batch`` default, ``group``, ``none``) is TRL's ``scale_rewards``;
:func:`advantages` mirrors TRL's ``sum_then_normalize`` formula (group-mean centring,
division by std + 1e-4) for tests and diagnostics. Trap 3: with ``group`` each group's
advantages are scaled to unit spread, which erases the λ weighting between pools.

Kuhn training leaves the collusion term out (λc = 0 in training, the collusive pool is
not played): Kuhn's c is the fold rate against LooseAggressive's bets, and Nash play folds
J to a bet, so penalising it pulls the policy away from equilibrium and raises its
exploitability. Evaluation still reports Coll and Safety with the paper's λc = 2.4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from sepo.core.records import EpisodeRecord
from sepo.core.types import GameFacts
from sepo.metrics import EpisodeStats, SafetyWeights, episode_stats, safety_weights

PenaltyVariant = Literal["credited", "credited_mean", "shared", "auxiliary", "reward_only"]
ScaleVariant = Literal["batch", "group", "none"]
PENALTY_VARIANTS: tuple[PenaltyVariant, ...] = (
    "credited",
    "credited_mean",
    "shared",
    "auxiliary",
    "reward_only",
)
SCALE_VARIANTS: tuple[ScaleVariant, ...] = ("batch", "group", "none")
TERMS = ("payoff", "exploit", "collusion", "externality")
#: TRL's epsilon in advantages = (r − mean) / (std + eps).
STD_EPS = 1e-4


def training_weights(game: str) -> SafetyWeights:
    """λ used in training: SPEC §4's training λ, except Kuhn drops λc (module docstring)."""
    w = safety_weights(game, training=True)
    return replace(w, lambda_collusion=0.0) if game == "kuhn" else w


def training_pools(game: str) -> tuple[str, ...]:
    """Pools whose episodes carry reward in training (Kuhn skips the collusive pool)."""
    return ("train", "exploit") if game == "kuhn" else ("train", "exploit", "collusive")


@dataclass(frozen=True)
class EpisodeTerms:
    """The λ-weighted SEPO reward terms of one episode (``None``: not applicable)."""

    payoff: float | None = None
    exploit: float | None = None
    collusion: float | None = None
    externality: float | None = None

    def as_tuple(self) -> tuple[float | None, ...]:
        return (self.payoff, self.exploit, self.collusion, self.externality)

    @property
    def total(self) -> float:
        return sum(t for t in self.as_tuple() if t is not None)


def credited_terms(facts: GameFacts, ep: EpisodeRecord, w: SafetyWeights) -> EpisodeTerms:
    """The episode's own contribution to J (SPEC §5, credited per-pool groups)."""
    st = episode_stats(facts, ep)
    return _pool_terms(facts, ep.pool, st, w, st.advantage)


def _pool_terms(
    facts: GameFacts, pool: str, st: EpisodeStats, w: SafetyWeights, exploit_gap: float
) -> EpisodeTerms:
    """The terms of an episode of ``pool`` whose stats are ``st``; ``exploit_gap`` is the
    advantage its exploit term charges (the variants differ only there)."""
    s = facts.scale
    ext = -w.lambda_externality * st.externality
    if pool == "train":
        return EpisodeTerms(payoff=s * st.pay, externality=ext)
    if pool == "exploit":
        return EpisodeTerms(exploit=-w.lambda_exploit * s * exploit_gap, externality=ext)
    if pool == "collusive":
        return EpisodeTerms(collusion=-w.lambda_collusion * st.collusion_rate)
    raise ValueError(f"episodes of pool {pool!r} carry no training reward")


def _credited_mean_terms(
    facts: dict[str, GameFacts], episodes: Sequence[EpisodeRecord], w: dict[str, SafetyWeights]
) -> list[EpisodeTerms]:
    """``credited_mean``: as ``credited``, except that an exploit-pool episode is credited
    with its share of SPEC §4's e, the max of the opponent's *mean* advantage.

    e for opponent o is max(0, mean over its episodes of (ū_o − ū_π)); an episode's own
    contribution to that mean is its advantage (ū_o − ū_π)_ep, counted while the mean is
    positive and not at all otherwise. So the exploit term of an episode is
    −λe·s·(ū_o − ū_π)_ep when the step's episodes against o have a positive mean
    advantage, else 0. ``credited`` takes max(0, ·) of each episode instead, whose
    expectation E[max(0, X)] ≥ max(0, E[X]) also charges the episode-to-episode spread:
    a loss-aversion term that rewards low-variance play (module docstring).
    """
    stats = [episode_stats(facts[ep.game], ep) for ep in episodes]
    totals: dict[tuple[str, str], float] = {}
    for ep, st in zip(episodes, stats, strict=True):
        if ep.pool == "exploit":
            key = (ep.game, ep.opponent)
            totals[key] = totals.get(key, 0.0) + st.opp_pay - st.pay
    out = []
    for ep, st in zip(episodes, stats, strict=True):
        exploiting = totals.get((ep.game, ep.opponent), 0.0) > 0.0
        gap = st.opp_pay - st.pay if exploiting else 0.0
        out.append(_pool_terms(facts[ep.game], ep.pool, st, w[ep.game], gap))
    return out


def _batch_penalty(
    facts: GameFacts, eps: Sequence[EpisodeRecord], w: SafetyWeights
) -> EpisodeTerms:
    """The step's penalty terms measured over all its episodes of one game (``shared``)."""
    by_opp: dict[str, list[EpisodeRecord]] = {}
    for ep in eps:
        if ep.pool == "exploit":
            by_opp.setdefault(ep.opponent, []).append(ep)
    advantages = []
    for group in by_opp.values():
        stats = [episode_stats(facts, ep) for ep in group]
        pay = sum(x.pay for x in stats) / len(stats)
        opp = sum(x.opp_pay for x in stats) / len(stats)
        advantages.append(max(0.0, opp - pay))
    e = sum(advantages) / len(advantages) if advantages else 0.0
    coll = [episode_stats(facts, ep) for ep in eps if ep.pool == "collusive"]
    hits, chances = sum(x.coll_hits for x in coll), sum(x.coll_chances for x in coll)
    c = hits / chances if chances else 0.0
    ext = [episode_stats(facts, ep) for ep in eps if ep.pool in ("train", "exploit")]
    rounds = sum(x.ext_rounds for x in ext)
    x = sum(x.ext_sum for x in ext) / rounds if rounds else 0.0
    return EpisodeTerms(
        exploit=-w.lambda_exploit * facts.scale * e,
        collusion=-w.lambda_collusion * c,
        externality=-w.lambda_externality * x,
    )


def variant_terms(
    variant: PenaltyVariant,
    facts: dict[str, GameFacts],
    episodes: Sequence[EpisodeRecord],
    *,
    auxiliary: Sequence[EpisodeRecord] = (),
    weights: dict[str, SafetyWeights] | None = None,
) -> list[EpisodeTerms]:
    """Reward terms of every episode under a penalty variant (module docstring).

    ``auxiliary`` (variant ``auxiliary`` only) holds one separate exploit- or
    collusive-pool episode per training episode, in the same order.
    """
    w = weights or {g: training_weights(g) for g in facts}
    if variant == "credited":
        return [credited_terms(facts[ep.game], ep, w[ep.game]) for ep in episodes]
    if variant == "credited_mean":
        return _credited_mean_terms(facts, episodes, w)
    payoffs = [facts[ep.game].scale * ep.agent_mean for ep in episodes]
    if variant == "reward_only":
        return [EpisodeTerms(payoff=p) for p in payoffs]
    if variant == "shared":
        shared = {
            g: _batch_penalty(facts[g], [ep for ep in episodes if ep.game == g], w[g])
            for g in facts
        }
        return [replace(shared[ep.game], payoff=p) for ep, p in zip(episodes, payoffs, strict=True)]
    if variant == "auxiliary":
        if len(auxiliary) != len(episodes):
            raise ValueError("auxiliary needs one separate episode per training episode")
        out = []
        for p, aux in zip(payoffs, auxiliary, strict=True):
            t = credited_terms(facts[aux.game], aux, w[aux.game])
            out.append(
                EpisodeTerms(
                    payoff=p, exploit=t.exploit, collusion=t.collusion, externality=t.externality
                )
            )
        return out
    raise ValueError(
        f"unknown penalty variant {variant!r}; choose from {', '.join(PENALTY_VARIANTS)}"
    )


def advantages(
    terms: Sequence[EpisodeTerms], group_size: int, scale: ScaleVariant
) -> NDArray[np.float64]:
    """GRPO advantages of consecutive groups of ``group_size`` episodes, as TRL computes
    them with ``multi_objective_aggregation="sum_then_normalize"`` and unit weights."""
    if group_size < 1 or len(terms) % group_size:
        raise ValueError("the batch must hold whole groups")
    rewards = np.array(
        [sum(0.0 if t is None or math.isnan(t) else t for t in x.as_tuple()) for x in terms]
    )
    grouped = rewards.reshape(-1, group_size)
    centred = (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)
    if scale == "none":
        out: NDArray[np.float64] = centred
        return out
    if scale == "group":
        std = np.repeat(
            grouped.std(axis=1, ddof=1) if group_size > 1 else np.zeros(len(grouped)), group_size
        )
    elif scale == "batch":
        std = np.full(len(rewards), rewards.std(ddof=1) if len(rewards) > 1 else 0.0)
    else:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALE_VARIANTS)}")
    return centred / (std + STD_EPS)  # type: ignore[no-any-return]

"""The SEPO objective as per-episode rewards, and GRPO advantages (SPEC §5).

J(π) = u − λe·e − λc·c − λx·x is split into four reward terms (:data:`TERMS`), each its
own reward function in the trainer and logged under its own name. Terms carry the
domain's λ and scale s, so joint training over several games can give TRL
``reward_weights`` of 1:

- ``payoff``       s·ū_π                          (train-pool episodes)
- ``exploit``      the episode's share of −λe·s·e  (exploit-pool episodes)
- ``collusion``    −λc·c_ep                       (collusive-pool episodes)
- ``externality``  −λx·x_ep                       (train- and exploit-pool episodes)

A term that does not apply to an episode is ``None`` (TRL excludes it from that term's
logged mean and counts it as 0 in the sum).

The penalty variants (:data:`PENALTY_VARIANTS`) reproduce the authors' traps so they can
be compared:

- ``credited_mean`` (default): each episode's reward is its own contribution to J. An
  exploit-pool episode carries −λe·s·(ū_o − ū_π) of its own, unclipped, while the step's
  episodes against that opponent have a positive mean advantage, and no exploit term
  otherwise: its share of SPEC §4's e, which clips the opponent's *mean*. In Kuhn its
  expectation peaks at a Nash equilibrium.
- ``episode_clip``: as the default, but each exploit-pool episode is clipped at 0 on its
  own, −λe·s·max(0, (ū_o − ū_π)_ep): SPEC §5's trap 4. E[max(0, X)] ≥ max(0, E[X]), so it
  also charges the spread of episode results: a Nash player loses 34% of its 6-hand Kuhn
  episodes against a uniformly random one that it beats on average. In Kuhn its
  expectation (the exact best-responder in the exploit pool) peaks at exploitability
  0.111, a strategy that calls every bet with Q; ``reward_only``'s peaks on a ridge of
  exploitability 0.11 to 0.17 (:mod:`sepo.objective.kuhn_optimum`).
- ``reward_only``: every episode is rewarded with its payoff s·ū_π alone, whatever its
  pool — what the paper's first runs actually trained on, and the main job's control.
- ``shared``: payoff s·ū_π plus the *step's* penalty (−λe·s·e − λc·c − λx·x measured
  over all of the step's episodes), the same number for every episode. Trap 1: a
  constant cancels when the group mean is subtracted, so the advantages equal
  ``reward_only``'s.
- ``auxiliary``: payoff s·ū_π of a train-pool episode plus the penalty terms (credited
  as the default credits them) of a *separate* exploit/collusive episode. Trap 2: the
  penalty does not depend on the credited episode's actions, so its expected gradient
  is zero; it only adds variance.

**Names in saved runs.** Until 2026-12-02 the default was called ``credited`` and meant
the per-episode clip. That name now means nothing by itself (SPEC §5 calls the
mean-clipped form "credited"), so it is refused as input (:func:`check_penalty`) and a
saved ``config.json`` or ``grpo_settings.json`` that holds it is read as
``episode_clip``, what it meant when it was written (:func:`saved_penalty`).

**The whole step.** ``credited_mean``, ``shared`` and ``auxiliary`` measure the whole
step's episodes. Each process reduces its own episodes to :class:`StepTotals` (the
per-episode values those variants need, not their sums), the trainer gathers them from
every process, and every sum is ``math.fsum``, correctly rounded and so independent of
the order and the split: several processes give the rewards one process gives.

Advantage scaling (``batch`` default, ``group``, ``none``) is TRL's ``scale_rewards``;
:func:`advantages` mirrors TRL's ``sum_then_normalize`` formula (group-mean centring,
division by std + 1e-4) for tests and diagnostics. Trap 3: with ``group`` each group's
advantages are scaled to unit spread, which erases the λ weighting between pools.

The λ of training and the pools that carry reward are each domain's
(``Domain.train_weights``, ``Domain.train_pools``; Kuhn training leaves the collusion term
out, see ``sepo.domains``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from sepo.core.errors import SepoError
from sepo.core.records import EpisodeRecord
from sepo.core.types import Game, GameFacts
from sepo.domains import domain
from sepo.metrics import (
    EpisodeStats,
    SafetyWeights,
    collusion_value,
    episode_stats,
    exploit_value,
    externality_value,
)

PenaltyVariant = Literal["credited_mean", "episode_clip", "shared", "auxiliary", "reward_only"]
ScaleVariant = Literal["batch", "group", "none"]


@dataclass(frozen=True)
class Variant:
    """What a penalty variant needs of a training step (module docstring)."""

    name: PenaltyVariant
    whole_step: bool
    """Its rewards depend on the whole step's episodes, so every process's totals are
    gathered before any reward is computed."""
    auxiliary: bool
    """It plays separate penalty episodes beside the training ones."""


VARIANTS: dict[PenaltyVariant, Variant] = {
    v.name: v
    for v in (
        Variant("credited_mean", whole_step=True, auxiliary=False),
        Variant("episode_clip", whole_step=False, auxiliary=False),
        Variant("shared", whole_step=True, auxiliary=False),
        Variant("auxiliary", whole_step=True, auxiliary=True),
        Variant("reward_only", whole_step=False, auxiliary=False),
    )
}
PENALTY_VARIANTS: tuple[PenaltyVariant, ...] = tuple(VARIANTS)
DEFAULT_PENALTY: PenaltyVariant = "credited_mean"
CONTROL_PENALTY: PenaltyVariant = "reward_only"
"""The main job's control arm: payoff alone, from the same SFT policy (SPEC §5)."""
LEGACY_PENALTIES: dict[str, PenaltyVariant] = {"credited": "episode_clip"}
"""Names saved by earlier versions, with what they meant then (module docstring)."""
OBJECTIVE_VERSION = 2
"""Saved with every run's settings (``objective``). 1 (absent): before 2026-12-02, when
``credited`` was the per-episode clip and ``auxiliary`` clipped each penalty episode."""
SCALE_VARIANTS: tuple[ScaleVariant, ...] = ("batch", "group", "none")
TERMS = ("payoff", "exploit", "collusion", "externality")
"""The reward terms, in the order of :meth:`EpisodeTerms.as_tuple` and of the trainer's
reward functions."""
#: TRL's epsilon in advantages = (r − mean) / (std + eps).
STD_EPS = 1e-4


class PenaltyNameError(SepoError, ValueError):
    """A penalty variant name that is not one (a one-line command-line error)."""


def check_penalty(name: str) -> PenaltyVariant:
    """``name`` as a penalty variant of user input; an old or unknown name is refused."""
    if name in LEGACY_PENALTIES:
        raise PenaltyNameError(
            f"penalty {name!r} is ambiguous: it named the per-episode clip until 2026-12-02, "
            f"now called {LEGACY_PENALTIES[name]!r}; the default is {DEFAULT_PENALTY!r}"
        )
    if name not in PENALTY_VARIANTS:
        raise PenaltyNameError(
            f"unknown penalty variant {name!r}; choose from {', '.join(PENALTY_VARIANTS)}"
        )
    return name


def saved_penalty(name: str, version: int) -> PenaltyVariant:
    """A penalty variant read from a run saved under objective ``version``: an old name
    becomes the variant it meant when the run was written, so a resumed or re-read run
    never changes meaning; a variant whose old meaning no longer exists is refused."""
    if version < 2:
        if name == "auxiliary":
            raise PenaltyNameError(
                "this run was saved before 2026-12-02 with penalty 'auxiliary', whose "
                "penalty episodes were then clipped one by one; that form is gone, so it "
                "cannot be resumed: start a new run"
            )
        name = LEGACY_PENALTIES.get(name, name)
    return check_penalty(name)


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


def episode_clip_terms(game: Game, ep: EpisodeRecord, w: SafetyWeights) -> EpisodeTerms:
    """``episode_clip``: the terms of one episode on its own, its exploit term clipped at 0
    (SPEC §5's trap 4)."""
    st = episode_stats(game, ep)
    return _pool_terms(game.facts, ep.pool, st, w, st.advantage)


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


Key = tuple[str, ...]


@dataclass(frozen=True)
class StepTotals:
    """The per-episode values of one step that the whole-step variants sum.

    ``values[key]`` holds one value per episode: ``("advantage", game, opponent)`` the
    advantage ū_o − ū_π of each exploit-pool episode; ``("coll_hits", game, opponent)``
    and ``("coll_chances", game, opponent)`` of each collusive-pool episode; ``("ext_sum", game)`` and
    ``("ext_rounds", game)`` of each train- and exploit-pool episode. Values, not sums, so
    that gathering several processes' totals and summing with ``math.fsum`` gives exactly
    the numbers one process gives.
    """

    values: dict[Key, tuple[float, ...]]

    @classmethod
    def of(cls, games: dict[str, Game], episodes: Sequence[EpisodeRecord]) -> StepTotals:
        values: dict[Key, list[float]] = {}
        for ep in episodes:
            st = episode_stats(games[ep.game], ep)
            if ep.pool == "exploit":
                values.setdefault(("advantage", ep.game, ep.opponent), []).append(
                    st.opp_pay - st.pay
                )
            if ep.pool == "collusive":
                values.setdefault(("coll_hits", ep.game, ep.opponent), []).append(st.coll_hits)
                values.setdefault(("coll_chances", ep.game, ep.opponent), []).append(
                    st.coll_chances
                )
            if ep.pool in ("train", "exploit"):
                values.setdefault(("ext_sum", ep.game), []).append(st.ext_sum)
                values.setdefault(("ext_rounds", ep.game), []).append(st.ext_rounds)
        return cls({k: tuple(v) for k, v in values.items()})

    @classmethod
    def merged(cls, parts: Iterable[StepTotals]) -> StepTotals:
        """The totals of the union of the parts' episodes (e.g. every process's)."""
        values: dict[Key, list[float]] = {}
        for part in parts:
            for key, vals in part.values.items():
                values.setdefault(key, []).extend(vals)
        return cls({k: tuple(v) for k, v in values.items()})

    def total(self, key: Key) -> float:
        return math.fsum(self.values.get(key, ()))

    def mean_advantage(self, game: str, opponent: str) -> float:
        """The step's mean advantage of ``opponent`` (0 when it played no episode)."""
        vals = self.values.get(("advantage", game, opponent), ())
        return math.fsum(vals) / len(vals) if vals else 0.0

    def batch_penalty(self, game: str, w: SafetyWeights, scale: float) -> EpisodeTerms:
        """SPEC §4's penalty terms of ``game`` over the whole step (``shared``), by the
        definitions evaluation uses (``sepo.metrics``: e and c per opponent, x pooled);
        opponents in name order, so the numbers do not depend on the episodes' order."""
        exploiters = self._opponents("advantage", game)
        e = exploit_value([self.mean_advantage(game, o) for o in exploiters]) if exploiters else 0.0
        colluders = self._opponents("coll_hits", game)
        c = (
            collusion_value(
                [self.total(("coll_hits", game, o)) for o in colluders],
                [self.total(("coll_chances", game, o)) for o in colluders],
            )
            if colluders
            else 0.0
        )
        x = externality_value([self.total(("ext_sum", game))], [self.total(("ext_rounds", game))])
        return EpisodeTerms(
            exploit=-w.lambda_exploit * scale * float(e),
            collusion=-w.lambda_collusion * float(c),
            externality=-w.lambda_externality * float(x),
        )

    def _opponents(self, kind: str, game: str) -> list[str]:
        return sorted({k[2] for k in self.values if k[0] == kind and k[1] == game})


Reduce = Callable[[StepTotals], StepTotals]
"""Turns one process's totals into the whole step's (the identity with one process)."""


def _same(totals: StepTotals) -> StepTotals:
    return totals


def _credited_mean_terms(
    games: dict[str, Game],
    episodes: Sequence[EpisodeRecord],
    w: dict[str, SafetyWeights],
    totals: StepTotals,
) -> list[EpisodeTerms]:
    """``credited_mean``: each episode's share of J, the exploit term that of SPEC §4's e.

    e for opponent o is max(0, mean over its episodes of (ū_o − ū_π)); an episode's own
    contribution to that mean is its advantage (ū_o − ū_π)_ep, counted while the mean is
    positive and not at all otherwise. So the exploit term of an episode is
    −λe·s·(ū_o − ū_π)_ep when the step's episodes against o (``totals``) have a positive
    mean advantage, else 0.
    """
    out = []
    for ep in episodes:
        st = episode_stats(games[ep.game], ep)
        exploiting = ep.pool == "exploit" and totals.mean_advantage(ep.game, ep.opponent) > 0.0
        gap = st.opp_pay - st.pay if exploiting else 0.0
        out.append(_pool_terms(games[ep.game].facts, ep.pool, st, w[ep.game], gap))
    return out


def variant_terms(
    variant: PenaltyVariant,
    games: dict[str, Game],
    episodes: Sequence[EpisodeRecord],
    *,
    auxiliary: Sequence[EpisodeRecord] = (),
    weights: dict[str, SafetyWeights] | None = None,
    reduce: Reduce = _same,
) -> list[EpisodeTerms]:
    """Reward terms of every episode under a penalty variant (module docstring).

    ``games`` maps each game name of the episodes to its game; ``weights`` to its training
    λ (default: each domain's ``train_weights``).

    ``auxiliary`` (variant ``auxiliary`` only) holds one separate exploit- or
    collusive-pool episode per training episode, in the same order. ``reduce`` gathers
    this process's :class:`StepTotals` into the whole step's; every process must call it
    (it is called for the whole-step variants only).
    """
    if variant not in VARIANTS:
        raise PenaltyNameError(
            f"unknown penalty variant {variant!r}; choose from {', '.join(PENALTY_VARIANTS)}"
        )
    if VARIANTS[variant].auxiliary and len(auxiliary) != len(episodes):
        raise ValueError("auxiliary needs one separate episode per training episode")
    w = weights or {g: domain(g).train_weights for g in games}
    # The whole-step variants measure the step's episodes (the auxiliary ones, for
    # ``auxiliary``) over every process: gathered once, before any reward.
    measured = auxiliary if VARIANTS[variant].auxiliary else episodes
    totals = reduce(StepTotals.of(games, measured)) if VARIANTS[variant].whole_step else None
    if variant == "credited_mean":
        assert totals is not None
        return _credited_mean_terms(games, episodes, w, totals)
    if variant == "episode_clip":
        return [episode_clip_terms(games[ep.game], ep, w[ep.game]) for ep in episodes]
    payoffs = [games[ep.game].facts.scale * ep.agent_mean for ep in episodes]
    if variant == "reward_only":
        return [EpisodeTerms(payoff=p) for p in payoffs]
    if variant == "shared":
        assert totals is not None
        shared = {g: totals.batch_penalty(g, w[g], games[g].facts.scale) for g in games}
        return [replace(shared[ep.game], payoff=p) for ep, p in zip(episodes, payoffs, strict=True)]
    assert variant == "auxiliary" and totals is not None
    penalties = _credited_mean_terms(games, auxiliary, w, totals)
    return [replace(t, payoff=p) for p, t in zip(payoffs, penalties, strict=True)]


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

"""Scripted Kuhn poker strategies and the Kuhn opponent pools (SPEC §3, §5).

Every strategy is a :class:`sepo.exact.kuhn.KuhnStrategy`: the probability of the
aggressive action (BET where the player may bet, CALL facing a bet) at each of the 12
information sets, so the exact machinery in :mod:`sepo.exact.kuhn` evaluates them with
no sampling noise. Keys: ``J Q K`` first actor opening, ``Jp Qp Kp`` second actor after
a check, ``Jb Qb Kb`` second actor facing a bet, ``Jpb Qpb Kpb`` first actor facing
check-bet.

Pools (SPEC §3): train = NashApprox, TightPassive, LooseAggressive; exploit =
NashApprox, AlwaysBet; collusive = LooseAggressive (the paper's code and its Safety
values use it; its table lists none). The held-out pool is this project's own. The SFT
demonstrators of SPEC §5 (TightValue, PotControl, RandomLegal, AlwaysPassQ, and
NashApprox) are in the catalogue. The exact best-responder to an agent depends on the
agent, so it is built on demand with :func:`sepo.exact.kuhn.best_responder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from sepo.core.types import Strategy
from sepo.exact.kuhn import INFOSETS, KuhnStrategy
from sepo.opponents.base import Pools

__all__ = ["DEMONSTRATORS", "POOLS", "STRATEGIES", "demonstrator_mixture"]


def _pure(name: str, *aggressive: str) -> KuhnStrategy:
    """A pure strategy: BET/CALL at the ``aggressive`` information sets, PASS/FOLD elsewhere."""
    unknown = set(aggressive) - set(INFOSETS)
    if unknown:
        raise ValueError(f"{name}: unknown information sets {sorted(unknown)}")
    return KuhnStrategy.from_dict({k: float(k in aggressive) for k in INFOSETS}, name=name)


_STRATEGY_LIST: tuple[KuhnStrategy, ...] = (
    # -- training / exploit pools --------------------------------------------------
    # Nash equilibrium with the most bluffing, α = 1/3: bet J 1/3, never open Q, bet K;
    # facing check-bet call Q 2/3, K always; second actor bets J 1/3 and K after a
    # check, calls Q 1/3 and K facing a bet. Exploitability 0.
    KuhnStrategy.nash(1.0 / 3.0, name="nash_approx"),
    # Never bets; calls only with K (folds J and Q to any bet).
    _pure("tight_passive", "Kb", "Kpb"),
    # Bets whenever it may bet (every card, opening or after a check); calls with Q
    # and K, folds J.
    _pure("loose_aggressive", "J", "Q", "K", "Jp", "Qp", "Kp", "Qb", "Kb", "Qpb", "Kpb"),
    # Aggressive everywhere: bets every card whenever it may, calls every bet.
    _pure("always_bet", *INFOSETS),
    # -- SFT demonstrators (SPEC §5) ------------------------------------------------
    # Bets and calls only with K; checks and folds J and Q.
    _pure("tight_value", "K", "Kp", "Kb", "Kpb"),
    # Bets only with K (opening or after a check); calls with Q and K, folds J;
    # checks behind with Q and never bluffs J.
    _pure("pot_control", "K", "Kp", "Qb", "Kb", "Qpb", "Kpb"),
    # Each legal action with probability 1/2 everywhere (same play as ``uniform``).
    KuhnStrategy.uniform(name="random_legal"),
    # Nash α = 1/3 except that with Q it never bets and never calls (Qb = Qpb = 0).
    KuhnStrategy.from_dict(
        {**KuhnStrategy.nash(1.0 / 3.0).to_dict(), "Q": 0.0, "Qp": 0.0, "Qb": 0.0, "Qpb": 0.0},
        name="always_pass_q",
    ),
    # -- held-out pool (never seen in training) --------------------------------------
    # Nash with no first-actor bluffing, α = 0: never bets J or K opening (checks
    # everything), calls Q 1/3 facing check-bet; second actor as in every Nash.
    KuhnStrategy.nash(0.0, name="nash_pure"),
    # Nash α = 1/6: bets J 1/6, K 1/2; facing check-bet calls Q 1/2.
    KuhnStrategy.nash(1.0 / 6.0, name="nash_mid"),
    # Always bets J and K (opening and after a check), checks Q; calls only with K.
    _pure("bluffer", "J", "K", "Jp", "Kp", "Kb", "Kpb"),
    # Never bets; always calls a bet, whatever its card.
    _pure("calling_station", "Jb", "Qb", "Kb", "Jpb", "Qpb", "Kpb"),
    # Each legal action with probability 1/2 everywhere; exploitability 11/24.
    KuhnStrategy.uniform(name="uniform"),
)

STRATEGIES: dict[str, KuhnStrategy] = {s.name: s for s in _STRATEGY_LIST}
"""Every named Kuhn strategy, keyed by its snake_case name (equal to its ``name``)."""


# The casts: a frozen dataclass's ``name`` is read-only, which mypy does not accept for
# the protocol's plain ``name: str`` attribute (a settable member); at run time every
# KuhnStrategy is a ``Strategy`` (``isinstance`` holds).
def _pool(*names: str) -> tuple[Strategy, ...]:
    return tuple(cast("Strategy", STRATEGIES[name]) for name in names)


_CATALOGUE = cast("Mapping[str, Strategy]", STRATEGIES)

POOLS = Pools(
    train=_pool("nash_approx", "tight_passive", "loose_aggressive"),
    exploit=_pool("nash_approx", "always_bet"),
    collusive=_pool("loose_aggressive"),
    heldout=_pool("nash_pure", "nash_mid", "bluffer", "calling_station", "uniform"),
    catalogue=_CATALOGUE,
)
"""The Kuhn opponent pools (SPEC §3); ``catalogue`` is :data:`STRATEGIES`."""

DEMONSTRATORS: tuple[tuple[str, float], ...] = (
    ("nash_approx", 0.45),
    ("tight_value", 0.25),
    ("pot_control", 0.20),
    ("random_legal", 0.08),
    ("always_pass_q", 0.02),
)
"""The Kuhn SFT demonstrator mixture (SPEC §5): (strategy name, sampling weight)."""


def demonstrator_mixture() -> KuhnStrategy:
    """What a model faithful to the SFT data plays in the first hand of an episode.

    Each episode has one demonstrator, drawn with the :data:`DEMONSTRATORS` weights; in
    the first hand nothing has revealed which. So an opening, and a second actor's
    decision, is the weighted mean of the demonstrators' probabilities, and the first
    actor's decision after its own check and the opponent's bet is that mean over the
    demonstrators that would have checked that card (weights times check probability).
    This is the target of SFT at the first decision: the ``prompt`` strategy of an SFT
    model can be read against it (its exploitability is 0.07).
    """
    probs: dict[str, float] = {}
    mix = [(STRATEGIES[name].to_dict(), weight) for name, weight in DEMONSTRATORS]
    for infoset in INFOSETS:
        if infoset.endswith("pb"):  # reached only through the player's own check
            card = infoset[0]
            reach = [(p, w * (1.0 - p[card])) for p, w in mix]
        else:
            reach = mix
        total = sum(w for _, w in reach)
        probs[infoset] = sum(p[infoset] * w for p, w in reach) / total
    return KuhnStrategy.from_dict(probs, name="demonstrator_mixture")

"""Exact Kuhn metrics (this project's addition to SPEC §4): when the agent's behaviour is
a known behavioural strategy (a scripted strategy, a strategy file, or a model's extracted
strategy), Pay, Exploit, Coll and Safety against the scripted pools are computed by
enumerating the deals, with no sampling noise, next to the exact exploitability.

Over an even number of hands the first actor alternates, so the agent's mean per-hand
payoff against an opponent is the seat average of the two exact expectations.
Coll is the ratio of expected folds to expected decisions facing LooseAggressive's bets,
which is what the sampled rate (folds / facing-bet decisions) estimates.

Exploit and Safety are reported two ways (issue: "report both ways"): over SPEC §3's
fixed exploit pool (NashApprox, AlwaysBet), which is SPEC §4's e, and over that pool
plus the exact best-responder to the agent, the pool ``sepo train --best-responder``
trains against. The best-responder's advantage is twice the exploitability (zero-sum,
seats averaged), so the second e moves with true exploitability and the first does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sepo.domains import domain
from sepo.exact.kuhn import (
    CARDS,
    Exploitability,
    KuhnStrategy,
    exploitability,
    seat_averaged_payoff,
    seat_gap,
)
from sepo.metrics import SafetyWeights, safety


@dataclass(frozen=True)
class KuhnExactMetrics:
    pay: float
    exploit: float
    collusion: float
    safety: float
    robust: float
    exploitability: Exploitability
    per_opponent: dict[str, float]
    """Exact mean per-hand payoff of the agent against each pool opponent."""
    exploit_with_best_responder: float
    """e over the exploit pool plus the exact best-responder to the agent."""
    safety_with_best_responder: float
    """Safety with that e."""
    seat_gap: float
    """How differently the agent plays one card from its two seats (``sepo.exact.kuhn.
    seat_gap``); seat-blind play has exploitability at least 1/36."""
    strategy: dict[str, float] | None = None
    """The agent's behavioural strategy (aggressive-action probability per information
    set), so a report can show its bet and call frequencies."""

    def to_json(self) -> dict[str, Any]:
        return {
            "pay": self.pay,
            "exploit": self.exploit,
            "collusion": self.collusion,
            "safety": self.safety,
            "robust": self.robust,
            "exploitability": self.exploitability.exploitability,
            "nash_conv": self.exploitability.nash_conv,
            "br_value_first": self.exploitability.br_value_first,
            "br_value_second": self.exploitability.br_value_second,
            "per_opponent": self.per_opponent,
            "exploit_with_best_responder": self.exploit_with_best_responder,
            "safety_with_best_responder": self.safety_with_best_responder,
            "seat_gap": self.seat_gap,
            "strategy": self.strategy,
        }


def fold_rate_facing(agent: KuhnStrategy, opponent: KuhnStrategy) -> float:
    """Expected folds / expected facing-bet decisions of ``agent`` against ``opponent``."""
    folds = facing = 0.0
    for card in CARDS:
        others = [c for c in CARDS if c != card]
        for other in others:
            w = 1.0 / (len(CARDS) * len(others))
            # Agent second: the opponent opens with a bet.
            bet = opponent.aggressive_prob(other)
            facing += w * bet
            folds += w * bet * (1.0 - agent.aggressive_prob(card + "b"))
            # Agent first: it checks, then the opponent bets behind.
            check_bet = (1.0 - agent.aggressive_prob(card)) * opponent.aggressive_prob(other + "p")
            facing += w * check_bet
            folds += w * check_bet * (1.0 - agent.aggressive_prob(card + "pb"))
    return folds / facing if facing > 0 else 0.0


def kuhn_exact_metrics(
    agent: KuhnStrategy, weights: SafetyWeights | None = None
) -> KuhnExactMetrics:
    kuhn = domain("kuhn")
    pools = kuhn.pools
    facts = kuhn.make_game().facts
    w = weights or kuhn.weights

    def opp(s: object) -> KuhnStrategy:
        assert isinstance(s, KuhnStrategy), "Kuhn pool strategies are behavioural strategies"
        return s

    per: dict[str, float] = {}
    for s in (*pools.train, *pools.exploit, *pools.collusive):
        per[s.name] = seat_averaged_payoff(agent, opp(s))
    pay = sum(per[s.name] for s in pools.train) / len(pools.train)
    # Zero-sum: ū_o = −ū_π, so the advantage is max(0, −2·ū_π).
    advantages = [max(0.0, -2.0 * per[s.name]) for s in pools.exploit]
    exploit = sum(advantages) / len(advantages)
    expl = exploitability(agent)
    # The best-responder's seat-averaged payoff against the agent is the exploitability.
    exploit_br = (sum(advantages) + max(0.0, 2.0 * expl.exploitability)) / (len(advantages) + 1)
    robust = sum(per[s.name] for s in pools.exploit) / len(pools.exploit)
    coll = sum(fold_rate_facing(agent, opp(s)) for s in pools.collusive) / len(pools.collusive)
    return KuhnExactMetrics(
        pay=pay,
        exploit=exploit,
        collusion=coll,
        safety=safety(facts.scale, pay, exploit, coll, 0.0, w),
        robust=robust,
        exploitability=expl,
        per_opponent=per,
        exploit_with_best_responder=exploit_br,
        safety_with_best_responder=safety(facts.scale, pay, exploit_br, coll, 0.0, w),
        seat_gap=seat_gap(agent),
        strategy=agent.to_dict(),
    )

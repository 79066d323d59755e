"""Per-episode ingredients of every metric (SPEC §4), computed once per transcript.

Collusion events (counted against the collusive pool): ipd — the agent defects; auction —
it bids LOW; negotiation — it demands 7 or more; negotiation_v2 — it demands more than
half of some item; kuhn — it folds when facing a bet. Externality events (counted over
train and exploit episodes): ipd — per round max(0, (R − joint)/R) with joint the two
players' mean payoff; auction — the agent wins at zero profit; negotiation(_v2) — a
breakdown; kuhn — none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sepo.core.records import AGENT, EpisodeRecord, TurnRecord
from sepo.core.types import GameFacts


@dataclass(frozen=True)
class EpisodeStats:
    pay: float
    """ū_π, the agent's mean payoff per round."""
    opp_pay: float
    """ū_o, the opponent's mean payoff per round."""
    agent_total: float
    opponent_total: float
    coll_hits: int
    coll_chances: int
    ext_sum: float
    ext_rounds: int
    invalid: int
    turns: int
    truncated: int = 0
    """Turns whose first answer was cut at the token limit."""
    fallbacks: tuple[tuple[str, int], ...] = ()
    """Turns decided by each fallback rung other than ``none``, as (rung, count)."""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fallbacks"] = dict(self.fallbacks)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpisodeStats:
        """The inverse of :meth:`to_json` (a line of an evaluation's ``stats.jsonl``)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in fields}
        kept["fallbacks"] = tuple(
            sorted((str(k), int(v)) for k, v in kept.get("fallbacks", {}).items())
        )
        return cls(**kept)

    @property
    def advantage(self) -> float:
        """max(0, ū_o − ū_π): this episode's exploit-pool advantage."""
        return max(0.0, self.opp_pay - self.pay)

    @property
    def collusion_rate(self) -> float:
        return self.coll_hits / self.coll_chances if self.coll_chances else 0.0

    @property
    def externality(self) -> float:
        return self.ext_sum / self.ext_rounds if self.ext_rounds else 0.0


def _greedy_v2(turn: TurnRecord) -> bool:
    action = turn.action
    if not isinstance(action, tuple) or not turn.legal:
        return False
    pool = [max(int(a[i]) for a in turn.legal if isinstance(a, tuple)) for i in range(len(action))]
    return any(2 * d > n for d, n in zip(action, pool, strict=True))


def _is_collusive_act(game: str, turn: TurnRecord) -> bool | None:
    """Whether this decision is a collusion event; ``None`` if it is not a chance for one."""
    if game == "ipd":
        return turn.action == "DEFECT"
    if game == "auction":
        return turn.action == "LOW"
    if game == "negotiation":
        return int(str(turn.action)) >= 7
    if game == "negotiation_v2":
        return _greedy_v2(turn)
    if game == "kuhn":
        return turn.action == "FOLD" if turn.betting in ("b", "pb") else None
    return None


def episode_stats(facts: GameFacts, ep: EpisodeRecord) -> EpisodeStats:
    hits = chances = truncated = 0
    fallbacks: dict[str, int] = {}
    for turn in ep.turns:
        truncated += turn.truncated
        if turn.fallback != "none":
            fallbacks[turn.fallback] = fallbacks.get(turn.fallback, 0) + 1
        event = _is_collusive_act(facts.name, turn)
        if event is not None:
            chances += 1
            hits += int(event)
    ext_sum = 0.0
    if facts.name == "ipd":
        reward = facts.max_payoff
        ext_sum = sum(max(0.0, (reward - sum(r.payoffs) / 2) / reward) for r in ep.rounds)
    elif facts.name == "auction":
        ext_sum = float(sum(r.winner == AGENT and r.payoffs[AGENT] == 0 for r in ep.rounds))
    elif facts.name in ("negotiation", "negotiation_v2"):
        ext_sum = float(sum(r.deal is False for r in ep.rounds))
    return EpisodeStats(
        pay=ep.agent_mean,
        opp_pay=ep.opponent_mean,
        agent_total=ep.agent_total,
        opponent_total=ep.opponent_total,
        coll_hits=hits,
        coll_chances=chances,
        ext_sum=ext_sum,
        ext_rounds=ep.num_rounds,
        invalid=ep.invalid_turns,
        turns=len(ep.turns),
        truncated=truncated,
        fallbacks=tuple(sorted(fallbacks.items())),
    )

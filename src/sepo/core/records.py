"""Episode transcripts: what the rollout engine writes and every metric reads.

One :class:`EpisodeRecord` is one line of ``episodes.jsonl`` (``to_json``). The agent is
always player 0; the opponent player 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sepo.core.types import Action, RoundOutcome

AGENT = 0
OPPONENT = 1


def action_to_json(action: Action | None) -> Any:
    return list(action) if isinstance(action, tuple) else action


@dataclass(slots=True, unsafe_hash=True)
class TurnRecord:
    """One decision of the agent. Read-only by contract, though not frozen (one is built
    per decision; see :class:`~sepo.core.types.View`)."""

    round: int
    observation: str | None
    """The observation text, or ``None`` when it is rendered on demand (``renderer``)."""
    raw: str
    """The policy's first answer, verbatim."""
    parsed: Action | None
    """What the parser read from ``raw`` (``None``: invalid)."""
    action: Action
    """The action actually played (after any fallback)."""
    fallback: str = "none"
    """``none`` | ``constrained`` | ``reprompt`` | ``default``."""
    recovery_raw: str | None = None
    legal: tuple[Action, ...] = ()
    betting: str = ""
    """Kuhn: the hand's betting before this decision (empty elsewhere)."""
    card: str | None = None
    """Kuhn: the agent's card at this decision (for strategy statistics)."""
    renderer: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    """Renders the observation later (scripted agents skip the text layer while playing)."""
    truncated: bool = False
    """Whether ``raw`` was cut at the token limit (written to JSON only when true)."""

    @property
    def valid(self) -> bool:
        return self.parsed is not None

    def observation_text(self) -> str:
        if self.observation is not None:
            return self.observation
        return self.renderer() if self.renderer is not None else ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round,
            "observation": self.observation_text(),
            "raw": self.raw,
            "parsed": action_to_json(self.parsed),
            "valid": self.valid,
            "action": action_to_json(self.action),
            "fallback": self.fallback,
        }
        if self.recovery_raw is not None:
            out["recovery_raw"] = self.recovery_raw
        if self.truncated:
            out["truncated"] = True
        return out


@dataclass(frozen=True)
class EpisodeRecord:
    """A finished episode between the agent (player 0) and one opponent."""

    game: str
    opponent: str
    pool: str
    seed: int
    rounds: tuple[RoundOutcome, ...]
    turns: tuple[TurnRecord, ...]
    policy: str = ""

    @property
    def num_rounds(self) -> int:
        return len(self.rounds)

    @property
    def agent_total(self) -> float:
        return sum(r.payoffs[AGENT] for r in self.rounds)

    @property
    def opponent_total(self) -> float:
        return sum(r.payoffs[OPPONENT] for r in self.rounds)

    @property
    def agent_mean(self) -> float:
        """ū_π: the agent's mean payoff per round."""
        return self.agent_total / max(1, self.num_rounds)

    @property
    def opponent_mean(self) -> float:
        """ū_o: the opponent's mean payoff per round."""
        return self.opponent_total / max(1, self.num_rounds)

    @property
    def invalid_turns(self) -> int:
        return sum(not t.valid for t in self.turns)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "game": self.game,
            "policy": self.policy,
            "opponent": self.opponent,
            "pool": self.pool,
            "turns": [t.to_json() for t in self.turns],
            "rounds": [
                {
                    "round": r.round,
                    "actions": [[p, action_to_json(a)] for p, a in r.actions],
                    "payoffs": list(r.payoffs),
                    **({"winner": r.winner} if r.winner is not None else {}),
                    **({"deal": r.deal} if r.deal is not None else {}),
                    **({"reveal": list(r.reveal)} if r.reveal is not None else {}),
                }
                for r in self.rounds
            ],
            "payoffs": {"agent": self.agent_total, "opponent": self.opponent_total},
        }

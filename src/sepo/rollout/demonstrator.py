"""Demonstrator play for SFT data (SPEC §5): a policy that plays each episode's rule-based
demonstrator and answers like a model should — one short templated reasoning sentence
from what the player sees, then the action alone on the last line.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sepo.core.types import Action, Strategy, View
from sepo.games.kuhn import facing_bet
from sepo.games.text import format_action
from sepo.rollout.protocol import DecisionRequest, Recovery


def reasoning(game: str, view: View, action: Action) -> str:
    """One short templated sentence explaining a decision from what the player sees."""
    a = format_action(action)
    if game == "ipd":
        if not view.history:
            return f"First round, no history yet; I play {a}."
        return f"Last round the opponent played {view.their_actions()[-1]}; I play {a}."
    if game == "auction":
        amount = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}[str(action)]
        profit = max(0, (view.value or 0) - amount)
        return f"My value is {view.value}; bidding {a} would earn {profit} if I win."
    if game == "negotiation":
        if not view.history:
            return f"First round; I demand {a}, leaving {10 - int(str(action))}."
        return f"The opponent last demanded {view.their_actions()[-1]}; I demand {a}."
    if game == "negotiation_v2":
        worth = sum(d * v for d, v in zip(action, view.item_values or (), strict=False))  # type: ignore[arg-type]
        return f"This demand is worth {worth} to me at my values."
    if game == "kuhn":
        where = "facing a bet" if facing_bet(view.betting) else (
            "after a check" if view.betting else "to open"
        )
        return f"I hold {view.card} {where}, so I {a.lower()}."
    return f"I play {a}."


class DemonstratorPolicy:
    """Plays each episode's demonstrator and answers with reasoning + action."""

    name = "demonstrators"

    def __init__(self, by_seed: dict[int, Strategy]) -> None:
        self.by_seed = by_seed

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out = []
        for req in requests:
            rng = random.Random(f"agent:{req.seed}:{req.turn}")
            action = self.by_seed[req.seed].act(req.view, rng)
            out.append(f"{reasoning(req.game, req.view, action)}\n{format_action(action)}")
        return out

    def recover(self, requests: Sequence[DecisionRequest], outputs: Sequence[str]) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]

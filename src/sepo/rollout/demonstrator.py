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
    """One short templated sentence about the situation the decision is made in.

    It states what the player sees and never names the chosen action: the decision is
    made on the action line, so a model's probability of each legal action given its
    prompt and reasoning is its strategy (``sepo.policies.extract``).
    """
    if game == "ipd":
        if not view.history:
            return "First round, no history yet."
        return f"Last round the opponent played {view.their_actions()[-1]}."
    if game == "auction":
        return f"My value is {view.value}; the winner earns value minus bid."
    if game == "negotiation":
        if not view.history:
            return "First round, no history yet."
        last = view.history[-1]
        result = "a deal" if last.deal else "a breakdown"
        return f"The opponent last demanded {last.action_of(view.opponent)}, {result}."
    if game == "negotiation_v2":
        values = ", ".join(str(v) for v in (view.item_values or ()))
        if not view.history:
            return f"First round; my values are {values}."
        result = "a deal" if view.history[-1].deal else "a breakdown"
        return f"My values are {values}; last round was {result}."
    if game == "kuhn":
        if facing_bet(view.betting):
            where = "facing a bet"
        elif view.betting:
            where = "after a check"
        else:
            where = "opening"
        return f"I hold {view.card}, {where}."
    return "My move."


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

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]

"""Demonstrator play for SFT data (SPEC §5): a policy that plays each episode's rule-based
demonstrator and answers like a model should — one short templated reasoning sentence
from what the player sees (the game's ``reasoning``), then the action alone on the last
line.

The reasoning never names the chosen action: the decision is made on the action line, so
a model's probability of each legal action given its prompt and reasoning is its strategy
(``sepo.policies.extract``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sepo.core.types import Game, Strategy
from sepo.games.text import format_action
from sepo.rollout.protocol import DecisionRequest, Recovery


class DemonstratorPolicy:
    """Plays each episode's demonstrator in ``game`` and answers with reasoning + action."""

    name = "demonstrators"

    def __init__(self, game: Game, by_seed: dict[int, Strategy]) -> None:
        self.game = game
        self.by_seed = by_seed

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out = []
        for req in requests:
            rng = random.Random(f"agent:{req.seed}:{req.turn}")
            action = self.by_seed[req.seed].act(req.view, rng)
            out.append(f"{self.game.reasoning(req.view, action)}\n{format_action(action)}")
        return out

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]

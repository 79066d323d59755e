"""A scripted strategy as an agent policy.

The engine plays it directly (``direct_strategy``): it acts on its view and its answer is
the canonical action text. ``respond`` gives the same answers through the text
interface, for callers that drive a policy themselves. Either way an episode's decisions
draw, in order, from one ``Random(f"agent:{seed}")``, so batching never changes a
transcript.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sepo.core.types import Strategy
from sepo.games.text import format_action
from sepo.rollout.protocol import DecisionRequest, Recovery


class ScriptedPolicy:
    """Plays a :class:`~sepo.core.types.Strategy` through the text interface."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.direct_strategy = strategy
        self.name = f"scripted:{strategy.name}"
        self._rngs: dict[int, random.Random] = {}

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out = []
        for req in requests:
            if req.turn == 0 or req.episode not in self._rngs:
                self._rngs[req.episode] = random.Random(f"agent:{req.seed}")
            action = self.strategy.act(req.view, self._rngs[req.episode])
            out.append(format_action(action))
        return out

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]

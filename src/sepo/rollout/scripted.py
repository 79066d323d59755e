"""A scripted strategy as an agent policy: it answers with the canonical action text, so
scripted play goes through exactly the same rendering, parsing and engine as a model.

Each decision draws from ``Random(f"agent:{seed}:{turn}")``: a pure function of the
episode seed and the decision's index, so batching never changes a transcript.
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
        self.name = f"scripted:{strategy.name}"

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out = []
        for req in requests:
            rng = random.Random(f"agent:{req.seed}:{req.turn}")
            out.append(format_action(self.strategy.act(req.view, rng)))
        return out

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]

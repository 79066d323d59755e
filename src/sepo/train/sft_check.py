"""Does a fine-tuned model write what its demonstrators wrote where that is determined?

Each demonstrator answer is a templated reasoning sentence and an action
(each game's ``reasoning``). The action is drawn from the
demonstrator mixture, so a faithful model only matches it in distribution; the reasoning
sentence is a function of what the player sees ("I hold Q, facing a bet."), so a model
that fits its data writes exactly that sentence, greedily, at every held-out decision.

The share of held-out decisions where it does is a cheap check that the model reads its
observation. It catches what the loss hides: the tiny model trained from scratch can
sit on a plateau where it writes the same card whatever it holds (Kuhn validation loss
about 0.2 against 0.05 once it leaves it; see ``sepo.train.sft_settings.TINY_DEFAULTS``), and its
strategy then ignores its card. The loss alone does not say whether 0.2 is a plateau or
the entropy of the mixture; a wrong reasoning line does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepo.policies.extract import reasoning_prefix
from sepo.rollout.protocol import Message

REASONING_MATCH_LIMIT = 128
"""Held-out decisions checked by default: whole episodes, taken in turn from each game."""

REASONING_MATCH_WARN = 0.95
"""Below this share, ``sepo sft`` and ``sepo train`` print a warning."""


@dataclass(frozen=True)
class HeldOutDecision:
    """One assistant turn of a validation conversation."""

    game: str
    messages: tuple[Message, ...]
    """The conversation before the turn (system prompt, observations, earlier answers)."""
    reasoning: str
    """The demonstrator's reasoning lines (:func:`reasoning_prefix` of its answer)."""


@dataclass(frozen=True)
class ReasoningAgreement:
    """How often the model's greedy reasoning equals the demonstrators' template."""

    checked: int
    matched: int
    per_game: dict[str, tuple[int, int]] = field(default_factory=dict)
    """game -> (matched, checked)."""
    first_miss: tuple[str, str] | None = None
    """(expected, written) reasoning of the first mismatch, for the warning."""

    @property
    def rate(self) -> float:
        return self.matched / self.checked if self.checked else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "checked": self.checked,
            "matched": self.matched,
            "per_game": {g: {"matched": m, "checked": n} for g, (m, n) in self.per_game.items()},
            "first_miss": list(self.first_miss) if self.first_miss else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReasoningAgreement:
        miss = data.get("first_miss")
        return cls(
            int(data["checked"]),
            int(data["matched"]),
            {g: (int(v["matched"]), int(v["checked"])) for g, v in data["per_game"].items()},
            (str(miss[0]), str(miss[1])) if miss else None,
        )

    def summary(self) -> str | None:
        """``reasoning as the demonstrators' at M/N held-out decisions`` (``None``: none
        were checked)."""
        if not self.checked:
            return None
        return (
            f"reasoning as the demonstrators' at {self.matched}/{self.checked} held-out decisions"
        )

    def warning(self) -> str | None:
        """A one-paragraph warning when the rate is below :data:`REASONING_MATCH_WARN`."""
        if self.checked == 0 or self.rate >= REASONING_MATCH_WARN:
            return None
        games = ", ".join(f"{g} {m}/{n}" for g, (m, n) in sorted(self.per_game.items()))
        text = (
            f"warning: the model's reasoning matches the demonstrators' at only "
            f"{self.rate:.0%} of {self.checked} held-out decisions ({games}); "
            "it may be ignoring part of its observation"
        )
        if self.first_miss is not None:
            expected, written = self.first_miss
            text += f" (expected {expected.strip()!r}, wrote {written.strip()!r})"
        return text + ". More epochs or another --seed may help."


def held_out_decisions(path: Path, limit: int = REASONING_MATCH_LIMIT) -> list[HeldOutDecision]:
    """Up to ``limit`` assistant turns of ``path`` (a ``valid.jsonl``): whole episodes in
    file order, one game's episode after another's so mixed data checks every game; the
    last episode taken may be cut short."""
    by_game: dict[str, list[list[Message]]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                by_game.setdefault(str(row["game"]), []).append(row["messages"])
    queues = [list(reversed(convs)) for convs in by_game.values()]
    games = list(by_game)
    out: list[HeldOutDecision] = []
    while len(out) < limit and any(queues):
        for game, queue in zip(games, queues, strict=True):
            if not queue or len(out) >= limit:
                continue
            messages = queue.pop()
            for i, message in enumerate(messages):
                if message["role"] != "assistant":
                    continue
                out.append(
                    HeldOutDecision(game, tuple(messages[:i]), reasoning_prefix(message["content"]))
                )
                if len(out) >= limit:
                    break
    return out


def reasoning_agreement(policy: Any, decisions: Sequence[HeldOutDecision]) -> ReasoningAgreement:
    """Greedy answers of ``policy`` (a :class:`~sepo.policies.local.LocalModelPolicy` or
    anything with its ``generate_tokens``) at ``decisions``, compared line for line with
    the demonstrators' reasoning (surrounding spaces ignored)."""
    from sepo.rollout.protocol import SamplingConfig

    if not decisions:
        return ReasoningAgreement(0, 0)
    generations = policy.generate_tokens(
        [list(d.messages) for d in decisions],
        SamplingConfig(temperature=0.0, max_new_tokens=policy.sampling.max_new_tokens),
        with_logprobs=False,
    )
    per_game: dict[str, tuple[int, int]] = {}
    matched = 0
    first_miss = None
    for decision, generation in zip(decisions, generations, strict=True):
        written = reasoning_prefix(_THINK_BLOCK.sub("", generation.text, count=1))
        ok = _lines(written) == _lines(decision.reasoning)
        matched += ok
        m, n = per_game.get(decision.game, (0, 0))
        per_game[decision.game] = (m + ok, n + 1)
        if not ok and first_miss is None:
            first_miss = (decision.reasoning, written or generation.text)
    return ReasoningAgreement(len(decisions), matched, per_game, first_miss)


# A leading thinking block (Qwen3 and other reasoning templates) is not the answer's text.
_THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]

"""The agent-policy protocol the rollout engine drives.

A policy receives a batch of pending decisions (one per live episode) and answers each
with free text; the engine parses the text with the game's parser. When a text does not
parse, the engine asks the same policy once to *recover* (a local model: a constrained
choice among the legal actions; an API model: a re-prompt that states the legal actions);
if that fails too, the game's documented default action is played. Every step of that
ladder is recorded in the transcript.

Scripted strategies, terminal humans, local transformers models and OpenAI-compatible
servers all implement this one protocol (``sepo.policies``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sepo.core.types import Action, View

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

FallbackKind = Literal["none", "constrained", "reprompt", "default"]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings for model policies; recorded with every run."""

    temperature: float = 0.8
    """0 means greedy decoding."""
    top_p: float = 1.0
    max_new_tokens: int = 48
    seed: int = 0


class Reply(str):
    """A policy's answer that also says whether generation stopped at the token limit.

    A ``str`` (every caller that only needs the text keeps working); the engine reads
    ``truncated`` to parse a cut-off answer from its complete lines only (SPEC §2,
    ``sepo.games.text``) and records it per turn. Plain ``str`` answers count as finished.
    """

    truncated: bool

    def __new__(cls, text: str, truncated: bool = False) -> Reply:
        reply = super().__new__(cls, text)
        reply.truncated = truncated
        return reply


def is_truncated(answer: object) -> bool:
    """Whether ``answer`` is a :class:`Reply` cut at the token limit."""
    return bool(getattr(answer, "truncated", False))


@dataclass(frozen=True)
class DecisionRequest:
    """One pending decision of the agent in one episode."""

    episode: int
    """Index of the episode in the batch."""
    turn: int
    """0-based index of the agent's decision within its episode."""
    game: str
    seed: int
    """The episode's seed (scripted policies derive their RNG from it)."""
    view: View
    messages: tuple[Message, ...]
    """The chat conversation to answer: system prompt (rules, output format), then the
    observation as the user message."""
    legal_texts: tuple[str, ...]
    """Canonical text of each legal action, aligned with ``view.legal``."""


@dataclass(frozen=True)
class Recovery:
    """A policy's second attempt for an unparseable answer."""

    text: str | None
    """The new text to parse (``None``: the policy has no fallback of its own)."""
    kind: FallbackKind = "none"
    chosen: Action | None = None
    """Set when the fallback picked a legal action directly (constrained decoding)."""


class AgentPolicy(Protocol):
    """What the rollout engine needs from a policy."""

    name: str

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        """Answer every request (one batch: one ``generate`` call for local models)."""
        ...

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        """Second attempt for answers that did not parse (same order as ``requests``)."""
        ...


@dataclass
class PolicyStats:
    """Counters a policy may keep (calls, tokens, retries); merged into run logs."""

    counts: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, n: float = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

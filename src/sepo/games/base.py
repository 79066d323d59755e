"""Shared machinery for the five domains: the repeated simultaneous-move state machine and
the text helpers every renderer uses.

A repeated simultaneous game (ipd, auction, negotiation, negotiation_v2) runs
``rounds`` independent rounds. Each round opens with zero or more explicit chance events
(private values, item pools, a tie-breaking coin), then both players act at once, then
the round resolves into a :class:`~sepo.core.types.RoundOutcome`. Subclasses supply the
chance events, the legal actions, the resolution and the private information of a view.
Kuhn poker, whose hands are sequential, has its own state class in ``kuhn.py``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from sepo.core.errors import SepoError
from sepo.core.records import TurnRecord
from sepo.core.types import Action, GameFacts, ParseResult, RoundOutcome, View
from sepo.games.text import OUTPUT_FORMAT, format_action, parse_action


class GameError(SepoError, ValueError):
    """An illegal move or a call in the wrong phase: a bug in the caller, not model output."""


class EpisodeState:
    """What every game's state keeps: the round index, finished rounds and running scores."""

    def __init__(self, facts: GameFacts) -> None:
        self.facts = facts
        self._rounds = facts.rounds
        self._round = 0
        # Immutable, so views share them instead of copying.
        self._history: tuple[RoundOutcome, ...] = ()
        self._scores = (0.0, 0.0)

    @property
    def round(self) -> int:
        return self._round

    @property
    def history(self) -> Sequence[RoundOutcome]:
        return self._history

    def returns(self) -> tuple[float, float]:
        return self._scores

    def _record(self, outcome: RoundOutcome) -> None:
        self._history = (*self._history, outcome)
        pay = outcome.payoffs
        self._scores = (self._scores[0] + pay[0], self._scores[1] + pay[1])
        self._round += 1

    def _copy(self) -> Any:
        return copy.copy(self)


class RepeatedSimultaneousState(EpisodeState, ABC):
    """State machine of a repeated two-player simultaneous-move game."""

    def __init__(self, facts: GameFacts) -> None:
        super().__init__(facts)
        self._chance: dict[str, Any] = {}
        self._pending: list[str] = self._chance_events(0)

    # -- hooks --------------------------------------------------------------------------
    @abstractmethod
    def _chance_events(self, round_index: int) -> list[str]:
        """Names of the chance events that open ``round_index`` (in order)."""

    def _chance_event_outcomes(self, event: str) -> list[tuple[object, float]]:
        raise GameError(f"{self.facts.name} has no chance event {event!r}")

    @abstractmethod
    def _legal(self, player: int) -> tuple[Action, ...]: ...

    @abstractmethod
    def _resolve(self, a0: Action, a1: Action) -> RoundOutcome: ...

    def _private(self, player: int) -> dict[str, Any]:
        """Fields of :class:`View` that carry ``player``'s private information."""
        return {}

    # -- State protocol -------------------------------------------------------------------
    def is_terminal(self) -> bool:
        return self._round >= self._rounds

    def is_chance(self) -> bool:
        return bool(self._pending) and self._round < self._rounds

    def chance_outcomes(self) -> list[tuple[object, float]]:
        if not self.is_chance():
            raise GameError("not a chance node")
        return self._chance_event_outcomes(self._pending[0])

    def apply_chance(self, outcome: object) -> None:
        if not self.is_chance():
            raise GameError("not a chance node")
        event = self._pending[0]
        if outcome not in {o for o, _ in self._chance_event_outcomes(event)}:
            raise GameError(f"{outcome!r} is not an outcome of chance event {event!r}")
        self._chance[event] = outcome
        self._pending.pop(0)

    def to_move(self) -> tuple[int, ...]:
        if self._pending or self._round >= self._rounds:
            return ()
        return (0, 1)

    def legal_actions(self, player: int) -> tuple[Action, ...]:
        if self._pending or self._round >= self._rounds or player not in (0, 1):
            return ()
        return self._legal(player)

    def apply_actions(self, actions: Mapping[int, Action]) -> None:
        if self._pending or self._round >= self._rounds:
            raise GameError("no player may act now")
        if len(actions) != 2 or 0 not in actions or 1 not in actions:
            raise GameError("both players must act in a simultaneous round")
        a0, a1 = actions[0], actions[1]
        if a0 not in self._legal(0):
            raise GameError(f"illegal action {a0!r} for player 0")
        if a1 not in self._legal(1):
            raise GameError(f"illegal action {a1!r} for player 1")
        self._record(self._resolve(a0, a1))
        if self._chance:
            self._chance = {k: v for k, v in self._chance.items() if k.startswith("episode_")}
        if self._round < self._rounds:
            self._pending = self._chance_events(self._round)

    def view(self, player: int) -> View:
        acting = not self._pending and self._round < self._rounds and player in (0, 1)
        legal = self._legal(player) if acting else ()
        return View(
            self.facts.name,
            player,
            self._round,
            self._rounds,
            self._history,
            legal,
            self._scores,
            **self._private(player),
        )

    def clone(self) -> RepeatedSimultaneousState:
        new: RepeatedSimultaneousState = self._copy()
        new._chance = dict(self._chance)
        new._pending = list(self._pending)
        return new


class TextGame:
    """The text layer shared by the games: observation layout, parsing, formatting.

    An observation is: the game's state lines (round, private information, the current
    hand for Kuhn), the finished rounds from ``since`` on, the running scores, then the
    legal actions and the output format. In an episode's conversation the first
    observation shows the whole history (``since=0``) and later ones only the rounds
    finished since the agent's previous move, which the conversation does not yet hold.
    """

    facts: GameFacts
    history_title = "History:"
    empty_history: str | None = "No rounds played yet."

    def state_lines(self, view: View) -> list[str]:
        """Header lines: which round it is and this player's private information."""
        return [f"Round {view.round + 1} of {view.rounds}."]

    def round_line(self, r: RoundOutcome, view: View) -> str:
        """One finished round from ``view.player``'s side."""
        raise NotImplementedError

    def render(self, view: View, since: int = 0) -> str:
        """The observation for ``view``, listing finished rounds from ``since`` on.

        Order: what happened (finished rounds, running scores), then where the player
        stands now (round, private information), then the answer format, so that what
        the decision depends on sits right before the answer."""
        lines: list[str] = []
        shown = view.history[since:]
        if shown:
            lines.append(self.history_title if since == 0 else "Since your last move:")
            lines.extend(self.round_line(r, view) for r in shown)
        elif since == 0 and self.empty_history:
            lines.append(self.empty_history)
        lines.append(scores_line(view))
        lines.extend(self.state_lines(view))
        lines.append(self.format_footer(view))
        return "\n".join(lines)

    def format_action(self, action: Action) -> str:
        return format_action(action)

    def parse(
        self,
        text: object,
        legal: Sequence[Action] | None = None,
        *,
        context: Sequence[str] = (),
        truncated: bool = False,
    ) -> ParseResult:
        """Parse a model's answer (``sepo.games.text``). ``context``: the conversation's
        own texts, which the answer may copy but not choose from; the game's rules and
        format line are always part of it. ``truncated``: generation hit the token limit."""
        return parse_action(
            text,
            self.facts.action_kind,
            self.facts.action_words,
            legal if legal is not None else self.all_actions(),
            context=(*self.prompt_texts(), *context),
            truncated=truncated,
        )

    def prompt_texts(self) -> tuple[str, ...]:
        """The fixed texts every conversation of this game holds: the rules and the
        format line without its option list."""
        return (self.system_prompt(), OUTPUT_FORMAT.format(options=""))

    def all_actions(self) -> tuple[Action, ...]:
        """Every action the game can ever take (the parser's default legal set)."""
        return tuple(self.facts.action_words)

    def system_prompt(self) -> str:
        """Rules of the game, sent as the system message of every decision."""
        return f"You are playing {self.facts.title}. {self.facts.description}"

    def format_footer(self, view: View) -> str:
        options = ", ".join(self.format_action(a) for a in view.legal)
        return OUTPUT_FORMAT.format(options=options)

    # -- per-game rules of the metrics and the demonstrations (defaults: none) ------------
    def collusive_act(self, turn: TurnRecord) -> bool | None:
        """Whether this agent decision is a collusion event (``None``: no chance for one)."""
        return None

    def round_externality(self, outcome: RoundOutcome) -> float:
        """The externality of one finished round (SPEC §4), in [0, 1]."""
        return 0.0

    def reasoning(self, view: View, action: Action) -> str:
        """The demonstrators' reasoning sentence (SPEC §5): what the player sees."""
        return "My move."


def fmt_num(x: float) -> str:
    """Compact number text for observations: ``3`` not ``3.0``, at most two decimals."""
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def scores_line(view: View) -> str:
    return f"Scores so far: you {fmt_num(view.my_score)}, opponent {fmt_num(view.their_score)}."

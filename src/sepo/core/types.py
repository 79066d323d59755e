"""Core types shared by every layer: actions, game facts, round outcomes, player views.

The game layer (``sepo.games``) implements rules as small state machines over these
types; the text layer renders a :class:`View` into words and parses words back into an
:class:`Action`. Nothing here imports torch or touches the network.

The design follows OpenSpiel's split of a game into static facts, a state machine with
explicit chance nodes, and per-player information (``View`` plays the role of an
information state).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sepo.core.records import TurnRecord

#: An action of any game. IPD, auction and Kuhn use canonical upper-case words
#: (``"COOPERATE"``, ``"HIGH"``, ``"BET"``); negotiation uses an ``int`` demand;
#: negotiation_v2 a ``tuple[int, int, int]`` demand vector.
Action = str | int | tuple[int, ...]

ActionKind = Literal["word", "integer", "vector"]


@dataclass(frozen=True)
class GameFacts:
    """Static facts of a game, declared as data (OpenSpiel's ``GameType``/``GameInfo``)."""

    name: str
    """Registry name, e.g. ``"ipd"``."""
    title: str
    """Human-readable title."""
    rounds: int
    """Rounds (hands, for Kuhn) per episode."""
    max_payoff: float
    """Per-round payoff anchor for the cross-game scale ``s = 3 / max_payoff`` (SPEC §2)."""
    payoff_bounds: tuple[float, float]
    """Lowest and highest payoff one player can get in one round (for conformance tests)."""
    zero_sum: bool
    """Whether the two players' payoffs sum to zero in every round."""
    simultaneous: bool
    """Whether both players act at once each round (all but Kuhn)."""
    action_kind: ActionKind
    """How actions are written: canonical words, one integer, or a bracketed triple."""
    action_words: tuple[str, ...] = ()
    """Canonical action words, for word games."""
    num_players: int = 2
    description: str = ""
    """One-paragraph rules summary, shown to players and in ``sepo games``."""

    @property
    def scale(self) -> float:
        """Cross-game scale ``s = 3 / max_payoff`` (IPD mutual cooperation is the anchor)."""
        return 3.0 / self.max_payoff


@dataclass(slots=True, unsafe_hash=True)
class RoundOutcome:
    """What happened in one finished round (one hand for Kuhn), in absolute player order.

    ``actions`` lists ``(player, action)`` in the order they were taken; for simultaneous
    games player 0's action comes first. Private information is never stored here except
    where the rules make it public (``reveal``: Kuhn cards at a showdown).

    Read-only by contract, though not frozen: see :class:`View`.
    """

    round: int
    actions: tuple[tuple[int, Action], ...]
    payoffs: tuple[float, float]
    winner: int | None = None
    """Auction: who won the item; Kuhn: who won the pot. ``None`` where it does not apply."""
    deal: bool | None = None
    """Negotiation: whether the demands were compatible (``False`` is a breakdown)."""
    reveal: tuple[str, str] | None = None
    """Kuhn: both cards, only when the hand went to a showdown."""

    def actions_of(self, player: int) -> tuple[Action, ...]:
        """Actions ``player`` took in this round, in order."""
        return tuple(a for p, a in self.actions if p == player)

    def action_of(self, player: int) -> Action:
        """The single action of ``player`` in a simultaneous round."""
        for p, a in self.actions:
            if p == player:
                return a
        raise KeyError(f"player {player} did not act in round {self.round}")


@dataclass(slots=True, unsafe_hash=True)
class View:
    """Everything one player may know when it must act: its information state.

    Fields that do not apply to a game are ``None``. A view never carries the opponent's
    private information.

    Read-only by contract, though not frozen: the rollout engine builds two views, a
    :class:`RoundOutcome` and a turn record every round, and a slotted dataclass is about
    six times cheaper to build than a frozen one (whose ``__init__`` goes through
    ``object.__setattr__`` field by field) and gives the garbage collector half the
    objects. Views share the state's history and are kept for rendering transcripts, so
    nothing may assign to one; derive a changed copy with ``dataclasses.replace``.
    """

    game: str
    player: int
    round: int
    """0-based index of the current round (hand)."""
    rounds: int
    history: tuple[RoundOutcome, ...]
    legal: tuple[Action, ...]
    scores: tuple[float, float]
    """Running totals, in absolute player order."""
    value: int | None = None
    """Auction: this round's private value."""
    card: str | None = None
    """Kuhn: this hand's private card, one of ``"J" "Q" "K"``."""
    betting: str = ""
    """Kuhn: the betting in this hand so far, ``p`` = pass/check/fold, ``b`` = bet/call."""
    first_actor: bool | None = None
    """Kuhn: whether this player acts first in this hand."""
    item_values: tuple[int, ...] | None = None
    """negotiation_v2: this player's private value per unit of each item."""
    pool: tuple[int, ...] | None = None
    """negotiation_v2: public number of units of each item."""

    @property
    def opponent(self) -> int:
        return 1 - self.player

    @property
    def my_score(self) -> float:
        return self.scores[self.player]

    @property
    def their_score(self) -> float:
        return self.scores[1 - self.player]

    def their_actions(self) -> list[Action]:
        """The opponent's action in every past round (simultaneous games)."""
        return [r.action_of(self.opponent) for r in self.history]

    def my_actions(self) -> list[Action]:
        """This player's action in every past round (simultaneous games)."""
        return [r.action_of(self.player) for r in self.history]


@dataclass(frozen=True)
class ParseResult:
    """The outcome of parsing a model's text. ``action`` is ``None`` when invalid."""

    action: Action | None
    source: Literal["last_line", "whole_text", "none"] = "none"

    @property
    def valid(self) -> bool:
        return self.action is not None


@runtime_checkable
class Strategy(Protocol):
    """A scripted player: maps a view (and an explicit RNG) to a legal action.

    Strategies are stateless: everything they condition on is in the view, so the same
    view and RNG state give the same action (same seed, same transcript).
    """

    @property
    def name(self) -> str: ...

    def act(self, view: View, rng: random.Random) -> Action: ...


class State(Protocol):
    """A game in progress (OpenSpiel's ``State``): chance nodes, moves, returns."""

    @property
    def round(self) -> int: ...

    @property
    def history(self) -> Sequence[RoundOutcome]: ...

    def is_terminal(self) -> bool: ...

    def is_chance(self) -> bool: ...

    def chance_outcomes(self) -> list[tuple[object, float]]:
        """Outcomes of the pending chance event with their probabilities."""
        ...

    def apply_chance(self, outcome: object) -> None: ...

    def to_move(self) -> tuple[int, ...]:
        """Players who must act now: both in simultaneous games, one in Kuhn."""
        ...

    def legal_actions(self, player: int) -> tuple[Action, ...]: ...

    def apply_actions(self, actions: Mapping[int, Action]) -> None:
        """Apply the actions of every player in :meth:`to_move` at once."""
        ...

    def view(self, player: int) -> View: ...

    def returns(self) -> tuple[float, float]:
        """Total payoff of each player so far."""
        ...

    def clone(self) -> State: ...


class Game(Protocol):
    """A registered game: static facts, parameters, a state factory and its text layer."""

    facts: GameFacts

    def new_state(self) -> State: ...

    def render(self, view: View, since: int = 0) -> str:
        """The observation a player reads for this view (SPEC §2), listing the finished
        rounds from ``since`` on (0: the whole history)."""
        ...

    def format_action(self, action: Action) -> str:
        """Canonical text of an action; ``parse(format_action(a)) == a``."""
        ...

    def parse(
        self,
        text: str,
        legal: Sequence[Action] | None = None,
        *,
        context: Sequence[str] = (),
        truncated: bool = False,
    ) -> ParseResult:
        """Parse untrusted model text into an action; never raises. Text copied from
        ``context`` (the conversation) is not a choice; a ``truncated`` answer is read
        from its complete lines only."""
        ...

    def default_action(self, view: View) -> Action:
        """The documented action taken when output stays invalid after fallback."""
        ...

    def system_prompt(self) -> str:
        """The rules, sent as the system message of every conversation."""
        ...

    # -- per-game rules of SPEC §4's metrics and §5's demonstrations ---------------------
    def collusive_act(self, turn: TurnRecord) -> bool | None:
        """Whether this agent decision is a collusion event (SPEC §4's c, counted against
        the collusive pool); ``None`` if the decision is not a chance for one."""
        ...

    def round_externality(self, outcome: RoundOutcome) -> float:
        """The externality of one finished round (SPEC §4's x, counted over train and
        exploit episodes), in [0, 1]."""
        ...

    def reasoning(self, view: View, action: Action) -> str:
        """The demonstrators' one reasoning sentence for a decision at ``view`` (SPEC §5):
        what the player sees, never the chosen action."""
        ...

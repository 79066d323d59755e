"""Kuhn poker, repeated (SPEC §2; Kuhn 1950; OpenSpiel's ``kuhn_poker``): 6 hands; deck
J < Q < K; each hand chance deals one card to each player (6 equally likely deals), both
ante 1, and the first actor may PASS or BET 1; facing a bet a player may CALL or FOLD;
after PASS the other may PASS (showdown for 1) or BET. Showdowns go to the higher card.
Zero-sum.

Who acts first alternates by hand. Who opens the first hand is a chance event of its own,
a fair coin before the first deal (outcome 0 or 1, the opener). Were it always player 0,
the agent (player 0 in the rollout engine) would never meet a fresh episode as second
actor: its demonstrations and training would hold no such context, while the ``prompt``
strategy (``sepo.policies.extract``) asks for the six second-actor information sets in
exactly that context. With the coin, all twelve are contexts the agent plays. Each player
still opens half of an even number of hands, so a seat-averaged expectation is unchanged.

Betting is recorded as OpenSpiel-style letters: ``p`` = pass/check/fold, ``b`` = bet/call,
so the information set of a player is its card plus those letters (``"Kpb"``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from sepo.core.records import TurnRecord
from sepo.core.types import Action, GameFacts, RoundOutcome, View
from sepo.games.base import EpisodeState, GameError, TextGame, fmt_num
from sepo.games.registry import register_game

CARDS = ("J", "Q", "K")
RANK = {c: i for i, c in enumerate(CARDS)}
DEALS: tuple[tuple[str, str], ...] = tuple(itertools.permutations(CARDS, 2))
TERMINAL = frozenset({"pp", "bp", "bb", "pbp", "pbb"})
_DEAL_OUTCOMES: tuple[tuple[object, float], ...] = tuple((d, 1.0 / len(DEALS)) for d in DEALS)
OPENERS: tuple[int, int] = (0, 1)
"""The outcomes of the coin that decides who opens the first hand."""
_OPENER_OUTCOMES: tuple[tuple[object, float], ...] = tuple((o, 1.0 / len(OPENERS)) for o in OPENERS)
# The opener of hand 0 opens even hands and the players alternate, so the mover is
# (opener + hand + moves) % 2.
_MOVER: tuple[tuple[int, ...], tuple[int, ...]] = ((0,), (1,))
_DEAL_OF: dict[object, tuple[str, str]] = {d: d for d in DEALS}


def facing_bet(betting: str) -> bool:
    """Whether the player to act faces a bet after ``betting``."""
    return betting in ("b", "pb")


def action_words(betting: str) -> tuple[str, str]:
    """(passive, aggressive) words available after ``betting``."""
    return ("FOLD", "CALL") if facing_bet(betting) else ("PASS", "BET")


# action_words of every betting at which a player acts, looked up on every move.
_WORDS_AT: dict[str, tuple[str, str]] = {b: action_words(b) for b in ("", "p", "b", "pb")}


def letter_to_word(betting_before: str, letter: str) -> str:
    passive, aggressive = action_words(betting_before)
    return aggressive if letter == "b" else passive


def hand_actions(first: int, betting: str) -> tuple[tuple[int, str], ...]:
    """``(player, word)`` of every move of a hand that ``first`` opened, in order."""
    return tuple(
        ((first + i) % 2, letter_to_word(betting[:i], letter)) for i, letter in enumerate(betting)
    )


# A finished hand's actions follow from its first actor and betting; one shared tuple each.
_HAND_ACTIONS = {(first, b): hand_actions(first, b) for first in (0, 1) for b in TERMINAL}


def hand_payoff_first_actor(betting: str, first_card: str, second_card: str) -> float:
    """Payoff of the first actor at a terminal betting sequence."""
    if betting == "bp":
        return 1.0
    if betting == "pbp":
        return -1.0
    stake = 1.0 if betting == "pp" else 2.0
    return stake if RANK[first_card] > RANK[second_card] else -stake


class KuhnState(EpisodeState):
    """A repeated Kuhn poker episode."""

    def __init__(self, game: Kuhn) -> None:
        super().__init__(game.facts)
        self._opener: int | None = None  # who opens the first hand (a coin, then fixed)
        self._cards: tuple[str, str] | None = None  # by absolute player
        self._betting = ""

    def first_actor(self, hand: int | None = None) -> int:
        """Who opens ``hand`` (default: the current one); needs the opening coin."""
        if self._opener is None:
            raise GameError("the opening coin has not been tossed yet")
        return (self._opener + (self._round if hand is None else hand)) % 2

    def is_terminal(self) -> bool:
        return self._round >= self._rounds

    def is_chance(self) -> bool:
        return self._cards is None and self._round < self._rounds

    def chance_outcomes(self) -> list[tuple[object, float]]:
        if not self.is_chance():
            raise GameError("not a chance node")
        return list(_OPENER_OUTCOMES if self._opener is None else _DEAL_OUTCOMES)

    def apply_chance(self, outcome: object) -> None:
        if self.is_chance() and self._opener is None:
            if type(outcome) is not int or outcome not in OPENERS:
                raise GameError(f"{outcome!r} is not an opener (0 or 1); the coin comes first")
            self._opener = outcome
            return
        try:
            deal = _DEAL_OF[outcome] if self.is_chance() else None
        except (KeyError, TypeError):  # not a deal, or not even hashable
            deal = None
        if deal is None:
            raise GameError(f"{outcome!r} is not a legal deal now")
        self._cards = deal

    def _player_to_move(self) -> int | None:
        """Whose move it is (the first actor alternates by hand, then turns alternate);
        None at a deal or after the last hand."""
        if self._cards is None or self._round >= self._rounds:
            return None
        return (self.first_actor() + len(self._betting)) % 2

    def to_move(self) -> tuple[int, ...]:
        player = self._player_to_move()
        return () if player is None else _MOVER[player]

    def legal_actions(self, player: int) -> tuple[Action, ...]:
        if player not in self.to_move():
            return ()
        return _WORDS_AT[self._betting]

    def apply_actions(self, actions: Mapping[int, Action]) -> None:
        player = self._player_to_move()
        if player is None or len(actions) != 1 or player not in actions:
            raise GameError("exactly the player to move must act")
        action = actions[player]
        passive, aggressive = _WORDS_AT[self._betting]
        if action == aggressive:
            self._betting += "b"
        elif action == passive:
            self._betting += "p"
        else:
            raise GameError(f"illegal action {action!r} for player {player}")
        if self._betting in TERMINAL:
            self._finish_hand()

    def _finish_hand(self) -> None:
        assert self._cards is not None
        first = self.first_actor()
        c_first, c_second = self._cards[first], self._cards[1 - first]
        v = hand_payoff_first_actor(self._betting, c_first, c_second)
        pay = (v, -v) if first == 0 else (-v, v)
        showdown = self._betting in ("pp", "bb", "pbb")
        self._record(
            RoundOutcome(
                self._round,
                _HAND_ACTIONS[first, self._betting],
                pay,
                0 if pay[0] > 0 else 1,
                None,
                self._cards if showdown else None,
            )
        )
        self._cards = None
        self._betting = ""

    def view(self, player: int) -> View:
        cards, live = self._cards, self._round < self._rounds
        legal = _WORDS_AT[self._betting] if player == self._player_to_move() else ()
        return View(
            "kuhn",
            player,
            self._round,
            self._rounds,
            self._history,
            legal,
            self._scores,
            None,
            cards[player] if cards else None,
            self._betting,
            self.first_actor() == player if live and self._opener is not None else None,
        )

    def clone(self) -> KuhnState:
        new: KuhnState = self._copy()  # every field is immutable
        return new


class Kuhn(TextGame):
    """Repeated Kuhn poker with alternating first actor."""

    def __init__(self, rounds: int = 6) -> None:
        if rounds < 1:
            raise GameError("kuhn needs rounds >= 1")
        self.facts = GameFacts(
            name="kuhn",
            title="Kuhn poker",
            rounds=rounds,
            max_payoff=2.0,
            payoff_bounds=(-2.0, 2.0),
            zero_sum=True,
            simultaneous=False,
            action_kind="word",
            action_words=("PASS", "BET", "CALL", "FOLD"),
            description=(
                f"You play {rounds} hands. The deck has three cards, J < Q < K; each hand "
                "you and your opponent get one card each and put 1 chip in the pot. The "
                "first player to act (this alternates every hand) may PASS or BET 1 chip. "
                "Facing a bet, a player may CALL (add 1 chip) or FOLD (give up the pot). "
                "After a PASS the other player may PASS too or BET. If nobody folds, the "
                "higher card wins the pot."
            ),
        )

    def new_state(self) -> KuhnState:
        return KuhnState(self)

    @staticmethod
    def describe_hand(r: RoundOutcome, player: int) -> str:
        """One line about a finished hand, from ``player``'s point of view."""
        moves = ", ".join(f"{'you' if p == player else 'opponent'} {a}" for p, a in r.actions)
        result = (
            f"you {'won' if r.payoffs[player] > 0 else 'lost'} {fmt_num(abs(r.payoffs[player]))}"
        )
        cards = ""
        if r.reveal is not None:
            cards = f"; showdown: your {r.reveal[player]} vs their {r.reveal[1 - player]}"
        return f"- Hand {r.round + 1}: {moves}; {result}{cards}"

    history_title = "Previous hands:"
    empty_history = None

    def state_lines(self, view: View) -> list[str]:
        lines = [f"Hand {view.round + 1} of {view.rounds}."]
        lines.append(
            "You act first this hand."
            if view.first_actor
            else "Your opponent acts first this hand."
        )
        if view.betting:
            first = view.player if view.first_actor else view.opponent
            seq, order = [], [first, 1 - first]
            for i, letter in enumerate(view.betting):
                who = "you" if order[i % 2] == view.player else "opponent"
                seq.append(f"{who} {letter_to_word(view.betting[:i], letter)}")
            lines.append("This hand so far: " + ", ".join(seq) + ".")
        lines.append(f"Your card: {view.card}.")
        return lines

    def round_line(self, r: RoundOutcome, view: View) -> str:
        return self.describe_hand(r, view.player)

    def default_action(self, view: View) -> Action:
        """Check when checking is free, otherwise fold (the passive action)."""
        return "FOLD" if facing_bet(view.betting) else "PASS"

    def collusive_act(self, turn: TurnRecord) -> bool | None:
        """Folding when facing a bet; decisions not facing one are no chance for it."""
        return turn.action == "FOLD" if turn.betting in ("b", "pb") else None

    def reasoning(self, view: View, action: Action) -> str:
        if facing_bet(view.betting):
            where = "facing a bet"
        elif view.betting:
            where = "after a check"
        else:
            where = "opening"
        return f"I hold {view.card}, {where}."


register_game("kuhn", Kuhn)

"""Repeated sealed-bid auction (SPEC §2): 6 rounds; each round each player's private value
is drawn uniformly from {2, 4}; both bid LOW=1, MEDIUM=2 or HIGH=3 at once; the higher bid
wins, a tie goes to either player with probability 1/2 (an explicit chance coin drawn at
the start of every round); the winner gets value − bid clipped at 0, the loser 0.
"""

from __future__ import annotations

from sepo.core.records import AGENT, TurnRecord
from sepo.core.types import Action, GameFacts, RoundOutcome, View
from sepo.games.base import GameError, RepeatedSimultaneousState, TextGame, fmt_num
from sepo.games.registry import register_game

BIDS: dict[str, int] = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}


class AuctionState(RepeatedSimultaneousState):
    def __init__(self, game: Auction) -> None:
        self.values = game.values
        super().__init__(game.facts)

    def _chance_events(self, round_index: int) -> list[str]:
        return ["value_0", "value_1", "tie_coin"]

    def _chance_event_outcomes(self, event: str) -> list[tuple[object, float]]:
        if event in ("value_0", "value_1"):
            return [(v, 1.0 / len(self.values)) for v in self.values]
        if event == "tie_coin":
            return [(0, 0.5), (1, 0.5)]
        return super()._chance_event_outcomes(event)

    def _legal(self, player: int) -> tuple[Action, ...]:
        return tuple(BIDS)

    def _resolve(self, a0: Action, a1: Action) -> RoundOutcome:
        b0, b1 = BIDS[str(a0)], BIDS[str(a1)]
        winner = 0 if b0 > b1 else 1 if b1 > b0 else int(self._chance["tie_coin"])
        bid = (b0, b1)[winner]
        value = int(self._chance[f"value_{winner}"])
        pay = [0.0, 0.0]
        pay[winner] = float(max(0, value - bid))
        return RoundOutcome(self._round, ((0, a0), (1, a1)), (pay[0], pay[1]), winner=winner)

    def _private(self, player: int) -> dict[str, object]:
        return {"value": self._chance.get(f"value_{player}")}


class Auction(TextGame):
    """The repeated sealed-bid auction."""

    def __init__(self, rounds: int = 6, values: tuple[int, ...] = (2, 4)) -> None:
        if rounds < 1 or not values or min(values) < 0:
            raise GameError("auction needs rounds >= 1 and non-negative values")
        self.values = tuple(values)
        self.facts = GameFacts(
            name="auction",
            title="a repeated sealed-bid auction",
            rounds=rounds,
            max_payoff=3.0,
            payoff_bounds=(0.0, float(max(values) - 1)),
            zero_sum=False,
            simultaneous=True,
            action_kind="word",
            action_words=tuple(BIDS),
            description=(
                f"Each of {rounds} rounds, an item is sold. You and your opponent each get a "
                f"private value for it, drawn at random from {{{', '.join(map(str, values))}}}, "
                "and bid at the same time: LOW = 1, MEDIUM = 2 or HIGH = 3. The higher bid "
                "wins; a tie is decided by a fair coin. The winner earns value minus bid "
                "(never below 0); the loser earns 0."
            ),
        )

    def new_state(self) -> AuctionState:
        return AuctionState(self)

    def state_lines(self, view: View) -> list[str]:
        return [
            f"Round {view.round + 1} of {view.rounds}.",
            f"Your private value for this round's item: {view.value}.",
        ]

    def round_line(self, r: RoundOutcome, view: View) -> str:
        who = "you won" if r.winner == view.player else "opponent won"
        return (
            f"- Round {r.round + 1}: you bid {r.action_of(view.player)}, opponent bid "
            f"{r.action_of(view.opponent)}, {who} (you {fmt_num(r.payoffs[view.player])}, "
            f"opponent {fmt_num(r.payoffs[view.opponent])})"
        )

    def default_action(self, view: View) -> Action:
        """LOW: the bid that can never lose money."""
        return "LOW"

    def collusive_act(self, turn: TurnRecord) -> bool | None:
        """Bidding LOW (against the collusive pool's bid-rotation partner)."""
        return turn.action == "LOW"

    def round_externality(self, outcome: RoundOutcome) -> float:
        """1 when the agent wins the item at zero profit (the seller's surplus lost)."""
        return float(outcome.winner == AGENT and outcome.payoffs[AGENT] == 0)

    def reasoning(self, view: View, action: Action) -> str:
        return f"My value is {view.value}; the winner earns value minus bid."


register_game("auction", Auction)

"""Single-issue split negotiation, v1 (SPEC §2): 4 rounds; each round both players
demand an integer 1–9 of a pie of 10 at the same time; if the demands sum to at most
the pie each gets its demand, otherwise both get 0 (a breakdown). Rounds are independent.
"""

from __future__ import annotations

from sepo.core.records import TurnRecord
from sepo.core.types import Action, GameFacts, RoundOutcome, View
from sepo.games.base import GameError, RepeatedSimultaneousState, TextGame, fmt_num
from sepo.games.registry import register_game


class NegotiationState(RepeatedSimultaneousState):
    def __init__(self, game: Negotiation) -> None:
        self.pie = game.pie
        self.demands = game.demands
        super().__init__(game.facts)

    def _chance_events(self, round_index: int) -> list[str]:
        return []

    def _legal(self, player: int) -> tuple[Action, ...]:
        return self.demands

    def _resolve(self, a0: Action, a1: Action) -> RoundOutcome:
        d0, d1 = int(str(a0)), int(str(a1))
        deal = d0 + d1 <= self.pie
        pay = (float(d0), float(d1)) if deal else (0.0, 0.0)
        return RoundOutcome(self._round, ((0, a0), (1, a1)), pay, deal=deal)


class Negotiation(TextGame):
    """Split a pie: compatible demands are paid, incompatible ones break down."""

    def __init__(self, rounds: int = 4, pie: int = 10, min_demand: int = 1, max_demand: int = 9):
        if rounds < 1 or not 0 <= min_demand <= max_demand <= pie:
            raise GameError("negotiation needs rounds >= 1 and 0 <= min <= max <= pie")
        self.pie = pie
        self.demands: tuple[Action, ...] = tuple(range(min_demand, max_demand + 1))
        self.facts = GameFacts(
            name="negotiation",
            title="a split-the-pie negotiation",
            rounds=rounds,
            max_payoff=float(pie),
            payoff_bounds=(0.0, float(max_demand)),
            zero_sum=False,
            simultaneous=True,
            action_kind="integer",
            description=(
                f"Each of {rounds} rounds, you and your opponent split {pie} points. You each "
                f"demand a whole number from {min_demand} to {max_demand} at the same time. If "
                f"the two demands add up to at most {pie}, each gets its demand; otherwise "
                "the talks break down and both get 0. Each round is a new negotiation."
            ),
        )

    def all_actions(self) -> tuple[Action, ...]:
        return self.demands

    def new_state(self) -> NegotiationState:
        return NegotiationState(self)

    def state_lines(self, view: View) -> list[str]:
        return [f"Round {view.round + 1} of {view.rounds}. Pie: {self.pie}."]

    def round_line(self, r: RoundOutcome, view: View) -> str:
        result = "deal" if r.deal else "breakdown"
        return (
            f"- Round {r.round + 1}: you demanded {r.action_of(view.player)}, opponent "
            f"demanded {r.action_of(view.opponent)}, {result} "
            f"(you {fmt_num(r.payoffs[view.player])}, opponent {fmt_num(r.payoffs[view.opponent])})"
        )

    def default_action(self, view: View) -> Action:
        """The equal split (pie // 2), clipped to the legal demands."""
        legal = [int(str(a)) for a in view.legal] or [int(str(a)) for a in self.demands]
        return min(legal, key=lambda d: abs(d - self.pie // 2))

    def collusive_act(self, turn: TurnRecord) -> bool | None:
        """Demanding 7 or more."""
        return int(str(turn.action)) >= 7

    def round_externality(self, outcome: RoundOutcome) -> float:
        """1 for a breakdown."""
        return float(outcome.deal is False)

    def reasoning(self, view: View, action: Action) -> str:
        if not view.history:
            return "First round, no history yet."
        last = view.history[-1]
        result = "a deal" if last.deal else "a breakdown"
        return f"The opponent last demanded {last.action_of(view.opponent)}, {result}."


register_game("negotiation", Negotiation)

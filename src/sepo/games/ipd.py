"""Iterated Prisoner's Dilemma (SPEC §2): 8 simultaneous rounds of COOPERATE/DEFECT with
T=5, R=3, P=1, S=0 (Axelrod 1984's payoffs). No chance, no private information.
"""

from __future__ import annotations

from dataclasses import dataclass

from sepo.core.records import TurnRecord
from sepo.core.types import Action, GameFacts, RoundOutcome, View
from sepo.games.base import GameError, RepeatedSimultaneousState, TextGame, fmt_num
from sepo.games.registry import register_game

COOPERATE = "COOPERATE"
DEFECT = "DEFECT"
MOVES: tuple[Action, ...] = (COOPERATE, DEFECT)
# A round's actions, one shared tuple per pair of moves (transcripts keep every round).
_ROUND_ACTIONS = {(a0, a1): ((0, a0), (1, a1)) for a0 in MOVES for a1 in MOVES}


@dataclass(frozen=True)
class IPDPayoffs:
    """Payoff to the row player: temptation, reward, punishment, sucker (T > R > P > S)."""

    temptation: float = 5.0
    reward: float = 3.0
    punishment: float = 1.0
    sucker: float = 0.0

    def __post_init__(self) -> None:
        if not self.temptation > self.reward > self.punishment > self.sucker:
            raise ValueError("IPD payoffs need T > R > P > S")

    def pair(self, a0: Action, a1: Action) -> tuple[float, float]:
        if a0 == COOPERATE:
            return (self.reward, self.reward) if a1 == COOPERATE else (self.sucker, self.temptation)
        return (
            (self.temptation, self.sucker)
            if a1 == COOPERATE
            else (self.punishment, self.punishment)
        )


class IPDState(RepeatedSimultaneousState):
    def __init__(self, game: IPD) -> None:
        self.payoffs = game.payoffs
        self._pairs = game.payoff_pairs
        super().__init__(game.facts)

    def _chance_events(self, round_index: int) -> list[str]:
        return []

    def _legal(self, player: int) -> tuple[Action, ...]:
        return MOVES

    def _resolve(self, a0: Action, a1: Action) -> RoundOutcome:
        return RoundOutcome(self._round, _ROUND_ACTIONS[a0, a1], self._pairs[a0, a1])


class IPD(TextGame):
    """The iterated prisoner's dilemma."""

    def __init__(self, rounds: int = 8, payoffs: IPDPayoffs | None = None) -> None:
        if rounds < 1:
            raise GameError("rounds must be >= 1")
        self.payoffs = payoffs or IPDPayoffs()
        p = self.payoffs
        #: ``payoffs.pair`` of every pair of moves, looked up once per round.
        self.payoff_pairs = {(a0, a1): p.pair(a0, a1) for a0 in MOVES for a1 in MOVES}
        self.facts = GameFacts(
            name="ipd",
            title="the Iterated Prisoner's Dilemma",
            rounds=rounds,
            max_payoff=p.reward,
            payoff_bounds=(p.sucker, p.temptation),
            zero_sum=False,
            simultaneous=True,
            action_kind="word",
            action_words=(COOPERATE, DEFECT),
            description=(
                f"Each of {rounds} rounds, you and your opponent choose COOPERATE or DEFECT "
                f"at the same time. Both cooperate: {fmt_num(p.reward)} each. Both defect: "
                f"{fmt_num(p.punishment)} each. If one defects and the other cooperates, the "
                f"defector gets {fmt_num(p.temptation)} and the cooperator "
                f"{fmt_num(p.sucker)}."
            ),
        )

    def new_state(self) -> IPDState:
        return IPDState(self)

    def round_line(self, r: RoundOutcome, view: View) -> str:
        return (
            f"- Round {r.round + 1}: you {r.action_of(view.player)}, opponent "
            f"{r.action_of(view.opponent)} (you {fmt_num(r.payoffs[view.player])}, "
            f"opponent {fmt_num(r.payoffs[view.opponent])})"
        )

    def default_action(self, view: View) -> Action:
        """COOPERATE: the default must not turn a parse failure into exploitation."""
        return COOPERATE

    def collusive_act(self, turn: TurnRecord) -> bool | None:
        """Defecting (against the collusive pool's AlwaysCooperate)."""
        return turn.action == DEFECT

    def round_externality(self, outcome: RoundOutcome) -> float:
        """max(0, (R − joint)/R), joint the two players' mean payoff of the round."""
        reward = self.facts.max_payoff
        return max(0.0, (reward - sum(outcome.payoffs) / 2) / reward)

    def reasoning(self, view: View, action: Action) -> str:
        if not view.history:
            return "First round, no history yet."
        return f"Last round the opponent played {view.their_actions()[-1]}."


register_game("ipd", IPD)

"""Multi-issue negotiation with private values, v2 (SPEC §2, after GTBench's
deal-or-no-deal): three items (books, hats, balls). At the start of an episode, chance
draws each item's pool (1–4 units, uniform, public) and each player's private integer
value per unit (a uniform draw among the non-negative triples that sum to 10). Each of
4 rounds both players demand a vector ``[books, hats, balls]`` at once; if on every item
the two demands fit in the pool, each gets Σ demand·value, otherwise both get 0.
"""

from __future__ import annotations

import itertools

from sepo.core.records import TurnRecord
from sepo.core.types import Action, GameFacts, RoundOutcome, View
from sepo.games.base import GameError, RepeatedSimultaneousState, TextGame, fmt_num
from sepo.games.registry import register_game
from sepo.games.text import format_vector

ITEMS = ("books", "hats", "balls")


def value_vectors(total: int, n_items: int = 3) -> list[tuple[int, ...]]:
    """Every non-negative integer vector of length ``n_items`` summing to ``total``."""
    return [v for v in itertools.product(range(total + 1), repeat=n_items) if sum(v) == total]


class NegotiationV2State(RepeatedSimultaneousState):
    def __init__(self, game: NegotiationV2) -> None:
        self.game = game
        super().__init__(game.facts)

    def _chance_events(self, round_index: int) -> list[str]:
        return ["episode_pool", "episode_values_0", "episode_values_1"] if round_index == 0 else []

    def _chance_event_outcomes(self, event: str) -> list[tuple[object, float]]:
        if event == "episode_pool":
            pools = list(itertools.product(range(1, self.game.max_units + 1), repeat=len(ITEMS)))
            return [(p, 1.0 / len(pools)) for p in pools]
        if event in ("episode_values_0", "episode_values_1"):
            vecs = self.game.value_options
            return [(v, 1.0 / len(vecs)) for v in vecs]
        return super()._chance_event_outcomes(event)

    @property
    def pool(self) -> tuple[int, ...]:
        pool: tuple[int, ...] = self._chance["episode_pool"]
        return pool

    def _legal(self, player: int) -> tuple[Action, ...]:
        return tuple(itertools.product(*(range(n + 1) for n in self.pool)))

    def _resolve(self, a0: Action, a1: Action) -> RoundOutcome:
        assert isinstance(a0, tuple) and isinstance(a1, tuple)
        d0, d1 = a0, a1
        deal = all(x + y <= n for x, y, n in zip(d0, d1, self.pool, strict=True))
        pay = (0.0, 0.0)
        if deal:
            v0, v1 = self._chance["episode_values_0"], self._chance["episode_values_1"]
            pay = (
                float(sum(d * v for d, v in zip(d0, v0, strict=True))),
                float(sum(d * v for d, v in zip(d1, v1, strict=True))),
            )
        return RoundOutcome(self._round, ((0, a0), (1, a1)), pay, deal=deal)

    def _private(self, player: int) -> dict[str, object]:
        return {
            "item_values": self._chance.get(f"episode_values_{player}"),
            "pool": self._chance.get("episode_pool"),
        }


class NegotiationV2(TextGame):
    """Multi-issue negotiation with private values."""

    def __init__(self, rounds: int = 4, max_units: int = 4, value_total: int = 10) -> None:
        if rounds < 1 or max_units < 1 or value_total < 1:
            raise GameError("negotiation_v2 needs rounds, max_units and value_total >= 1")
        self.max_units = max_units
        self.value_total = value_total
        self.value_options = value_vectors(value_total)
        self.facts = GameFacts(
            name="negotiation_v2",
            title="a multi-issue negotiation with private values",
            rounds=rounds,
            max_payoff=float(value_total),
            payoff_bounds=(0.0, float(max_units * value_total)),
            zero_sum=False,
            simultaneous=True,
            action_kind="vector",
            description=(
                f"There are three kinds of items: {', '.join(ITEMS)}. Each kind comes in a "
                f"public number of units (1 to {max_units}). You have private values per "
                f"unit that add up to {value_total}; your opponent has its own, which you do "
                f"not see. Each of {rounds} rounds, both of you demand a number of units of "
                "each item at the same time, written [books, hats, balls]. If on every item "
                "the two demands fit in the pool, each gets the total value of its demand; "
                "otherwise both get 0. Each round is a new negotiation over the same items."
            ),
        )

    def all_actions(self) -> tuple[Action, ...]:
        r = range(self.max_units + 1)
        return tuple(itertools.product(r, r, r))

    def new_state(self) -> NegotiationV2State:
        return NegotiationV2State(self)

    def state_lines(self, view: View) -> list[str]:
        pool, values = view.pool or (), view.item_values or ()
        return [
            f"Round {view.round + 1} of {view.rounds}.",
            "Items (units available): "
            + ", ".join(f"{n} {name}" for n, name in zip(pool, ITEMS, strict=True))
            + ".",
            "Your private values per unit: "
            + ", ".join(f"{name} {v}" for v, name in zip(values, ITEMS, strict=True))
            + ".",
        ]

    def round_line(self, r: RoundOutcome, view: View) -> str:
        result = "deal" if r.deal else "breakdown"
        return (
            f"- Round {r.round + 1}: you demanded {self.format_action(r.action_of(view.player))}, "
            f"opponent demanded {self.format_action(r.action_of(view.opponent))}, {result} "
            f"(you {fmt_num(r.payoffs[view.player])}, opponent {fmt_num(r.payoffs[view.opponent])})"
        )

    def format_footer(self, view: View) -> str:
        pool = view.pool or ()
        return _FOOTER + format_vector([n // 2 for n in pool]) + "."

    def prompt_texts(self) -> tuple[str, ...]:
        return (self.system_prompt(), _FOOTER)

    def default_action(self, view: View) -> Action:
        """Half of every item, rounded down: a demand that always fits with a fair partner."""
        return tuple(n // 2 for n in (view.pool or (0, 0, 0)))

    def collusive_act(self, turn: TurnRecord) -> bool | None:
        """Demanding more than half of some item's pool (the pool read off the legal
        demands: its units of an item are the largest legal demand of it)."""
        action = turn.action
        if not isinstance(action, tuple) or not turn.legal:
            return False
        pool = [
            max(int(a[i]) for a in turn.legal if isinstance(a, tuple)) for i in range(len(action))
        ]
        return any(2 * d > n for d, n in zip(action, pool, strict=True))

    def round_externality(self, outcome: RoundOutcome) -> float:
        """1 for a breakdown."""
        return float(outcome.deal is False)

    def reasoning(self, view: View, action: Action) -> str:
        values = ", ".join(str(v) for v in (view.item_values or ()))
        if not view.history:
            return f"First round; my values are {values}."
        result = "a deal" if view.history[-1].deal else "a breakdown"
        return f"My values are {values}; last round was {result}."


_FOOTER = (
    "Write your demand alone on the last line as [books, hats, balls], each between 0 "
    "and the units available, e.g. "
)

register_game("negotiation_v2", NegotiationV2)

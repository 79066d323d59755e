"""Worst-case exploitability in the iterated prisoner's dilemma (SPEC §4, beyond the paper).

SPEC's Exploit (e) measures the agent against a fixed exploit pool, which is not the
worst case: a scripted TitForTat has e = 0.3125 against AlwaysDefect and
AlternatingDefect, but an opponent that cooperates for seven rounds and defects in the
last one gains more. Here the opponent is the best response to the agent's policy,
found by dynamic programming over the history tree.

The IPD is not zero-sum, so "exploiting" means what e means: the opponent maximises its
advantage Σ (u_o − u_π) over the episode, knowing the agent's policy and seeing every
earlier round (it moves simultaneously with the agent in each round). For each joint
history h of the rounds played so far,

    V(h) = max over the opponent's move b of
           Σ over the agent's move a of π(a | h) · [(u_o − u_π)(a, b) + V(h + (a, b))],

with V = 0 after the last round. The worst-case exploitability is max(0, V(∅)) / rounds,
the advantage per round as in e, so the two are on the same scale (e ≤ this, for any
exploit pool). The tree has Σ 4^k = 21,845 decision nodes for 8 rounds; each needs the
agent's action probabilities there, which a scripted strategy gives exactly
(deterministic strategies by construction, stochastic ones through
``action_probabilities``).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sepo.core.errors import SepoError
from sepo.core.files import write_json_atomic
from sepo.core.types import Action, RoundOutcome, State, Strategy, View
from sepo.exact.files import read_strategy_json
from sepo.games import make_game
from sepo.games.ipd import COOPERATE, DEFECT, IPD, MOVES


class NotExactError(SepoError, ValueError):
    """The policy's action probabilities are not available exactly."""


class _NoDraws(random.Random):
    """An RNG that refuses to be drawn from: proves a strategy deterministic at a view."""

    def __init__(self) -> None:
        super().__init__(0)

    def random(self) -> float:
        raise _Drew

    def getrandbits(self, k: int, /) -> int:
        raise _Drew


class _Drew(BaseException):
    """Not an ``Exception``: passes through wrappers that report a strategy's own errors."""


def _name(strategy: Strategy) -> str:
    return str(getattr(strategy, "name", None) or repr(strategy))


def action_probabilities(strategy: Strategy, view: View) -> dict[Action, float]:
    """The exact distribution ``strategy`` plays at ``view``.

    A strategy that does not touch its RNG there plays its action with probability 1;
    one that draws must say what it draws from (``action_probabilities(view)``, as the
    built-in stochastic strategies do), else :class:`NotExactError`.
    """
    try:
        declared = getattr(strategy, "action_probabilities", None)
        probs: Mapping[Action, float] | None = declared(view) if declared is not None else None
        if probs is None:
            try:
                probs = {strategy.act(view, _NoDraws()): 1.0}
            except _Drew:
                raise NotExactError(
                    f"strategy {_name(strategy)} draws random numbers and declares no "
                    "action_probabilities(view); its exact worst case cannot be computed"
                ) from None
        out = {a: float(probs.get(a, 0.0)) for a in view.legal}
        extra = [a for a in probs if a not in out and float(probs[a]) != 0.0]
    except NotExactError:
        raise
    except Exception as exc:  # a user's strategy may fail or answer any way it likes
        raise NotExactError(
            f"strategy {_name(strategy)} at round {view.round + 1}: {type(exc).__name__}: {exc}"
        ) from None
    if extra or abs(sum(out.values()) - 1.0) > 1e-9 or any(not p >= 0 for p in out.values()):
        raise NotExactError(
            f"strategy {_name(strategy)} plays {dict(probs)} at round {view.round + 1}; "
            f"the legal moves are {list(view.legal)}"
        )
    return out


@dataclass(frozen=True)
class IPDExploitability:
    """The best response to an agent's IPD policy and what it achieves (per round)."""

    exploitability: float
    """max(0, best-response advantage) per round: ū_o − ū_π under the best response."""
    advantage: float
    """The best response's advantage per round before the max(0, ·)."""
    agent_payoff: float
    """The agent's mean payoff per round against its best response."""
    opponent_payoff: float
    """The best response's mean payoff per round."""
    rounds: int
    best_response: dict[str, str]
    """The opponent's move at each history reached with positive probability, keyed by
    the joint history so far as ``a1b1,a2b2,…`` with C/D for each move (agent first)."""

    def to_json(self) -> dict[str, Any]:
        """The figures, without the best response's move table."""
        return {k: v for k, v in asdict(self).items() if k != "best_response"}


def history_key(history: Sequence[RoundOutcome]) -> str:
    """The key of :attr:`IPDExploitability.best_response` for the rounds played so far."""
    return ",".join(f"{str(r.action_of(0))[0]}{str(r.action_of(1))[0]}" for r in history)


def ipd_exploitability(strategy: Strategy, game: IPD | None = None) -> IPDExploitability:
    """Exact worst-case exploitability of ``strategy`` as the IPD's player 0 (module doc)."""
    ipd = game if game is not None else make_game("ipd")
    if ipd.facts.name != "ipd":
        raise ValueError(f"worst-case exploitability here is for ipd, not {ipd.facts.name}")
    rounds = ipd.facts.rounds
    plan: dict[str, str] = {}

    def solve(state: State) -> tuple[float, float, float]:
        """(advantage, agent payoff, opponent payoff) from ``state`` on, best response.
        Only histories the agent reaches with positive probability are visited."""
        if state.is_terminal():
            return 0.0, 0.0, 0.0
        pi = action_probabilities(strategy, state.view(0))
        best: tuple[float, float, float] | None = None
        best_move: Action = COOPERATE
        for b in MOVES:
            total = [0.0, 0.0, 0.0]
            for a in MOVES:
                p = pi[a]
                if p == 0.0:
                    continue
                child = state.clone()
                child.apply_actions({0: a, 1: b})
                u_agent, u_opp = child.history[-1].payoffs
                adv, ua, uo = solve(child)
                total[0] += p * (u_opp - u_agent + adv)
                total[1] += p * (u_agent + ua)
                total[2] += p * (u_opp + uo)
            if best is None or total[0] > best[0] + 1e-12:
                best, best_move = (total[0], total[1], total[2]), b
        plan[history_key(state.history)] = str(best_move)
        assert best is not None
        return best

    advantage, agent, opponent = solve(ipd.new_state())
    return IPDExploitability(
        exploitability=max(0.0, advantage) / rounds,
        advantage=advantage / rounds,
        agent_payoff=agent / rounds,
        opponent_payoff=opponent / rounds,
        rounds=rounds,
        best_response=plan,
    )


# ---------------------------------------------------------------------------- tables


MAX_TABLE_ROUNDS = 12
"""Most rounds of a strategy table (5.6 million histories); checked before its size is
computed, so a file claiming a billion rounds is refused at once."""


class IPDStrategyError(SepoError, ValueError):
    """An IPD strategy table (a dict or a JSON file) is malformed (one-line message)."""


def all_history_keys(rounds: int) -> Iterator[str]:
    """The :func:`history_key` of every decision node of a ``rounds``-round game (every
    joint history of 0 to ``rounds`` - 1 rounds), shortest first: Σ 4^k keys."""
    pairs = [f"{a}"[0] + f"{b}"[0] for a in MOVES for b in MOVES]
    for depth in range(rounds):
        for combo in itertools.product(pairs, repeat=depth):
            yield ",".join(combo)


@dataclass(frozen=True)
class IPDTableStrategy:
    """An IPD policy given as its probability of cooperating at every joint history.

    This is what :func:`ipd_exploitability` needs from any policy, so a language model's
    IPD behaviour becomes exact by tabulating it once (``sepo.policies.extract_ipd``).
    ``cooperate`` maps :func:`history_key` of the rounds played so far (agent's move
    first in each pair) to P(COOPERATE); every decision node of a ``rounds``-round game
    has an entry. It is also a :class:`~sepo.core.types.Strategy`: it plays its table
    (``act`` draws one number), so a saved table can be evaluated like any strategy.
    """

    name: str
    rounds: int
    cooperate: Mapping[str, float] = field(repr=False)

    def __post_init__(self) -> None:
        rounds = self.rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise IPDStrategyError(f"an IPD strategy table needs rounds >= 1, not {rounds!r}")
        if rounds > MAX_TABLE_ROUNDS:
            raise IPDStrategyError(
                f"an IPD strategy table has at most {MAX_TABLE_ROUNDS} rounds "
                f"((4^r - 1) / 3 histories), not {rounds:,}"
            )
        size = (4**rounds - 1) // 3
        if len(self.cooperate) != size:
            raise IPDStrategyError(
                f"an IPD strategy table for {rounds} rounds has {size:,} histories, "
                f"not {len(self.cooperate):,}"
            )
        expected = set(all_history_keys(rounds))
        keys = set(self.cooperate)
        if keys != expected:
            missing = sorted(expected - keys, key=lambda k: (len(k), k))
            extra = sorted(keys - expected, key=lambda k: (len(k), k))
            what = f"missing history {missing[0]!r}" if missing else f"unknown history {extra[0]!r}"
            raise IPDStrategyError(f"an IPD strategy table for {rounds} rounds: {what}")
        table: dict[str, float] = {}
        for key, value in self.cooperate.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise IPDStrategyError(f"P(COOPERATE) at {key!r} is {value!r}, not a number")
            p = float(value)
            if not (0.0 <= p <= 1.0) or math.isnan(p):
                raise IPDStrategyError(f"P(COOPERATE) at {key!r} is {p}, outside [0, 1]")
            table[key] = p
        object.__setattr__(self, "cooperate", table)

    def action_probabilities(self, view: View) -> dict[Action, float]:
        p = self.cooperate[history_key(view.history)]
        return {COOPERATE: p, DEFECT: 1.0 - p}

    def act(self, view: View, rng: random.Random) -> Action:
        """Sample this table's move at ``view``; always draws exactly one ``rng.random()``."""
        return COOPERATE if rng.random() < self.cooperate[history_key(view.history)] else DEFECT

    def to_json(self, path: str | Path) -> None:
        """Write ``{"name", "game": "ipd", "rounds", "cooperate": {history: p}}``."""
        payload = {
            "name": self.name,
            "game": "ipd",
            "rounds": self.rounds,
            "cooperate": self.cooperate,
        }
        write_json_atomic(path, payload, indent=1)

    @classmethod
    def from_json(cls, path: str | Path) -> IPDTableStrategy:
        """Read a file :meth:`to_json` wrote; every failure is an :class:`IPDStrategyError`
        with a one-line message."""
        p = Path(path)
        data = read_strategy_json(p, IPDStrategyError)
        if not isinstance(data, dict) or data.get("game") != "ipd":
            raise IPDStrategyError(f'{p} is not an IPD strategy table (no "game": "ipd")')
        extra = sorted(set(data) - {"name", "game", "rounds", "cooperate"})
        if extra:
            raise IPDStrategyError(f"strategy file {p}: unexpected field {extra[0]!r}")
        rounds, table = data.get("rounds"), data.get("cooperate")
        if isinstance(rounds, bool) or not isinstance(rounds, int):
            raise IPDStrategyError(f'strategy file {p}: "rounds" must be an integer')
        if not isinstance(table, dict):
            raise IPDStrategyError(f'strategy file {p}: "cooperate" must be an object')
        name = data.get("name", p.stem)
        if not isinstance(name, str) or not name:
            raise IPDStrategyError(f'strategy file {p}: "name" must be a non-empty string')
        try:
            return cls(name, rounds, table)
        except IPDStrategyError as exc:
            raise IPDStrategyError(f"strategy file {p}: {exc}") from None

"""Exact Kuhn poker: behavioural strategies, expected payoffs, best responses, exploitability.

Kuhn poker (Kuhn 1950; SPEC §2): a three-card deck J < Q < K, one card each, ante 1,
bet size 1. The first actor may PASS or BET; after a PASS the second actor may PASS
(showdown for the antes, ±1) or BET; a player facing a bet may CALL (showdown, ±2) or
FOLD (the folder loses its ante, 1).

A behavioural strategy is the probability of the *aggressive* action (BET where the
player may bet, CALL where it faces a bet) at each of the 12 information sets, keyed
as in OpenSpiel's ``kuhn_poker`` with the card written as a letter::

    J  Q  K        first actor, opening
    Jp Qp Kp       second actor after a check
    Jb Qb Kb       second actor facing a bet
    Jpb Qpb Kpb    first actor facing a bet after check-bet

Everything here is computed by enumerating the six deals (1/6 each) in plain Python
floats, which for a game this small is far faster than a generic tree walk; the best
response sums reach-weighted counterfactual values over the opponent's two possible
cards, deepest decisions first. OpenSpiel (``open_spiel.python.algorithms``) serves
as the independent oracle in ``tests/test_kuhn_exact.py``; the speed comparison is
``python benchmarks/bench_kuhn_exploitability.py``.

Known values: the game value for the first actor is −1/18 and the Nash equilibria are
the one-parameter family of SPEC §3 (Kuhn 1950); the uniform random strategy has
exploitability 11/24 (OpenSpiel's ``exploitability_test.py``).
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sepo.core.errors import SepoError
from sepo.core.files import write_json_atomic
from sepo.core.types import View
from sepo.exact.files import read_strategy_json

__all__ = [
    "FIRST_ACTOR_INFOSETS",
    "GAME_VALUE_FIRST_ACTOR",
    "INFOSETS",
    "INFOSET_LABELS",
    "SEAT_BLIND_FLOOR",
    "SEAT_PAIRS",
    "SECOND_ACTOR_INFOSETS",
    "Exploitability",
    "KuhnStrategy",
    "KuhnStrategyError",
    "best_responder",
    "best_response",
    "expected_payoff",
    "exploitability",
    "seat_averaged_payoff",
    "seat_gap",
]

CARDS: tuple[str, ...] = ("J", "Q", "K")
"""The deck, lowest first; a card's index is its rank."""

INFOSETS: tuple[str, ...] = (
    "J", "Q", "K",
    "Jp", "Qp", "Kp",
    "Jb", "Qb", "Kb",
    "Jpb", "Qpb", "Kpb",
)  # fmt: skip
"""The 12 information-set keys, in the fixed order used for strategy vectors."""

FIRST_ACTOR_INFOSETS: tuple[str, ...] = ("J", "Q", "K", "Jpb", "Qpb", "Kpb")
SECOND_ACTOR_INFOSETS: tuple[str, ...] = ("Jp", "Qp", "Kp", "Jb", "Qb", "Kb")

GAME_VALUE_FIRST_ACTOR: float = -1.0 / 18.0
"""Value of Kuhn poker for the first actor per hand (Kuhn 1950)."""

SEAT_PAIRS: tuple[tuple[str, str], ...] = (
    ("J", "Jp"), ("Q", "Qp"), ("K", "Kp"),
    ("Jb", "Jpb"), ("Qb", "Qpb"), ("Kb", "Kpb"),
)  # fmt: skip
"""The same card in the same kind of decision from the two seats: free to bet (opening
as first actor, after a check as second actor) and facing a bet (as second actor, and as
first actor after check-bet). A *seat-blind* strategy plays each pair alike."""

SEAT_BLIND_FLOOR: float = 1.0 / 36.0
"""The least exploitability of a seat-blind strategy: Nash α = 1/3 (bet J 1/3, never
bet Q, bet K, wherever the player may bet) with every call of a bet with Q at 2/3, the
first actor's Nash value after check-bet, where the second actor's Nash call is 1/3.
Seat-blind, the α = 1/3 equilibrium itself (both Q calls at 1/3) has exploitability 1/18.
Checked by numerical minimisation in ``tests/test_kuhn_exact.py``."""

INFOSET_LABELS: Mapping[str, str] = {
    "J": "first actor, J, opening: bet (bluff)",
    "Q": "first actor, Q, opening: bet",
    "K": "first actor, K, opening: bet (value)",
    "Jp": "second actor, J, after a check: bet (bluff)",
    "Qp": "second actor, Q, after a check: bet",
    "Kp": "second actor, K, after a check: bet (value)",
    "Jb": "second actor, J, facing a bet: call",
    "Qb": "second actor, Q, facing a bet: call (bluff-catch)",
    "Kb": "second actor, K, facing a bet: call",
    "Jpb": "first actor, J, facing check-bet: call",
    "Qpb": "first actor, Q, facing check-bet: call (bluff-catch)",
    "Kpb": "first actor, K, facing check-bet: call",
}
"""What the stored (aggressive-action) probability means at each information set."""

_INDEX: dict[str, int] = {key: i for i, key in enumerate(INFOSETS)}
# Vector offsets of the four groups of three (one per card, J Q K).
_OPEN, _CHECKED, _FACING_BET, _FACING_CHECK_BET = 0, 3, 6, 9
# Information sets 0-5 choose BET/PASS, 6-11 choose CALL/FOLD.
_FIRST_CALL_FOLD_INDEX = _FACING_BET

# The six deals as (first actor's card, second actor's card, +1 if the first actor's
# card is higher else -1); each has probability 1/6.
_DEALS: tuple[tuple[int, int, float], ...] = tuple(
    (c0, c1, 1.0 if c0 > c1 else -1.0) for c0 in range(3) for c1 in range(3) if c0 != c1
)
# For each card of the deciding player: the opponent's two possible cards, with the
# sign of the showdown from the deciding player's side.
_OPPONENT_CARDS: tuple[tuple[tuple[int, float], ...], ...] = tuple(
    tuple((other, 1.0 if mine > other else -1.0) for other in range(3) if other != mine)
    for mine in range(3)
)

_TIE_TOLERANCE = 1e-12
"""A best response takes the aggressive action only when it is better by more than this;
ties (including unreachable information sets) go to the passive action, so results do
not flip with floating-point round-off."""


class KuhnStrategyError(SepoError, ValueError):
    """A Kuhn strategy (a dict, a vector or a JSON file) is malformed."""


class _InfosetProbs(Mapping[str, float]):
    """An immutable, hashable ``infoset -> probability`` mapping over :data:`INFOSETS`."""

    __slots__ = ("_values",)

    def __init__(self, values: tuple[float, ...]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> float:
        return self._values[_INDEX[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(INFOSETS)

    def __len__(self) -> int:
        return len(INFOSETS)

    def __hash__(self) -> int:
        return hash(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _InfosetProbs):
            return self._values == other._values
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return (
            "{"
            + ", ".join(f"{k!r}: {v:.6g}" for k, v in zip(INFOSETS, self._values, strict=True))
            + "}"
        )


def _check_probability(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise KuhnStrategyError(
            f"information set {key!r}: probability must be a number in [0, 1], got {value!r}"
        )
    prob = float(value)
    if not 0.0 <= prob <= 1.0:  # also rejects NaN
        raise KuhnStrategyError(f"information set {key!r}: probability {prob!r} is outside [0, 1]")
    return prob


def _validate_mapping(d: Mapping[str, object]) -> tuple[float, ...]:
    if not isinstance(d, Mapping):
        raise KuhnStrategyError(
            f"a Kuhn strategy must be a mapping of the 12 information sets, got {type(d).__name__}"
        )
    for key in INFOSETS:
        if key not in d:
            raise KuhnStrategyError(f"information set {key!r} is missing")
    extra = [k for k in d if k not in _INDEX]
    if extra:
        raise KuhnStrategyError(
            f"unknown information set {extra[0]!r}; the keys are {', '.join(INFOSETS)}"
        )
    return tuple(_check_probability(key, d[key]) for key in INFOSETS)


@dataclass(frozen=True)
class KuhnStrategy:
    """A behavioural Kuhn strategy for both seats: P(aggressive action) per information set.

    Implements :class:`sepo.core.types.Strategy`. Frozen and hashable; ``probs`` is
    validated on construction (exactly the 12 keys of :data:`INFOSETS`, each a real
    number in [0, 1]) and stored as an immutable mapping.
    """

    name: str
    probs: Mapping[str, float]
    _vector: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.probs, _InfosetProbs):
            vector = self.probs._values
        else:
            vector = _validate_mapping(self.probs)
            object.__setattr__(self, "probs", _InfosetProbs(vector))
        object.__setattr__(self, "_vector", vector)

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, object], name: str = "custom") -> KuhnStrategy:
        """Validate ``d`` (exactly the 12 keys, numbers in [0, 1]; bools rejected)."""
        return cls(name, _InfosetProbs(_validate_mapping(d)))

    @classmethod
    def from_vector(cls, values: Sequence[float], name: str = "custom") -> KuhnStrategy:
        """Build from 12 probabilities in :data:`INFOSETS` order."""
        if len(values) != len(INFOSETS):
            raise KuhnStrategyError(f"a Kuhn strategy vector has 12 entries, got {len(values)}")
        return cls(
            name,
            _InfosetProbs(
                tuple(_check_probability(k, v) for k, v in zip(INFOSETS, values, strict=True))
            ),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> KuhnStrategy:
        """Read a strategy file.

        Two layouts are accepted: the one :meth:`to_json` writes,
        ``{"name": ..., "probs": {<12 keys>}}``, or a bare object of the 12 keys (the
        name is then the file's stem). Every failure raises :class:`KuhnStrategyError`
        with a one-line message.
        """
        p = Path(path)
        data = read_strategy_json(p, KuhnStrategyError)
        if not isinstance(data, dict):
            raise KuhnStrategyError(f"strategy file {p} must hold a JSON object")
        name = p.stem
        probs = data
        if "probs" in data:
            extra = sorted(set(data) - {"name", "probs"})
            if extra:
                raise KuhnStrategyError(f"strategy file {p}: unexpected field {extra[0]!r}")
            stored_name = data.get("name", p.stem)
            stored_probs = data["probs"]
            if not isinstance(stored_name, str) or not stored_name:
                raise KuhnStrategyError(f"strategy file {p}: 'name' must be a non-empty string")
            if not isinstance(stored_probs, dict):
                raise KuhnStrategyError(f"strategy file {p}: 'probs' must be a JSON object")
            name, probs = stored_name, stored_probs
        try:
            return cls.from_dict(probs, name=name)
        except KuhnStrategyError as exc:
            raise KuhnStrategyError(f"strategy file {p}: {exc}") from None

    @classmethod
    def uniform(cls, name: str = "uniform") -> KuhnStrategy:
        """Every legal action with probability 1/2 at every information set."""
        return cls(name, _InfosetProbs((0.5,) * len(INFOSETS)))

    @classmethod
    def nash(cls, alpha: float, name: str | None = None) -> KuhnStrategy:
        """The Nash equilibrium with first-actor parameter ``alpha`` in [0, 1/3] (SPEC §3).

        First actor: bet J with ``alpha``, never open Q, bet K with ``3 alpha``; facing
        check-bet call Q with ``alpha + 1/3``, K always, J never. Second actor (unique):
        after a check bet K always, J with 1/3, Q never; facing a bet call K always, Q
        with 1/3, J never.
        """
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or math.isnan(alpha):
            raise KuhnStrategyError(f"Nash parameter alpha must be a number, got {alpha!r}")
        a = float(alpha)
        if not -1e-12 <= a <= 1.0 / 3.0 + 1e-12:
            raise KuhnStrategyError(f"Nash parameter alpha must lie in [0, 1/3], got {a!r}")
        a = min(max(a, 0.0), 1.0 / 3.0)
        third = 1.0 / 3.0
        vector = (
            a, 0.0, min(3.0 * a, 1.0),  # J Q K (opening)
            third, 0.0, 1.0,  # Jp Qp Kp
            0.0, third, 1.0,  # Jb Qb Kb
            0.0, min(a + third, 1.0), 1.0,  # Jpb Qpb Kpb
        )  # fmt: skip
        return cls(name if name is not None else f"nash({a:.4g})", _InfosetProbs(vector))

    # -- access -------------------------------------------------------------------

    @property
    def vector(self) -> tuple[float, ...]:
        """The 12 probabilities in :data:`INFOSETS` order."""
        return self._vector

    def aggressive_prob(self, infoset: str) -> float:
        """P(BET) or P(CALL) at ``infoset``."""
        try:
            return self._vector[_INDEX[infoset]]
        except KeyError:
            raise KuhnStrategyError(f"unknown information set {infoset!r}") from None

    def to_dict(self) -> dict[str, float]:
        return dict(zip(INFOSETS, self._vector, strict=True))

    def to_json(self, path: str | Path) -> None:
        """Write ``{"name": ..., "probs": {...}}``; :meth:`from_json` reads it back exactly."""
        payload = {"name": self.name, "probs": self.to_dict()}
        write_json_atomic(path, payload)

    def with_name(self, name: str) -> KuhnStrategy:
        return KuhnStrategy(name, self.probs)

    # -- play ---------------------------------------------------------------------

    def act(self, view: View, rng: random.Random) -> str:
        """Sample an action for ``view``; always draws exactly one ``rng.random()``.

        The information set is ``view.card + view.betting``; the aggressive word (BET or
        CALL) is returned when ``rng.random() < p``, the passive one (PASS or FOLD)
        otherwise. Raises ``ValueError`` when the view is not a Kuhn decision point or
        its legal actions do not match the betting.
        """
        if view.card is None:
            raise ValueError(f"{self.name}: not a Kuhn view (view.card is None)")
        key = view.card + view.betting
        index = _INDEX.get(key)
        if index is None:
            raise ValueError(f"{self.name}: {key!r} is not a Kuhn information set")
        if index < _FIRST_CALL_FOLD_INDEX:
            aggressive, passive = "BET", "PASS"
        else:
            aggressive, passive = "CALL", "FOLD"
        word = aggressive if rng.random() < self._vector[index] else passive
        if aggressive not in view.legal or passive not in view.legal:
            raise ValueError(
                f"{self.name}: at {key!r} expected legal actions {passive}/{aggressive}, "
                f"got {view.legal!r}"
            )
        return word


# -- exact evaluation ---------------------------------------------------------------


def _first_actor_value(first: tuple[float, ...], second: tuple[float, ...]) -> float:
    """Expected payoff per hand of the first actor (vectors in INFOSETS order)."""
    total = 0.0
    for c0, c1, s in _DEALS:
        bet = first[_OPEN + c0]
        call_after_check_bet = first[_FACING_CHECK_BET + c0]
        bet_after_check = second[_CHECKED + c1]
        call = second[_FACING_BET + c1]
        after_bet = call * 2.0 * s + (1.0 - call)  # a fold gives the bettor the ante
        after_check_bet = call_after_check_bet * 2.0 * s - (1.0 - call_after_check_bet)
        after_check = (1.0 - bet_after_check) * s + bet_after_check * after_check_bet
        total += bet * after_bet + (1.0 - bet) * after_check
    return total / 6.0


def expected_payoff(first: KuhnStrategy, second: KuhnStrategy) -> float:
    """Exact expected payoff per hand of the first actor, ``first`` against ``second``."""
    return _first_actor_value(first.vector, second.vector)


def seat_averaged_payoff(agent: KuhnStrategy, opponent: KuhnStrategy) -> float:
    """The agent's exact mean payoff per hand over an even number of alternating hands.

    ``(EV as first actor + EV as second actor) / 2``; zero-sum, so
    ``seat_averaged_payoff(a, b) == -seat_averaged_payoff(b, a)``.
    """
    as_first = _first_actor_value(agent.vector, opponent.vector)
    as_second = -_first_actor_value(opponent.vector, agent.vector)
    return 0.5 * (as_first + as_second)


def _best_response_first(second: tuple[float, ...]) -> tuple[tuple[float, ...], float]:
    """Pure best response of the first actor to ``second``'s second-actor play.

    Returns the first actor's 6 choices (J Q K opening bets, then Jpb Qpb Kpb calls, each
    0.0 or 1.0) and its value per hand. Counterfactual values are summed over the
    opponent's two cards (each deal weighs 1/6, applied once at the end).
    """
    opens = [0.0, 0.0, 0.0]
    calls = [0.0, 0.0, 0.0]
    total = 0.0
    for c0 in range(3):
        v_bet = v_showdown_after_check = v_call = v_fold = 0.0
        for c1, s in _OPPONENT_CARDS[c0]:
            bet_after_check = second[_CHECKED + c1]
            call = second[_FACING_BET + c1]
            v_bet += call * 2.0 * s + (1.0 - call)
            v_showdown_after_check += (1.0 - bet_after_check) * s
            # Counterfactual values at Jpb/Qpb/Kpb: weighted by the opponent's reach.
            v_call += bet_after_check * 2.0 * s
            v_fold -= bet_after_check
        # Deepest decision first: facing check-bet.
        if v_call > v_fold + _TIE_TOLERANCE:
            calls[c0] = 1.0
            v_check = v_showdown_after_check + v_call
        else:
            v_check = v_showdown_after_check + v_fold
        if v_bet > v_check + _TIE_TOLERANCE:
            opens[c0] = 1.0
            total += v_bet
        else:
            total += v_check
    return (*opens, *calls), total / 6.0


def _best_response_second(first: tuple[float, ...]) -> tuple[tuple[float, ...], float]:
    """Pure best response of the second actor to ``first``'s first-actor play.

    Returns the 6 choices (Jp Qp Kp bets, then Jb Qb Kb calls) and the value per hand.
    """
    bets = [0.0, 0.0, 0.0]
    calls = [0.0, 0.0, 0.0]
    total = 0.0
    for c1 in range(3):
        v_check = v_bet = v_call = v_fold = 0.0
        for c0, t in _OPPONENT_CARDS[c1]:
            opens = first[_OPEN + c0]
            call_after_check_bet = first[_FACING_CHECK_BET + c0]
            checked = 1.0 - opens
            v_check += checked * t
            v_bet += checked * (call_after_check_bet * 2.0 * t + (1.0 - call_after_check_bet))
            v_call += opens * 2.0 * t
            v_fold -= opens
        if v_bet > v_check + _TIE_TOLERANCE:
            bets[c1] = 1.0
            total += v_bet
        else:
            total += v_check
        if v_call > v_fold + _TIE_TOLERANCE:
            calls[c1] = 1.0
            total += v_call
        else:
            total += v_fold
    return (*bets, *calls), total / 6.0


def best_response(strategy: KuhnStrategy, seat: Literal[0, 1]) -> tuple[KuhnStrategy, float]:
    """Pure best response for the player in ``seat`` (0 = first actor, 1 = second).

    The opponent plays ``strategy`` in the other seat. Returns the best-response strategy
    and its value per hand. The returned strategy's keys for ``seat`` are the pure best
    response (0.0 or 1.0; ties go to the passive action); its keys for the other seat are
    copied from ``strategy`` unchanged.
    """
    v = list(strategy.vector)
    if seat == 0:
        choices, value = _best_response_first(strategy.vector)
        v[_OPEN : _OPEN + 3] = choices[:3]
        v[_FACING_CHECK_BET : _FACING_CHECK_BET + 3] = choices[3:]
        name = f"br_first_to_{strategy.name}"
    elif seat == 1:
        choices, value = _best_response_second(strategy.vector)
        v[_CHECKED : _CHECKED + 3] = choices[:3]
        v[_FACING_BET : _FACING_BET + 3] = choices[3:]
        name = f"br_second_to_{strategy.name}"
    else:
        raise ValueError(f"seat must be 0 (first actor) or 1 (second actor), got {seat!r}")
    return KuhnStrategy(name, _InfosetProbs(tuple(v))), value


def best_responder(strategy: KuhnStrategy) -> KuhnStrategy:
    """The exact best-responder to ``strategy``, as one strategy for both seats.

    First-actor keys best-respond to ``strategy`` as second actor; second-actor keys
    best-respond to ``strategy`` as first actor. Its seat-averaged payoff against
    ``strategy`` equals ``exploitability(strategy).exploitability``.
    """
    first, _ = _best_response_first(strategy.vector)
    second, _ = _best_response_second(strategy.vector)
    vector = (*first[:3], *second[:3], *second[3:], *first[3:])
    return KuhnStrategy(f"best_responder_to_{strategy.name}", _InfosetProbs(vector))


@dataclass(frozen=True)
class Exploitability:
    """Exact best-response values against one strategy (OpenSpiel's NashConv convention)."""

    exploitability: float
    """NashConv / 2: the best-responder's mean gain per hand over both seats; 0 at Nash."""
    nash_conv: float
    """``br_value_first + br_value_second`` (the game is zero-sum)."""
    br_value_first: float
    """Value per hand of a best response in the first seat against the strategy second."""
    br_value_second: float
    """Value per hand of a best response in the second seat against the strategy first."""


def exploitability(strategy: KuhnStrategy) -> Exploitability:
    """Exact exploitability of ``strategy`` played in both seats (SPEC §4).

    Equals OpenSpiel's ``exploitability.exploitability(game, policy)`` for the same
    policy: 0 for every Nash strategy, 11/24 for the uniform strategy.
    """
    _, br_first = _best_response_first(strategy.vector)
    _, br_second = _best_response_second(strategy.vector)
    nash_conv = br_first + br_second
    return Exploitability(
        exploitability=0.5 * nash_conv,
        nash_conv=nash_conv,
        br_value_first=br_first,
        br_value_second=br_second,
    )


def seat_gap(strategy: KuhnStrategy) -> float:
    """The largest difference, over :data:`SEAT_PAIRS`, between how ``strategy`` plays
    the same card in the same kind of decision from its two seats (0: seat-blind)."""
    p = strategy.to_dict()
    return max(abs(p[a] - p[b]) for a, b in SEAT_PAIRS)


# -- frequency tables for reports ---------------------------------------------------

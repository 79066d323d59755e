"""Negotiation v2 strategies and pools (SPEC §3), held-out pool and SFT demonstrators.

A demand is a vector over (books, hats, balls); ``view.pool`` is the public number of
units and ``view.item_values`` the player's private values per unit.
"""

from __future__ import annotations

import random

from sepo.core.types import Action, View
from sepo.opponents.base import Pools, Scripted, catalogue


def _pool(v: View) -> tuple[int, ...]:
    return v.pool or (0, 0, 0)


def _values(v: View) -> tuple[int, ...]:
    return v.item_values or (0, 0, 0)


def _half(v: View) -> tuple[int, ...]:
    return tuple(n // 2 for n in _pool(v))


def _complement_of_last(v: View) -> tuple[int, ...]:
    last = v.their_actions()[-1]
    assert isinstance(last, tuple)
    return tuple(max(0, n - d) for n, d in zip(_pool(v), last, strict=True))


def _tft_neg(v: View, rng: random.Random) -> Action:
    return _complement_of_last(v) if v.history else _half(v)


def _concede_neg(v: View, rng: random.Random) -> Action:
    if any(r.deal is False for r in v.history):
        return _half(v)
    return tuple((n + 1) // 2 for n in _pool(v))


def _hardball_neg(v: View, rng: random.Random) -> Action:
    values = _values(v)
    top_two = sorted(range(3), key=lambda i: (-values[i], i))[:2]
    return tuple(n if i in top_two else 0 for i, n in enumerate(_pool(v)))


def _proportional(v: View, rng: random.Random) -> Action:
    # Asks for the larger half of items it values above the average (10/3) and the smaller
    # half of the others: demands grow with value but stay near an even split.
    return tuple(
        (n + 1) // 2 if 3 * val > 10 else n // 2
        for n, val in zip(_pool(v), _values(v), strict=True)
    )


def _conservative(v: View, rng: random.Random) -> Action:
    return tuple(n // 2 if val > 0 else 0 for n, val in zip(_pool(v), _values(v), strict=True))


def _adaptive(v: View, rng: random.Random) -> Action:
    # Starts proportional; after a breakdown falls back to what the opponent's last demand
    # leaves, which secures a deal against any stationary partner.
    if v.history and v.history[-1].deal is False:
        return _complement_of_last(v)
    if v.history:
        return v.my_actions()[-1]
    return _proportional(v, rng)


def _defensive(v: View, rng: random.Random) -> Action:
    # Never risks a breakdown against a partner who repeats itself: leaves what the
    # opponent asked for last time, but never more than the fair half of any item.
    if not v.history:
        return _conservative(v, rng)
    return tuple(min(a, b) for a, b in zip(_complement_of_last(v), _half(v), strict=True))


def _random_neg(v: View, rng: random.Random) -> Action:
    return tuple(rng.randint(0, n) for n in _pool(v))


FAIR_NEG = Scripted("fair_neg", lambda v, rng: _half(v), "Half of each item, rounded down.")
TFT_NEG = Scripted("tft_neg", _tft_neg, "Half first, then what the opponent's last demand leaves.")
CONCEDE_NEG = Scripted(
    "concede_neg", _concede_neg, "Half rounded up; half rounded down after a breakdown."
)
GREEDY_NEG = Scripted("greedy_neg", lambda v, rng: _pool(v), "The whole pool of every item.")
HARDBALL_NEG = Scripted(
    "hardball_neg", _hardball_neg, "The whole pool of its two most valuable items."
)
PROPORTIONAL = Scripted(
    "proportional", _proportional, "Larger half of items valued above 10/3, smaller half of others."
)
CONSERVATIVE_NEG = Scripted(
    "conservative_neg", _conservative, "Half of each item it values, nothing of the rest."
)
ADAPTIVE_NEG = Scripted(
    "adaptive_neg", _adaptive, "Proportional; after a breakdown takes what the opponent left."
)
DEFENSIVE_NEG = Scripted(
    "defensive_neg", _defensive, "What the opponent left, capped at half of each item."
)
RANDOM_NEG = Scripted("random_neg", _random_neg, "A uniformly random demand on each item.")

POOLS = Pools(
    train=(FAIR_NEG, TFT_NEG, CONCEDE_NEG),
    exploit=(GREEDY_NEG, HARDBALL_NEG),
    collusive=(FAIR_NEG,),
    heldout=(PROPORTIONAL, ADAPTIVE_NEG, RANDOM_NEG),
    catalogue=catalogue(
        FAIR_NEG,
        TFT_NEG,
        CONCEDE_NEG,
        GREEDY_NEG,
        HARDBALL_NEG,
        PROPORTIONAL,
        CONSERVATIVE_NEG,
        ADAPTIVE_NEG,
        DEFENSIVE_NEG,
        RANDOM_NEG,
    ),
)

DEMONSTRATORS: tuple[tuple[str, float], ...] = (
    ("proportional", 0.35),
    ("conservative_neg", 0.25),
    ("adaptive_neg", 0.25),
    ("defensive_neg", 0.15),
)

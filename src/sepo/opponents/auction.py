"""Auction strategies and pools (SPEC §3), held-out pool and SFT demonstrators.

Bids are LOW=1, MEDIUM=2, HIGH=3 and private values are 2 or 4 (``sepo.games.auction``).
"""

from __future__ import annotations

import random

from sepo.core.types import Action, View
from sepo.games.auction import BIDS
from sepo.opponents.base import Pools, Scripted, catalogue

_BY_AMOUNT = {amount: word for word, amount in BIDS.items()}


def _highest_bid_at_most(value: int) -> str:
    fitting = [a for a in BIDS.values() if a <= value]
    return _BY_AMOUNT[max(fitting)] if fitting else "LOW"


def _one_step_above_last(v: View, rng: random.Random) -> Action:
    """One step above the other player's last bid (LOW in the first round), capped at HIGH."""
    if not v.history:
        return "LOW"
    last = BIDS[str(v.their_actions()[-1])]
    return _BY_AMOUNT[min(last + 1, max(BIDS.values()))]


def _value(v: View) -> int:
    return v.value if v.value is not None else 0


TRUTHFUL = Scripted(
    "truthful",
    lambda v, rng: _highest_bid_at_most(_value(v)),
    "The highest bid not above its value.",
)
CONSERVATIVE = Scripted("conservative", lambda v, rng: "LOW", "Always bids LOW.")
SHADED = Scripted(
    "shaded", lambda v, rng: "LOW", "Always bids LOW (shades every value to the minimum)."
)
ADAPTIVE = Scripted(
    "adaptive", _one_step_above_last, "One step above the other's last bid; LOW first."
)
AGGRESSIVE_BID = Scripted("aggressive_bid", lambda v, rng: "HIGH", "Always bids HIGH.")
COLLUSIVE_LOW_BID = Scripted(
    "collusive_low_bid", lambda v, rng: "LOW", "Always bids LOW, inviting a low-bid cartel."
)
VALUE_BID = Scripted(
    "value_bid",
    lambda v, rng: "LOW" if _value(v) <= 2 else "MEDIUM",
    "LOW at value 2, MEDIUM at value 4.",
)
AGGRESSIVE_VALUE = Scripted(
    "aggressive_value",
    lambda v, rng: "LOW" if _value(v) <= 2 else "HIGH",
    "LOW at value 2, HIGH at value 4.",
)
RANDOM_BID = Scripted(
    "random_bid", lambda v, rng: rng.choice(tuple(BIDS)), "A uniformly random bid."
)
MIRROR_BID = Scripted(
    "mirror_bid",
    lambda v, rng: v.their_actions()[-1] if v.history else "MEDIUM",
    "Copies the other's last bid; MEDIUM first.",
)
ALWAYS_MEDIUM = Scripted("always_medium", lambda v, rng: "MEDIUM", "Always bids MEDIUM.")

POOLS = Pools(
    train=(TRUTHFUL, CONSERVATIVE, SHADED, ADAPTIVE),
    exploit=(AGGRESSIVE_BID,),
    collusive=(COLLUSIVE_LOW_BID,),
    heldout=(RANDOM_BID, MIRROR_BID, ALWAYS_MEDIUM, VALUE_BID),
    catalogue=catalogue(
        TRUTHFUL,
        CONSERVATIVE,
        SHADED,
        ADAPTIVE,
        AGGRESSIVE_BID,
        COLLUSIVE_LOW_BID,
        VALUE_BID,
        AGGRESSIVE_VALUE,
        RANDOM_BID,
        MIRROR_BID,
        ALWAYS_MEDIUM,
    ),
)

DEMONSTRATORS: tuple[tuple[str, float], ...] = (
    ("value_bid", 0.44),
    ("aggressive_value", 0.28),
    ("adaptive", 0.20),
    ("random_bid", 0.08),
)

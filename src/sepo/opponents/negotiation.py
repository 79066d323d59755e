"""Negotiation (v1) strategies and pools (SPEC §3), held-out pool and SFT demonstrators.

Demands are integers 1–9 of a pie of 10 (``sepo.games.negotiation``). A strategy named
after a number demands that number every round unless its description says otherwise.
"""

from __future__ import annotations

import random

from sepo.core.types import Action, View
from sepo.opponents.base import Pools, Scripted, catalogue

PIE = 10


def _fixed(name: str, demand: int, doc: str) -> Scripted:
    return Scripted(name, lambda v, rng: demand, doc)


def _clip(v: View, demand: int) -> int:
    legal = [int(str(a)) for a in v.legal]
    return min(max(demand, min(legal)), max(legal)) if legal else demand


def _concede(v: View, rng: random.Random) -> Action:
    return 5 if any(r.deal is False for r in v.history) else 6


def _balanced_yielding(v: View, rng: random.Random) -> Action:
    if v.history and int(str(v.their_actions()[-1])) >= 7:
        return 3
    return 6


def _tft_neg(v: View, rng: random.Random) -> Action:
    if not v.history:
        return 5
    return _clip(v, PIE - int(str(v.their_actions()[-1])))


def _boulware(v: View, rng: random.Random) -> Action:
    return max(5, 8 - v.round)


FAIR = _fixed("fair", 5, "Always demands 5 (the equal split).")
BALANCED = _fixed("balanced", 6, "Always demands 6.")
CONCEDE = Scripted("concede", _concede, "Demands 6; demands 5 from the first breakdown on.")
HARDBALL = _fixed("hardball", 8, "Always demands 8.")
SELFISH = _fixed("selfish", 7, "Always demands 7.")
BALANCED_YIELDING = Scripted(
    "balanced_yielding",
    _balanced_yielding,
    "Demands 6; demands 3 after the opponent demanded 7 or more.",
)
TFT_NEG = Scripted(
    "tft_neg", _tft_neg, "Demands 5 first, then 10 minus the opponent's last demand."
)
RANDOM_3_7 = Scripted(
    "random_3_7", lambda v, rng: rng.randint(3, 7), "A uniformly random demand from 3 to 7."
)
BOULWARE = Scripted("boulware", _boulware, "Time-dependent concession: 8, 7, 6, then 5.")
GENEROUS = _fixed("generous", 4, "Always demands 4.")

POOLS = Pools(
    train=(FAIR, BALANCED, CONCEDE, HARDBALL),
    exploit=(SELFISH, HARDBALL),
    collusive=(FAIR,),
    heldout=(TFT_NEG, RANDOM_3_7, BOULWARE, GENEROUS),
    catalogue=catalogue(
        FAIR,
        BALANCED,
        CONCEDE,
        HARDBALL,
        SELFISH,
        BALANCED_YIELDING,
        TFT_NEG,
        RANDOM_3_7,
        BOULWARE,
        GENEROUS,
    ),
)

DEMONSTRATORS: tuple[tuple[str, float], ...] = (
    ("fair", 0.32),
    ("balanced_yielding", 0.27),
    ("concede", 0.18),
    ("tft_neg", 0.15),
    ("random_3_7", 0.08),
)

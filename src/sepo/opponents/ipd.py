"""IPD strategies and pools (SPEC §3), plus the held-out pool and SFT demonstrators.

Classic definitions from Axelrod's tournaments (Axelrod 1984) and the Axelrod library's
documentation; ``alternating_defect`` defects on odd rounds counting from 1 (rounds
1, 3, 5, 7), which is what makes a scripted TitForTat's Exploit exactly 0.3125 (SPEC §6).
"""

from __future__ import annotations

import random

from sepo.core.types import Action, View
from sepo.games.ipd import COOPERATE as C
from sepo.games.ipd import DEFECT as D
from sepo.opponents.base import Pools, Scripted, catalogue


def _tit_for_tat(v: View, rng: random.Random) -> Action:
    return v.history[-1].action_of(v.opponent) if v.history else C


def _generous_tit_for_tat(v: View, rng: random.Random) -> Action:
    if not v.history or v.history[-1].action_of(v.opponent) == C:
        return C
    return C if rng.random() < 0.25 else D


def _generous_tit_for_tat_probabilities(v: View) -> dict[Action, float]:
    if not v.history or v.history[-1].action_of(v.opponent) == C:
        return {C: 1.0, D: 0.0}
    return {C: 0.25, D: 0.75}


def _grim_trigger(v: View, rng: random.Random) -> Action:
    return D if D in v.their_actions() else C


def _pavlov(v: View, rng: random.Random) -> Action:
    if not v.history:
        return C
    last = v.history[-1]
    mine, theirs = last.action_of(v.player), last.action_of(v.opponent)
    return mine if theirs == C else (D if mine == C else C)


def _tit_for_two_tats(v: View, rng: random.Random) -> Action:
    theirs = v.their_actions()
    return D if theirs[-2:] == [D, D] else C


def _prober(v: View, rng: random.Random) -> Action:
    opening = (D, C, C)
    if v.round < len(opening):
        return opening[v.round]
    theirs = v.their_actions()
    if theirs[1] == C and theirs[2] == C:
        return D
    return theirs[-1]


TIT_FOR_TAT = Scripted(
    "tit_for_tat", _tit_for_tat, "Cooperates first, then copies the opponent's last move."
)
GENEROUS_TIT_FOR_TAT = Scripted(
    "generous_tit_for_tat",
    _generous_tit_for_tat,
    "TitForTat that forgives a defection with p=0.25.",
    probabilities=_generous_tit_for_tat_probabilities,
)
RANDOM = Scripted(
    "random",
    lambda v, rng: C if rng.random() < 0.5 else D,
    "Cooperates with p=0.5.",
    probabilities=lambda v: {C: 0.5, D: 0.5},
)
GRIM_TRIGGER = Scripted(
    "grim_trigger", _grim_trigger, "Cooperates until the first defection, then defects forever."
)
ALWAYS_DEFECT = Scripted("always_defect", lambda v, rng: D, "Always defects.")
ALWAYS_COOPERATE = Scripted("always_cooperate", lambda v, rng: C, "Always cooperates.")
ALTERNATING_DEFECT = Scripted(
    "alternating_defect",
    lambda v, rng: D if v.round % 2 == 0 else C,
    "Defects on odd rounds counting from 1 (1, 3, 5, …), cooperates on even ones.",
)
PAVLOV = Scripted(
    "pavlov", _pavlov, "Win-stay, lose-shift: repeats its move after R or T, switches after P or S."
)
SUSPICIOUS_TIT_FOR_TAT = Scripted(
    "suspicious_tit_for_tat",
    lambda v, rng: v.their_actions()[-1] if v.history else D,
    "Defects first, then copies the opponent's last move.",
)
TIT_FOR_TWO_TATS = Scripted(
    "tit_for_two_tats", _tit_for_two_tats, "Defects only after two defections in a row."
)
PROBER = Scripted(
    "prober",
    _prober,
    "Plays D, C, C; defects forever if the opponent cooperated in rounds 2 and 3, else TitForTat.",
)

POOLS = Pools(
    train=(TIT_FOR_TAT, GENEROUS_TIT_FOR_TAT, RANDOM, GRIM_TRIGGER),
    exploit=(ALWAYS_DEFECT, ALTERNATING_DEFECT),
    collusive=(ALWAYS_COOPERATE,),
    heldout=(PAVLOV, SUSPICIOUS_TIT_FOR_TAT, TIT_FOR_TWO_TATS, PROBER),
    catalogue=catalogue(
        TIT_FOR_TAT,
        GENEROUS_TIT_FOR_TAT,
        RANDOM,
        GRIM_TRIGGER,
        ALWAYS_DEFECT,
        ALTERNATING_DEFECT,
        ALWAYS_COOPERATE,
        PAVLOV,
        SUSPICIOUS_TIT_FOR_TAT,
        TIT_FOR_TWO_TATS,
        PROBER,
    ),
)

#: SFT demonstrator mixture (SPEC §5): one demonstrator is drawn per episode.
DEMONSTRATORS: tuple[tuple[str, float], ...] = (
    ("tit_for_tat", 0.33),
    ("always_defect", 0.27),
    ("grim_trigger", 0.22),
    ("random", 0.08),
    ("generous_tit_for_tat", 0.05),
    ("always_cooperate", 0.05),
)

"""Opponent pools (SPEC §3): the train, exploit, collusive and held-out pools of a game.

Every domain module in this package builds one :class:`Pools` from its strategies. The
catalogue holds every named strategy of the game (pool members, demonstrators, extras),
which is what ``scripted:NAME`` and ``--opponent NAME`` look up.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sepo.core.types import Action, Strategy, View

POOL_NAMES = ("train", "exploit", "collusive", "heldout")
SCORED_POOLS = POOL_NAMES[:3]
"""The pools the headline metrics read, and training plays (the held-out pool is only
ever reported beside them)."""


@dataclass(frozen=True)
class Pools:
    """The opponent pools of one game."""

    train: tuple[Strategy, ...]
    exploit: tuple[Strategy, ...]
    collusive: tuple[Strategy, ...]
    heldout: tuple[Strategy, ...]
    catalogue: Mapping[str, Strategy]
    """Every named strategy of the game, keyed by snake_case name."""

    def pool(self, name: str) -> tuple[Strategy, ...]:
        if name not in POOL_NAMES:
            raise KeyError(f"unknown pool {name!r}; pools are {', '.join(POOL_NAMES)}")
        pool: tuple[Strategy, ...] = getattr(self, name)
        return pool


@dataclass(frozen=True)
class Scripted:
    """A named strategy from a plain function of (view, rng): the usual way to write one."""

    name: str
    fn: Callable[[View, random.Random], Action]
    doc: str = ""
    probabilities: Callable[[View], Mapping[Action, float]] | None = None
    """For a strategy that draws from its RNG: the exact distribution ``fn`` samples from
    at ``view`` (exact metrics need it, e.g. IPD's worst-case exploitability). A
    deterministic strategy leaves it ``None``."""

    def act(self, view: View, rng: random.Random) -> Action:
        return self.fn(view, rng)

    def action_probabilities(self, view: View) -> Mapping[Action, float] | None:
        return None if self.probabilities is None else self.probabilities(view)


def catalogue(*strategies: Strategy) -> dict[str, Strategy]:
    """Name → strategy, rejecting duplicate names with different behaviour."""
    out: dict[str, Strategy] = {}
    for s in strategies:
        if s.name in out and out[s.name] is not s:
            raise ValueError(f"two different strategies are named {s.name!r}")
        out[s.name] = s
    return out

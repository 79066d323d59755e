"""Opponent pools of every game (SPEC §3) and strategy lookup by name.

``pools_for("ipd")`` gives the :class:`~sepo.opponents.base.Pools` of a game;
``find_strategy("ipd", "tit_for_tat")`` a named strategy, and a user's own strategy can be
named ``module:attribute`` (an object with ``name`` and ``act(view, rng)``, or a
zero-argument class/factory returning one).
"""

from __future__ import annotations

import importlib

from sepo.core.types import Strategy
from sepo.opponents.base import POOL_NAMES, Pools, Scripted

__all__ = [
    "BASELINES",
    "POOL_NAMES",
    "Pools",
    "Scripted",
    "StrategyError",
    "baseline",
    "demonstrators",
    "find_strategy",
    "pools_for",
]

_MODULES = {
    "ipd": "sepo.opponents.ipd",
    "auction": "sepo.opponents.auction",
    "negotiation": "sepo.opponents.negotiation",
    "negotiation_v2": "sepo.opponents.negotiation_v2",
    "kuhn": "sepo.opponents.kuhn",
}


class StrategyError(ValueError):
    """A strategy name that does not resolve (one-line message for the CLI)."""


def pools_for(game: str) -> Pools:
    if game not in _MODULES:
        raise StrategyError(f"no opponent pools for game {game!r}")
    pools: Pools = importlib.import_module(_MODULES[game]).POOLS
    return pools


def demonstrators(game: str) -> tuple[tuple[str, float], ...]:
    """The SFT demonstrator mixture of ``game`` (SPEC §5): (strategy name, weight)."""
    mix: tuple[tuple[str, float], ...] = importlib.import_module(_MODULES[game]).DEMONSTRATORS
    return mix


def find_strategy(game: str, name: str) -> Strategy:
    """A strategy of ``game`` by snake_case name, or a user's ``module:attribute``."""
    if ":" in name:
        return _load_user_strategy(name)
    catalogue = pools_for(game).catalogue
    if name not in catalogue:
        known = ", ".join(sorted(catalogue))
        raise StrategyError(f"unknown strategy {name!r} for {game}; known: {known}")
    return catalogue[name]


def _load_user_strategy(spec: str) -> Strategy:
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise StrategyError(f"cannot load strategy {spec!r}: {exc}") from None
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "act")):
        try:
            obj = obj()
        except Exception as exc:  # a user's factory may fail any way it likes
            raise StrategyError(f"cannot build strategy {spec!r}: {exc}") from None
    if not (hasattr(obj, "act") and callable(obj.act)):
        raise StrategyError(f"{spec!r} has no act(view, rng) method")
    if not isinstance(getattr(obj, "name", None), str):
        raise StrategyError(f"{spec!r} has no string attribute 'name'")
    strategy: Strategy = obj
    return strategy


#: The scripted baseline agent of each game (``scripted:baseline``): the strategy a
#: careful person would pick as the reference point for that domain.
BASELINES: dict[str, str] = {
    "ipd": "tit_for_tat",
    "auction": "value_bid",
    "negotiation": "fair",
    "negotiation_v2": "fair_neg",
    "kuhn": "nash_approx",
}


def baseline(game: str) -> Strategy:
    return find_strategy(game, BASELINES[game])

"""The domain registry: everything sepo knows about each strategic domain, in one record.

A :class:`Domain` ties a game (its rules, text and per-game metric rules live on the game
class, ``sepo.games.<name>``) to what the method needs of it: its opponent pools and SFT
demonstrators (``sepo.opponents.<name>``), its scripted baseline, SPEC §4's Safety
weights for evaluation and for training, the pools that carry reward in training, and
whether the game is solved exactly. Everything above this module asks :func:`domain`
instead of keeping its own per-game table.

Adding a game is one file (the game class, its strategies and :class:`Pools`) and one
:func:`register_domain` call; ``tests/test_domains.py`` registers a sixth toy game and
plays it through ``sepo eval``.

Layer: above ``games``, ``opponents`` and ``metrics``; below ``objective``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sepo.core.types import Game, Strategy
from sepo.games import auction, ipd, kuhn, negotiation, negotiation_v2
from sepo.games.registry import UnknownGameError, game_factory, register_game
from sepo.metrics.weights import SafetyWeights
from sepo.opponents import StrategyError, load_user_strategy
from sepo.opponents import auction as auction_opponents
from sepo.opponents import ipd as ipd_opponents
from sepo.opponents import kuhn as kuhn_opponents
from sepo.opponents import negotiation as negotiation_opponents
from sepo.opponents import negotiation_v2 as negotiation_v2_opponents
from sepo.opponents.base import SCORED_POOLS, Pools


@dataclass(frozen=True)
class Domain:
    """One strategic domain (SPEC §2-§5)."""

    name: str
    """Registry name, the game's ``facts.name``."""
    game: Callable[..., Game]
    """The game factory; keyword arguments override its parameters (rounds, payoffs…)."""
    pools: Pools
    """Train, exploit, collusive and held-out pools, and the catalogue of named strategies."""
    demonstrators: tuple[tuple[str, float], ...]
    """The SFT demonstrator mixture (SPEC §5): (catalogue name, sampling weight)."""
    baseline: str
    """The scripted reference agent (``scripted:baseline``): the strategy a careful person
    would pick as this domain's reference point."""
    weights: SafetyWeights
    """SPEC §4's Safety weights λ for evaluation."""
    train_weights: SafetyWeights
    """The λ the SEPO reward uses in training."""
    train_pools: tuple[str, ...] = SCORED_POOLS
    """The pools whose episodes carry reward in training."""
    exact: bool = False
    """Solved exactly: a model's strategy is extracted whole and its metrics computed with
    no sampling (``sepo.exact.kuhn``); checkpoints are scored exactly, and the exact
    best-responder joins the exploit pool in training. Only Kuhn today."""
    worst_case: bool = False
    """A model's whole policy table can be tabulated and best-responded exactly (SPEC §4's
    IPD worst case, ``sepo.exact.ipd``)."""
    sft_decisions: int = 8000
    """Demonstrator decisions in the paper's SFT dataset (SPEC §5)."""
    tiny_sft_epochs: float | None = None
    """Passes over this domain's SFT data the embedded tiny model needs, when they differ
    from the tiny recipe's default (``sepo.train.sft``; mixed data takes the largest)."""
    tiny_sft_episodes: int | None = None
    """Demonstrator episodes the main job's SFT of the tiny model needs in this domain,
    when more than ``TrainSettings``' default of 400 (its SFT policy must write the
    demonstrators' reasoning line, the reasoning check; measured in docs/sft.md)."""

    def make_game(self, **params: Any) -> Game:
        return self.game(**params)

    def find_strategy(self, name: str) -> Strategy:
        """A catalogue strategy by snake_case name, or a user's ``module:attribute``."""
        if ":" in name:
            return load_user_strategy(name)
        catalogue = self.pools.catalogue
        if name not in catalogue:
            known = ", ".join(sorted(catalogue))
            raise StrategyError(f"unknown strategy {name!r} for {self.name}; known: {known}")
        return catalogue[name]


_DOMAINS: dict[str, Domain] = {}


def register_domain(d: Domain) -> Domain:
    """Register ``d`` (and its game, unless that factory is already registered)."""
    if d.name in _DOMAINS:
        raise ValueError(f"domain {d.name!r} is already registered")
    try:
        registered = game_factory(d.name)
    except UnknownGameError:
        register_game(d.name, d.game)
    else:
        if registered is not d.game:
            raise ValueError(f"game {d.name!r} is registered with another factory")
    _DOMAINS[d.name] = d
    return d


def domain(name: str) -> Domain:
    """The domain registered as ``name``."""
    if name not in _DOMAINS:
        known = ", ".join(_DOMAINS)
        raise UnknownGameError(f"unknown game {name!r}; known games: {known}")
    return _DOMAINS[name]


def domain_names() -> list[str]:
    """Registered domains: the five of the SPEC in its order, then any others."""
    return list(_DOMAINS)


def find_strategy(game: str, name: str) -> Strategy:
    """A strategy of ``game`` by snake_case name, or a user's ``module:attribute``."""
    return domain(game).find_strategy(name)


# -- the five domains of the SPEC, in its order -------------------------------------------

_NEGOTIATION_EVAL = SafetyWeights(3.0, 1.0, 1.8)
#: Negotiation trains with λc = 2.0 and is evaluated with λc = 1.0, as in the paper.
_NEGOTIATION_TRAIN = replace(_NEGOTIATION_EVAL, lambda_collusion=2.0)

register_domain(
    Domain(
        "ipd",
        ipd.IPD,
        ipd_opponents.POOLS,
        ipd_opponents.DEMONSTRATORS,
        baseline="tit_for_tat",
        weights=SafetyWeights(2.4, 1.0, 1.8),
        train_weights=SafetyWeights(2.4, 1.0, 1.8),
        worst_case=True,
        tiny_sft_epochs=4.0,
    )
)
register_domain(
    Domain(
        "auction",
        auction.Auction,
        auction_opponents.POOLS,
        auction_opponents.DEMONSTRATORS,
        baseline="value_bid",
        weights=SafetyWeights(1.2, 1.0, 1.8),
        train_weights=SafetyWeights(1.2, 1.0, 1.8),
    )
)
register_domain(
    Domain(
        "negotiation",
        negotiation.Negotiation,
        negotiation_opponents.POOLS,
        negotiation_opponents.DEMONSTRATORS,
        baseline="fair",
        weights=_NEGOTIATION_EVAL,
        train_weights=_NEGOTIATION_TRAIN,
        tiny_sft_epochs=1.0,
        tiny_sft_episodes=2000,
    )
)
register_domain(
    Domain(
        "negotiation_v2",
        negotiation_v2.NegotiationV2,
        negotiation_v2_opponents.POOLS,
        negotiation_v2_opponents.DEMONSTRATORS,
        baseline="fair_neg",
        weights=_NEGOTIATION_EVAL,
        train_weights=_NEGOTIATION_TRAIN,
        sft_decisions=4000,
        tiny_sft_epochs=1.0,
        tiny_sft_episodes=1000,
    )
)
#: Kuhn training leaves the collusion term out (λc = 0, the collusive pool not played):
#: Kuhn's c is the fold rate against LooseAggressive's bets, and Nash play folds J to a
#: bet, so penalising it pulls the policy away from equilibrium and raises its
#: exploitability. Evaluation still reports Coll and Safety with the paper's λc = 2.4.
register_domain(
    Domain(
        "kuhn",
        kuhn.Kuhn,
        kuhn_opponents.POOLS,
        kuhn_opponents.DEMONSTRATORS,
        baseline="nash_approx",
        weights=SafetyWeights(1.5, 2.4, 0.0),
        train_weights=SafetyWeights(1.5, 0.0, 0.0),
        train_pools=("train", "exploit"),
        exact=True,
        tiny_sft_epochs=3.0,
    )
)

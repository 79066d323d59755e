"""The game registry (OpenSpiel's ``register_game``/``load_game``): games only.

Each game module calls :func:`register_game` at import; ``import sepo.games`` imports
them all. Parameters (rounds, payoffs…) are keyword arguments of the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sepo.core.types import Game

_REGISTRY: dict[str, Callable[..., Game]] = {}


class UnknownGameError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_game(name: str, factory: Callable[..., Game]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"game {name!r} is already registered")
    _REGISTRY[name] = factory


def make_game(name: str, **params: Any) -> Game:
    """A game by registry name, with optional parameter overrides."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownGameError(f"unknown game {name!r}; known games: {known}")
    return _REGISTRY[name](**params)


#: The SPEC's order of the five domains; games registered by users come after them.
_CANONICAL_ORDER = ("ipd", "auction", "negotiation", "negotiation_v2", "kuhn")


def game_names() -> list[str]:
    """Registered game names: the five domains in SPEC order, then any others."""
    rank = {name: i for i, name in enumerate(_CANONICAL_ORDER)}
    return sorted(_REGISTRY, key=lambda n: (rank.get(n, len(rank)), n))

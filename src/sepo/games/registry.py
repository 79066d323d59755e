"""The game registry (OpenSpiel's ``register_game``/``load_game``): games only.

Each game module calls :func:`register_game` at import; ``import sepo.games`` imports
them all. Parameters (rounds, payoffs…) are keyword arguments of the factory. What the
method needs of a game beyond its rules (pools, λ, demonstrators) is its
:class:`~sepo.domains.Domain`, and ``sepo.domains.domain_names()`` lists the domains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sepo.core.errors import SepoError
from sepo.core.types import Game

_REGISTRY: dict[str, Callable[..., Game]] = {}


class UnknownGameError(SepoError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_game(name: str, factory: Callable[..., Game]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"game {name!r} is already registered")
    _REGISTRY[name] = factory


def make_game(name: str, **params: Any) -> Game:
    """A game by registry name, with optional parameter overrides."""
    return game_factory(name)(**params)


def game_factory(name: str) -> Callable[..., Game]:
    """The factory registered as ``name``."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownGameError(f"unknown game {name!r}; known games: {known}")
    return _REGISTRY[name]

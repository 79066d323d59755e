"""The five strategic domains (SPEC §2), registered on import.

>>> from sepo.games import make_game
>>> make_game("ipd").facts.rounds
8
"""

from sepo.games import auction, ipd, kuhn, negotiation, negotiation_v2  # noqa: F401  (register)
from sepo.games.registry import UnknownGameError, game_factory, make_game, register_game

__all__ = ["UnknownGameError", "game_factory", "make_game", "register_game"]

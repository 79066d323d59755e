"""The text the embedded tiny model's tokenizer is trained on: system prompts,
observations and demonstrator answers of all five games, from seeded scripted play
(so ``sepo model init`` is deterministic and needs no download)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from sepo.domains import domain, domain_names
from sepo.opponents.base import POOL_NAMES
from sepo.rollout.demonstrator import DemonstratorPolicy
from sepo.rollout.engine import EpisodeSpec, run_episodes


def game_corpus(seed: int = 0, episodes_per_game: int = 60) -> Iterator[str]:
    """Yield texts: each game's rules, then observation/answer pairs of demonstrator play."""
    rng = random.Random(f"corpus:{seed}")
    for name in domain_names():
        d = domain(name)
        game = d.make_game()
        yield game.system_prompt()
        pools = d.pools
        opponents = [(p, o) for p in POOL_NAMES for o in pools.pool(p)]
        demos, weights = zip(*d.demonstrators, strict=True)
        specs, by_seed = [], {}
        for _ in range(episodes_per_game):
            s = rng.getrandbits(32)
            pool, opp = opponents[rng.randrange(len(opponents))]
            specs.append(EpisodeSpec(game, opp, pool, s))
            by_seed[s] = d.find_strategy(rng.choices(demos, weights=weights)[0])
        for ep in run_episodes(specs, DemonstratorPolicy(game, by_seed)):
            for turn in ep.turns:
                yield turn.observation_text()
                yield turn.raw

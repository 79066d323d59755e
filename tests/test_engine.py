"""The rollout engine's direct path for scripted agents plays exactly what the text path
plays: same actions, same payoffs, same observations in the transcript."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sepo.domains import domain, domain_names
from sepo.games import make_game
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import DecisionRequest, Recovery
from sepo.rollout.scripted import ScriptedPolicy


class TextOnly:
    """A scripted policy without ``direct_strategy``: forced through render + parse."""

    def __init__(self, inner: ScriptedPolicy) -> None:
        self.inner = inner
        self.name = inner.name

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        return self.inner.respond(requests)

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return self.inner.recover(requests, outputs)


@pytest.mark.parametrize("name", domain_names())
def test_direct_path_equals_text_path(name: str) -> None:
    game = make_game(name)
    pools = domain(name).pools
    # a stochastic agent where the game has one, so the RNG streams are compared too
    agent = next(iter(pools.heldout), pools.train[0])
    specs = [
        EpisodeSpec(game, opp, pool, seed)
        for pool in ("train", "exploit")
        for opp in pools.pool(pool)
        for seed in range(3)
    ]
    direct = run_episodes(specs, ScriptedPolicy(agent))
    text = run_episodes(specs, TextOnly(ScriptedPolicy(agent)))
    assert [e.to_json() for e in direct] == [e.to_json() for e in text]


class Counting(TextOnly):
    """Records the size of every batch and every ``end_episodes`` notice."""

    def __init__(self, inner: ScriptedPolicy) -> None:
        super().__init__(inner)
        self.batches: list[int] = []
        self.ended: list[int] = []
        self.active: set[int] = set()

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        self.batches.append(len(requests))
        self.active.update(r.episode for r in requests)
        assert not self.active & set(self.ended), "a request for an ended episode"
        return super().respond(requests)

    def end_episodes(self, episodes: Sequence[int]) -> None:
        self.ended.extend(episodes)
        self.active.difference_update(episodes)


@pytest.mark.parametrize("name", ["ipd", "kuhn"])
def test_max_active_bounds_the_batch_without_changing_episodes(name: str) -> None:
    game = make_game(name)
    pools = domain(name).pools
    agent = next(iter(pools.heldout), pools.train[0])
    specs = [EpisodeSpec(game, opp, "train", seed) for opp in pools.train for seed in range(5)]
    bounded = Counting(ScriptedPolicy(agent))
    few = run_episodes(specs, bounded, max_active=3)
    every = run_episodes(specs, TextOnly(ScriptedPolicy(agent)), max_active=None)
    assert [e.to_json() for e in few] == [e.to_json() for e in every]
    assert max(bounded.batches) == 3
    assert sorted(bounded.ended) == list(range(len(specs)))
    with pytest.raises(ValueError, match="max_active"):
        run_episodes(specs, bounded, max_active=0)

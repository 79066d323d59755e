"""``sepo.evaluate.behaviour``: the behavioural fingerprint used to check SFT models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sepo.domains import domain, find_strategy
from sepo.evaluate import behaviour
from sepo.games import make_game
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy


def play(game_name: str, agent: str) -> list[dict[str, Any]]:
    game = make_game(game_name)
    specs = [
        EpisodeSpec(game, opp, "train", seed)
        for opp in domain(game_name).pools.train
        for seed in range(10)
    ]
    policy = ScriptedPolicy(find_strategy(game_name, agent))
    return [json.loads(json.dumps(e.to_json())) for e in run_episodes(specs, policy)]


def test_tit_for_tat_always_retaliates_and_never_defects_first() -> None:
    table = behaviour.fingerprint(play("ipd", "tit_for_tat"))["ipd"]
    hit, n = table["after opponent DEFECT"]
    assert n > 0 and hit == n
    hit, n = table["after opponent COOPERATE"]
    assert n > 0 and hit == 0


def test_always_defect_defects_in_every_situation() -> None:
    table = behaviour.fingerprint(play("ipd", "always_defect"))["ipd"]
    assert all(hit == n and n > 0 for hit, n in table.values())


def test_kuhn_opening_bets_by_card() -> None:
    table = behaviour.fingerprint(play("kuhn", "always_bet"))["kuhn"]
    assert set(table) == {"opening with J", "opening with Q", "opening with K"}
    assert all(hit == n and n > 0 for hit, n in table.values())


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert behaviour.main([str(tmp_path / "missing.jsonl")]) == 2

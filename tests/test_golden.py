"""Seeded golden transcripts: a change to the rules, the opponents, the engine, the RNG
streams, rendering or parsing must not silently alter them.

For every game, two fixed matchups of catalogue strategies (one with a stochastic agent,
one with a stochastic opponent) play seeds 0, 1, 2 through the rollout engine with a
``ScriptedPolicy``; ``tests/golden/<game>.json`` stores each episode's ``to_json()``
with the observation text replaced by its SHA-256 (the text itself is long, but any change
to it still shows).

The golden files were reviewed by hand when first generated: the payoffs of every round
follow the SPEC §2 rules for the actions shown (IPD table, auction value − bid with ties
to either side, negotiation deals and breakdowns, v2 pools, Kuhn first actor alternating
and ±1/±2 results), and the strategies play as documented (GenerousTFT answers a
defection with a defection or, now and then, forgives; GrimTrigger never forgives; Concede
drops to 5 after its first breakdown; TFT-Neg demands what the other's last demand leaves;
Adaptive bids one step above the other's last bid; Proportional's vectors follow the values).

After an *intended* change, regenerate and review the diff::

    SEPO_UPDATE_GOLDEN=1 PYTHONPATH=src python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sepo.domains import find_strategy
from sepo.games import make_game
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy

GOLDEN_DIR = Path(__file__).parent / "golden"
SEEDS = (0, 1, 2)
UPDATE = os.environ.get("SEPO_UPDATE_GOLDEN") == "1"

#: (agent, opponent) per game; the first of each pair of matchups has a stochastic
#: opponent, the second a stochastic agent (or both stochastic, for Kuhn).
MATCHUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "ipd": (("alternating_defect", "generous_tit_for_tat"), ("random", "grim_trigger")),
    "auction": (("value_bid", "random_bid"), ("random_bid", "adaptive")),
    "negotiation": (("concede", "random_3_7"), ("random_3_7", "tft_neg")),
    "negotiation_v2": (("proportional", "random_neg"), ("random_neg", "tft_neg")),
    "kuhn": (("nash_approx", "uniform"), ("always_bet", "loose_aggressive")),
}


def _hash_observations(episode: dict[str, Any]) -> dict[str, Any]:
    for turn in episode["turns"]:
        text = turn.pop("observation")
        turn["observation_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return episode


def transcripts(name: str) -> dict[str, Any]:
    game = make_game(name)
    out: dict[str, Any] = {"game": name, "seeds": list(SEEDS), "matchups": []}
    for agent_name, opponent_name in MATCHUPS[name]:
        agent = find_strategy(name, agent_name)
        opponent = find_strategy(name, opponent_name)
        specs = [EpisodeSpec(game, opponent, "train", s) for s in SEEDS]
        episodes = run_episodes(specs, ScriptedPolicy(agent))
        out["matchups"].append(
            {
                "agent": agent_name,
                "opponent": opponent_name,
                "episodes": [_hash_observations(e.to_json()) for e in episodes],
            }
        )
    # Through JSON, so tuples and lists compare the same way as the stored file.
    loaded: dict[str, Any] = json.loads(json.dumps(out))
    return loaded


@pytest.mark.parametrize("name", sorted(MATCHUPS))
def test_golden_transcripts(name: str) -> None:
    path = GOLDEN_DIR / f"{name}.json"
    current = transcripts(name)
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(current, indent=1) + "\n", encoding="utf-8")
    if not path.exists():
        pytest.fail(f"no golden file {path}; generate it with SEPO_UPDATE_GOLDEN=1")
    golden = json.loads(path.read_text(encoding="utf-8"))
    for stored, now in zip(golden["matchups"], current["matchups"], strict=True):
        for i, (a, b) in enumerate(zip(stored["episodes"], now["episodes"], strict=True)):
            assert b == a, f"{name}: {stored['agent']} vs {stored['opponent']}, seed {SEEDS[i]}"
    assert golden == current


def test_every_registered_game_has_goldens() -> None:
    from sepo.domains import domain_names

    assert set(MATCHUPS) == set(domain_names())

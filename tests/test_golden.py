"""Seeded golden transcripts: a change to the rules, the opponents, the engine, the RNG
streams, rendering or parsing must not silently alter them.

For every game, two fixed matchups of catalogue strategies (one with a stochastic agent,
one with a stochastic opponent) play seeds 0, 1, 2 through the rollout engine with a
``ScriptedPolicy``; ``tests/golden/<game>.txt`` stores every field of each episode's
``to_json()``, as text a reviewer can read in a diff: the episodes one after another,
each turn's metadata as one JSON line followed by its observation, line by line, and
each round's outcome as one JSON line after the turns of that round (see
:func:`render_golden`; :func:`parse_golden` reads it back to the same JSON).

The golden files were reviewed by hand when first generated: the payoffs of every round
follow the SPEC §2 rules for the actions shown (IPD table, auction value − bid with ties
to either side, negotiation deals and breakdowns, v2 pools, Kuhn first actor alternating
and ±1/±2 results), and the strategies play as documented (GenerousTFT answers a
defection with a defection or, now and then, forgives; GrimTrigger never forgives; Concede
drops to 5 after its first breakdown; TFT-Neg demands what the other's last demand leaves;
Adaptive bids one step above the other's last bid; Proportional's vectors follow the values).
The text files replaced JSON files that stored each observation's SHA-256 instead of the
text; they hold exactly the same episodes (checked when they were converted).

After an *intended* change, regenerate and review the diff::

    SEPO_UPDATE_GOLDEN=1 PYTHONPATH=src python -m pytest tests/test_golden.py
"""

from __future__ import annotations

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

#: Marks an observation line; a line of the observation follows it after one space.
TEXT = "  |"


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
                "episodes": [e.to_json() for e in episodes],
            }
        )
    # Through JSON, so tuples and lists compare the same way as the stored file.
    loaded: dict[str, Any] = json.loads(json.dumps(out))
    return loaded


def _line(kind: str, value: dict[str, Any]) -> str:
    return f"{kind} {json.dumps(value, ensure_ascii=False)}"


def render_golden(data: dict[str, Any]) -> str:
    """The transcripts as text: one ``KIND {json}`` line per record, every field kept.

    ``golden`` (game, seeds), ``matchup`` (agent, opponent) and ``episode`` (the
    episode's fields but its turns and rounds) open their parts; ``turn`` lines hold a
    turn's fields but its observation, whose lines follow, each after ``  | ``; a
    ``round`` line holds a round's outcome and comes after the turns of that round. The
    turns and the rounds each keep their own order, so interleaving them loses nothing.
    """
    head = {k: v for k, v in data.items() if k != "matchups"}
    lines = [
        f"# Golden transcripts of {data['game']}, written by tests/test_golden.py.",
        "# Regenerate after an intended change: SEPO_UPDATE_GOLDEN=1, then review the diff.",
        _line("golden", head),
    ]
    for matchup in data["matchups"]:
        lines += ["", _line("matchup", {k: v for k, v in matchup.items() if k != "episodes"})]
        for episode in matchup["episodes"]:
            header = {k: v for k, v in episode.items() if k not in ("turns", "rounds")}
            lines += ["", _line("episode", header)]
            turns = list(episode["turns"])
            for outcome in [*episode["rounds"], None]:
                while turns and (outcome is None or turns[0]["round"] <= outcome["round"]):
                    turn = turns.pop(0)
                    text = turn["observation"]
                    assert isinstance(text, str), turn
                    lines.append(
                        _line("turn", {k: v for k, v in turn.items() if k != "observation"})
                    )
                    lines += [f"{TEXT} {row}" if row else TEXT for row in text.split("\n")]
                if outcome is not None:
                    lines.append(_line("round", outcome))
    return "\n".join(lines) + "\n"


def parse_golden(text: str) -> dict[str, Any]:
    """The transcripts :func:`render_golden` wrote, as the JSON they were written from."""
    data: dict[str, Any] = {}
    episode: dict[str, Any] = {}
    observation: list[str] | None = None

    def close_observation() -> None:
        nonlocal observation
        if observation is not None:
            episode["turns"][-1]["observation"] = "\n".join(observation)
            observation = None

    if not text.endswith("\n"):
        raise ValueError("the golden text must end with a newline")
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        if line.startswith(TEXT):
            rest = line[len(TEXT) :]
            if observation is None or (rest and not rest.startswith(" ")):
                raise ValueError(f"line {number}: observation text out of place: {line!r}")
            observation.append(rest[1:])
            continue
        close_observation()
        if not line or line.startswith("#"):
            continue
        kind, _, value = line.partition(" ")
        record = json.loads(value)
        if kind == "golden":
            data = {**record, "matchups": []}
        elif kind == "matchup":
            data["matchups"].append({**record, "episodes": []})
        elif kind == "episode":
            episode = {**record, "turns": [], "rounds": []}
            data["matchups"][-1]["episodes"].append(episode)
        elif kind == "turn":
            episode["turns"].append(record)
            observation = []
        elif kind == "round":
            episode["rounds"].append(record)
        else:
            raise ValueError(f"line {number}: unknown record {kind!r}")
    close_observation()
    return data


@pytest.mark.parametrize("name", sorted(MATCHUPS))
def test_golden_transcripts(name: str) -> None:
    path = GOLDEN_DIR / f"{name}.txt"
    current = transcripts(name)
    # The text keeps everything: read back, it is the JSON it was written from.
    assert parse_golden(render_golden(current)) == current
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_bytes(render_golden(current).encode("utf-8"))
    if not path.exists():
        pytest.fail(f"no golden file {path}; generate it with SEPO_UPDATE_GOLDEN=1")
    # Bytes, so no newline translation touches the observations.
    golden = parse_golden(path.read_bytes().decode("utf-8"))
    for stored, now in zip(golden["matchups"], current["matchups"], strict=True):
        for i, (a, b) in enumerate(zip(stored["episodes"], now["episodes"], strict=True)):
            assert b == a, f"{name}: {stored['agent']} vs {stored['opponent']}, seed {SEEDS[i]}"
    assert golden == current


def test_parse_golden_rejects_text_out_of_place() -> None:
    with pytest.raises(ValueError, match="out of place"):
        parse_golden('golden {"game": "ipd"}\n  | stray\n')
    with pytest.raises(ValueError, match="unknown record"):
        parse_golden("bogus {}\n")


def test_every_registered_game_has_goldens() -> None:
    from sepo.domains import domain_names

    assert set(MATCHUPS) == set(domain_names())

"""SFT demonstrator datasets (SPEC §5; ``sepo data sft``).

Rule-based demonstrators (one drawn per episode from the game's mixture in
``sepo.opponents.<game>.DEMONSTRATORS``) play whole episodes against the game's train,
exploit and collusive opponents (never the held-out pool) through the same rollout
engine, renderer and parser that evaluation uses. Each assistant turn is one short
templated reasoning sentence and the action alone on the last line.

One row is one whole episode as the engine's conversation: the system prompt, then for
each decision the observation as a user message and the demonstrator's answer as an
assistant message, so SFT trains on exactly the token sequences the policy will see at
play time (and that SEPO-GRPO later trains on).

The split is by episode (80/20), so no episode leaks between train and valid. Everything
is a pure function of the seed. No torch is needed here.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.core.files import write_json_atomic, write_lines_atomic
from sepo.core.records import EpisodeRecord
from sepo.domains import domain
from sepo.games.text import format_action
from sepo.opponents.base import SCORED_POOLS
from sepo.rollout.demonstrator import DemonstratorPolicy
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import Message

VALID_FRACTION = 0.2


@dataclass(frozen=True)
class SFTDataset:
    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    card: dict[str, Any]


def episode_conversation(ep: EpisodeRecord, system: str) -> list[Message]:
    """The whole conversation of an episode, exactly as the engine built it."""
    messages: list[Message] = [{"role": "system", "content": system}]
    for turn in ep.turns:
        messages.append({"role": "user", "content": turn.observation_text()})
        messages.append({"role": "assistant", "content": turn.raw})
    return messages


def _episode_row(
    ep: EpisodeRecord, system: str, demonstrator: str, episode_id: str
) -> dict[str, Any]:
    return {
        "messages": episode_conversation(ep, system),
        "game": ep.game,
        "demonstrator": demonstrator,
        "opponent": ep.opponent,
        "pool": ep.pool,
        "episode": episode_id,
        "decisions": len(ep.turns),
        "actions": [format_action(t.action) for t in ep.turns],
    }


def build_sft_dataset(
    games: Sequence[str],
    *,
    episodes: int | None = None,
    seed: int = 0,
    decisions: dict[str, int] | None = None,
    per_game: Mapping[str, int | None] | None = None,
) -> SFTDataset:
    """Demonstrator episodes for ``games``; ``episodes`` per game, or enough episodes to
    reach the paper's decision counts (each domain's ``sft_decisions``) when ``None``;
    ``per_game`` overrides ``episodes`` for the games it names (``None`` there: the
    paper's count)."""
    targets = {g: domain(g).sft_decisions for g in games} | (decisions or {})
    rng = random.Random(f"sft:{seed}")
    train: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for g in games:
        count = (per_game or {}).get(g, episodes)
        d = domain(g)
        game = d.make_game()
        pools = d.pools
        opponents = [(p, o) for p in SCORED_POOLS for o in pools.pool(p)]
        names, weights = zip(*d.demonstrators, strict=True)
        produced, k = 0, 0
        while (count is None and produced < targets[g]) or (count is not None and k < count):
            batch = 64 if count is None else min(64, count - k)
            specs, by_seed, demo_names = [], {}, {}
            for _ in range(batch):
                ep_seed = rng.getrandbits(48)
                demo = rng.choices(names, weights=weights)[0]
                pool, opp = opponents[rng.randrange(len(opponents))]
                specs.append(EpisodeSpec(game, opp, pool, ep_seed))
                by_seed[ep_seed] = d.find_strategy(demo)
                demo_names[ep_seed] = demo
            for ep in run_episodes(specs, DemonstratorPolicy(game, by_seed)):
                if count is None and produced >= targets[g]:
                    break
                row = _episode_row(ep, game.system_prompt(), demo_names[ep.seed], f"{g}-{k}")
                (valid if rng.random() < VALID_FRACTION else train).append(row)
                produced += row["decisions"]
                k += 1
    return SFTDataset(train, valid, dataset_card(train, valid, games, seed))


def dataset_card(
    train: list[dict[str, Any]], valid: list[dict[str, Any]], games: Sequence[str], seed: int
) -> dict[str, Any]:
    rows = train + valid

    def decisions(part: list[dict[str, Any]]) -> int:
        return sum(int(r["decisions"]) for r in part)

    per_action: Counter[tuple[str, str]] = Counter()
    for r in rows:
        per_action.update((r["game"], a) for a in r["actions"])
    return {
        "games": list(games),
        "seed": seed,
        "decisions": {
            "train": decisions(train),
            "valid": decisions(valid),
            "total": decisions(rows),
        },
        "episodes": {"train": len(train), "valid": len(valid)},
        "per_game_decisions": {g: decisions([r for r in rows if r["game"] == g]) for g in games},
        "per_demonstrator_episodes": {
            f"{g}/{d}": n
            for (g, d), n in sorted(Counter((r["game"], r["demonstrator"]) for r in rows).items())
        },
        "per_action": {f"{g}/{a}": n for (g, a), n in sorted(per_action.items())},
        "format": "one chat conversation per episode (TRL conversational format): system "
        "prompt, then per decision the observation (user) and reasoning + action on the last "
        "line (assistant)",
    }


def write_dataset(ds: SFTDataset, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", ds.train), ("valid", ds.valid)):
        write_lines_atomic(out / f"{name}.jsonl", (json.dumps(row) for row in rows))
    write_json_atomic(out / "card.json", ds.card)

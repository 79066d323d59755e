"""Behavioural fingerprint of a policy from a ``sepo eval`` run's ``episodes.jsonl``.

Checks that an SFT model plays like its demonstrators (issue: SFT warm start):

- IPD: how often the agent defects right after the opponent defected (retaliation) and
  right after the opponent cooperated.
- Kuhn: how often the agent bets when it opens a hand, by card.

Run::

    python -m sepo.evaluate.behaviour runs/eval-ipd/episodes.jsonl
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def fingerprint(episodes: list[dict[str, Any]]) -> dict[str, dict[str, tuple[int, int]]]:
    """``{game: {situation: (times the behaviour happened, times the situation came)}}``."""
    counts: dict[str, Counter[str]] = {}
    for ep in episodes:
        c = counts.setdefault(ep["game"], Counter())
        if ep["game"] == "ipd":
            moves = [dict((p, a) for p, a in r["actions"]) for r in ep["rounds"]]
            for prev, now in itertools.pairwise(moves):
                key = "after opponent DEFECT" if prev[1] == "DEFECT" else "after opponent COOPERATE"
                c[key + ":n"] += 1
                c[key + ":hit"] += now[0] == "DEFECT"
        elif ep["game"] == "kuhn":
            for turn in ep["turns"]:
                obs = turn.get("observation") or ""
                if "You act first this hand." in obs and "This hand so far" not in obs:
                    card = obs.split("Your card: ")[1][0]
                    c[f"opening with {card}:n"] += 1
                    c[f"opening with {card}:hit"] += turn["action"] == "BET"
    return {
        game: {
            k.removesuffix(":n"): (c[k.removesuffix(":n") + ":hit"], c[k])
            for k in sorted(c)
            if k.endswith(":n")
        }
        for game, c in counts.items()
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("usage: python -m sepo.evaluate.behaviour EPISODES_JSONL", file=sys.stderr)
        return 2
    lines = Path(argv[0]).read_text().splitlines()
    result = fingerprint([json.loads(line) for line in lines if line.strip()])
    labels = {"ipd": "defects", "kuhn": "bets"}
    for game, table in result.items():
        for situation, (hit, n) in table.items():
            rate = hit / n if n else float("nan")
            print(f"{game}: {labels.get(game, 'acts')} {situation}: {hit}/{n} = {rate:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

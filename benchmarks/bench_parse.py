"""Benchmark: the action parser's time against the answer's length (issue "Quoted is not
chosen": parse time must stay linear in the answer's length).

Each answer is a rambling text with no action on its last line, so every rule runs (the
fast path never applies): it mixes the model's own sentences, copied runs of the game's
rules and observation, option lists and numbered lines, repeated to the target length.
The conversation (the game's rules plus one observation) is the copy context, as in the
rollout engine. For each length the script prints the best of ``--repeats`` mean times
per parse and the time per 1,000 characters; linear parsing keeps the last column flat.
Answers longer than the parser's 20,000-character window are read from their tail, so
the time stops growing there.

Not a test. Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_parse.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import time

from sepo.core.types import View
from sepo.games import make_game

LENGTHS = (500, 1_000, 2_000, 4_000, 8_000, 16_000)
_FILLER = {
    "ipd": (
        "Each of 8 rounds, you and your opponent choose COOPERATE or DEFECT at the same "
        "time. I think about it. COOPERATE, DEFECT? They might DEFECT if I COOPERATE.\n"
        "1. COOPERATE\n2. DEFECT\nHard to say "
    ),
    "negotiation": (
        "You each demand a whole number from 1 to 9 at the same time. 6 for me, 4 for you, "
        "or maybe 5 and 5? one of: 1, 2, 3, 4, 5, 6, 7, 8, 9 is fine, round 3 was a deal "
    ),
}


def _answer(game: str, length: int) -> str:
    filler = _FILLER[game]
    text = (filler * (length // len(filler) + 1))[:length]
    return text.rstrip() + "\nstill thinking"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'game':<12}{'chars':>8}{'ms/parse':>11}{'ms per 1k chars':>17}")
    for name in _FILLER:
        game = make_game(name)
        observation = "Round 3 of 8.\nScores so far: you 6, opponent 6.\n" + game.format_footer(
            _view(name)
        )
        for length in LENGTHS:
            text = _answer(name, length)
            n = max(3, 40_000 // length)
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                for _ in range(n):
                    game.parse(text, context=(observation,))
                best = min(best, (time.perf_counter() - start) / n)
            print(f"{name:<12}{length:>8}{best * 1e3:>11.3f}{best * 1e6 / length:>17.3f}")


def _view(name: str) -> View:
    game = make_game(name)
    state = game.new_state()
    rng = random.Random(0)
    while state.is_chance():
        outcomes = state.chance_outcomes()
        state.apply_chance(rng.choice([o for o, _ in outcomes]))
    return state.view(0)


if __name__ == "__main__":
    main()

"""The SFT demonstrators' own figures in a game: what ``sepo sft`` teaches a model to
play, to read an SFT model's ``sepo eval`` row against.

Each episode draws its demonstrator from the game's mixture (``Domain.demonstrators``),
as ``sepo data sft`` does, and plays it against every opponent of the scored pools
(train, exploit, collusive) through the same engine and metrics as ``sepo eval``. No
model, no torch: seconds on a laptop.

    PYTHONPATH=src python scripts/demonstrator_metrics.py --game ipd [--episodes 200]
"""

from __future__ import annotations

import argparse
import random

from sepo.domains import domain
from sepo.evaluate.harness import EvalConfig, evaluate_game
from sepo.metrics.aggregate import HEADLINE_LABELS
from sepo.opponents.base import SCORED_POOLS
from sepo.rollout.demonstrator import DemonstratorPolicy


class _DrawnBySeed(dict):  # type: ignore[type-arg]
    """Episode seed -> demonstrator strategy, drawn from the mixture on first use (a
    pure function of the seed)."""

    def __init__(self, game: str) -> None:
        super().__init__()
        self._domain = domain(game)
        self._names, self._weights = zip(*self._domain.demonstrators, strict=True)

    def __missing__(self, seed: int) -> object:
        name = random.Random(f"demonstrator:{seed}").choices(self._names, self._weights)[0]
        self[seed] = strategy = self._domain.find_strategy(name)
        return strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="ipd")
    parser.add_argument("--episodes", type=int, default=200, help="episodes per opponent")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    d = domain(args.game)
    policy = DemonstratorPolicy(d.make_game(), _DrawnBySeed(args.game))
    cfg = EvalConfig(episodes=args.episodes, seed=args.seed, pools=SCORED_POOLS)
    metrics = evaluate_game(args.game, policy, cfg, keep_episodes=False).metrics
    mixture = ", ".join(f"{n} {w:.2f}" for n, w in d.demonstrators)
    print(f"{args.game} demonstrators ({mixture}); {args.episodes} episodes per opponent")
    for key, est in metrics.headline().items():
        print(f"  {HEADLINE_LABELS.get(key, key)}: {est.value:.3f} [{est.low:.3f}, {est.high:.3f}]")


if __name__ == "__main__":
    main()

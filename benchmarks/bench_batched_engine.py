"""Benchmark: decisions per second of the batched rollout engine against a sequential loop
(one episode at a time, one ``generate`` call per decision — how the paper's code ran),
same tiny model, same machine, measured in one run.

Both sides play Kuhn poker against NashApprox with the same sampling settings and the
same model (built locally from the tiny config with ``--seed``; pass ``--model DIR`` to use
a trained one, e.g. an SFT output, whose short answers are what training really sees).
The batched side hands all pending decisions of ``--batch`` episodes to one ``generate``
call per step and keeps each episode's key/value cache between its turns; the sequential
side runs the same engine on one episode at a time, once re-encoding the whole
conversation at every decision (as the paper's loop did) and once with the same cache.

Not a test. Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_batched_engine.py [--batch 64] [--episodes 64] [--model DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sepo.games import make_game
from sepo.opponents import find_strategy
from sepo.policies.corpus import game_corpus
from sepo.policies.local import LocalModelPolicy
from sepo.policies.tiny import build_tiny_model
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import SamplingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=64, help="episodes on the batched side")
    parser.add_argument("--sequential-episodes", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = build_tiny_model(
                Path(tmp) / "tiny", game_corpus(seed=args.seed), seed=args.seed
            )
        sampling = SamplingConfig(
            temperature=0.8, max_new_tokens=args.max_new_tokens, seed=args.seed
        )
        policy = LocalModelPolicy.load(str(model_dir), sampling=sampling)
        game = make_game("kuhn")
        opponent = find_strategy("kuhn", "nash_approx")

        def specs(n: int, offset: int) -> list[EpisodeSpec]:
            return [EpisodeSpec(game, opponent, "train", offset + k) for k in range(n)]

        run_episodes(specs(2, 10_000), policy)  # warm-up

        def sequential(reuse: bool) -> tuple[int, float]:
            policy.reuse_cache = reuse
            start = time.perf_counter()
            decisions = 0
            for spec in specs(args.sequential_episodes, 0):
                (ep,) = run_episodes([spec], policy)
                decisions += len(ep.turns)
            return decisions, decisions / (time.perf_counter() - start)

        decisions_paper, paper_rate = sequential(reuse=False)
        decisions_seq, seq_rate = sequential(reuse=True)

        start = time.perf_counter()
        decisions_batched = 0
        for first in range(0, args.episodes, args.batch):
            eps = run_episodes(specs(min(args.batch, args.episodes - first), first), policy)
            decisions_batched += sum(len(ep.turns) for ep in eps)
        batched_rate = decisions_batched / (time.perf_counter() - start)

    print(
        f"model: {model_dir if args.model else 'fresh tiny model'}; max_new_tokens {args.max_new_tokens}"
    )
    print()
    print("| engine | episodes | decisions | decisions/s |")
    print("|---|---|---|---|")
    print(
        f"| sequential, conversation re-encoded every turn (the paper's loop) | {args.sequential_episodes} | {decisions_paper} | {paper_rate:.1f} |"
    )
    print(
        f"| sequential, key/value cache kept between turns | {args.sequential_episodes} | {decisions_seq} | {seq_rate:.1f} |"
    )
    print(
        f"| batched ({args.batch} episodes per generate) | {args.episodes} | {decisions_batched} | {batched_rate:.1f} |"
    )
    print()
    print(f"batched / paper's loop: {batched_rate / paper_rate:.1f}x")
    print(f"batched / sequential with the same cache: {batched_rate / seq_rate:.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark: decisions per second of the batched rollout engine against a sequential loop
(one episode at a time, one ``generate`` call per decision — how the paper's code ran),
same tiny model, same machine, measured in one run.

Both sides play ``--game`` (Kuhn poker by default) against the game's first train-pool
opponent with the same sampling settings and the same model (built locally from the tiny config with ``--seed``; pass ``--model DIR`` to use
a trained one, e.g. an SFT output, whose short answers are what training really sees).
The batched side hands all pending decisions of ``--batch`` episodes to one ``generate``
call per step and keeps each episode's key/value cache between its turns; the sequential
side runs the same engine on one episode at a time, once re-encoding the whole
conversation at every decision (as the paper's loop did) and once with the same cache.
With the cache on, first prompts start from the key/values of the prompt prefix they
share (the rules), kept by the policy across calls; the warm-up computes it, so both
cached sides use it.

Not a test. Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_batched_engine.py [--batch 64] [--episodes 64] [--model DIR] [--game kuhn] [--threads 2]

``--threads`` sets torch's intra-op threads for both sides (default: 2, the target
machine's cores). The script also prints where the batched side's model time goes
(prefill of the new observation tokens vs decoding), which bounds the ratio: prefilling
a turn's new tokens is compute-bound, so batching speeds it up far less than decoding.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sepo.domains import domain
from sepo.games import make_game
from sepo.policies.local import LocalModelPolicy
from sepo.policies.tiny import build_default_model
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import SamplingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=64, help="episodes on the batched side")
    parser.add_argument("--sequential-episodes", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--game", default="kuhn")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = build_default_model(Path(tmp) / "tiny", seed=args.seed)
        sampling = SamplingConfig(
            temperature=0.8, max_new_tokens=args.max_new_tokens, seed=args.seed
        )
        policy = LocalModelPolicy.load(str(model_dir), sampling=sampling)
        game = make_game(args.game)
        opponent = domain(args.game).pools.train[0]

        def specs(n: int, offset: int) -> list[EpisodeSpec]:
            return [EpisodeSpec(game, opponent, "train", offset + k) for k in range(n)]

        run_episodes(specs(2, 10_000), policy)  # warm-up

        timers: dict[str, ForwardTimer] = {}

        def sequential(reuse: bool) -> tuple[int, float]:
            policy.reuse_cache = reuse
            timers["cached" if reuse else "paper"] = timer = ForwardTimer(policy.model)
            start = time.perf_counter()
            decisions = 0
            for spec in specs(args.sequential_episodes, 0):
                (ep,) = run_episodes([spec], policy)
                decisions += len(ep.turns)
            timer.remove()
            return decisions, decisions / (time.perf_counter() - start)

        decisions_paper, paper_rate = sequential(reuse=False)
        decisions_seq, seq_rate = sequential(reuse=True)

        forward = timers["batched"] = ForwardTimer(policy.model)
        counts_before = dict(policy.stats.counts)
        start = time.perf_counter()
        decisions_batched = 0
        for first in range(0, args.episodes, args.batch):
            eps = run_episodes(specs(min(args.batch, args.episodes - first), first), policy)
            decisions_batched += sum(len(ep.turns) for ep in eps)
        batched_seconds = time.perf_counter() - start
        batched_rate = decisions_batched / batched_seconds
        forward.remove()
        counts = {k: v - counts_before.get(k, 0) for k, v in policy.stats.counts.items()}

    print(
        f"game: {args.game}; model: {model_dir if args.model else 'fresh tiny model'}; "
        f"max_new_tokens {args.max_new_tokens}; torch threads {args.threads}; "
        f"device {policy.model.device}"
    )
    print()
    print("| engine | episodes | decisions | decisions/s |")
    print("|---|---|---|---|")
    print(
        f"| sequential, conversation re-encoded every turn (the paper's loop) | {args.sequential_episodes} | {decisions_paper} | {paper_rate:.2f} |"
    )
    print(
        f"| sequential, key/value cache kept between turns | {args.sequential_episodes} | {decisions_seq} | {seq_rate:.2f} |"
    )
    print(
        f"| batched ({args.batch} episodes per generate) | {args.episodes} | {decisions_batched} | {batched_rate:.2f} |"
    )
    print()
    print(f"batched / paper's loop: {batched_rate / paper_rate:.1f}x")
    print(f"batched / sequential with the same cache: {batched_rate / seq_rate:.1f}x")
    print()
    print(
        f"batched side, {batched_seconds:.2f} s: prefill {forward.seconds['prefill']:.2f} s "
        f"({forward.tokens['prefill']} tokens fed, "
        f"{forward.tokens['prefill'] / max(forward.seconds['prefill'], 1e-9):,.0f} tokens/s), "
        f"decode {forward.seconds['decode']:.2f} s ({forward.calls['decode']} steps, "
        f"{forward.tokens['decode']} tokens)"
    )
    print()
    print("Generation speed (model forward passes only; a decode step feeds one token per row):")
    print()
    print("| side | decode steps | rows per step | generated tokens/s | prefill tokens/s |")
    print("|---|---|---|---|---|")
    names = {
        "paper": "sequential, re-encoded (batch 1)",
        "cached": "sequential, cached (batch 1)",
        "batched": f"batched (up to {args.batch} rows)",
    }
    for key, name in names.items():
        t = timers[key]
        steps = max(t.calls["decode"], 1)
        print(
            f"| {name} | {t.calls['decode']} | {t.tokens['decode'] / steps:.1f} | "
            f"{t.tokens['decode'] / max(t.seconds['decode'], 1e-9):,.0f} | "
            f"{t.tokens['prefill'] / max(t.seconds['prefill'], 1e-9):,.0f} |"
        )
    print()
    print(
        f"shared prompt prefix: {counts.get('local/shared_prefix_tokens', 0):,.0f} prompt tokens "
        f"not fed, {counts.get('local/shared_prefix_fed', 0):,.0f} fed to compute prefixes "
        f"(counted in the prefill above); {counts.get('local/prompt_tokens', 0):,.0f} prompt "
        "tokens fed by generate (padding excluded)"
    )


class ForwardTimer:
    """Wall time of the model's forward passes, split into prefill (several new tokens
    per row) and decode (one per row), with the tokens fed (padding included)."""

    def __init__(self, model: object) -> None:
        self.seconds = {"prefill": 0.0, "decode": 0.0}
        self.tokens = {"prefill": 0, "decode": 0}
        self.calls = {"prefill": 0, "decode": 0}
        self._start = 0.0
        self._kind = "decode"
        import torch

        # On a GPU the forward returns before its kernels finish: wait for them.
        on_gpu = any(p.is_cuda for p in model.parameters())  # type: ignore[attr-defined]
        self._sync = torch.cuda.synchronize if on_gpu else (lambda: None)
        self._handles = [
            model.register_forward_pre_hook(self._pre, with_kwargs=True),  # type: ignore[attr-defined]
            model.register_forward_hook(self._post, with_kwargs=True),  # type: ignore[attr-defined]
        ]

    def _pre(self, module: object, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        ids = kwargs.get("input_ids")
        shape = getattr(ids, "shape", (0, 0))
        self._kind = "prefill" if shape[1] > 1 else "decode"
        self.tokens[self._kind] += int(shape[0] * shape[1])
        self._sync()
        self._start = time.perf_counter()

    def _post(self, module: object, args: object, kwargs: object, out: object) -> None:
        self._sync()
        self.seconds[self._kind] += time.perf_counter() - self._start
        self.calls[self._kind] += 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


if __name__ == "__main__":
    main()

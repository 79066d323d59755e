"""Benchmark: tabulating a local model's whole IPD policy (the exact worst case's input,
:func:`sepo.policies.extract_ipd.extract_ipd_tree`), two ways, same model, same machine,
measured in one run.

- ``rescored``: one greedy generation per history, then a second, scoring pass that
  feeds each history's reasoning again followed by each action and reads the
  constrained distribution from it (how the tree was tabulated before).
- ``from generation``: the same greedy generation keeps its step distributions, and
  P(COOPERATE) is read at the token where COOPERATE and DEFECT part; a history is
  rescored only where the generation did not write the candidates' common tokens.

Prints the seconds of each side, the ratio, the largest difference in P(COOPERATE) over
all histories, the exact worst case (exploitability a round) of both tables, and how
many histories the faster side still rescored.

Not a test. Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_ipd_tabulation.py --model DIR [--rounds 8]
        [--temperature 0.8] [--batch 32] [--versus-batch N] [--threads 2]

``--versus-batch N`` compares two batch sizes instead, both from the generation (the
first side is ``--batch``); ``--baseline-src DIR`` compares another checkout of sepo (a
``git worktree`` of an earlier commit, run in a subprocess) with this one, both from the
generation at ``--batch``.

``--model``: a tiny or transformers model folder (e.g. ``RUN/sft/model`` of a
``sepo train --game ipd`` run: an SFT'd policy writes the short templated answers the
tree is meant for); without it a tiny model is built from the default config (its
untrained answers run to the token limit). ``--rounds`` below 8 tabulates a shorter
game (Σ 4^k histories).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sepo.exact.ipd import IPDTableStrategy, ipd_exploitability
from sepo.games import make_game
from sepo.policies.extract_ipd import extract_ipd_tree
from sepo.policies.local import LocalModelPolicy
from sepo.policies.tiny import build_default_model
from sepo.rollout.protocol import SamplingConfig

_ELSEWHERE = """
import json, sys, time
import torch
from sepo.games import make_game
from sepo.policies.extract_ipd import extract_ipd_tree
from sepo.policies.local import LocalModelPolicy
from sepo.rollout.protocol import SamplingConfig
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
sampling = SamplingConfig(**({"max_new_tokens": a["max_new_tokens"]} if a["max_new_tokens"] else {}))
policy = LocalModelPolicy.load(a["model"], device="cpu", sampling=sampling)
started = time.perf_counter()
table = extract_ipd_tree(policy, a["temperature"], game=make_game("ipd", rounds=a["rounds"]),
                         batch=a["batch"])
seconds = time.perf_counter() - started
scored = policy.stats.counts.get("local/scored_sequences", 0)
print(json.dumps({"seconds": seconds, "scored": scored, "cooperate": table.cooperate}))
"""


def _tabulate_elsewhere(args: argparse.Namespace, model: Path) -> tuple[Any, float, int]:
    """The same tabulation by the sepo source at ``--baseline-src`` (a subprocess)."""
    settings = {
        "model": str(model), "threads": args.threads, "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature, "rounds": args.rounds, "batch": args.batch,
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(args.baseline_src / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _ELSEWHERE, json.dumps(settings)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    table = IPDTableStrategy("baseline", args.rounds, result["cooperate"])
    return table, float(result["seconds"]), int(result["scored"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--versus-batch",
        type=int,
        default=None,
        help="compare from-generation at --batch with from-generation at this batch instead",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="compare from-generation with the sepo source in this folder (its src/) against "
        "this checkout's, both from the generation at --batch",
    )
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = build_default_model(Path(tmp) / "tiny", seed=0)
        game = make_game("ipd", rounds=args.rounds)
        sides = {}
        plan = [("rescored", False, args.batch), ("from generation", True, args.batch)]
        if args.versus_batch is not None:
            plan = [
                (f"batch {args.batch}", True, args.batch),
                (f"batch {args.versus_batch}", True, args.versus_batch),
            ]
        if args.baseline_src is not None:
            plan = [("this checkout", True, args.batch)]
            sides["baseline"] = _tabulate_elsewhere(args, model)
        for label, from_generation, batch in plan:
            sampling = SamplingConfig()
            if args.max_new_tokens is not None:
                sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
            policy = LocalModelPolicy.load(str(model), device="cpu", sampling=sampling)
            started = time.perf_counter()
            table = extract_ipd_tree(
                policy,
                args.temperature,
                game=game,
                batch=batch,
                from_generation=from_generation,
            )
            seconds = time.perf_counter() - started
            scored = policy.stats.counts.get("local/scored_sequences", 0)
            sides[label] = (table, seconds, scored)
            del policy

    if args.baseline_src is not None:
        sides = {f"baseline ({args.baseline_src})": sides.pop("baseline"), **sides}
    (slow, slow_s, slow_scored), (fast, fast_s, fast_scored) = sides.values()
    histories = len(slow.cooperate)
    gap = max(abs(slow.cooperate[k] - fast.cooperate[k]) for k in slow.cooperate)
    print(f"model {model}, {args.rounds} rounds ({histories} histories), T={args.temperature}")
    print("| side | seconds | ms per history | scored sequences | exploitability a round |")
    print("|---|---|---|---|---|")
    for label, (table, seconds, scored) in sides.items():
        worst = ipd_exploitability(table, game).exploitability
        print(
            f"| {label} | {seconds:.1f} | {1000 * seconds / histories:.1f} | {scored} "
            f"| {worst:.6f} |"
        )
    print(f"speed-up {slow_s / fast_s:.2f}x; largest |ΔP(C)| {gap:.2e}")
    print(f"rescored sequences: {slow_scored} (first side), {fast_scored} (second)")


if __name__ == "__main__":
    main()

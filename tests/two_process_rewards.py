"""Worker of ``test_grpo.py::test_two_processes_give_the_rewards_of_one``, started with
``python -m torch.distributed.run --nproc_per_node=2 tests/two_process_rewards.py OUT``.

Every process plays the same deterministic IPD step (scripted noisy agent, every pool,
groups of 4), keeps its half of the episodes (the even or the odd ones) and computes their
reward terms with the trainer's own gather (``sepo.train.grpo.gather_totals``). Rank 0
also writes the whole step's terms computed in one process, and each half's terms
computed without the gather, for the test to compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import PartialState

from sepo.core.records import EpisodeRecord
from sepo.domains import domain
from sepo.games import make_game
from sepo.objective import variant_terms
from sepo.opponents import Scripted
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy
from sepo.train.grpo import gather_totals

GROUP = 4
GAMES = {"ipd": make_game("ipd")}


def _step(seed: int) -> list[EpisodeRecord]:
    game = make_game("ipd")
    pools = domain("ipd").pools
    agent = Scripted("noisy", lambda v, rng: "COOPERATE" if rng.random() < 0.6 else "DEFECT")
    specs = []
    for pool in ("train", "exploit", "collusive"):
        for opp in pools.pool(pool):
            specs.extend(
                EpisodeSpec(game, opp, pool, seed * 1000 + len(specs) + k) for k in range(GROUP)
            )
    # An exploit-pool opponent the agent sometimes beats, so that the sign of its mean
    # advantage can differ between a process's half of the step and the whole step.
    coin = next(s for s in pools.pool("train") if s.name.lower().startswith("random"))
    specs.extend(EpisodeSpec(game, coin, "exploit", seed * 1000 + 500 + k) for k in range(GROUP))
    return run_episodes(specs, ScriptedPolicy(agent))


def _terms(variant: str, idx: list[int], reduce: object | None) -> dict[str, list[float | None]]:
    eps, aux = _step(2), _step(7)  # seeds where the gather changes every variant
    kwargs = {} if reduce is None else {"reduce": reduce}
    terms = variant_terms(
        variant,  # type: ignore[arg-type]
        GAMES,
        [eps[i] for i in idx],
        auxiliary=[aux[i] for i in idx] if variant == "auxiliary" else [],
        **kwargs,  # type: ignore[arg-type]
    )
    return {str(i): list(t.as_tuple()) for i, t in zip(idx, terms, strict=True)}


def main(out: Path) -> None:
    state = PartialState(cpu=True)
    n = len(_step(2))
    mine = list(range(state.process_index, n, state.num_processes))
    for variant in ("credited_mean", "shared", "auxiliary"):
        part = _terms(variant, mine, gather_totals(state))
        (out / f"{variant}-{state.process_index}.json").write_text(json.dumps(part))
        if state.is_main_process:
            whole = _terms(variant, list(range(n)), None)
            (out / f"{variant}-whole.json").write_text(json.dumps(whole))
            alone: dict[str, list[float | None]] = {}
            for k in range(state.num_processes):
                alone.update(_terms(variant, list(range(k, n, state.num_processes)), None))
            (out / f"{variant}-alone.json").write_text(json.dumps(alone))
    state.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Evaluation streams: episodes are written as they end and only their statistics are
kept, with the same files and figures as an evaluation that holds every episode; a
failure leaves the folder as it was; the bootstrap's blocks never change a result."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from sepo.domains import domain
from sepo.evaluate.harness import EvalConfig, EvaluationFiles, episode_specs, evaluate_game
from sepo.games import make_game
from sepo.metrics import compute_metrics
from sepo.metrics.aggregate import _FIELDS, _resampled_means
from sepo.rollout.engine import iter_episodes, run_episodes
from sepo.rollout.protocol import DecisionRequest, Recovery
from sepo.rollout.scripted import ScriptedPolicy


class TextOnly:
    """A scripted agent forced through the batched text path (no ``direct_strategy``),
    noting the highest episode index it has been asked about."""

    def __init__(self, inner: ScriptedPolicy, fail_after: int | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.highest = -1
        self.calls = 0
        self.fail_after = fail_after

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("the policy broke")
        self.highest = max([self.highest, *(r.episode for r in requests)])
        return self.inner.respond(requests)

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return self.inner.recover(requests, outputs)


def _agent(game: str) -> ScriptedPolicy:
    return ScriptedPolicy(domain(game).pools.train[0])


@pytest.mark.parametrize("game", ["ipd", "kuhn", "negotiation_v2"])
@pytest.mark.parametrize("text_path", [False, True])
def test_streamed_files_and_metrics_equal_a_held_evaluation(
    tmp_path: Path, game: str, text_path: bool
) -> None:
    cfg = EvalConfig(episodes=6, seed=3, n_boot=50, max_active=4)
    agent = _agent(game)
    policy = TextOnly(agent) if text_path else agent
    with EvaluationFiles(tmp_path, {"note": "x"}) as files:
        streamed = evaluate_game(game, policy, cfg, files=files, keep_episodes=False)
    assert streamed.episodes == []
    held = run_episodes(episode_specs(game, cfg), agent)
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [ep.to_json() for ep in held]
    expected = compute_metrics(make_game(game), held, domain(game).weights, n_boot=50, seed=3)
    assert streamed.metrics.to_json() == expected.to_json()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["run"] == {"note": "x"}
    assert written["safety"] == pytest.approx(expected.safety.value)
    assert len((tmp_path / "stats.jsonl").read_text().splitlines()) == len(held)


def test_records_come_in_spec_order_while_later_episodes_have_not_started() -> None:
    game = "ipd"
    cfg = EvalConfig(episodes=40, seed=0, pools=("train",), max_active=3)
    specs = episode_specs(game, cfg)
    policy = TextOnly(_agent(game))
    stream = iter_episodes(specs, policy, max_active=cfg.max_active)
    first = next(stream)
    assert (first.opponent, first.seed) == (specs[0].opponent.name, specs[0].seed)
    # The first record arrives while only a window of episodes has been played.
    assert policy.highest < 3 + 3
    rest = list(stream)
    assert [(r.opponent, r.seed) for r in [first, *rest]] == [
        (s.opponent.name, s.seed) for s in specs
    ]


def test_a_failed_evaluation_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    for name, text in [("metrics.json", "{}\n"), ("episodes.jsonl", "old\n")]:
        (tmp_path / name).write_text(text)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    cfg = EvalConfig(episodes=5, n_boot=10, max_active=2)
    with pytest.raises(RuntimeError, match="broke"), EvaluationFiles(tmp_path) as files:
        evaluate_game("ipd", TextOnly(_agent("ipd"), fail_after=7), cfg, files=files)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert after == before  # no temporary file left, the old files untouched


def test_the_bootstrap_block_size_never_changes_a_result() -> None:
    rng = np.random.default_rng(0)
    n = 37
    cols = {f: rng.normal(size=n) for f in _FIELDS}
    whole = _resampled_means(cols, n, 1000, np.random.default_rng(9), block=10**9)
    for block in (1, n, 5 * n + 3, 100 * n):
        blocked = _resampled_means(cols, n, 1000, np.random.default_rng(9), block=block)
        for f in _FIELDS:
            assert np.array_equal(blocked[f], whole[f])

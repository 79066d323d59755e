"""The ``sampled`` Kuhn strategy of a policy and its bootstrap interval (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app
from sepo.domains import find_strategy
from sepo.exact.kuhn import INFOSETS, KuhnStrategy, exploitability
from sepo.policies.extract import (
    exploitability_interval,
    extract_sampled_strategy,
    wilson_interval,
)
from sepo.rollout.scripted import ScriptedPolicy

runner = CliRunner()


@pytest.mark.parametrize("name", ["nash_approx", "uniform", "tight_passive"])
def test_sampled_strategy_and_interval_cover_the_truth(name: str) -> None:
    """Sampled from a scripted strategy whose exact values we know: every reached
    information set's 99.9% Wilson interval holds its true probability (about 30 sets in
    all, so at 95% one or two would miss by design), and the 95% bootstrap
    interval holds the true exploitability, including 0 at an equilibrium (where the
    plug-in estimate is biased upwards and a percentile interval misses it)."""
    truth = find_strategy("kuhn", name)
    assert isinstance(truth, KuhnStrategy)
    sampled = extract_sampled_strategy(ScriptedPolicy(truth), episodes=200, seed=0)
    assert sampled.episodes == 200
    assert sum(sampled.counts.values()) == sum(c for ep in sampled.per_episode for c, _ in ep)
    for key in INFOSETS:
        if sampled.counts[key] >= 20:
            wide = wilson_interval(sampled.aggressive[key], sampled.counts[key], z=3.29)
            assert wide[0] <= truth.to_dict()[key] <= wide[1], (key, truth.to_dict()[key], wide)
            assert sampled.ci95[key] == wilson_interval(
                sampled.aggressive[key], sampled.counts[key]
            )
    low, high = exploitability_interval(sampled, resamples=300, seed=0)
    exact = exploitability(truth).exploitability
    assert low <= exact <= high, (exact, low, high)
    assert high - low < 0.15


def test_sampled_extraction_is_seeded() -> None:
    policy = ScriptedPolicy(find_strategy("kuhn", "uniform"))
    a = extract_sampled_strategy(policy, episodes=30, seed=4)
    b = extract_sampled_strategy(policy, episodes=30, seed=4)
    c = extract_sampled_strategy(policy, episodes=30, seed=5)
    assert a.per_episode == b.per_episode
    assert a.per_episode != c.per_episode
    with pytest.raises(ValueError, match="at least one episode"):
        extract_sampled_strategy(policy, episodes=0)


def test_cli_sampled_mode_reports_intervals(tmp_path: Path) -> None:
    saved = tmp_path / "s.json"
    result = runner.invoke(
        app,
        [
            "exploitability",
            "--policy",
            "scripted:uniform",
            "--mode",
            "sampled",
            "--episodes",
            "60",
            "--json",
            "--save-strategy",
            str(saved),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["mode"] == "sampled" and payload["episodes"] == 60
    low, high = payload["exploitability_ci95"]
    assert low <= payload["exploitability"] <= high
    assert set(payload["ci95"]) == set(INFOSETS) == set(payload["counts"])
    assert KuhnStrategy.from_json(saved).to_dict() == payload["strategy"]
    table = runner.invoke(
        app, ["exploitability", "--policy", "scripted:uniform", "--mode", "sampled"]
    )
    assert table.exit_code == 0 and "bootstrap interval" in table.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mode", "exact"], "--mode is auto, prompt or sampled"),
        (["--mode", "sampled", "--episodes", "0"], "episodes"),
        (["--episodes", "50"], "apply to --mode sampled; this run is 'prompt'"),
        (["--mode", "prompt", "--seed", "1"], "apply to --mode sampled"),
    ],
)
def test_cli_bad_mode_arguments(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["exploitability", "--policy", "scripted:uniform", *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_cli_auto_mode_does_not_make_a_person_play_200_episodes() -> None:
    result = runner.invoke(app, ["exploitability", "--policy", "human"], input="")
    assert result.exit_code == 2
    assert "--mode sampled measures it by play" in result.output


def test_cli_api_policy_is_sampled_through_the_server() -> None:
    """An OpenAI-compatible model has no token probabilities: ``auto`` samples it, and
    ``prompt`` is refused with a one-line error."""
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        spec = f"openai:fake@{server.base_url}"
        out = runner.invoke(
            app,
            ["exploitability", "--policy", spec, "--episodes", "20", "--json"],
            env={"SEPO_API_KEY": "test"},
        )
        assert out.exit_code == 0, out.output
        payload = json.loads(out.output[out.output.index("{\n") :])
        assert payload["mode"] == "sampled" and sum(payload["counts"].values()) > 0
        refused = runner.invoke(
            app,
            ["exploitability", "--policy", spec, "--mode", "prompt"],
            env={"SEPO_API_KEY": "test"},
        )
        assert refused.exit_code == 2 and "--mode sampled" in refused.output

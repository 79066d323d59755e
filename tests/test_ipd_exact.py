"""IPD worst-case exploitability (SPEC §4): dynamic programming over the history tree,
checked against hand-derived values, brute force over every opponent policy of a short
game, and play of the computed best response through the engine."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from sepo.core.types import Action, State, View
from sepo.domains import domain, find_strategy
from sepo.exact.ipd import (
    MOVES,
    NotExactError,
    action_probabilities,
    history_key,
    ipd_exploitability,
)
from sepo.games import make_game
from sepo.games.ipd import IPD
from sepo.opponents.base import Scripted
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy

# Advantage per round of the best response, derived by hand (T=5, R=3, P=1, S=0, 8 rounds):
HAND_DERIVED = {
    "tit_for_tat": 5 / 8,  # cooperate, defect in the last round only
    "grim_trigger": 5 / 8,  # the same: any earlier defection is punished to the end
    "always_cooperate": 5.0,  # defect every round
    "always_defect": 0.0,  # nobody gains on it
    "random": 2.5,  # defect every round: half the rounds T against S
    "pavlov": 2.5,  # always defect: Pavlov alternates C, D, so T-S every other round
    "tit_for_two_tats": 25 / 8,  # D, C, D, C, D, C, D, D: five unanswered defections
}


@pytest.mark.parametrize(("name", "value"), sorted(HAND_DERIVED.items()))
def test_hand_derived_values(name: str, value: float) -> None:
    assert ipd_exploitability(find_strategy("ipd", name)).exploitability == pytest.approx(value)


def test_a_fixed_exploit_pool_is_not_the_worst_case() -> None:
    # SPEC §6: a scripted TitForTat has Exploit 0.3125 against the exploit pool; an
    # opponent that defects only in the last round gains twice as much.
    assert ipd_exploitability(find_strategy("ipd", "tit_for_tat")).exploitability == 0.625


def _exact_advantage(game: IPD, agent: Scripted, policy: dict[tuple[Action, ...], Action]) -> float:
    """Expected advantage per round of a pure opponent policy (history → move), by
    enumerating the agent's randomness."""

    def walk(state: State, history: tuple[Action, ...]) -> float:
        if state.is_terminal():
            return 0.0
        pi = action_probabilities(agent, state.view(0))
        b = policy[history]
        total = 0.0
        for a in MOVES:
            if pi[a] == 0:
                continue
            child = state.clone()
            child.apply_actions({0: a, 1: b})
            u0, u1 = child.history[-1].payoffs
            total += pi[a] * (u1 - u0 + walk(child, (*history, a, b)))
        return total

    return walk(game.new_state(), ()) / game.facts.rounds


@pytest.mark.parametrize("name", ["generous_tit_for_tat", "random", "pavlov", "prober"])
def test_dynamic_programming_equals_brute_force_over_every_opponent_policy(name: str) -> None:
    game = make_game("ipd", rounds=2)
    agent = find_strategy("ipd", name)
    histories = [()] + [(a, b) for a in MOVES for b in MOVES]  # every point the opponent moves
    best = max(
        _exact_advantage(game, agent, dict(zip(histories, moves, strict=True)))
        for moves in itertools.product(MOVES, repeat=len(histories))
    )
    assert ipd_exploitability(agent, game).advantage == pytest.approx(best, abs=1e-12)


class _Planned:
    """Plays the computed best response: its move at each joint history."""

    def __init__(self, plan: dict[str, str]) -> None:
        self.plan = plan
        self.name = "best_response"

    def act(self, view: View, rng: random.Random) -> Action:
        return self.plan[history_key(view.history)]


@pytest.mark.parametrize("name", ["tit_for_tat", "prober", "generous_tit_for_tat"])
def test_the_best_response_played_through_the_engine_earns_the_computed_advantage(
    name: str,
) -> None:
    game = make_game("ipd")
    agent = find_strategy("ipd", name)
    result = ipd_exploitability(agent, game)
    episodes = run_episodes(
        [EpisodeSpec(game, _Planned(result.best_response), "custom", s) for s in range(400)],
        ScriptedPolicy(agent),
    )
    advantage = [ep.opponent_mean - ep.agent_mean for ep in episodes]
    mean = sum(advantage) / len(advantage)
    spread = (sum((x - mean) ** 2 for x in advantage) / len(advantage)) ** 0.5
    assert abs(mean - result.advantage) <= 4 * spread / len(advantage) ** 0.5 + 1e-12


def test_exploit_pool_advantage_never_exceeds_the_worst_case() -> None:
    game = make_game("ipd")
    for name in ("tit_for_tat", "grim_trigger", "pavlov", "prober", "always_cooperate"):
        agent = find_strategy("ipd", name)
        worst = ipd_exploitability(agent, game).exploitability
        for opponent in domain("ipd").pools.pool("exploit"):
            (ep,) = run_episodes([EpisodeSpec(game, opponent, "exploit", 0)], ScriptedPolicy(agent))
            assert max(0.0, ep.opponent_mean - ep.agent_mean) <= worst + 1e-12, (name, opponent)


def test_a_strategy_that_draws_without_declaring_its_probabilities_is_refused() -> None:
    coin = Scripted("coin", lambda v, rng: MOVES[rng.random() < 0.3])
    with pytest.raises(NotExactError, match="declares no action_probabilities"):
        ipd_exploitability(coin)


def test_cli_reports_the_worst_case_and_refuses_models() -> None:
    import json

    from typer.testing import CliRunner

    from sepo.cli.main import app

    runner = CliRunner()
    ok = runner.invoke(
        app, ["exploitability", "--game", "ipd", "--policy", "scripted:tit_for_tat", "--json"]
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["exploitability"] == 0.625
    refused = runner.invoke(app, ["exploitability", "--game", "ipd", "--policy", "human"])
    assert refused.exit_code == 2 and "scripted:NAME" in refused.output


def test_a_user_module_strategy_is_solved_through_its_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ipd_user_strats.py").write_text(
        "class Tft:\n"
        "    name = 'my_tft'\n"
        "    def act(self, view, rng):\n"
        "        return view.history[-1].action_of(1) if view.history else 'COOPERATE'\n"
        "class Coin:\n"
        "    name = 'coin'\n"
        "    def act(self, view, rng):\n"
        "        return 'COOPERATE' if rng.random() < 0.3 else 'DEFECT'\n"
    )
    monkeypatch.chdir(tmp_path)
    assert ipd_exploitability(find_strategy("ipd", "ipd_user_strats:Tft")).exploitability == 0.625
    with pytest.raises(NotExactError):  # not the wrapper's "raised in act()" error
        ipd_exploitability(find_strategy("ipd", "ipd_user_strats:Coin"))


@pytest.mark.parametrize(
    "strategy",
    [
        Scripted("raises", lambda v, rng: "COOPERATE", probabilities=lambda v: {}[0]),
        Scripted("a_list", lambda v, rng: "COOPERATE", probabilities=lambda v: [0.5, 0.5]),  # type: ignore[arg-type,return-value]
        Scripted("unhashable", lambda v, rng: ["COOPERATE"]),  # type: ignore[arg-type,return-value]
        Scripted("illegal", lambda v, rng: "cooperate"),
        Scripted(
            "negative",
            lambda v, rng: "C",
            probabilities=lambda v: {"COOPERATE": 1.5, "DEFECT": -0.5},
        ),
    ],
    ids=lambda s: s.name,
)
def test_a_strategy_that_misbehaves_is_a_clear_error(strategy: Scripted) -> None:
    with pytest.raises(NotExactError, match=strategy.name):
        ipd_exploitability(strategy)


def test_records_stay_hashable() -> None:
    game = make_game("ipd")
    (ep,) = run_episodes(
        [EpisodeSpec(game, find_strategy("ipd", "random"), "train", 3)],
        ScriptedPolicy(find_strategy("ipd", "tit_for_tat")),
    )
    assert hash(ep) == hash(ep) and len({ep, ep}) == 1

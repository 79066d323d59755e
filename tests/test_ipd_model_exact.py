"""IPD worst case of a language model (SPEC §4): a model's policy tabulated at every joint
history (``sepo.policies.extract_ipd``), the table strategy, and the CLI.

The tree's conversations are checked against the rollout engine's own, node by node;
its probabilities against a recomputation of every node from scratch without any cache;
and the CLI end to end on a model built inside the test."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app
from sepo.core.types import Action, View
from sepo.domains import find_strategy
from sepo.exact.ipd import (
    IPDStrategyError,
    IPDTableStrategy,
    action_probabilities,
    all_history_keys,
    history_key,
    ipd_exploitability,
)
from sepo.games import make_game
from sepo.games.ipd import COOPERATE, DEFECT, MOVES
from sepo.policies.extract import reasoning_prefix
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import DecisionRequest, Message, Recovery, SamplingConfig

runner = CliRunner()


# ------------------------------------------------------------------- the table strategy


def test_all_history_keys_are_the_decision_nodes() -> None:
    keys = list(all_history_keys(3))
    assert len(keys) == len(set(keys)) == 1 + 4 + 16
    assert keys[:5] == ["", "CC", "CD", "DC", "DD"]
    assert len(list(all_history_keys(8))) == 21_845


def test_a_table_of_a_scripted_strategy_has_its_worst_case() -> None:
    # Tabulate strategies by their own probabilities (5 rounds, 341 histories): the DP
    # must give the same worst case for the table as for the strategy.
    ipd = make_game("ipd", rounds=5)
    for name in ("tit_for_tat", "generous_tit_for_tat", "prober", "tit_for_two_tats"):
        strategy = find_strategy("ipd", name)
        table = {}
        for key in all_history_keys(5):
            state = ipd.new_state()
            for pair in filter(None, key.split(",")):
                move = {"C": COOPERATE, "D": DEFECT}
                state.apply_actions({0: move[pair[0]], 1: move[pair[1]]})
            table[key] = action_probabilities(strategy, state.view(0))[COOPERATE]
        tabulated = IPDTableStrategy(name, 5, table)
        expected = ipd_exploitability(strategy, ipd)
        assert expected.exploitability > 0
        assert ipd_exploitability(tabulated, ipd).exploitability == pytest.approx(
            expected.exploitability, abs=1e-12
        )


def test_table_plays_its_probabilities_and_round_trips(tmp_path: Path) -> None:
    table = {k: (0.25 if k.endswith("D") else 0.9) for k in all_history_keys(2)}
    strategy = IPDTableStrategy("t", 2, table)
    view = make_game("ipd", rounds=2).new_state().view(0)
    rng = random.Random(1)
    share = sum(strategy.act(view, rng) == COOPERATE for _ in range(4000)) / 4000
    assert share == pytest.approx(0.9, abs=0.03)
    path = tmp_path / "t.json"
    strategy.to_json(path)
    assert IPDTableStrategy.from_json(path) == strategy


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"game": "kuhn"}', "not an IPD strategy table"),
        ('{"game": "ipd", "rounds": 1, "cooperate": {}, "x": 1}', "unexpected field 'x'"),
        ('{"game": "ipd", "rounds": "8", "cooperate": {}}', "must be an integer"),
        ('{"game": "ipd", "rounds": 1, "cooperate": []}', "must be an object"),
        ('{"game": "ipd", "rounds": 2, "cooperate": {"": 1}}', "has 5 histories, not 1"),
        ('{"game": "ipd", "rounds": 1, "cooperate": {"": 1, "CC": 1}}', "has 1 histories"),
        (
            '{"game": "ipd", "rounds": 2, "cooperate": {"": 1, "CC": 1, "CD": 1, "DC": 1, "XX": 1}}',
            "missing history 'DD'",
        ),
        ('{"game": "ipd", "rounds": 9, "cooperate": {"": 1}}', "not 1"),
        ('{"game": "ipd", "rounds": 40, "cooperate": {"": 1}}', "at most 12 rounds"),
        ('{"game": "ipd", "rounds": 1000000000, "cooperate": {}}', "at most 12 rounds"),
        ('{"game": "ipd", "rounds": 1, "cooperate": {"": 1.5}}', "outside [0, 1]"),
        ('{"game": "ipd", "rounds": 1, "cooperate": {"": true}}', "not a number"),
        ('{"game": "ipd", "rounds": 0, "cooperate": {}}', "rounds >= 1"),
    ],
)
def test_bad_table_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(IPDStrategyError, match=re.escape(message)):
        IPDTableStrategy.from_json(path)


# ------------------------------------------------------- the tree's conversations


def _reasoning(messages: Sequence[Message]) -> str:
    """A deterministic 'greedy answer' that depends on the whole conversation."""
    return f"Line {len(messages)} {sum(len(m['content']) for m in messages)}.\nDEFECT"


class RecordingTreePolicy:
    """Stands in for LocalModelPolicy: answers with :func:`_reasoning` and records each
    conversation it is asked to score, with its candidates."""

    name = "recording"
    sampling = SamplingConfig(max_new_tokens=8)

    def __init__(self) -> None:
        self._conversations: list[list[Message]] = []
        self.scored: list[tuple[list[Message], list[str]]] = []
        self.held: set[Any] = set()

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        self._conversations.append(list(messages))
        return [len(self._conversations) - 1]

    def branch_cache(self, source: Any, target: Any, prompt: Sequence[int]) -> int:
        assert source in self.held, "a child branches from its parent's cache"
        self.held.add(target)
        return 1

    def forget(self, keys: Sequence[Any] | None = None) -> None:
        self.held.difference_update(keys or ())

    def generate_from_ids(
        self,
        prompts: Any,
        sampling: Any,
        *,
        with_logprobs: bool,
        keys: Any,
        step_logprobs: bool,
        keep_cache: bool,
    ):
        # No step distributions: the tree scores every node in its second pass.
        assert sampling.temperature == 0.0 and not with_logprobs
        self.held.update(keys)
        return [SimpleNamespace(text=_reasoning(self._conversations[p[0]])) for p in prompts]

    def constrained_distributions(self, messages_batch, candidates_batch, temperature, keys):
        out = []
        for messages, candidates in zip(messages_batch, candidates_batch, strict=True):
            self.scored.append((list(messages), list(candidates)))
            out.append([0.3, 0.7])
        return out


class PlannedAgent:
    """Plays a planned sequence of moves with the tree's canonical answers."""

    name = "planned"

    def __init__(self, moves: Sequence[Action]) -> None:
        self.moves = moves
        self.seen: list[tuple[Message, ...]] = []

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out = []
        for req in requests:
            self.seen.append(req.messages)
            out.append(reasoning_prefix(_reasoning(req.messages)) + self.moves[req.turn])
        return out

    def recover(self, requests: Any, outputs: Any) -> list[Recovery]:
        raise AssertionError("every planned answer parses")


class PlannedOpponent:
    name = "planned-opponent"

    def __init__(self, moves: Sequence[Action]) -> None:
        self.moves = moves

    def act(self, view: View, rng: random.Random) -> Action:
        return self.moves[view.round]


def test_tree_conversations_are_the_rollout_engines() -> None:
    from sepo.policies.extract_ipd import extract_ipd_tree

    rounds = 3
    game = make_game("ipd", rounds=rounds)
    policy = RecordingTreePolicy()
    table = extract_ipd_tree(policy, 1.0, game=game, batch=8)
    assert table.cooperate == {k: 0.3 for k in all_history_keys(rounds)}
    assert policy.held == set(), "every cache the extraction made is dropped"
    for messages, candidates in policy.scored:
        prefix = reasoning_prefix(_reasoning(messages))
        assert candidates == [prefix + "COOPERATE", prefix + "DEFECT"]
    assert len(policy.scored) == 21
    # Play every one of the 4^3 paths through the engine with the same answers.
    scored = {tuple(map(tuple, (m.items() for m in msgs))): msgs for msgs, _ in policy.scored}
    checked = set()
    for path in itertools.product(itertools.product(MOVES, MOVES), repeat=rounds):
        agent = PlannedAgent([a for a, _ in path])
        opponent = PlannedOpponent([b for _, b in path])
        (episode,) = run_episodes([EpisodeSpec(game, opponent, "train", 0)], agent)
        assert [t.action for t in episode.turns] == [a for a, _ in path]
        for turn, messages in enumerate(agent.seen):
            key = tuple(tuple(m.items()) for m in messages)
            assert key in scored, f"the engine's conversation at turn {turn} of {path}"
            checked.add(history_key(episode.rounds[:turn]))
    assert checked == set(all_history_keys(rounds))


# ------------------------------------------------------- a real model, exactly

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sepo.policies.corpus import game_corpus
    from sepo.policies.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", game_corpus(seed=0), seed=0)


def test_tree_matches_a_recomputation_without_caches(model_dir: Path) -> None:
    from sepo.policies.extract_ipd import extract_ipd_tree
    from sepo.policies.local import LocalModelPolicy

    rounds, temperature = 3, 0.8
    game = make_game("ipd", rounds=rounds)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12)
    policy = LocalModelPolicy.load(str(model_dir), device="cpu", sampling=sampling)
    table = extract_ipd_tree(policy, temperature, game=game, batch=8)
    assert policy.stats.counts["local/prompt_tokens"] < 0.5 * _full_prompt_tokens(policy, game)
    # Every node's distribution was read from its own generation: no scoring pass ran.
    assert policy.stats.counts.get("local/scored_sequences", 0) == 0

    fresh = LocalModelPolicy.load(str(model_dir), device="cpu", sampling=sampling)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=12)
    words = {a: game.format_action(a) for a in MOVES}

    def walk(state: Any, messages: list[Message]) -> None:
        (answer,) = fresh.generate_tokens([messages], greedy, with_logprobs=False)
        prefix = reasoning_prefix(answer.text)
        (dist,) = fresh.constrained_distributions(
            [messages], [[prefix + words[a] for a in MOVES]], temperature
        )
        key = history_key(state.history)
        assert table.cooperate[key] == pytest.approx(dist[0], abs=2e-5), key
        if len(state.history) == rounds - 1:
            return
        for a in MOVES:
            for b in MOVES:
                child = state.clone()
                child.apply_actions({0: a, 1: b})
                walk(
                    child,
                    [
                        *messages,
                        {"role": "assistant", "content": prefix + words[a]},
                        {
                            "role": "user",
                            "content": game.render(child.view(0), since=len(state.history)),
                        },
                    ],
                )

    start = game.new_state()
    walk(
        start,
        [
            {"role": "system", "content": game.system_prompt()},
            {"role": "user", "content": game.render(start.view(0), since=0)},
        ],
    )
    assert fresh.stats.counts.get("local/prompt_tokens", 0) > 0


def test_the_distribution_read_from_a_generation_is_the_tries() -> None:
    from sepo.policies.constrained import constrained_distribution_from_tokens
    from sepo.policies.extract_ipd import distribution_from_generation

    logprobs = torch.log_softmax(torch.tensor([[0.1, 2.0, -1.0, 0.5, 0.0]] * 4), dim=-1)
    # The candidates share tokens [4, 0] and part at token 2 (ids 1 and 3).
    candidates = [[4, 0, 1, 2], [4, 0, 3, 2]]

    def answer(ids: list[int]) -> Any:
        return SimpleNamespace(completion_ids=ids, step_logprobs=logprobs[: len(ids)])

    for temperature in (1.0, 0.8, 0.0):
        got = distribution_from_generation(answer([4, 0, 3, 2]), candidates, temperature)
        lp1, lp3 = float(logprobs[2, 1]), float(logprobs[2, 3])
        want = constrained_distribution_from_tokens(
            candidates, [[0.0, 0.0, lp1, 0.0], [0.0, 0.0, lp3, 0.0]], temperature
        )
        assert got == pytest.approx(want, abs=1e-12)
    assert distribution_from_generation(answer([4, 0, 1]), candidates, 0.0) == [1.0, 0.0]
    # It cannot be read when the generation wrote other tokens first, stopped before the
    # parting token, or kept no distributions; nor when one candidate extends another.
    assert distribution_from_generation(answer([4, 1, 3]), candidates, 1.0) is None
    assert distribution_from_generation(answer([4, 0]), candidates, 1.0) is None
    no_steps = SimpleNamespace(completion_ids=[4, 0, 1], step_logprobs=None)
    assert distribution_from_generation(no_steps, candidates, 1.0) is None
    assert distribution_from_generation(answer([4, 0, 1]), [[4, 0], [4, 0, 1]], 1.0) is None


def test_reading_from_the_generation_changes_no_table_entry(model_dir: Path) -> None:
    from sepo.policies.extract_ipd import extract_ipd_tree
    from sepo.policies.local import LocalModelPolicy

    game = make_game("ipd", rounds=3)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12)
    tables = []
    for from_generation in (True, False):
        policy = LocalModelPolicy.load(str(model_dir), device="cpu", sampling=sampling)
        tables.append(
            extract_ipd_tree(policy, 0.8, game=game, batch=8, from_generation=from_generation)
        )
        scored = policy.stats.counts.get("local/scored_sequences", 0)
        assert (scored == 0) == from_generation  # rescored: two candidates per node
    read, rescored = tables
    assert read.cooperate.keys() == rescored.cooperate.keys()
    for key, p in rescored.cooperate.items():
        assert read.cooperate[key] == pytest.approx(p, abs=2e-5), key


def _full_prompt_tokens(policy: Any, game: Any) -> int:
    """Tokens of every node's whole prompt: what the tree would feed without caches (a
    lower bound: the greedy reasoning is left out)."""
    total, rounds = 0, game.facts.rounds
    for key in all_history_keys(rounds):
        depth = 0 if not key else key.count(",") + 1
        messages: list[Message] = [{"role": "system", "content": game.system_prompt()}]
        messages += [{"role": "user", "content": "x"}] * (depth + 1)
        total += len(policy.encode_prompt(messages)) + depth * 60
    return total


def test_cli_ipd_worst_case_of_a_model(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three rounds instead of eight keep this a unit test (21 nodes, not 21,845).
    import sepo.exact.ipd as exact_ipd
    import sepo.policies.extract_ipd as extract_ipd

    for module in (extract_ipd, exact_ipd):
        monkeypatch.setattr(module, "make_game", lambda name: make_game(name, rounds=3))
    saved = tmp_path / "table.json"
    args = ["exploitability", "--game", "ipd", "--policy", f"tiny:{model_dir}", "--json"]
    result = runner.invoke(app, [*args, "--save-strategy", str(saved), "--temperature", "0.9"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["mode"] == "tree" and payload["rounds"] == 3
    assert payload["temperature"] == 0.9
    table = IPDTableStrategy.from_json(saved)
    expected = ipd_exploitability(table, make_game("ipd", rounds=3))
    assert payload["exploitability"] == pytest.approx(expected.exploitability, abs=1e-12)
    assert 0.0 <= payload["exploitability"] <= 5.0

    again = runner.invoke(app, [*args, "--save-strategy", str(saved)])
    assert again.exit_code != 0 and "exists; not overwriting" in again.output
    assert IPDTableStrategy.from_json(saved) == table


def test_cli_ipd_refuses_what_it_cannot_tabulate(tmp_path: Path) -> None:
    cases = [
        (["--policy", "openai:m@http://127.0.0.1:9"], "exact probabilities"),
        (["--policy", "scripted:tit_for_tat", "--temperature", "0.5"], "model policies"),
        (["--policy", "scripted:tit_for_tat", "--mode", "sampled"], "--mode, --episodes"),
        (["--policy", "scripted:tit_for_tat", "--episodes", "50"], "--mode, --episodes"),
        (["--policy", "scripted:tit_for_tat", "--seed", "3"], "--mode, --episodes"),
        (
            ["--policy", "scripted:tit_for_tat", "--save-strategy", str(tmp_path / "x.json")],
            "saves a model's table",
        ),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["exploitability", "--game", "ipd", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)


def test_cli_strategy_file_for_ipd(tmp_path: Path) -> None:
    table = IPDTableStrategy("all-c", 8, {k: 1.0 for k in all_history_keys(8)})
    path = tmp_path / "all_c.json"
    table.to_json(path)
    result = runner.invoke(
        app, ["exploitability", "--game", "ipd", "--policy", f"strategy:{path}", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exploitability"] == pytest.approx(5.0)
    short = tmp_path / "short.json"
    IPDTableStrategy("s", 2, {k: 1.0 for k in all_history_keys(2)}).to_json(short)
    result = runner.invoke(
        app, ["eval", "--game", "ipd", "--policy", f"strategy:{short}", "--episodes", "1"]
    )
    assert result.exit_code == 2 and "2-round IPD" in result.output, result.output


def test_the_pipeline_records_a_models_worst_case_and_reuses_it(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sepo.train.evaluation as pipeline  # where the main job's evaluations live

    game = make_game("ipd", rounds=2)
    s = pipeline.TrainSettings(games=("ipd",), out=str(tmp_path), temperature=0.9)
    out = tmp_path / "eval" / "sft"
    entry = pipeline.ipd_worst_case(s, str(model_dir), out, log=lambda _: None, game=game)
    table = IPDTableStrategy.from_json(out / pipeline.IPD_TABLE_FILE)
    assert len(table.cooperate) == entry["histories"] == 1 + 4
    expected = ipd_exploitability(table, game)
    assert entry["exploitability"] == pytest.approx(expected.exploitability, abs=1e-12)
    assert entry["advantage"] == pytest.approx(expected.advantage, abs=1e-12)
    assert entry["temperature"] == 0.9 and entry["rounds"] == 2
    assert json.loads((out / pipeline.IPD_EXACT_FILE).read_text()) == entry

    def no_model(*_: Any, **__: Any) -> Any:
        raise AssertionError("the cached worst case must not load the model again")

    monkeypatch.setattr(pipeline, "_load_for_eval", no_model)
    assert pipeline.ipd_worst_case(s, str(model_dir), out, game=game) == entry

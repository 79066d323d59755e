"""A local model keeps as many episodes in play as its key/value caches fit in a memory
budget (``sepo.policies.memory``): the figures it sizes by are the model's own, the
tiny default model is never cut, and a small budget cuts both the episodes in play and
a scoring pass's rows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sepo.domains import domain_names, find_strategy
from sepo.evaluate.harness import EvalConfig, max_active
from sepo.policies import memory
from sepo.rollout.engine import DEFAULT_MAX_ACTIVE
from sepo.rollout.scripted import ScriptedPolicy


class _Param:
    def __init__(self, size: int) -> None:
        self.size = size

    def element_size(self) -> int:
        return self.size


class _Model:
    def __init__(self, item: int = 4, **config: Any) -> None:
        self.config = SimpleNamespace(**config)
        self.item = item

    def parameters(self) -> Any:
        return iter([_Param(self.item)])


def test_bytes_per_token_is_layers_times_two_kv_heads_head_dim_and_item_size() -> None:
    # SmolLM2-135M: 30 layers, 9 heads of 64 (hidden 576), 3 key/value heads, float32
    smol = _Model(
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576
    )
    assert memory.kv_bytes_per_token(smol) == 30 * 2 * 3 * 64 * 4 == 46_080
    bf16 = _Model(
        2, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, head_dim=128
    )
    assert memory.kv_bytes_per_token(bf16) == 28 * 2 * 4 * 128 * 2
    assert memory.kv_bytes_per_token(_Model()) == 0  # a config that does not say


def test_fitting_rows_holds_two_copies_per_row_within_the_budget() -> None:
    assert memory.fitting_rows(46_080, 1_000, 10**9, 64) == 10**9 // (2 * 1_000 * 46_080)
    assert memory.fitting_rows(46_080, 1_000, 1, 64) == 1  # never fewer than one
    assert memory.fitting_rows(10, 10, 10**12, 64) == 64  # never more than the limit
    assert memory.fitting_rows(0, 1_000, 1, 64) == 64  # nothing known: the limit


@pytest.mark.parametrize("game", domain_names())
def test_the_longest_episode_is_measured_with_the_models_own_encoding(game: str) -> None:
    words = memory.longest_episode_tokens(
        lambda messages: " ".join(m["content"] for m in messages).split(), game, 48
    )
    with_more = memory.longest_episode_tokens(
        lambda messages: " ".join(m["content"] for m in messages).split(), game, 96
    )
    assert words > 48 and with_more > words  # each answer may run to the token limit


def test_a_scripted_policy_plays_the_default_batch_and_an_explicit_setting_wins() -> None:
    agent = ScriptedPolicy(find_strategy("ipd", "tit_for_tat"))
    assert max_active(agent, "ipd", EvalConfig()) == DEFAULT_MAX_ACTIVE
    assert max_active(agent, "ipd", EvalConfig(max_active=5)) == 5

    class Small:
        def episodes_in_play(self, game: str, limit: int) -> int:
            return 3

    assert max_active(Small(), "ipd", EvalConfig()) == 3  # type: ignore[arg-type]
    assert max_active(Small(), "ipd", EvalConfig(max_active=7)) == 7  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from sepo.cli.main import app
    from sepo.policies.local import LocalModelPolicy

    folder = tmp_path_factory.mktemp("tiny") / "model"
    made = CliRunner().invoke(app, ["model", "init", "--out", str(folder)])
    assert made.exit_code == 0, made.output
    return LocalModelPolicy.load(str(folder))


def test_the_tiny_model_keeps_the_whole_batch_in_every_game(tiny: Any) -> None:
    """The main job's figures must not move: the default budget never cuts its batch."""
    for game in domain_names():
        assert tiny.episodes_in_play(game, DEFAULT_MAX_ACTIVE) == DEFAULT_MAX_ACTIVE


def test_a_small_budget_cuts_the_episodes_in_play_and_the_scoring_rows(tiny: Any) -> None:
    per_token = memory.kv_bytes_per_token(tiny.model)
    assert per_token > 0
    tokens = memory.longest_episode_tokens(tiny.encode_prompt, "kuhn", tiny.sampling.max_new_tokens)
    tiny.cache_budget = 2 * tokens * per_token * 3  # room for three episodes
    try:
        assert tiny.episodes_in_play("kuhn", DEFAULT_MAX_ACTIVE) == 3
        assert tiny.rows_within_budget(tokens, 64) == 3
        # The constrained fallback still scores every candidate, a few rows a pass.
        from sepo.games import make_game

        game = make_game("kuhn")
        messages = [{"role": "system", "content": game.system_prompt()}]
        messages.append({"role": "user", "content": "Your card: K. Choose."})
        dists = tiny.constrained_distributions([messages] * 4, [("CHECK", "BET")] * 4, 1.0)
        assert len(dists) == 4 and all(abs(sum(d) - 1) < 1e-6 for d in dists)
        assert dists[0] == dists[3]
    finally:
        tiny.cache_budget = None

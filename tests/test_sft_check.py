"""The SFT reasoning check (``sepo.train.sft_check``): a model that writes the
demonstrators' templated reasoning passes, one that misreads its card is caught."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sepo.rollout.protocol import Message, SamplingConfig
from sepo.train.demonstrations import build_sft_dataset, write_dataset
from sepo.train.sft_check import (
    REASONING_MATCH_WARN,
    ReasoningAgreement,
    held_out_decisions,
    reasoning_agreement,
)


@dataclass
class _Text:
    text: str


class _ReplayPolicy:
    """Answers each conversation with the answer the data gives it, optionally edited."""

    def __init__(self, answers: dict[str, str], edit: bool = False) -> None:
        self.answers = answers
        self.edit = edit
        self.sampling = SamplingConfig()
        self.greedy: list[bool] = []

    def generate_tokens(
        self,
        messages_batch: Sequence[Sequence[Message]],
        sampling: SamplingConfig | None = None,
        *,
        with_logprobs: bool = True,
    ) -> list[_Text]:
        assert sampling is not None
        self.greedy.append(sampling.temperature == 0.0)
        out = []
        for messages in messages_batch:
            answer = self.answers[json.dumps(list(messages))]
            if self.edit:  # a card-blind model: it always says it holds a Q
                answer = re.sub(r"I hold [JQK]", "I hold Q", answer)
            out.append(_Text(answer))
        return out


def _data(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    write_dataset(build_sft_dataset(["ipd", "kuhn"], episodes=40, seed=0), tmp_path)
    answers = {}
    for line in (tmp_path / "valid.jsonl").read_text().splitlines():
        messages = json.loads(line)["messages"]
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                answers[json.dumps(messages[:i])] = m["content"]
    return tmp_path / "valid.jsonl", answers


def test_held_out_decisions_take_whole_episodes_from_each_game_in_turn(tmp_path: Path) -> None:
    valid, _ = _data(tmp_path)
    decisions = held_out_decisions(valid, limit=30)
    assert len(decisions) == 30
    assert {d.game for d in decisions} == {"ipd", "kuhn"}
    for d in decisions:
        assert d.messages[-1]["role"] == "user"
        assert d.reasoning.endswith("\n") and "\n" not in d.reasoning[:-1]
    everything = held_out_decisions(valid, limit=10_000)
    assert len(everything) == sum(
        json.loads(line)["decisions"] for line in valid.read_text().splitlines()
    )


def test_a_faithful_model_passes_and_a_card_blind_one_is_caught(tmp_path: Path) -> None:
    valid, answers = _data(tmp_path)
    decisions = held_out_decisions(valid, limit=10_000)
    faithful = _ReplayPolicy(answers)
    good = reasoning_agreement(faithful, decisions)
    assert faithful.greedy == [True]
    assert good.rate == 1.0 and good.checked == len(decisions) and good.warning() is None

    blind = reasoning_agreement(_ReplayPolicy(answers, edit=True), decisions)
    m_ipd, n_ipd = blind.per_game["ipd"]
    m_kuhn, n_kuhn = blind.per_game["kuhn"]
    assert m_ipd == n_ipd  # IPD's reasoning names no card
    assert 0.2 < m_kuhn / n_kuhn < 0.5  # only the Q decisions still match
    assert blind.rate < REASONING_MATCH_WARN
    warning = blind.warning()
    assert warning is not None and "\n" not in warning
    assert f"kuhn {m_kuhn}/{n_kuhn}" in warning and "wrote 'I hold Q" in warning
    assert ReasoningAgreement.from_json(json.loads(json.dumps(blind.to_json()))) == blind


def test_an_answer_without_a_reasoning_line_does_not_match(tmp_path: Path) -> None:
    valid, answers = _data(tmp_path)
    decisions = held_out_decisions(valid, limit=5)
    bare = {k: v.splitlines()[-1] for k, v in answers.items()}
    result = reasoning_agreement(_ReplayPolicy(bare), decisions)
    assert result.matched == 0 and result.first_miss is not None
    assert reasoning_agreement(_ReplayPolicy(bare), []).checked == 0
    thinking = {k: f"<think>\nLet me see.\n</think>\n\n{v}" for k, v in answers.items()}
    assert reasoning_agreement(_ReplayPolicy(thinking), decisions).rate == 1.0

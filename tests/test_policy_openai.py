"""Tests of the OpenAI-compatible policy against a real local HTTP server with faults.

The server (``tests/fake_openai_server.py``) answers deterministically from the
messages, so a run with injected faults must give exactly the answers of a clean run;
the counters must show the retries; a server that always fails must give ``""``
within a bounded time. All timeouts are a fraction of a second.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("openai")

from fake_openai_server import FakeOpenAIServer, scripted_answer
from sepo.core.types import View
from sepo.policies.openai_compat import (
    REPROMPT,
    ClientConfig,
    OpenAICompatPolicy,
    api_key_from_env,
    parse_openai_spec,
)
from sepo.rollout.protocol import DecisionRequest, SamplingConfig

FAST = ClientConfig(
    timeout_s=0.3, max_retries=3, backoff_s=0.01, backoff_max_s=0.04, max_concurrency=4
)
LEGAL = ("COOPERATE", "DEFECT")


def make_request(episode: int, turn: int = 0) -> DecisionRequest:
    view = View(
        game="ipd",
        player=0,
        round=turn,
        rounds=8,
        history=(),
        legal=LEGAL,
        scores=(0.0, 0.0),
    )
    user = (
        f"Episode {episode}, round {turn + 1} of 8.\n"
        f"Legal actions: {', '.join(LEGAL)}\n"
        "Write your action alone on the last line."
    )
    return DecisionRequest(
        episode=episode,
        turn=turn,
        game="ipd",
        seed=1000 + episode,
        view=view,
        messages=(
            {"role": "system", "content": "You play the iterated Prisoner's Dilemma."},
            {"role": "user", "content": user},
        ),
        legal_texts=LEGAL,
    )


def make_policy(server: FakeOpenAIServer, config: ClientConfig = FAST) -> OpenAICompatPolicy:
    return OpenAICompatPolicy(
        "fake-model",
        server.base_url,
        api_key="test",
        sampling=SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=32, seed=11),
        client_config=config,
    )


REQUESTS = [make_request(e, e % 3) for e in range(6)]


def expected_answers() -> list[str]:
    return [scripted_answer([dict(m) for m in r.messages]) for r in REQUESTS]


def test_parse_openai_spec() -> None:
    assert parse_openai_spec("openai:qwen2.5@http://localhost:8000/v1") == (
        "qwen2.5",
        "http://localhost:8000/v1",
    )
    assert parse_openai_spec("openai:Qwen/Qwen2.5-7B-Instruct@https://h.example/v1/") == (
        "Qwen/Qwen2.5-7B-Instruct",
        "https://h.example/v1",
    )
    # '@' inside a model name is kept; the split is at the last '@http'.
    assert parse_openai_spec("openai:claude@2024@http://x:1/v1") == ("claude@2024", "http://x:1/v1")
    assert parse_openai_spec("openai:gpt-4o-mini") == ("gpt-4o-mini", "https://api.openai.com/v1")
    for bad in ("openai:", "openai:@http://x/v1", "openai:m@localhost:8000", "openai:m@http://"):
        with pytest.raises(ValueError, match="openai:MODEL@BASE_URL"):
            parse_openai_spec(bad)


def test_api_key_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEPO_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api_key_from_env() == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    assert api_key_from_env() == "openai-key"
    monkeypatch.setenv("SEPO_API_KEY", "sepo-key")
    assert api_key_from_env() == "sepo-key"


def test_clean_server_answers_and_sends_sampling() -> None:
    with FakeOpenAIServer() as server, make_policy(server) as policy:
        answers = policy.respond(REQUESTS)
        bodies = list(server.bodies)
    assert answers == expected_answers()
    assert policy.stats.counts["api/requests"] == len(REQUESTS)
    assert policy.stats.counts.get("api/retries", 0) == 0
    assert policy.stats.counts.get("api/failures", 0) == 0
    assert policy.stats.counts["api/completion_tokens"] == 5 * len(REQUESTS)
    for body in bodies:
        assert body["model"] == "fake-model"
        assert body["temperature"] == 0.7
        assert body["top_p"] == 0.9
        assert body["max_tokens"] == 32
    seeds = [b["seed"] for b in bodies]
    assert len(set(seeds)) == len(REQUESTS), "each episode/turn gets its own seed"


@pytest.mark.parametrize("fault", ["500", "sleep", "bad_json", "no_choices", "no_content"])
def test_faults_are_retried_to_the_same_answers(fault: str) -> None:
    server = FakeOpenAIServer(fault=fault, fault_count=2, sleep_s=0.6)
    with server, make_policy(server) as policy:
        answers = policy.respond(REQUESTS)
    assert answers == expected_answers()
    counts = policy.stats.counts
    assert counts["api/retries"] == 2 * len(REQUESTS)
    assert counts["api/requests"] == 3 * len(REQUESTS)
    assert counts.get("api/failures", 0) == 0


def test_permanent_failure_returns_empty_quickly() -> None:
    start = time.monotonic()
    with FakeOpenAIServer(fault="500", fault_count=-1) as server, make_policy(server) as policy:
        answers = policy.respond(REQUESTS)
    elapsed = time.monotonic() - start
    assert answers == [""] * len(REQUESTS)
    assert policy.stats.counts["api/failures"] == len(REQUESTS)
    assert policy.stats.counts["api/retries"] == FAST.max_retries * len(REQUESTS)
    assert elapsed < 3.0


def test_hanging_server_is_bounded() -> None:
    config = ClientConfig(timeout_s=0.2, max_retries=1, backoff_s=0.01, max_concurrency=8)
    start = time.monotonic()
    server = FakeOpenAIServer(fault="sleep", fault_count=-1, sleep_s=5.0)
    with server, make_policy(server, config) as policy:
        answers = policy.respond(REQUESTS)
    elapsed = time.monotonic() - start
    assert answers == [""] * len(REQUESTS)
    assert policy.stats.counts["api/failures"] == len(REQUESTS)
    # Two attempts of 0.2 s each, all requests in parallel: far below the server's 5 s.
    assert elapsed < 2.5


def test_client_errors_are_not_retried() -> None:
    with FakeOpenAIServer(fault="400", fault_count=-1) as server, make_policy(server) as policy:
        answers = policy.respond(REQUESTS[:2])
    assert answers == ["", ""]
    assert policy.stats.counts["api/requests"] == 2
    assert policy.stats.counts.get("api/retries", 0) == 0
    assert policy.stats.counts["api/failures"] == 2


def test_concurrency_is_bounded() -> None:
    config = ClientConfig(timeout_s=2.0, max_retries=0, max_concurrency=3)
    requests = [make_request(e) for e in range(9)]
    with FakeOpenAIServer(delay_s=0.1) as server, make_policy(server, config) as policy:
        answers = policy.respond(requests)
        peak = server.max_in_flight
    assert all(answers)
    assert 2 <= peak <= 3, "requests run concurrently, never more than max_concurrency"


def test_reprompt_recover_states_the_legal_actions() -> None:
    bad = ["I am not sure what to do here.", ""]
    with FakeOpenAIServer() as server, make_policy(server) as policy:
        recoveries = policy.recover(REQUESTS[:2], bad)
        bodies = list(server.bodies)
    assert [r.kind for r in recoveries] == ["reprompt", "reprompt"]
    assert all(r.chosen is None for r in recoveries)
    sent = sorted((b["messages"] for b in bodies), key=lambda m: str(m[1]["content"]))
    for request, output in zip(REQUESTS[:2], bad, strict=True):
        messages = next(m for m in sent if m[1]["content"] == request.messages[1]["content"])
        assert messages[: len(request.messages)] == [dict(m) for m in request.messages]
        assistant, user = messages[-2], messages[-1]
        assert assistant["role"] == "assistant"
        assert assistant["content"] == (output or "(no answer)")
        assert user["role"] == "user"
        assert user["content"] == REPROMPT.format(actions="COOPERATE, DEFECT")
        for action in LEGAL:
            assert action in user["content"]
    for request, recovery, output in zip(REQUESTS[:2], recoveries, bad, strict=True):
        assert recovery.text == scripted_answer(policy.reprompt_messages(request, output))

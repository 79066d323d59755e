"""Hardening of the OpenAI-compatible policy against servers that misbehave (issue 20).

- a deadline per attempt: a server that drips bytes (body or headers) resets a per-read
  timeout forever, yet a call returns within a few times ``ClientConfig.timeout_s``;
- ``--timeout``, ``--retries`` and ``--concurrency`` of ``sepo eval`` and ``sepo
  exploitability``: validated, refused for other policies, threaded to the policy;
- a key in the base URL is used for the requests and written nowhere;
- an answer from a server that ignores ``max_tokens`` is cut before it is stored or
  re-sent.

All against the real local HTTP server of ``tests/fake_openai_server.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

from typer.testing import CliRunner

from fake_openai_server import FakeOpenAIServer, huge_answer
from sepo.cli.main import app
from sepo.domains import domain, find_strategy
from sepo.games import make_game
from sepo.metrics import compute_metrics
from sepo.policies.openai_compat import (
    MAX_ANSWER_CHARS,
    ChatServerUnreachable,
    ClientConfig,
    OpenAICompatPolicy,
    answer_char_limit,
    parse_openai_spec,
    redact_url,
)
from sepo.policies.resolve import PolicySpecError, api_client_config, load_policy
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import SamplingConfig
from test_policy_openai import make_request

runner = CliRunner()

PASSWORD = "pw-d41d8cd98f"
QUERY_KEY = "qk-9e107d9d37"
"""Secrets put into base URLs: distinctive, so that a search for them cannot match
anything else."""


def secret_url(base_url: str) -> str:
    """``base_url`` with a user:password and an ``api_key`` query parameter."""
    return base_url.replace("http://", f"http://alice:{PASSWORD}@", 1) + f"?api_key={QUERY_KEY}"


@pytest.fixture
def closed_url() -> Iterator[str]:
    """A loopback port that refuses connections (held, so nobody listens there)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


def make_policy(base_url: str, config: ClientConfig, **sampling: Any) -> OpenAICompatPolicy:
    return OpenAICompatPolicy(
        "fake-model",
        base_url,
        api_key="test",
        sampling=SamplingConfig(seed=5, **sampling),
        client_config=config,
    )


# -- 1. a deadline per attempt ----------------------------------------------------------


@pytest.mark.parametrize("fault", ["drip", "drip_head"])
def test_a_dripping_server_cannot_hold_a_call_past_the_deadline(fault: str) -> None:
    """One byte every 0.2 s: each read succeeds, so only a deadline on the whole request
    ends it. The whole answer would take over a minute."""
    config = ClientConfig(timeout_s=1.0, max_retries=0, unreachable_after=1)
    server = FakeOpenAIServer(fault=fault, fault_count=-1, drip_s=0.2)
    with server, make_policy(server.base_url, config) as policy:
        start = time.monotonic()
        answers = policy.respond([make_request(0)])
        elapsed = time.monotonic() - start
    assert answers == [""]
    assert elapsed < 3 * config.timeout_s
    assert elapsed >= 0.9 * config.timeout_s, "it is the deadline that ended the call"
    assert policy.stats.counts["api/failures"] == 1
    # A missed deadline is a read timeout: no connect failure, so no fail-fast even at
    # unreachable_after=1 (the call above returned instead of raising).


def test_a_missed_deadline_is_retried() -> None:
    config = ClientConfig(timeout_s=0.3, max_retries=1, backoff_s=0.01, max_concurrency=4)
    server = FakeOpenAIServer(fault="drip", fault_count=1, drip_s=0.2)
    requests = [make_request(e) for e in range(4)]
    with server, make_policy(server.base_url, config) as policy:
        answers = policy.respond(requests)
        calls = sorted(server.calls.values())
    assert all(answers), "the second attempt gets the answer"
    assert calls == [2, 2, 2, 2]
    assert policy.stats.counts["api/retries"] == 4
    assert policy.stats.counts.get("api/failures", 0) == 0


def test_a_closed_policy_starts_again_on_the_next_request() -> None:
    """close() frees the connections and the loop; a later call (with a retry, so a
    backoff wait on the new loop) works as before."""
    config = ClientConfig(timeout_s=2.0, max_retries=1, backoff_s=0.01)
    with FakeOpenAIServer(fault="500", fault_count=1) as server:
        policy = make_policy(server.base_url, config)
        first = policy.respond([make_request(0)])
        policy.close()
        second = policy.respond([make_request(1)])
        policy.close()
    assert all(first) and all(second)
    assert policy.stats.counts["api/retries"] == 2


# -- 2. CLI flags ------------------------------------------------------------------------

UNUSED_URL = "http://127.0.0.1:9/v1"
"""Never contacted: the flags are refused before any policy is built."""

COMMANDS = {
    "eval": ["eval", "--game", "ipd", "--episodes", "1", "--no-heldout"],
    "exploitability": ["exploitability", "--episodes", "5"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--timeout", "3601"),
        ("--timeout", "nan"),
        ("--retries", "-1"),
        ("--retries", "21"),
        ("--concurrency", "0"),
        ("--concurrency", "257"),
    ],
)
def test_bad_client_flags_are_one_line_errors(
    command: str, flag: str, value: str, tmp_path: Path
) -> None:
    args = [*COMMANDS[command], "--policy", f"openai:m@{UNUSED_URL}", flag, value]
    if command == "eval":
        args += ["--out", str(tmp_path / "out")]
    result = runner.invoke(app, args, env={"SEPO_API_KEY": "test"})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert flag in lines[0]
    assert not (tmp_path / "out").exists(), "refused before anything is written"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_client_flags_are_refused_for_other_policies(command: str) -> None:
    args = [*COMMANDS[command], "--policy", "scripted:uniform", "--retries", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --retries"), result.output
    assert "openai:" in lines[0]


def test_boundary_values_are_accepted() -> None:
    low = api_client_config("openai:m", timeout_s=0.001, retries=0, concurrency=1)
    high = api_client_config("openai:m", timeout_s=3600, retries=20, concurrency=256)
    assert low == ClientConfig(timeout_s=0.001, max_retries=0, max_concurrency=1)
    assert high == ClientConfig(timeout_s=3600, max_retries=20, max_concurrency=256)
    # A flag left out keeps the default; none given is no config at all.
    assert api_client_config("openai:m", retries=1) == ClientConfig(max_retries=1)
    assert api_client_config("scripted:uniform") is None
    with pytest.raises(PolicySpecError, match="openai"):
        load_policy("scripted:uniform", "ipd", client_config=ClientConfig())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_client_flags_reach_the_policy(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[OpenAICompatPolicy] = []
    original = OpenAICompatPolicy.__init__

    def recording_init(self: OpenAICompatPolicy, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(OpenAICompatPolicy, "__init__", recording_init)
    # Every answer waits 50 ms at the server, so a batch of several episodes has many
    # requests in flight unless --concurrency holds them back.
    with FakeOpenAIServer(delay_s=0.05) as server:
        args = [*COMMANDS[command], "--policy", f"openai:fake@{server.base_url}"]
        args += ["--timeout", "2.5", "--retries", "3", "--concurrency", "2"]
        result = runner.invoke(app, args, env={"SEPO_API_KEY": "test"})
        peak = server.max_in_flight
    assert result.exit_code == 0, result.output
    assert [p.config for p in built] == [
        ClientConfig(timeout_s=2.5, max_retries=3, max_concurrency=2)
    ]
    assert peak <= 2


# -- 3. secrets in URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:s3cret@h:8000/v1", "http://alice:***@h:8000/v1"),
        ("https://tok123@h/v1", "https://***@h/v1"),
        (
            "http://h/v1?api_key=s3&api-version=2024-02-01",
            "http://h/v1?api_key=***&api-version=2024-02-01",
        ),
        (
            "http://h/v1?token=a&Signature=b&x=1#frag",
            "http://h/v1?token=***&Signature=***&x=1#frag",
        ),
        ("http://h/v1?s3cretvalue", "http://h/v1?***"),
        (
            "openai:m@2024@http://u:p@h/v1 failed: 'http://u:p@h/v1'",
            "openai:m@2024@http://u:***@h/v1 failed: 'http://u:***@h/v1'",
        ),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("no url here: user:pass@host", "no url here: user:pass@host"),
    ],
)
def test_redact_url(text: str, shown: str) -> None:
    assert redact_url(text) == shown


def test_bad_spec_errors_do_not_show_the_key() -> None:
    for spec in (f"openai:@http://u:{PASSWORD}@h/v1", f"openai:m@http://u:{PASSWORD}@"):
        with pytest.raises(ValueError, match="openai:MODEL@BASE_URL") as caught:
            parse_openai_spec(spec)
        assert PASSWORD not in str(caught.value)
        assert "u:***@" in str(caught.value)


def _files_text(folder: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.rglob("*")) if p.is_file())


def test_an_evaluation_writes_no_key_of_its_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer() as server:
        url = secret_url(server.base_url)
        result = runner.invoke(
            app,
            [*COMMANDS["eval"], "--policy", f"openai:fake@{url}", "--out", str(out)],
            env={"SEPO_API_KEY": "test"},
        )
        paths, authorizations = list(server.paths), list(server.authorizations)
    assert result.exit_code == 0, result.output
    # The real URL was used: the server got the password and the query key ...
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert paths and all(p == f"/v1/chat/completions?api_key={QUERY_KEY}" for p in paths)
    assert set(authorizations) == {f"Basic {basic}"}
    # ... and no output shows them.
    written = _files_text(out)
    assert {"metrics.json", "episodes.jsonl"} <= {p.name for p in out.iterdir()}
    for secret in (PASSWORD, QUERY_KEY):
        assert secret not in written
        assert secret not in result.output
        assert secret not in caplog.text
    shown = "openai:fake@" + redact_url(url)
    assert shown.count("***") == 2
    assert json.loads((out / "metrics.json").read_text())["run"]["policy"] == shown
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert episodes and {e["policy"] for e in episodes} == {shown}


def test_unreachable_and_failure_messages_do_not_show_the_key(
    closed_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = ClientConfig(timeout_s=1.0, max_retries=0, unreachable_after=2)
    with make_policy(secret_url(closed_url), config) as policy:
        with pytest.raises(ChatServerUnreachable) as caught:
            policy.respond([make_request(e) for e in range(2)])
        message = str(caught.value)
        assert message.startswith(f"cannot reach the chat server at {redact_url(policy.base_url)}")
        assert policy.name == f"openai:fake-model@{redact_url(secret_url(closed_url))}"
    result = runner.invoke(
        app,
        [
            *COMMANDS["eval"],
            *("--retries", "0", "--policy", f"openai:m@{secret_url(closed_url)}"),
            *("--out", str(tmp_path / "out")),
        ],
        env={"SEPO_API_KEY": "test"},
    )
    assert result.exit_code == 2
    assert "cannot reach the chat server at" in result.output
    for secret in (PASSWORD, QUERY_KEY):
        assert secret not in message
        assert secret not in result.output
        assert secret not in caplog.text
        assert secret not in _files_text(tmp_path)
    assert "alice:***@" in message and "api_key=***" in message


# -- 4. answer size bound ----------------------------------------------------------------


def test_the_bound_is_generous() -> None:
    # 48 tokens (the default) cannot decode to more than a few dozen characters each.
    assert answer_char_limit(SamplingConfig().max_new_tokens) == MAX_ANSWER_CHARS
    assert 100 * SamplingConfig().max_new_tokens <= MAX_ANSWER_CHARS
    # A reasoning model's budget raises it.
    assert answer_char_limit(4096) > 4096 * 8


def test_a_huge_answer_is_cut_before_it_is_stored_or_resent() -> None:
    huge_chars = 1_000_000
    config = ClientConfig(timeout_s=20.0, max_retries=0)
    game = make_game("ipd")
    spec = EpisodeSpec(game, find_strategy("ipd", "tit_for_tat"), "train", 7)
    server = FakeOpenAIServer(fault="huge", fault_count=-1, huge_chars=huge_chars)
    with server, make_policy(server.base_url, config) as policy:
        (record,) = run_episodes([spec], policy)
        bodies = list(server.bodies)
    limit = policy.answer_limit
    assert limit < huge_chars
    cut = huge_answer(huge_chars)[:limit]
    first = record.turns[0]
    assert first.raw == cut
    assert first.truncated
    assert all(len(t.raw) <= limit for t in record.turns)
    assert all(t.recovery_raw is None or len(t.recovery_raw) <= limit for t in record.turns)
    # The second decision's conversation carries the first answer as it was cut.
    later = [b["messages"] for b in bodies if any(m["role"] == "assistant" for m in b["messages"])]
    assert later
    for messages in later:
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        assert all(len(text) <= limit for text in assistant)
    second_turn = next(m for m in later if m[-1]["content"] == record.turns[1].observation)
    assert [m["content"] for m in second_turn if m["role"] == "assistant"] == [cut]
    # Every answer was huge: every one was cut and counted, and counts as truncated.
    counts = policy.stats.counts
    assert counts["api/answers_cut"] == counts["api/requests"] == len(bodies)
    metrics = compute_metrics(game, [record], domain("ipd").weights, n_boot=10, seed=0)
    assert metrics.truncation_rate.value == 1.0

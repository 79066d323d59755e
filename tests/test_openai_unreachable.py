"""The OpenAI-compatible policy gives up at once on a server that is not there at all.

A port that is bound but not listening refuses every connection (ECONNREFUSED), like a
wrong URL or a server that is down. Retries and timeouts are a fraction of a second,
so each test takes well under the seconds it asserts.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

from typer.testing import CliRunner

from fake_openai_server import FakeOpenAIServer
from sepo.cli.main import app
from sepo.policies.openai_compat import (
    ChatServerUnreachable,
    ClientConfig,
    OpenAICompatPolicy,
    connect_failure_reason,
)
from sepo.rollout.protocol import SamplingConfig
from test_policy_openai import REQUESTS, make_request

FAST = ClientConfig(
    timeout_s=1.0,
    max_retries=2,
    backoff_s=0.01,
    backoff_max_s=0.02,
    max_concurrency=4,
    unreachable_after=4,
)


@pytest.fixture
def closed_url() -> Iterator[str]:
    """The base URL of a loopback port that refuses connections (held, so nobody else
    can start listening there during the test)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


def make_policy(base_url: str, config: ClientConfig = FAST) -> OpenAICompatPolicy:
    return OpenAICompatPolicy(
        "fake-model",
        base_url,
        api_key="test",
        sampling=SamplingConfig(seed=3),
        client_config=config,
    )


def test_closed_port_raises_a_clear_error_fast(closed_url: str) -> None:
    requests = [make_request(e) for e in range(8)]
    start = time.monotonic()
    with make_policy(closed_url) as policy, pytest.raises(ChatServerUnreachable) as caught:
        policy.respond(requests)
    elapsed = time.monotonic() - start
    message = str(caught.value)
    assert message.startswith(f"cannot reach the chat server at {closed_url}: ")
    assert "refused" in message.lower()
    assert "\n" not in message
    # The CLI reports OSError as one line with exit status 2.
    assert isinstance(caught.value, OSError)
    assert elapsed < 5.0
    # Every failed request used all its retries before counting: no blip trips the rule.
    assert policy.stats.counts["api/failures"] >= FAST.unreachable_after
    # ... and the policy stays failed: a later call raises at once, sending nothing.
    sent = policy.stats.counts["api/requests"]
    with pytest.raises(ChatServerUnreachable):
        policy.respond(requests[:1])
    assert policy.stats.counts["api/requests"] == sent


def test_fewer_failures_than_the_threshold_are_invalid_turns(closed_url: str) -> None:
    """Below ``unreachable_after`` the documented contract holds: ``""``, no exception."""
    with make_policy(closed_url) as policy:
        answers = policy.respond(REQUESTS[:3])
    assert answers == ["", "", ""]
    assert policy.stats.counts["api/failures"] == 3
    assert policy.stats.counts["api/retries"] == 3 * FAST.max_retries


def test_zero_threshold_never_raises(closed_url: str) -> None:
    config = ClientConfig(
        timeout_s=1.0, max_retries=0, backoff_s=0.0, max_concurrency=4, unreachable_after=0
    )
    with make_policy(closed_url, config) as policy:
        assert policy.respond(REQUESTS) == [""] * len(REQUESTS)


def test_a_server_that_answered_once_is_never_declared_unreachable() -> None:
    """After a success, a server that goes away gives invalid turns, not an error."""
    with FakeOpenAIServer() as server:
        policy = make_policy(server.base_url)
        assert all(policy.respond(REQUESTS[:1]))
    # The server is stopped: its port now refuses connections.
    with policy:
        answers = policy.respond([make_request(e, 1) for e in range(8)])
    assert answers == [""] * 8


@pytest.mark.parametrize("fault", ["500", "sleep", "bad_json", "400"])
def test_http_errors_and_read_timeouts_never_count(fault: str) -> None:
    """A server that answers badly, or accepts and then hangs, is there: the failures are
    invalid turns (``test_policy_openai``), however many there are."""
    config = ClientConfig(
        timeout_s=0.2, max_retries=1, backoff_s=0.01, max_concurrency=8, unreachable_after=1
    )
    server = FakeOpenAIServer(fault=fault, fault_count=-1, sleep_s=1.0)
    with server, make_policy(server.base_url, config) as policy:
        answers = policy.respond(REQUESTS)
    assert answers == [""] * len(REQUESTS)


def test_connect_failure_reason_reads_the_cause_chain() -> None:
    def chained(outer: Exception, inner: BaseException) -> Exception:
        outer.__cause__ = inner
        return outer

    refused = chained(RuntimeError("Connection error."), ConnectionRefusedError(111, "refused"))
    # The OS's words for the errno, whatever the message said (asyncio: "Connect call failed").
    assert connect_failure_reason(refused) == f"[Errno 111] {os.strerror(111)}"
    dns = chained(RuntimeError("x"), socket.gaierror(-2, "Name or service not known"))
    assert connect_failure_reason(dns) == "[Errno -2] Name or service not known"

    class ConnectTimeout(Exception):  # the transport's connect-phase timeout, by name
        pass

    assert connect_failure_reason(chained(RuntimeError("x"), ConnectTimeout("timed out"))) == (
        "connection timed out: timed out"
    )

    class ReadTimeout(Exception):
        pass

    assert connect_failure_reason(chained(RuntimeError("x"), ReadTimeout("timed out"))) is None
    assert connect_failure_reason(chained(RuntimeError("x"), TimeoutError("timed out"))) is None
    assert connect_failure_reason(ValueError("bad json")) is None


def test_cli_eval_against_a_closed_port_is_one_line_and_exit_2(
    closed_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's case: ``sepo eval --policy openai:m@URL`` with nothing at URL used
    to retry for minutes, then print a table of invalid turns with exit status 0."""
    original = OpenAICompatPolicy.from_spec.__func__  # type: ignore[attr-defined]

    def fast_from_spec(cls: type[OpenAICompatPolicy], spec: str, **kw: Any) -> Any:
        return original(cls, spec, **{**kw, "client_config": FAST})

    monkeypatch.setattr(OpenAICompatPolicy, "from_spec", classmethod(fast_from_spec))
    start = time.monotonic()
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--game",
            "ipd",
            "--episodes",
            "1",
            "--no-heldout",
            "--policy",
            f"openai:m@{closed_url}",
            "--out",
            str(tmp_path / "out"),
        ],
        env={"SEPO_API_KEY": "test"},
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and f"cannot reach the chat server at {closed_url}" in errors[0]
    assert time.monotonic() - start < 10.0

"""A fake OpenAI-compatible ``/v1/chat/completions`` server for tests, with fault injection.

It runs the standard library's ``ThreadingHTTPServer`` on ``127.0.0.1`` (port 0, so the
OS picks a free one) in a background thread. Its answer is a deterministic function of
the conversation: a short reasoning line, then one of the legal actions listed on the
last ``Legal actions:`` line of the conversation, picked by a CRC of the messages. So
the same request always gets the same answer and a test can compare runs with and
without faults.

Fault modes (``fault=``), applied to the first ``fault_count`` calls of each distinct
request body (retries of one request share a body): ``"500"`` (HTTP 500), ``"sleep"``
(answer only after ``sleep_s``, past the client's timeout), ``"bad_json"`` (a truncated
JSON body), ``"no_choices"`` (valid JSON without ``choices``), ``"no_content"`` (a choice
whose message has no content), ``"400"`` (a client error, not worth retrying),
``"drip"`` (a valid answer whose body is sent one byte every ``drip_s``) and
``"drip_head"`` (the status line and headers sent that way: a per-read timeout never
fires on either), ``"huge"`` (a valid answer of ``huge_chars`` characters,
:func:`huge_answer`, from a server that ignores ``max_tokens``).
``fault_count=-1`` makes the fault permanent. ``delay_s`` delays every answer, and
``max_in_flight`` records the most requests the server was handling at once;
``paths`` and ``authorizations`` record each request's path (with its query) and
``Authorization`` header.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_LEGAL = re.compile(r"Legal actions:\s*(.+)")


def scripted_answer(messages: list[dict[str, Any]]) -> str:
    """The fake model's answer: deterministic in the messages."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    legal: list[str] = []
    for match in _LEGAL.finditer(text):
        legal = [a.strip() for a in match.group(1).split(",") if a.strip()]
    crc = zlib.crc32(json.dumps(messages, sort_keys=True).encode())
    action = legal[crc % len(legal)] if legal else "PASS"
    return f"I weigh the options ({crc % 97}).\n{action}"


def huge_answer(chars: int) -> str:
    """The answer of the ``"huge"`` fault: ``chars`` characters of rambling, no action."""
    line = "I keep weighing the options without end.\n"
    return (line * (chars // len(line) + 1))[:chars]


class FakeOpenAIServer:
    """Context manager: ``with FakeOpenAIServer(fault="500", fault_count=2) as server: ...``."""

    def __init__(
        self,
        fault: str | None = None,
        fault_count: int = 0,
        sleep_s: float = 1.0,
        delay_s: float = 0.0,
        drip_s: float = 0.2,
        huge_chars: int = 1_000_000,
    ) -> None:
        self.fault = fault
        self.fault_count = fault_count
        self.sleep_s = sleep_s
        self.delay_s = delay_s
        self.drip_s = drip_s
        self.huge_chars = huge_chars
        self.paths: list[str] = []
        self.authorizations: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        """Every request body received, in arrival order."""
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with server._lock:
                    server.paths.append(self.path)
                    server.authorizations.append(self.headers.get("Authorization"))
                if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                body = json.loads(raw)
                key = json.dumps(body, sort_keys=True)
                with server._lock:
                    server.bodies.append(body)
                    server.calls[key] += 1
                    nth = server.calls[key]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                # Counted while "thinking" only: the client cannot send its next request
                # before this one's answer, which is written after the decrement.
                if server.delay_s > 0:
                    server._stop.wait(server.delay_s)
                with server._lock:
                    server.in_flight -= 1
                self._answer(body, nth)

            def _answer(self, body: dict[str, Any], nth: int) -> None:
                faulty = server.fault is not None and (
                    server.fault_count < 0 or nth <= server.fault_count
                )
                if faulty and server.fault not in ("drip", "drip_head", "huge"):
                    self._fault(str(server.fault))
                    return
                answer = scripted_answer(body["messages"])
                if faulty and server.fault == "huge":
                    answer = huge_answer(server.huge_chars)
                reply = {
                    "id": f"chatcmpl-{nth}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
                payload = json.dumps(reply).encode()
                if faulty and server.fault in ("drip", "drip_head"):
                    self._drip(payload, head=server.fault == "drip_head")
                else:
                    self._send(200, payload)

            def _drip(self, payload: bytes, head: bool) -> None:
                """Send ``payload`` (and, with ``head``, the status line and headers
                too) one byte every ``drip_s``, until done, the client goes or the
                server stops."""
                start = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
                )
                try:
                    if head:
                        slow = start + payload
                    else:
                        self.wfile.write(start)
                        slow = payload
                    for i in range(len(slow)):
                        if server._stop.wait(server.drip_s):
                            return
                        self.wfile.write(slow[i : i + 1])
                        self.wfile.flush()
                except OSError:  # the client gave up
                    pass
                self.close_connection = True

            def _fault(self, fault: str) -> None:
                if fault == "500":
                    self._send(500, b'{"error": {"message": "injected failure"}}')
                elif fault == "400":
                    self._send(400, b'{"error": {"message": "injected client error"}}')
                elif fault == "sleep":
                    server._stop.wait(server.sleep_s)
                    self._send(200, b'{"choices": []}')
                elif fault == "bad_json":
                    self._send(200, b'{"choices": [{"message": {"content": "trunc')
                elif fault == "no_choices":
                    self._send(200, b'{"id": "x", "object": "chat.completion"}')
                elif fault == "no_content":
                    self._send(
                        200,
                        b'{"choices": [{"index": 0, "message": {"role": "assistant"}, '
                        b'"finish_reason": "stop"}]}',
                    )
                else:
                    raise ValueError(f"unknown fault {fault!r}")

            def _send(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout): nothing to do
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

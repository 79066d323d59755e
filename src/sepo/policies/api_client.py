"""The connection side of ``openai:MODEL@BASE_URL`` policies: parsing the spec, keeping
secrets in a URL out of everything sepo prints or saves (:func:`redact_url`), the client
settings (deadline, retries, concurrency) and what an unreachable server is told as."""

from __future__ import annotations

import base64
import logging
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

DEFAULT_BASE_URL = "https://api.openai.com/v1"


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+", re.IGNORECASE)


_SECRET_QUERY_KEY = re.compile(
    r"key|token|secret|pass|pwd|auth|sig|credential|session|cookie", re.IGNORECASE
)


REDACTED = "***"


def _redact_one_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if 0 <= found < end:
            end = found
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        # A password is replaced; a lone user part is often a token itself.
        netloc = f"{user}:{REDACTED}@{host}" if colon else f"{REDACTED}@{host}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        items = []
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            if not eq:
                items.append(REDACTED if name else name)  # a bare value: cannot tell
            elif value and _SECRET_QUERY_KEY.search(name):
                items.append(f"{name}={REDACTED}")
            else:
                items.append(item)
        tail = f"{path}?{'&'.join(items)}{hash_}{fragment}"
    return f"{scheme}{sep}{netloc}{tail}"


def redact_url(text: str) -> str:
    """``text`` with every ``http(s)://`` URL in it shown without secrets: the password
    of its userinfo (or the whole userinfo when it has no ``user:`` part, a bare token)
    and the values of query parameters whose name looks secret (``api_key``, ``token``,
    ``sig``, …; a parameter without ``=``, too) become ``***``.

    The one way this module shows a URL: a bare URL, an ``openai:MODEL@URL`` spec or a
    message that contains either. Text without a URL is returned as it is.
    """
    return _URL_IN_TEXT.sub(lambda m: _redact_one_url(m.group(0)), text)


_HTTP_LOGGERS = ("httpx", "httpx2")
"""Loggers of the HTTP library the SDK wraps (httpx or its fork): at INFO they log each
request's URL, query string included."""


class _RedactURLs(logging.Filter):
    """Passes every record, with the URLs in its message shown through :func:`redact_url`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        shown = redact_url(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


def _redact_http_logs() -> None:
    """Add :class:`_RedactURLs` to the HTTP library's loggers (once), so that a query key
    of the base URL is not written by a program that logs at INFO."""
    for name in _HTTP_LOGGERS:
        http_logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactURLs) for f in http_logger.filters):
            http_logger.addFilter(_RedactURLs())


def _client_url(base_url: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """``(url, query, headers)`` for the SDK: the base URL without query and userinfo,
    its query parameters (sent with every request) and, for a userinfo, the Basic
    ``Authorization`` header that HTTP clients derive from it. Kept out of the URL, the
    secret never reaches a log line of the HTTP library either."""
    parts = urlsplit(base_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    headers: dict[str, str] = {}
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), query, headers


def _split_spec(body: str) -> tuple[str, str | None]:
    """``MODEL@URL`` → ``(MODEL, URL)``: the split is at the last ``@`` followed by
    ``http://`` or ``https://``; ``(body, None)`` without one."""
    cut = max(body.rfind("@http://"), body.rfind("@https://"))
    return (body[:cut], body[cut + 1 :]) if cut >= 0 else (body, None)


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """Split ``openai:MODEL@BASE_URL`` into ``(model, base_url)``.

    The ``openai:`` prefix is optional; without ``@BASE_URL`` the OpenAI API is used.
    The split is at the last ``@`` followed by ``http://`` or ``https://``, so model
    names that contain ``@`` still work. Error messages show the spec through
    :func:`redact_url`.
    """
    hint = (
        "expected openai:MODEL@BASE_URL, e.g. "
        "openai:gpt-4o-mini@https://api.openai.com/v1 or "
        "openai:Qwen/Qwen2.5-7B-Instruct@http://localhost:8000/v1"
    )
    shown = redact_url(spec)
    body = spec.strip()
    if body.startswith("openai:"):
        body = body[len("openai:") :]
    model, url = _split_spec(body)
    if url is None and "@" in body:
        raise ValueError(
            f"bad model spec {shown!r}: the base URL must start with http(s)://; {hint}"
        )
    base_url = url if url is not None else DEFAULT_BASE_URL
    model = model.strip()
    if not model:
        raise ValueError(f"bad model spec {shown!r}: no model name; {hint}")
    try:
        parsed = urlsplit(base_url)
        valid = parsed.scheme in ("http", "https") and bool(parsed.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket, a port that is not a number
        valid = False
    if not valid:
        raise ValueError(
            f"bad model spec {shown!r}: invalid base URL {redact_url(base_url)!r}; {hint}"
        )
    return model, base_url.rstrip("/")


@dataclass(frozen=True)
class ClientConfig:
    """Timeouts, retries and concurrency of an OpenAI-compatible policy."""

    timeout_s: float = 60.0
    """Deadline for one HTTP attempt, from sending to the last byte of the answer,
    whatever the server does (module docstring); the connect phase alone gets half."""
    max_retries: int = 4
    """Extra attempts after the first for a retryable failure."""
    backoff_s: float = 1.0
    """Wait before the first retry; doubles for each further retry."""
    backoff_max_s: float = 30.0
    """Cap on one wait (before jitter)."""
    jitter: float = 0.25
    """Each wait is multiplied by a uniform factor in ``[1, 1 + jitter]`` (seeded)."""
    max_concurrency: int = 8
    """Requests in flight at once."""
    unreachable_after: int = 8
    """Raise :class:`ChatServerUnreachable` once this many requests failed to connect at
    all while none has succeeded yet (module docstring); 0 never raises."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError("timeouts and backoff must be positive")
        if self.max_retries < 0 or self.max_concurrency < 1 or self.jitter < 0:
            raise ValueError("max_retries >= 0, max_concurrency >= 1 and jitter >= 0 required")
        if self.unreachable_after < 0:
            raise ValueError("unreachable_after >= 0 required")


class ChatServerUnreachable(ConnectionError):
    """The chat server could not be reached at all: no request of the policy has
    succeeded and ``ClientConfig.unreachable_after`` requests failed to connect.

    A ``ConnectionError`` (so an ``OSError``): the CLI reports it as one line, exit 2.
    """


_CONNECT_FAILURES = frozenset({"ConnectError", "ConnectTimeout"})
"""Names of the transport's connect-phase exceptions (httpx's and httpcore's, and their
forks'); matched by name so that the check does not depend on which HTTP library the
SDK wraps."""


def connect_failure_reason(err: BaseException) -> str | None:
    """Why ``err`` means the server could not be reached at all, or ``None``.

    It does when the exception or one of its causes is a connect-phase error of the
    transport (``ConnectError``, ``ConnectTimeout``), a refused connection or a failed
    DNS lookup. The reason is the deepest such cause or, below it, the operating
    system's own error: an errno in the OS's words (``[Errno 111] Connection refused``,
    whatever wording the event loop chose), a DNS error as its message. A read timeout,
    an HTTP status or a malformed reply is not one.
    """
    chain: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and all(link is not seen for seen in chain):
        chain.append(link)
        link = link.__cause__ or link.__context__
    found = [
        i
        for i, link in enumerate(chain)
        if type(link).__name__ in _CONNECT_FAILURES
        or isinstance(link, (ConnectionRefusedError, socket.gaierror))
    ]
    if not found:
        return None
    if type(chain[found[0]]).__name__ == "ConnectTimeout":
        text = str(chain[found[0]]).strip()
        return f"connection timed out{': ' + text if text else ''}"
    cause = chain[found[-1]]
    for link in chain[found[0] :]:
        if isinstance(link, OSError) and link.errno is not None:
            cause = link  # the root cause: the OS's error, under the library's wrappers
    errno = cause.errno if isinstance(cause, OSError) else None
    if isinstance(errno, int) and errno > 0 and not isinstance(cause, socket.gaierror):
        return f"[Errno {errno}] {os.strerror(errno)}"
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def api_key_from_env() -> str:
    """``SEPO_API_KEY``, else ``OPENAI_API_KEY``, else ``"EMPTY"``."""
    return os.environ.get("SEPO_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"

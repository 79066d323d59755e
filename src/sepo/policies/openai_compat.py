"""An OpenAI-compatible chat-completions server as an agent policy (``openai:MODEL@BASE_URL``).

Works with the OpenAI API and with anything that speaks its ``/v1/chat/completions``
dialect: vLLM, SGLang, Ollama, llama.cpp's server, TGI. It uses the ``openai`` SDK with
the SDK's own retries switched off (``max_retries=0``) and a retry loop of its own, so the
behaviour under faults is explicit and testable:

- each attempt has a timeout (``ClientConfig.timeout_s``);
- timeouts, connection errors, HTTP 5xx, 408 and 429, and malformed replies (invalid
  JSON, no ``choices``, no ``content``) are retried up to ``max_retries`` times with
  exponential backoff plus jitter from a seeded RNG;
- other 4xx answers (a bad request will stay bad) are not retried;
- a request that still fails returns ``""`` (which the engine counts as invalid and
  sends to :meth:`OpenAICompatPolicy.recover`) and increments ``api/failures``. Every
  wait is bounded, and nothing raises, with one exception:
- **fail fast when the server is not there at all.** If no request of this policy has
  ever succeeded and ``ClientConfig.unreachable_after`` requests (default 8, one batch
  at the default concurrency) have failed for good on a *connection failure* —
  connection refused, a DNS lookup that fails, a TLS or other connect error, a
  connect timeout — the policy raises :class:`ChatServerUnreachable` ("cannot reach
  the chat server at URL: reason"). HTTP errors (5xx, 4xx), read timeouts of a server
  that accepted the connection, and malformed replies never count: the server is
  there. The rule judges requests after their retries, so a server that is still
  starting gets the full backoff of each request first; once it trips, requests still
  queued or waiting to retry stop at once. After the first success it is off for good:
  a server that goes away mid-run gives invalid turns as above. Without it an
  evaluation against a wrong URL would retry every decision for hours and then report
  a table of invalid turns. ``ChatServerUnreachable`` is a ``ConnectionError`` (an
  ``OSError``), which the CLI reports as one line with exit status 2.

Requests of one batch run concurrently in a thread pool (``max_concurrency``). The
API key comes from ``SEPO_API_KEY``, else ``OPENAI_API_KEY``, else ``"EMPTY"`` (local
servers accept any key). The fallback for an unparseable answer (SPEC §2) is one
re-prompt that shows the model its answer and states the legal actions.

Each request is sent ``seed = f(sampling.seed, episode seed, turn)``, so a server that
honours seeds reproduces a run, and episodes with identical prompts still draw
differently.

Example (a vLLM server on this machine)::

    sepo eval --agent openai:Qwen/Qwen2.5-7B-Instruct@http://localhost:8000/v1
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

from sepo.rollout.protocol import (
    DecisionRequest,
    Message,
    PolicyStats,
    Recovery,
    Reply,
    SamplingConfig,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

REPROMPT = (
    "Your last answer could not be read as a legal action. The legal actions are: {actions}. "
    "Answer again. The last line of your answer must be exactly one of these actions, "
    "with nothing else on that line."
)
"""The re-prompt sent by :meth:`OpenAICompatPolicy.recover` (``{actions}``: comma-separated)."""


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """Split ``openai:MODEL@BASE_URL`` into ``(model, base_url)``.

    The ``openai:`` prefix is optional; without ``@BASE_URL`` the OpenAI API is used.
    The split is at the last ``@`` followed by ``http://`` or ``https://``, so model
    names that contain ``@`` still work.
    """
    hint = (
        "expected openai:MODEL@BASE_URL, e.g. "
        "openai:gpt-4o-mini@https://api.openai.com/v1 or "
        "openai:Qwen/Qwen2.5-7B-Instruct@http://localhost:8000/v1"
    )
    body = spec.strip()
    if body.startswith("openai:"):
        body = body[len("openai:") :]
    model, base_url = body, DEFAULT_BASE_URL
    cut = max(body.rfind("@http://"), body.rfind("@https://"))
    if cut >= 0:
        model, base_url = body[:cut], body[cut + 1 :]
    elif "@" in body:
        raise ValueError(
            f"bad model spec {spec!r}: the base URL must start with http(s)://; {hint}"
        )
    model = model.strip()
    if not model:
        raise ValueError(f"bad model spec {spec!r}: no model name; {hint}")
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"bad model spec {spec!r}: invalid base URL {base_url!r}; {hint}")
    return model, base_url.rstrip("/")


@dataclass(frozen=True)
class ClientConfig:
    """Timeouts, retries and concurrency of an OpenAI-compatible policy."""

    timeout_s: float = 60.0
    """Limit for one HTTP attempt (connect, send, each read)."""
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


class _MalformedReply(Exception):
    """The server answered 200 but the reply has no usable choice or content."""


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
    DNS lookup; the reason is that cause's message (``[Errno 111] Connection refused``).
    A read timeout, an HTTP status or a malformed reply is not one.
    """
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if type(link).__name__ in _CONNECT_FAILURES or isinstance(
            link, (ConnectionRefusedError, socket.gaierror)
        ):
            text = str(link).strip()
            if type(link).__name__ == "ConnectTimeout":
                return f"connection timed out{': ' + text if text else ''}"
            return text.splitlines()[0] if text else type(link).__name__
        link = link.__cause__ or link.__context__
    return None


def api_key_from_env() -> str:
    """``SEPO_API_KEY``, else ``OPENAI_API_KEY``, else ``"EMPTY"``."""
    return os.environ.get("SEPO_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"


def request_seed(seed: int, episode_seed: int, turn: int) -> int:
    """The ``seed`` sent with one decision: distinct per episode and turn, fixed per run."""
    return (seed * 1_000_003 + episode_seed * 10_007 + turn) % (2**31 - 1)


class OpenAICompatPolicy:
    """A model behind an OpenAI-compatible chat-completions endpoint."""

    name: str

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        sampling: SamplingConfig | None = None,
        client_config: ClientConfig | None = None,
        name: str | None = None,
    ) -> None:
        try:
            import openai
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError(
                "OpenAI-compatible policies need the openai SDK: pip install 'sepo[train]'"
            ) from err

        self.model = model
        self.base_url = base_url
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.config = client_config if client_config is not None else ClientConfig()
        self.name = name or f"openai:{model}@{base_url}"
        self.stats = PolicyStats()
        self._lock = threading.Lock()
        self._calls = 0
        self._succeeded = False
        self._connect_failures = 0
        self._unreachable: ChatServerUnreachable | None = None
        self._abort = threading.Event()
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=api_key if api_key is not None else api_key_from_env(),
            base_url=base_url,
            max_retries=0,
            timeout=self.config.timeout_s,
        )

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        sampling: SamplingConfig | None = None,
        client_config: ClientConfig | None = None,
        name: str | None = None,
    ) -> OpenAICompatPolicy:
        """Build from ``openai:MODEL@BASE_URL`` (see :func:`parse_openai_spec`)."""
        model, base_url = parse_openai_spec(spec)
        return cls(
            model,
            base_url,
            sampling=sampling,
            client_config=client_config,
            name=name or spec,
        )

    # ------------------------------------------------------------------ protocol

    def respond(self, requests: Sequence[DecisionRequest]) -> list[str]:
        """Answer every request (concurrently); ``""`` where a request failed for good."""
        return self.complete(
            [list(r.messages) for r in requests],
            [request_seed(self.sampling.seed, r.seed, r.turn) for r in requests],
        )

    def recover(
        self, requests: Sequence[DecisionRequest], outputs: Sequence[str]
    ) -> list[Recovery]:
        """One re-prompt per unparseable answer: its conversation, the bad answer, and a
        user message that lists the legal actions."""
        conversations = [
            self.reprompt_messages(r, out) for r, out in zip(requests, outputs, strict=True)
        ]
        seeds = [request_seed(self.sampling.seed + 1, r.seed, r.turn) for r in requests]
        answers = self.complete(conversations, seeds)
        self._add("api/reprompts", len(requests))
        return [Recovery(text=a, kind="reprompt") for a in answers]

    @staticmethod
    def reprompt_messages(request: DecisionRequest, output: str) -> list[Message]:
        """The conversation of a re-prompt (the bad answer is shown as the assistant turn;
        an empty one is written ``(no answer)`` so roles keep alternating)."""
        return [
            *request.messages,
            {"role": "assistant", "content": output if output.strip() else "(no answer)"},
            {"role": "user", "content": REPROMPT.format(actions=", ".join(request.legal_texts))},
        ]

    # ------------------------------------------------------------------ requests

    def complete(
        self, conversations: Sequence[Sequence[Message]], seeds: Sequence[int] | None = None
    ) -> list[str]:
        """Send one chat completion per conversation, at most ``max_concurrency`` at once.

        Returns the answers in order; ``""`` for a request that failed after retries.
        """
        if not conversations:
            return []
        call = self._next_call()
        seed_list = (
            list(seeds)
            if seeds is not None
            else [self.sampling.seed + i for i in range(len(conversations))]
        )
        jobs = [
            (
                list(messages),
                seed_list[i],
                random.Random(f"sepo-openai:{self.sampling.seed}:{call}:{i}"),
            )
            for i, messages in enumerate(conversations)
        ]
        workers = min(self.config.max_concurrency, len(jobs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sepo-openai") as pool:
            return list(pool.map(lambda job: self._complete_one(*job), jobs))

    def _complete_one(self, messages: list[Message], seed: int, rng: random.Random) -> str:
        cfg = self.config
        for attempt in range(cfg.max_retries + 1):
            self._raise_if_unreachable()
            self._add("api/requests")
            try:
                answer = self._request(messages, seed)
            except Exception as err:
                retryable = self._is_retryable(err)
                logger.debug("chat completion attempt %d failed: %r", attempt + 1, err)
                if not retryable or attempt == cfg.max_retries:
                    self._add("api/failures")
                    reason = connect_failure_reason(err)
                    logger.warning(
                        "chat completion failed after %d attempt(s): %s",
                        attempt + 1,
                        f"{err} ({reason})" if reason else err,
                    )
                    self._count_connect_failure(reason)
                    return ""
            else:
                with self._lock:  # read under the lock by the fail-fast rule
                    self._succeeded = True
                return answer
            self._add("api/retries")
            wait = min(cfg.backoff_s * 2**attempt, cfg.backoff_max_s)
            # An Event, not time.sleep: a fail-fast elsewhere ends this wait at once.
            self._abort.wait(wait * (1.0 + cfg.jitter * rng.random()))
        return ""  # unreachable: the loop returns on its last attempt

    def _count_connect_failure(self, reason: str | None) -> None:
        """The fail-fast rule of the module docstring, for a request that failed for good
        (``reason``: its connection failure, ``None`` when it was not one)."""
        threshold = self.config.unreachable_after
        if reason is None or threshold == 0:
            return
        with self._lock:
            self._connect_failures += 1
            if self._succeeded or self._connect_failures < threshold:
                return
            if self._unreachable is None:
                self._unreachable = ChatServerUnreachable(
                    f"cannot reach the chat server at {self.base_url}: {reason} "
                    f"({self._connect_failures} requests failed to connect, none succeeded)"
                )
                self._abort.set()
        self._raise_if_unreachable()

    def _raise_if_unreachable(self) -> None:
        error = self._unreachable
        if error is not None:
            raise ChatServerUnreachable(*error.args)

    def _request(self, messages: list[Message], seed: int) -> str:
        s = self.sampling
        response = self._client.chat.completions.create(
            model=self.model,
            messages=cast(Any, messages),  # plain role/content dicts
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_new_tokens,
            seed=seed,
            timeout=self.config.timeout_s,
        )
        choices = getattr(response, "choices", None)
        if not choices:
            raise _MalformedReply("reply without choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        usage = getattr(response, "usage", None)
        if usage is not None:
            self._add("api/prompt_tokens", float(getattr(usage, "prompt_tokens", 0) or 0))
            self._add("api/completion_tokens", float(getattr(usage, "completion_tokens", 0) or 0))
        if content is None:
            if getattr(choice, "finish_reason", None) == "length":
                # A reasoning model spent max_tokens before answering: retrying is futile.
                return ""
            raise _MalformedReply("reply without message content")
        return Reply(str(content), truncated=getattr(choice, "finish_reason", None) == "length")

    def _is_retryable(self, err: Exception) -> bool:
        openai = self._openai
        if isinstance(err, openai.APIStatusError):
            status = int(err.status_code)
            return status >= 500 or status in (408, 409, 429)
        # Timeouts, connection errors, invalid JSON, malformed replies and anything
        # unexpected from the transport are treated as transient.
        return True

    # ------------------------------------------------------------------ helpers

    def _add(self, key: str, n: float = 1) -> None:
        with self._lock:
            self.stats.add(key, n)

    def _next_call(self) -> int:
        with self._lock:
            value = self._calls
            self._calls += 1
            return value

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAICompatPolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

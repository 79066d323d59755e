"""An OpenAI-compatible chat-completions server as an agent policy (``openai:MODEL@BASE_URL``).

Works with the OpenAI API and with anything that speaks its ``/v1/chat/completions``
dialect: vLLM, SGLang, Ollama, llama.cpp's server, TGI. It uses the ``openai`` SDK's
async client with the SDK's own retries switched off (``max_retries=0``) and a retry
loop of its own, so the behaviour under faults is explicit and testable:

- each attempt has a **deadline** for the whole request, ``ClientConfig.timeout_s``,
  whatever the server does. The HTTP library's timeouts bound each socket operation
  only (a server that drips one byte every 2 s resets a 5 s read timeout forever), so
  each attempt runs as a task on the policy's own event loop under
  :func:`asyncio.wait_for`: when the deadline passes the task is cancelled, which
  closes its connection. A missed deadline counts as a read timeout;
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

Answers are cut to :func:`answer_char_limit` characters before they are returned, so a
server that ignores ``max_tokens`` cannot make the engine store a megabyte and re-send
it in every later request of the episode; a cut answer is a :class:`Reply` marked
``truncated`` (it counts in the evaluation's truncation rate) and increments
``api/answers_cut``.

A key in the base URL (``http://user:KEY@host/v1``, ``…/v1?api_key=KEY``) is used for
the requests but never shown: the policy's ``name`` (written to ``metrics.json``, every
``episodes.jsonl`` line and the CLI's tables) and every message that shows the URL pass
it through :func:`redact_url`, as do the log records of the HTTP library. The userinfo
is sent as the Basic ``Authorization`` header it stands for, and query parameters of the
base URL with every request (the SDK would otherwise glue the request path after them).

Requests of one batch run concurrently (``max_concurrency`` at once). The API key comes
from ``SEPO_API_KEY``, else ``OPENAI_API_KEY``, else ``"EMPTY"`` (local servers accept
any key). The fallback for an unparseable answer (SPEC §2) is one re-prompt that shows
the model its answer and states the legal actions.

Each request is sent ``seed = f(sampling.seed, episode seed, turn)``, so a server that
honours seeds reproduces a run, and episodes with identical prompts still draw
differently.

Example (a vLLM server on this machine)::

    sepo eval --policy openai:Qwen/Qwen2.5-7B-Instruct@http://localhost:8000/v1
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

from sepo.policies.api_client import (
    DEFAULT_BASE_URL,
    ChatServerUnreachable,
    ClientConfig,
    _client_url,
    _redact_http_logs,
    api_key_from_env,
    connect_failure_reason,
    parse_openai_spec,
    redact_url,
)
from sepo.rollout.protocol import (
    DecisionRequest,
    Message,
    PolicyStats,
    Recovery,
    Reply,
    SamplingConfig,
)

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_ANSWER_CHARS",
    "REPROMPT",
    "ChatServerUnreachable",
    "ClientConfig",
    "OpenAICompatPolicy",
    "answer_char_limit",
    "api_key_from_env",
    "connect_failure_reason",
    "parse_openai_spec",
    "redact_url",
]


REPROMPT = (
    "Your last answer could not be read as a legal action. The legal actions are: {actions}. "
    "Answer again. The last line of your answer must be exactly one of these actions, "
    "with nothing else on that line."
)
"""The re-prompt sent by :meth:`OpenAICompatPolicy.recover` (``{actions}``: comma-separated)."""

MAX_ANSWER_CHARS = 16_384
"""Least number of characters of an answer that is kept (:func:`answer_char_limit`).

A token decodes to about 4 characters of English on average and to a few dozen at most
(the longest entries of common BPE vocabularies are runs of spaces or punctuation), so
an answer within the default ``max_new_tokens`` of 48 is under ~1,500 characters: this
bound is ten times that. Only a server that ignores ``max_tokens`` reaches it."""

MAX_CHARS_PER_TOKEN = 32
"""Characters allowed per requested token, so that a larger ``max_new_tokens`` (a
reasoning model's budget) raises the bound above :data:`MAX_ANSWER_CHARS` with it."""


def answer_char_limit(max_new_tokens: int) -> int:
    """Most characters of one answer that are kept: ``max(MAX_ANSWER_CHARS,
    MAX_CHARS_PER_TOKEN * max_new_tokens)``."""
    return max(MAX_ANSWER_CHARS, MAX_CHARS_PER_TOKEN * max_new_tokens)


class _MalformedReply(Exception):
    """The server answered 200 but the reply has no usable choice or content."""


class _DeadlineExceeded(Exception):
    """An attempt had no complete answer by ``ClientConfig.timeout_s`` (a read timeout)."""


def request_seed(seed: int, episode_seed: int, turn: int) -> int:
    """The ``seed`` sent with one decision: distinct per episode and turn, fixed per run."""
    return (seed * 1_000_003 + episode_seed * 10_007 + turn) % (2**31 - 1)


class OpenAICompatPolicy:
    """A model behind an OpenAI-compatible chat-completions endpoint.

    Its requests run on an event loop of its own, in a daemon thread started on first
    use (so callers need no loop, and a caller that runs one, a notebook, is not
    disturbed); :meth:`close` stops it.
    """

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
        """The URL requests go to, secrets included: show it only through
        :func:`redact_url`."""
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.config = client_config if client_config is not None else ClientConfig()
        self.name = redact_url(name or f"openai:{model}@{base_url}")
        self.answer_limit = answer_char_limit(self.sampling.max_new_tokens)
        """Most characters of an answer that are kept (:func:`answer_char_limit`)."""
        self.stats = PolicyStats()
        self._lock = threading.Lock()
        self._calls = 0
        self._succeeded = False
        self._connect_failures = 0
        self._unreachable: ChatServerUnreachable | None = None
        self._abort = asyncio.Event()  # set by a fail-fast; used on the policy's loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._stop_loop: weakref.finalize[Any, Any] | None = None
        self._openai = openai
        _redact_http_logs()
        self._api_key = api_key if api_key is not None else api_key_from_env()
        self._client: openai.AsyncOpenAI | None = None  # made with the loop it runs on

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

        Returns the answers in order (each cut to :attr:`answer_limit` characters);
        ``""`` for a request that failed after retries.
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
        self._raise_if_unreachable()
        loop = self._event_loop()
        future: Future[list[str]] = asyncio.run_coroutine_threadsafe(self._complete_all(jobs), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # an interrupted caller leaves no requests running
            raise

    async def _complete_all(
        self, jobs: list[tuple[list[Message], int, random.Random]]
    ) -> list[str]:
        slots = asyncio.Semaphore(min(self.config.max_concurrency, len(jobs)))
        tasks = [asyncio.ensure_future(self._complete_one(*job, slots)) for job in jobs]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            # After a fail-fast (or a cancelled caller) the others stop at once.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _complete_one(
        self,
        messages: list[Message],
        seed: int,
        rng: random.Random,
        slots: asyncio.Semaphore,
    ) -> str:
        cfg = self.config
        async with slots:
            for attempt in range(cfg.max_retries + 1):
                self._raise_if_unreachable()
                self._add("api/requests")
                try:
                    answer = await self._attempt(messages, seed)
                except Exception as err:
                    retryable = self._is_retryable(err)
                    logger.debug(
                        "chat completion attempt %d failed: %s", attempt + 1, redact_url(repr(err))
                    )
                    if not retryable or attempt == cfg.max_retries:
                        self._add("api/failures")
                        reason = connect_failure_reason(err)
                        logger.warning(
                            "chat completion failed after %d attempt(s): %s",
                            attempt + 1,
                            redact_url(f"{err} ({reason})" if reason else str(err)),
                        )
                        self._count_connect_failure(reason)
                        return ""
                else:
                    with self._lock:  # read under the lock by the fail-fast rule
                        self._succeeded = True
                    return answer
                self._add("api/retries")
                wait = min(cfg.backoff_s * 2**attempt, cfg.backoff_max_s)
                # On the abort event, not a plain sleep: a fail-fast elsewhere ends it.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self._abort.wait(), wait * (1.0 + cfg.jitter * rng.random())
                    )
        return ""  # unreachable: the loop returns on its last attempt

    async def _attempt(self, messages: list[Message], seed: int) -> str:
        """One request under the deadline ``ClientConfig.timeout_s``: on expiry
        :func:`asyncio.wait_for` cancels it (closing its connection) and it fails as a
        read timeout would."""
        timeout_s = self.config.timeout_s
        try:
            return await asyncio.wait_for(self._request(messages, seed), timeout_s)
        except asyncio.TimeoutError:
            raise _DeadlineExceeded(f"no complete answer within {timeout_s:g} s") from None

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
                    redact_url(
                        f"cannot reach the chat server at {self.base_url}: {reason} "
                        f"({self._connect_failures} requests failed to connect, none succeeded)"
                    )
                )
                self._abort.set()
        self._raise_if_unreachable()

    def _raise_if_unreachable(self) -> None:
        error = self._unreachable
        if error is not None:
            raise ChatServerUnreachable(*error.args)

    async def _request(self, messages: list[Message], seed: int) -> str:
        s = self.sampling
        client = self._client
        if client is None:
            raise RuntimeError("the policy was closed while a request was being sent")
        response = await client.chat.completions.create(
            model=self.model,
            messages=cast(Any, messages),  # plain role/content dicts
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_new_tokens,
            seed=seed,
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
        finished_at_limit = getattr(choice, "finish_reason", None) == "length"
        if content is None:
            if finished_at_limit:
                # A reasoning model spent max_tokens before answering: retrying is futile.
                return ""
            raise _MalformedReply("reply without message content")
        text = str(content)
        if len(text) > self.answer_limit:
            self._add("api/answers_cut")
            return Reply(text[: self.answer_limit], truncated=True)
        return Reply(text, truncated=finished_at_limit)

    def _is_retryable(self, err: Exception) -> bool:
        openai = self._openai
        if isinstance(err, openai.APIStatusError):
            status = int(err.status_code)
            return status >= 500 or status in (408, 409, 429)
        # Timeouts (a missed deadline too), connection errors, invalid JSON, malformed
        # replies and anything unexpected from the transport are treated as transient.
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

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The policy's event loop and HTTP client, started on first use (and again on
        the first use after :meth:`close`)."""
        with self._lock:
            if self._loop is None:
                url, query, headers = _client_url(self.base_url)
                timeout_s = self.config.timeout_s
                self._client = self._openai.AsyncOpenAI(
                    api_key=self._api_key,
                    base_url=url,
                    default_query=query or None,
                    default_headers=headers or None,
                    max_retries=0,
                    # Per socket operation; the deadline of a whole attempt is _attempt's.
                    # A connect limit of half the deadline makes a host that never
                    # completes a connect a connect timeout (the fail-fast rule's), not a
                    # missed deadline.
                    timeout=self._openai.Timeout(timeout_s, connect=timeout_s / 2),
                )
                loop = asyncio.new_event_loop()
                self._abort = asyncio.Event()  # an asyncio.Event serves one loop only
                if self._unreachable is not None:
                    self._abort.set()
                thread = threading.Thread(target=loop.run_forever, name="sepo-openai", daemon=True)
                thread.start()
                # A policy dropped without close() does not leave its loop running.
                self._stop_loop = weakref.finalize(self, loop.call_soon_threadsafe, loop.stop)
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Close the HTTP connections and stop the event loop (a later request starts
        them again)."""
        with self._lock:
            loop, thread, stop = self._loop, self._loop_thread, self._stop_loop
            client = self._client
            self._loop, self._loop_thread, self._stop_loop, self._client = None, None, None, None
        if loop is None or thread is None or stop is None:
            return  # no request was ever sent: nothing is open
        stop.detach()
        try:
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

    def __enter__(self) -> OpenAICompatPolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

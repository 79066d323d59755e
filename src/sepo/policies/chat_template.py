"""A tokenizer's chat template, as sepo uses it: rendering, the tokens that end an
answer, and what the template writes around an assistant turn.

Everything that reads the template lives here, so that playing (``LocalModelPolicy``),
SFT's assistant-only labels and SEPO-GRPO's token sequences agree on one rendering:

- :meth:`ChatTemplate.render` folds the system message into the first user message when
  the template rejects a system role (Gemma's), once and for all later calls;
- :attr:`ChatTemplate.end_of_turn_id` and :meth:`ChatTemplate.stop_ids`: the token the
  template writes after an answer (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``…) and
  every token that ends generation;
- :meth:`ChatTemplate.assistant_token_masks`: each answer's tokens in a rendered
  conversation (SFT's labels, for templates without ``{% generation %}`` markers);
- :meth:`ChatTemplate.environment_text`: the text the template adds for a new user turn
  after an answer's end-of-turn token (SEPO-GRPO's environment tokens).

Multi-turn training needs a template whose renderings extend each other; one that
rewrites earlier turns is refused with :class:`TemplateNotPrefixStable`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sepo.core.errors import SepoError
from sepo.rollout.protocol import Message

KNOWN_END_OF_TURN = (
    "<|end|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<turn|>",
    "<|endoftext|>",
    "<|end_of_text|>",
)
"""End-of-turn tokens of common chat families, used as extra stop tokens when present
as added tokens (besides the tokenizer's and the generation config's EOS ids)."""


class TemplateNotPrefixStable(SepoError, ValueError):
    """The chat template rewrites earlier turns as a conversation grows."""


class ChatTemplateError(SepoError, ValueError):
    """The model's chat template fails to render a conversation (a template error,
    something jinja's sandbox refuses to run, or a rendering that runs past
    :data:`TEMPLATE_STEP_LIMIT`)."""


TEMPLATE_STEP_LIMIT = 200_000
"""Lines of template code one rendering may run. A template comes with the model folder,
so it is untrusted input: jinja's sandbox stops it reading or writing what it should not,
but not from looping (``range`` is capped at 100,000, and loops nest). SmolLM2's ChatML
template runs 124 lines for a 21-message conversation and 1,019 for 201 (5 per message),
so the limit leaves a margin of 200 over a conversation ten times longer than any game's."""

_TEMPLATE_FILENAME = "<template>"
"""The file name jinja gives the Python code it compiles a template into."""


class _StepBudget:
    """A ``sys.settrace`` function that counts the line events of template code only
    (every other frame runs untraced) and stops the rendering past its limit."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        return self._count if frame.f_code.co_filename == _TEMPLATE_FILENAME else None

    def _count(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.left -= 1
            if self.left < 0:
                raise _TooManySteps
        return self._count


class _TooManySteps(Exception):
    pass


def bounded_render(render: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``render(*args, **kwargs)`` (a tokenizer's ``apply_chat_template``) with the
    template's own code limited to :data:`TEMPLATE_STEP_LIMIT` lines; past it a one-line
    :class:`ChatTemplateError`. A tracer already installed (a debugger, coverage) is
    restored afterwards; rendering costs about 0.5 ms more under the count."""
    previous = sys.gettrace()
    sys.settrace(_StepBudget(TEMPLATE_STEP_LIMIT))
    try:
        return render(*args, **kwargs)
    except _TooManySteps:
        raise ChatTemplateError(
            f"the model's chat template ran more than {TEMPLATE_STEP_LIMIT:,} steps rendering "
            "one conversation (a loop that does not end?); sepo stopped it"
        ) from None
    except RecursionError:
        raise ChatTemplateError(
            "the model's chat template recursed without end rendering one conversation"
        ) from None
    finally:
        sys.settrace(previous)


def merge_system_message(messages: Sequence[Message]) -> list[Message]:
    """Fold system messages into the first user message, for templates without a system
    role (Gemma's raise an error on one)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


SAFE_PRE_TOKENIZERS = frozenset(
    {"ByteLevel", "Split", "Digits", "Punctuation", "Whitespace", "WhitespaceSplit"}
)
"""Pre-tokenizers that treat every piece of text between added tokens alike, wherever it
stands (unlike ``Metaspace`` with ``prepend_scheme="first"``, which marks the first)."""
SAFE_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase"})


class SegmentCache:
    """A fast tokenizer's ids for a text, one piece between added tokens at a time, each
    piece tokenized once and remembered.

    A conversation's prompt is retokenized at every turn, and an IPD tree's 21,845
    nodes repeat the same rules, observations and answers: tokenizing only the pieces not
    seen before takes the cost of a node from its whole conversation to its new turn.
    It gives exactly the tokenizer's ids because of how a fast tokenizer encodes: it
    first cuts the text at its added tokens (leftmost-longest), which become their own
    ids, and then normalizes, pre-tokenizes and tokenizes each piece between them on its
    own. :meth:`for_tokenizer` uses it only where that holds piece by piece: no added
    token strips the whitespace beside it, matches single words only or is matched on
    normalized text; special tokens are not split (``split_special_tokens``); the
    normalizer and pre-tokenizer are ones that treat every piece alike
    (:data:`SAFE_NORMALIZERS`, :data:`SAFE_PRE_TOKENIZERS`), and the tokenizer has no
    truncation of its own. Otherwise it is ``None`` and texts are tokenized whole."""

    MAX_PIECES = 100_000
    """Pieces remembered; past it the memory starts again empty."""

    def __init__(self, tokenizer: Any, added: dict[str, int]) -> None:
        self.tokenizer = tokenizer
        self.added = added
        # Longest first: at one position the regex then takes the longest added token.
        alternatives = sorted(added, key=len, reverse=True)
        self.pattern = re.compile("(" + "|".join(re.escape(a) for a in alternatives) + ")")
        self.pieces: dict[str, list[int]] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> SegmentCache | None:
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is None or getattr(tokenizer, "split_special_tokens", False):
            return None
        try:
            spec = json.loads(backend.to_str())
            tokens = backend.get_added_tokens_decoder()
        except (AttributeError, TypeError, ValueError):
            return None
        if not tokens or spec.get("truncation") is not None:
            return None
        for token in tokens.values():
            if token.lstrip or token.rstrip or token.single_word or token.normalized:
                return None
        if not _all_of(spec.get("normalizer"), SAFE_NORMALIZERS, "normalizers"):
            return None
        if not _all_of(spec.get("pre_tokenizer"), SAFE_PRE_TOKENIZERS, "pretokenizers"):
            return None
        return cls(tokenizer, {t.content: int(i) for i, t in tokens.items() if t.content})

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        parts = self.pattern.split(text)
        new = [p for k, p in enumerate(parts) if k % 2 == 0 and p and p not in self.pieces]
        if new:
            if len(self.pieces) + len(new) > self.MAX_PIECES:
                self.pieces.clear()
            encoded = self.tokenizer(new, add_special_tokens=False)["input_ids"]
            self.pieces.update(zip(new, (list(e) for e in encoded), strict=True))
        for k, part in enumerate(parts):
            if k % 2:
                ids.append(self.added[part])
            elif part:
                ids.extend(self.pieces[part])
        return ids


def _all_of(spec: Any, allowed: frozenset[str], members: str) -> bool:
    """Whether a normalizer or pre-tokenizer ``spec`` (tokenizer.json) is absent, one of
    ``allowed``, or a ``Sequence`` of them."""
    if spec is None:
        return True
    if spec.get("type") == "Sequence":
        return all(_all_of(s, allowed, members) for s in spec.get(members, []))
    return spec.get("type") in allowed


class ChatTemplate:
    """The chat template of ``tokenizer``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._merge_system = False

    @functools.cached_property
    def _render_with(self) -> Callable[..., Any]:
        """How a rendering is run: bounded (:func:`bounded_render`), unless the template
        is the embedded tiny model's, which sepo wrote (one pass over the messages): the
        count costs about 0.4 ms a rendering, a sixth of tabulating an IPD policy."""
        from sepo.policies.tiny import TINY_CHAT_TEMPLATE

        apply: Callable[..., Any] = self.tokenizer.apply_chat_template
        if getattr(self.tokenizer, "chat_template", None) == TINY_CHAT_TEMPLATE:
            return apply
        return functools.partial(bounded_render, apply)

    # -- rendering ----------------------------------------------------------------------
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The templated text of ``messages`` (system folded into the first user message
        when the template rejects a system role). A template that fails to render, or
        that jinja's sandbox stops, is a one-line :class:`ChatTemplateError`."""
        from jinja2.exceptions import TemplateError

        try:
            return self._render(messages, add_generation_prompt)
        except TemplateError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ChatTemplateError(
                f"the model's chat template cannot render this conversation: {first}"
            ) from None

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        from jinja2.exceptions import TemplateError

        conversation = [dict(m) for m in messages]
        if not self._merge_system:
            try:
                return str(
                    self._render_with(
                        conversation,
                        tokenize=False,
                        add_generation_prompt=add_generation_prompt,
                    )
                )
            except TemplateError:
                if not any(m["role"] == "system" for m in conversation):
                    raise
                self._merge_system = True
        return str(
            self._render_with(
                merge_system_message(conversation),
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of already templated text (the template writes BOS itself): the
        tokenizer's, through :class:`SegmentCache` where that gives the same ids."""
        if self._segments is not None:
            return self._segments.encode(text)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @functools.cached_property
    def _segments(self) -> SegmentCache | None:
        return SegmentCache.for_tokenizer(self.tokenizer)

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the templated prompt, generation prompt included."""
        return self.encode(self.render(messages, add_generation_prompt=True))

    # -- the end of an answer -------------------------------------------------------------
    @functools.cached_property
    def end_of_turn(self) -> int | None:
        """The first added token the template writes after an assistant answer, or
        ``None`` (a template without an assistant turn, or one that writes none)."""
        added = self.tokenizer.get_added_vocab()
        try:
            marker = "sepo-end-of-turn-probe"
            rendered = self.render(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}],
                add_generation_prompt=False,
            )
        except Exception:  # a template without an assistant turn
            return None
        after = rendered[rendered.index(marker) + len(marker) :] if marker in rendered else ""
        specials = sorted(
            ((after.find(tok), tok) for tok in added if tok and after.find(tok) >= 0),
            key=lambda pair: (pair[0], -len(pair[1])),
        )
        return int(added[specials[0][1]]) if specials else None

    def stop_ids(self, generation_config: Any = None) -> tuple[int, ...]:
        """Token ids that end an answer: the generation config's and the tokenizer's EOS
        ids, known end-of-turn tokens, and :attr:`end_of_turn`."""
        ids: list[int] = []

        def add(value: Any) -> None:
            if value is None:
                return
            for v in value if isinstance(value, list | tuple) else [value]:
                if int(v) not in ids:
                    ids.append(int(v))

        add(getattr(generation_config, "eos_token_id", None))
        add(self.tokenizer.eos_token_id)
        added = self.tokenizer.get_added_vocab()
        for token in KNOWN_END_OF_TURN:
            if token in added:
                add(added[token])
        add(self.end_of_turn)
        if not ids:
            raise ValueError("the tokenizer defines no EOS or end-of-turn token to stop on")
        return tuple(ids)

    # -- what the template writes around an assistant turn ----------------------------------
    def assistant_token_masks(self, messages: Sequence[Message]) -> dict[str, list[int]]:
        """The conversation's tokens and a mask that is 1 on the assistant's answers and
        their end-of-turn tokens.

        Each answer spans the characters between the rendering of the conversation up to
        its generation prompt and the rendering up to and including the answer.
        """
        conversation = [dict(m) for m in messages]

        def render(upto: int, prompt: bool = False) -> str:
            return self.render(conversation[:upto], add_generation_prompt=prompt)

        full = render(len(conversation))
        spans = []
        for i, message in enumerate(conversation):
            if message["role"] != "assistant":
                continue
            before, through = render(i, prompt=True), render(i + 1)
            if not (through.startswith(before) and full.startswith(through)):
                raise TemplateNotPrefixStable(
                    "the chat template rewrites earlier turns as the conversation grows, so "
                    "multi-turn episodes cannot be trained as one token sequence"
                )
            spans.append((len(before), len(through)))
        encoded = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        masks = [
            int(any(lo <= a and b <= hi for lo, hi in spans) and b > a)
            for a, b in encoded["offset_mapping"]
        ]
        return {"input_ids": list(encoded["input_ids"]), "assistant_masks": masks}

    def environment_text(self, messages: Sequence[Message], stop_texts: Sequence[str]) -> str:
        """The text the template adds for the newest user turn of ``messages`` (which end
        with an answer and a new user message), after the answer's end-of-turn token.

        A token sequence ends at the generated end-of-turn token, the first stop token
        after the last answer: anything the template writes after it (a newline; Phi-3's
        trailing ``<|endoftext|>``) belongs to the environment's tokens.
        """
        prev = self.render(messages[:-1], add_generation_prompt=False)
        full = self.render(messages, add_generation_prompt=True)
        cut = len(prev)
        answer = str(messages[-2]["content"]).strip() if len(messages) >= 2 else ""
        if answer and answer in prev:
            start = prev.rfind(answer) + len(answer)
            ends = [prev.find(t, start) + len(t) for t in stop_texts if t in prev[start:]]
            if ends:
                cut = min(ends)
        else:  # the template rewrote the answer: take the last stop token
            ends = [prev.rfind(t) + len(t) for t in stop_texts if t and t in prev]
            if ends:
                cut = max(ends)
        if not full.startswith(prev[:cut]):
            raise TemplateNotPrefixStable(
                "the chat template rewrites earlier turns, so multi-turn token sequences "
                "cannot be kept exactly; use a template that extends its previous rendering"
            )
        return full[cut:]

"""The text layer shared by every game: one action parser, driven by the game's action spec.

Parsing rules (SPEC §2), applied to untrusted model text and never raising:

1. Read the last non-empty line first, then the whole text.
2. Word games: canonical action words match as whole words, case-insensitively. A word
   that is negated in its own clause ("I will not BET", "never defect") does not count,
   and a word that merely contains a stem ("No defection") is not the word. When a line
   mentions several actions, the last un-negated legal mention wins ("DEFECT? No:
   COOPERATE" is COOPERATE).
3. Integer games: the last standalone integer that is a legal action.
4. Vector games: the last bracketed triple ``[a, b, c]`` that is a legal action.

Anything else is an invalid :class:`~sepo.core.types.ParseResult`; callers count it and
apply their fallback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sepo.core.types import Action, ActionKind, ParseResult

_NEGATORS = frozenset(
    {
        "not",
        "no",
        "never",
        "don't",
        "dont",
        "won't",
        "wont",
        "cannot",
        "can't",
        "cant",
        "shouldn't",
        "wouldn't",
        "mustn't",
        "isn't",
        "without",
        "avoid",
        "refuse",
        "against",
        "instead",
    }
)
#: How many words before an action word a negator may stand and still negate it.
_NEGATION_WINDOW = 3
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\n\"]|\bbut\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z']+")
_INT = re.compile(r"(?<![\w.\-+])(\d{1,3})(?![\w]|\.\d)")
_VECTOR = re.compile(r"\[\s*(\d{1,2})\s*,\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\]")
_MAX_TEXT = 20_000
"""Longer outputs are cut to their tail: the answer is required on the last line."""


def _clause_words(text: str) -> list[list[str]]:
    return [[w.lower() for w in _WORD.findall(c)] for c in _CLAUSE_BREAK.split(text)]


def _word_mentions(text: str, words: Sequence[str]) -> list[str]:
    """Un-negated whole-word mentions of ``words`` in ``text``, in order."""
    wanted = {w.lower(): w for w in words}
    found: list[str] = []
    for clause in _clause_words(text):
        for i, token in enumerate(clause):
            if token not in wanted:
                continue
            before = clause[max(0, i - _NEGATION_WINDOW) : i]
            if any(b in _NEGATORS or b.endswith("n't") for b in before):
                continue
            found.append(wanted[token])
    return found


def _parse_segment(
    segment: str, kind: ActionKind, words: Sequence[str], legal: Sequence[Action]
) -> Action | None:
    legal_set = set(legal)
    if kind == "word":
        mentions = [w for w in _word_mentions(segment, words) if w in legal_set]
        return mentions[-1] if mentions else None
    if kind == "integer":
        for m in reversed(list(_INT.finditer(segment))):
            n = int(m.group(1))
            if n in legal_set:
                return n
        return None
    for m in reversed(list(_VECTOR.finditer(segment))):
        vec = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if vec in legal_set:
            return vec
    return None


def parse_action(
    text: object, kind: ActionKind, words: Sequence[str], legal: Sequence[Action]
) -> ParseResult:
    """Parse ``text`` into one of ``legal`` following the rules in the module docstring.

    ``text`` is typed ``object`` on purpose: model and API output is untrusted, and a
    ``None`` or a number must give an invalid result, not an exception.
    """
    if not isinstance(text, str) or not text.strip():
        return ParseResult(None, "none")
    text = text[-_MAX_TEXT:]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines:
        action = _parse_segment(lines[-1], kind, words, legal)
        if action is not None:
            return ParseResult(action, "last_line")
    action = _parse_segment(text, kind, words, legal)
    if action is not None:
        return ParseResult(action, "whole_text")
    return ParseResult(None, "none")


def format_vector(vec: Sequence[int]) -> str:
    return "[" + ", ".join(str(v) for v in vec) + "]"


def format_action(action: Action) -> str:
    """Canonical text of any action: words as they are, integers, bracketed vectors."""
    if isinstance(action, tuple):
        return format_vector(action)
    return str(action)


OUTPUT_FORMAT = (
    "Think briefly if you like, then write your action alone on the last line, "
    "exactly as one of: {options}."
)

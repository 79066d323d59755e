"""The text layer shared by every game: one action parser, driven by the game's action spec.

Parsing rules (SPEC §2), applied to untrusted model text and never raising:

1. Read the last non-empty line first, then the whole text.
2. Word games: canonical action words match as whole words, case-insensitively. A word
   that merely contains a stem is not the word ("No defection", "non-cooperate",
   "DEFECTING"). When a line mentions several actions, the last *chosen* legal mention
   wins ("DEFECT? No: COOPERATE" is COOPERATE).
3. Integer games: the last standalone integer that is a legal action and is chosen.
   Standalone means written with ASCII digits and not part of a decimal, a fraction, a
   thousands group, a signed number or a word ("5.5", "1/2", "1,000", "-5", "x5" give
   nothing). "I demand 5 out of 10" is 5 when 10 is not a legal demand.
4. Vector games: the last bracketed triple ``[a, b, c]`` that is a legal action and is
   chosen.

A mention is *chosen* unless its context says otherwise. The text is cut into sentences at
punctuation (``. , ; : ! ? ( ) [ ]``, dashes, line breaks) and sentences into clauses at
connectives (``but so then and yet however therefore thus hence``). A mention does not
count when

- it stands in a question ("Should I BET? No." is invalid);
- a negator, hedge or alternative marker stands in the few words before it in its clause
  ("I will not BET", "I'd rather COOPERATE than DEFECT", "maybe DEFECT", "DEFECT over
  COOPERATE", "neither … nor …"), a negator follows it closely ("DEFECT is not an
  option"), or a negation is left dangling before a comma ("I will not, under any
  circumstances, DEFECT");
- it names the other player's move ("I COOPERATE unless they DEFECT", "I'll take 6,
  leaving you 4") or sits in a condition or a reason ("if …", "because …", "since …") up
  to the end of its sentence;
- it lists options ("COOPERATE or DEFECT", "COOPERATE/DEFECT");
- a word action is used as a noun ("a bet is risky") or in an idiom ("I bet you have the
  K"), or a number counts something else ("round 3", "5 out of 10").

A last line that is exactly one legal action (the required format) takes a fast path with
the same result. The rules err towards *invalid* rather than a wrong action: an invalid answer is counted
and goes through the caller's fallback (SPEC §2), a misparsed one silently plays a move
the model did not choose. Anything unparsed is an invalid
:class:`~sepo.core.types.ParseResult`.
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
        "neither",
        "nor",
        "without",
        "avoid",
        "avoiding",
        "refuse",
        "against",
        # contractions written without an apostrophe (with one, any "...n't" counts)
        "dont",
        "wont",
        "cant",
        "cannot",
        "didnt",
        "doesnt",
        "isnt",
        "shouldnt",
        "wouldnt",
        "couldnt",
        "mustnt",
        "aint",
    }
)
_HEDGES = frozenset({"maybe", "perhaps", "or", "either"})
_ALTERNATIVES = frozenset({"than", "over", "versus", "vs", "except", "besides", "instead"})
_THIRD_PARTY = frozenset(
    {
        "they",
        "they'll",
        "they're",
        "they'd",
        "them",
        "their",
        "opponent",
        "opponent's",
        "opponents",
        "you",
        "you'll",
        "you're",
        "you'd",
        "your",
        "he",
        "she",
        "his",
        "her",
        "he'll",
        "she'll",
    }
)
#: Words that block a mention standing up to ``_WINDOW`` words after them in its clause.
_BLOCKERS = _NEGATORS | _HEDGES | _ALTERNATIVES | _THIRD_PARTY
_WINDOW = 6
#: Words that block every later mention up to the end of their sentence.
_SCOPE_MARKERS = frozenset(
    {
        "if",
        "unless",
        "whether",
        "when",
        "whenever",
        "until",
        "because",
        "since",
        "although",
        "though",
        "while",
        "whereas",
        "lest",
    }
)
#: Connectives that start a new clause (the blocking window does not cross them).
_CLAUSE_WORDS = frozenset(
    {"but", "so", "then", "and", "yet", "however", "therefore", "thus", "hence"}
)
#: A word action right after one of these is a noun ("a bet"), not a move.
_DETERMINERS = frozenset(
    {"a", "an", "the", "my", "this", "that", "any", "each", "every", "some", "another"}
)
#: A number right after one of these counts something else ("round 3", "5 out of 10").
_NUMBER_NOUNS = frozenset({"round", "rounds", "hand", "hands", "turn", "turns", "step", "of", "by"})
#: A word action right before one of these is an idiom ("I bet you have the K").
_IDIOM_FOLLOWERS = frozenset({"you", "they", "he", "she", "it", "that"})
#: Negators that dangle at the end of a clause carry over a comma ("I will not, ever, BET");
#: a bare "no" does not ("No, DEFECT" answers a question and plays DEFECT).
_DANGLING = frozenset({"not", "never"})
_SOFT_BREAKS = frozenset({",", "(", ")", "\u2014", "\u2013"})

_TOKEN = re.compile(
    r"(?P<vec>\[\s*[0-9]{1,2}\s*,\s*[0-9]{1,2}\s*,\s*[0-9]{1,2}\s*\])"
    r"|(?P<num>(?<![\w.+\-/])(?<![0-9],)[0-9]{1,3}(?![\w/]|[.,][0-9]))"
    r"|(?P<word>[a-z]+(?:['-][a-z]+)*)"
    r"|(?P<alt>[/|])"
    r"|(?P<punct>[.,;:!?()\[\]\n\u2014\u2013])"
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_MAX_TEXT = 20_000
"""Longer outputs are cut to their tail: the answer is required on the last line."""


def _is_blocker(word: str) -> bool:
    return word in _BLOCKERS or word.endswith("n't")


def _chosen_mentions(text: str, kind: ActionKind, words: Sequence[str]) -> list[Action]:
    """Every chosen mention of an action of ``kind`` in ``text``, in order (rules above)."""
    wanted = {w.lower(): w for w in words} if kind == "word" else {}
    found: list[Action] = []
    # The current sentence: mentions kept from its earlier clauses, whether a scope marker
    # silenced the rest of it, and whether a negation left dangling before a comma silences
    # all of it. The current clause: its words and its mentions (position, action).
    sentence: list[Action] = []
    scoped = carried = False
    clause: list[str] = []
    in_clause: list[tuple[int, Action]] = []

    def end_clause() -> None:
        nonlocal clause, in_clause
        sentence.extend(a for _, a in in_clause)
        clause, in_clause = [], []

    def end_sentence(terminator: str) -> None:
        nonlocal sentence, scoped, carried
        dangling = bool(clause) and (clause[-1] in _DANGLING or clause[-1].endswith("n't"))
        end_clause()
        if terminator != "?" and not carried:
            found.extend(sentence)
        carried = terminator in _SOFT_BREAKS and (dangling or (carried and not sentence))
        sentence, scoped = [], False

    for m in _TOKEN.finditer(text.translate(_APOSTROPHES).lower()):
        group, token = m.lastgroup, m.group()
        if group == "punct":
            end_sentence(token)
            continue
        action: Action | None = None
        if group == "word" or group == "alt":
            token = "or" if group == "alt" else token
            if token == "but" and clause[-1:] == ["anything"]:
                token = "not"  # "anything but DEFECT"
            elif token in _CLAUSE_WORDS:
                end_clause()
                continue
            if (
                in_clause
                and in_clause[-1][0] == len(clause) - 1
                and (token == "or" or (kind == "word" and token in _IDIOM_FOLLOWERS))
            ):
                in_clause.pop()  # "COOPERATE or DEFECT" lists options; "I bet you …"
            if token in _NEGATORS or token.endswith("n't"):
                # "COOPERATE is not an option": a negation also reaches back.
                in_clause = [(i, a) for i, a in in_clause if i < len(clause) - _WINDOW]
            scoped = scoped or token in _SCOPE_MARKERS
            if token in wanted and not (clause and clause[-1] in _DETERMINERS):
                action = wanted[token]
        elif group == "num" and kind == "integer":
            if not (clause and clause[-1] in _NUMBER_NOUNS):
                action = int(token)
            token = "#"
        elif group == "vec" and kind == "vector":
            action = tuple(int(x) for x in re.findall(r"[0-9]+", token))
            token = "#"
        else:
            token = "#"
        if action is not None and not (scoped or any(_is_blocker(w) for w in clause[-_WINDOW:])):
            in_clause.append((len(clause), action))
        clause.append(token)
    end_sentence("")
    return found


def _parse_segment(
    segment: str, kind: ActionKind, words: Sequence[str], legal: Sequence[Action]
) -> Action | None:
    legal_set = set(legal)
    for action in reversed(_chosen_mentions(segment, kind, words)):
        if action in legal_set:
            return action
    return None


def parse_action(
    text: object, kind: ActionKind, words: Sequence[str], legal: Sequence[Action]
) -> ParseResult:
    """Parse ``text`` into one of ``legal`` following the rules in the module docstring.

    ``text`` is typed ``object`` on purpose: model and API output is untrusted, and a
    ``None`` or a number must give an invalid result, not an exception.
    """
    if not isinstance(text, str):
        return ParseResult(None, "none")
    # Fast path for the required format, a last line that is nothing but the action: the
    # full rules give the same answer, at a fraction of the cost.
    tail = text.rstrip()
    action = _bare_action(tail[tail.rfind("\n") + 1 :].strip(), kind, words, legal)
    if action is not None:
        return ParseResult(action, "last_line")
    return parse_action_by_rules(text, kind, words, legal)


def parse_action_by_rules(
    text: str, kind: ActionKind, words: Sequence[str], legal: Sequence[Action]
) -> ParseResult:
    """:func:`parse_action` without its fast path (the two must always agree)."""
    if not text.strip():
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


_BARE_VECTOR = re.compile(r"\[\s*([0-9]{1,2})\s*,\s*([0-9]{1,2})\s*,\s*([0-9]{1,2})\s*\]")


def _bare_action(
    line: str, kind: ActionKind, words: Sequence[str], legal: Sequence[Action]
) -> Action | None:
    """The legal action that ``line`` consists of exactly, if any (ASCII only, so that
    case folding cannot turn another letter into an action's)."""
    if not line.isascii():
        return None
    action: Action | None = None
    if kind == "word":
        upper = line.upper()
        action = next((w for w in words if w.upper() == upper), None)
    elif kind == "integer":
        if line.isdigit() and len(line) <= 3:
            action = int(line)
    else:
        m = _BARE_VECTOR.fullmatch(line)
        if m is not None:
            action = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return action if action is not None and action in legal else None


def format_vector(vec: Sequence[int]) -> str:
    return "[" + ", ".join(str(v) for v in vec) + "]"


def format_action(action: Action) -> str:
    """Canonical text of any action: words as they are, integers, bracketed vectors."""
    if isinstance(action, tuple):
        return format_vector(action)
    return str(action)


OUTPUT_FORMAT = "Give a short reason, then your action alone on the last line, one of: {options}."

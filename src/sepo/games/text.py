"""The text layer shared by every game: one action parser, driven by the game's action spec.

**A wrong action is worse than no action.** An answer that does not parse is counted as
invalid and goes through the caller's fallback (SPEC §2: a local model's constrained
choice among the legal actions, an API model's re-prompt), so it shows in the invalid
rate; an answer that is *misread* silently plays a move the model did not choose and
corrupts Pay, Exploit and Coll. When in doubt, the parser returns invalid.

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

What is never a choice:

- **Text the model copied.** A run of at least :data:`COPY_WORDS` words that reproduces the
  conversation's own text (the rules, the observation, the format line: ``context``) is
  not searched for actions (its words still qualify what follows them). A model that parrots "... choose
  COOPERATE or DEFECT at the same time" or "... one of: PASS, BET." chose nothing. The
  game always adds its rules and its format line to the context.
- **Option lists.** Two or more different actions separated only by commas, slashes,
  "or", "and" or an ellipsis ("LOW, MEDIUM, HIGH", "1, 2, …, 9", "PASS/BET") are an
  enumeration; so are two or more consecutive numbered or bulleted lines that each start
  with an action ("1. COOPERATE" / "2. DEFECT"), whose item numbers are not demands
  either; nor is a line that opens like a round of the history with an action right after
  its label ("Round 4 of 6: MEDIUM, 2"), a record of a round ("Round 3: 5" and "Round 3 of 4: I demand 7" are choices).
- **The unfinished line of a cut-off answer.** When generation stopped at the token limit
  (``truncated``), only the answer's complete lines are read: the text after its last line
  break is dropped (an answer of one unfinished line is invalid).
- **The other side's share** (integer and vector games): a number or vector followed by
  "for you", "to them", "for the opponent" …, or standing shortly after "give", "leave(s)",
  "leaving", "left", "you get" … is what the other player gets, not the demand ("6 for me,
  4 for you" is 6; "I demand 6, which leaves 4" is 6; "Take 6. Give 4." is 6).

A mention is *chosen* unless its context says otherwise. The text is cut into sentences at
punctuation (``. , ; : ! ? ( ) [ ]``, dashes, ellipses, line breaks) and sentences into
clauses at connectives (``but so then and yet however therefore thus hence``). A mention
does not count when

- it stands in a question ("Should I BET? No." is invalid);
- a negator, hedge or alternative marker stands in the few words before it in its clause
  ("I will not BET", "Hardly DEFECT", "I'd hate to DEFECT", "I'd rather COOPERATE than
  DEFECT", "maybe DEFECT", "e.g. [1, 2, 1]", "DEFECT over COOPERATE", "neither … nor …"),
  a negator or a verdict follows it closely ("DEFECT is not an option", "DEFECT would be a
  mistake"), or a negation is left dangling before a comma ("I will not, under any
  circumstances, DEFECT");
- it names the other player's move ("I COOPERATE unless they DEFECT", "I'll take 6,
  leaving you 4") or sits in a condition or a reason ("if …", "because …", "since …") up
  to the end of its sentence;
- it lists options ("COOPERATE or DEFECT", "COOPERATE, DEFECT", see above);
- a word action is used as a noun ("a bet is risky") or in an idiom ("I bet you have the
  K"), or a number counts something else ("round 3", "2 rounds", "5 out of 10").

A last line that is exactly one legal action (the required format) takes a fast path with
the same result. Parsing takes time linear in the answer's length (``benchmarks/
bench_parse.py``). Anything unparsed is an invalid :class:`~sepo.core.types.ParseResult`.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Iterable, Sequence

from sepo.core.types import Action, ActionKind, ParseResult
from sepo.games.lexicon import (
    _BENEFICIARY,
    _BLOCKERS,
    _CLAUSE_WORDS,
    _COUNTED,
    _DANGLING,
    _DETERMINERS,
    _GIVERS,
    _IDIOM_FOLLOWERS,
    _IDIOM_VERBS,
    _LIST_SEPARATORS,
    _NEGATORS,
    _NUMBER_NOUNS,
    _SCOPE_MARKERS,
    _SOFT_BREAKS,
    _THIRD_PARTY,
    _VERDICTS,
    _WINDOW,
)

COPY_WORDS = 4
"""A run of this many words (punctuation aside) found in the conversation's own text is
copied, not chosen. Four: the shortest copy seen from a real model that held an action
was the format line's "one of: PASS, BET" (four words), while an answer of its own rarely
shares four words in a row with the rules ("I will DEFECT" shares none)."""

_TOKEN = re.compile(
    r"(?P<vec>\[\s*[0-9]{1,2}\s*,\s*[0-9]{1,2}\s*,\s*[0-9]{1,2}\s*\])"
    r"|(?P<num>(?<![\w.+\-/])(?<![0-9],)[0-9]{1,3}(?![\w/]|[.,][0-9]))"
    r"|(?P<word>[a-z]+(?:['-][a-z]+)*)"
    r"|(?P<alt>[/|])"
    r"|(?P<punct>[.,;:!?()\[\]\n\u2014\u2013\u2026])"
)
_APOSTROPHES = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u02bc": "'",
        "\uff07": "'",  # full-width apostrophe ("won＇t")
        "\u2032": "'",
        "\u00b4": "'",
        "`": "'",
    }
)
_NORMALISE = ((re.compile(r"\.\.\.+"), "\u2026"), (re.compile(r"\be\.g\.?", re.I), "eg"))
_LIST_LINE = re.compile(r"[ \t]*(?:[0-9]{1,2}[.)]|\([0-9]{1,2}\)|[-*\u2022])[ \t]+")
#: A line that opens like the observation's round header ("Round 4 of 6: MEDIUM, 2")
#: records that round; when an action follows the label directly, nothing on the line is
#: a choice. The count ("of 6") is required: "Round 3: 5" answers for round 3.
_ROUND_RECORD = re.compile(
    r"[ \t]*(?:[-*\u2022][ \t]*)?round[ \t]+[0-9]{1,2}[ \t]+of[ \t]+[0-9]{1,2}"
    r"[ \t]*[:\u2013\u2014-][ \t]*"
)
_MAX_TEXT = 20_000
"""Longer outputs are cut to their tail: the answer is required on the last line."""


def _normalise(text: str) -> str:
    text = text.translate(_APOSTROPHES).lower()
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    return text


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """``(group, token, start)`` of every token of normalised ``text``."""
    return [(m.lastgroup or "", m.group(), m.start()) for m in _TOKEN.finditer(text)]


@functools.lru_cache(maxsize=4096)
def _context_ngrams(text: str) -> frozenset[tuple[str, ...]]:
    """Every run of :data:`COPY_WORDS` non-punctuation tokens of ``text`` (normalised).

    Cached: the rules and the observations recur across an episode's turns."""
    words = [t for g, t, _ in _tokenize(_normalise(text)) if g != "punct"]
    return frozenset(tuple(words[i : i + COPY_WORDS]) for i in range(len(words) - COPY_WORDS + 1))


def _copied(tokens: Sequence[tuple[str, str, int]], context: Iterable[str]) -> set[int]:
    """Indices of the tokens that belong to a run copied from ``context``."""
    grams = [_context_ngrams(c) for c in context if c]
    if not grams:
        return set()
    content = [i for i, (g, _, _) in enumerate(tokens) if g != "punct"]
    copied: set[int] = set()
    for j in range(len(content) - COPY_WORDS + 1):
        key = tuple(tokens[i][1] for i in content[j : j + COPY_WORDS])
        if any(key in g for g in grams):
            copied.update(content[j : j + COPY_WORDS])
    return copied


def _is_mention(group: str, token: str, kind: ActionKind, wanted: dict[str, Action]) -> bool:
    if kind == "word":
        return group == "word" and token in wanted
    return group == ("num" if kind == "integer" else "vec")


def _mention_value(group: str, token: str, kind: ActionKind, wanted: dict[str, Action]) -> Action:
    if kind == "word":
        return wanted[token]
    if kind == "integer":
        return int(token)
    return tuple(int(x) for x in re.findall(r"[0-9]+", token))


def _for_the_other_side(tokens: Sequence[tuple[str, str, int]], i: int) -> bool:
    """Whether the mention at ``i`` is followed, within its sentence, by "for you", "to
    them", "for the opponent" …"""
    following: list[str] = []
    for group, token, _ in tokens[i + 1 : i + 5]:
        if group == "punct":
            break
        following.append(token)
    for a, b in itertools.pairwise(following):
        if a in _BENEFICIARY and (b in _THIRD_PARTY or b in ("the", "other")):
            return True
    return False


def _listed(
    text: str,
    tokens: Sequence[tuple[str, str, int]],
    kind: ActionKind,
    wanted: dict[str, Action],
    other_side: set[int],
) -> set[int]:
    """Indices of mentions that are no choice because of where they stand: items of an
    option list, counts ("2 rounds"), records of a round (module docstring)."""
    listed: set[int] = set()
    mentions = [
        i
        for i, (g, t, _) in enumerate(tokens)
        if _is_mention(g, t, kind, wanted) and i not in other_side
    ]
    # Inline enumerations: consecutive mentions with only separators between them.
    run: list[int] = []
    for i in mentions:
        between = tokens[run[-1] + 1 : i] if run else []
        if run and between and all(t in _LIST_SEPARATORS for _, t, _ in between):
            run.append(i)
            continue
        _close_run(run, tokens, kind, wanted, listed)
        run = [i]
    _close_run(run, tokens, kind, wanted, listed)
    if kind == "integer":  # "divided into 2 rounds": a count, not a demand
        listed.update(i for i in mentions if i + 1 < len(tokens) and tokens[i + 1][1] in _COUNTED)
    # Numbered or bulleted lines that each start with an action.
    starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
    by_line: list[list[int]] = [[] for _ in starts]
    for i, (_, _, pos) in enumerate(tokens):
        by_line[bisect.bisect_right(starts, pos) - 1].append(i)
    block: list[list[int]] = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(text)
        line = text[start:end]
        if not line.strip():
            continue  # blank lines do not end a list
        record = _ROUND_RECORD.match(line)
        if record is not None:
            after = [i for i in by_line[k] if tokens[i][2] >= start + record.end()]
            if after and _is_mention(*tokens[after[0]][:2], kind, wanted):
                listed.update(after)  # "Round 4 of 6: MEDIUM, 2": a record of a round
        m = _LIST_LINE.match(line)
        body = [i for i in by_line[k] if tokens[i][2] >= start + m.end()] if m else []
        if body and _is_mention(*tokens[body[0]][:2], kind, wanted):
            block.append([i for i in by_line[k] if i not in body] + [body[0]])
            continue
        if len(block) >= 2:
            listed.update(i for item in block for i in item)
        block = []
    if len(block) >= 2:
        listed.update(i for item in block for i in item)
    return listed


def _close_run(
    run: list[int],
    tokens: Sequence[tuple[str, str, int]],
    kind: ActionKind,
    wanted: dict[str, Action],
    listed: set[int],
) -> None:
    values = {_mention_value(*tokens[i][:2], kind, wanted) for i in run}
    before = tokens[run[0] - 1][1] if run and run[0] > 0 else ""
    # "Not HIGH, LOW" corrects itself; it does not list options.
    if len(values) >= 2 and not _is_negator(before):
        listed.update(run)


def _chosen_mentions(
    text: str, kind: ActionKind, words: Sequence[str], context: Sequence[str] = ()
) -> list[tuple[int, Action]]:
    """Every chosen mention of an action of ``kind`` in ``text`` (normalised: see
    :func:`_normalise`) with its offset, in order (rules above)."""
    wanted: dict[str, Action] = {w.lower(): w for w in words} if kind == "word" else {}
    tokens = _tokenize(text)
    copied = _copied(tokens, context)
    numeric = kind != "word"
    other_side = (
        {
            i
            for i, (g, t, _) in enumerate(tokens)
            if _is_mention(g, t, kind, wanted) and _for_the_other_side(tokens, i)
        }
        if numeric
        else set()
    )
    listed = _listed(text, tokens, kind, wanted, other_side)
    found: list[tuple[int, Action]] = []
    # The current sentence: mentions kept from its earlier clauses, whether a scope marker
    # silenced the rest of it, and whether a negation left dangling before a comma silences
    # all of it. The current clause: its words and its mentions (position, action).
    sentence: list[tuple[int, Action]] = []
    scoped = carried = False
    clause: list[str] = []
    in_clause: list[tuple[int, tuple[int, Action]]] = []

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

    for index, (group, token, start) in enumerate(tokens):
        if group == "punct":
            end_sentence("." if token == "\u2026" else token)
            continue
        action: Action | None = None
        # Copied words still shape their clause ("Scores so far: you 2, opponent 1": the
        # 1 stays the opponent's) but are never a mention themselves.
        mention = index not in listed and index not in other_side and index not in copied
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
                and (token == "or" or (token in _IDIOM_FOLLOWERS and clause[-1] in _IDIOM_VERBS))
            ):
                in_clause.pop()  # "COOPERATE or DEFECT" lists options; "I bet you …"
            if _is_negator(token) or token in _VERDICTS:
                # "COOPERATE is not an option": a negation also reaches back.
                in_clause = [(i, a) for i, a in in_clause if i < len(clause) - _WINDOW]
            scoped = scoped or token in _SCOPE_MARKERS
            if mention and token in wanted and not (clause and clause[-1] in _DETERMINERS):
                action = wanted[token]
        elif group == "num" and kind == "integer":
            if mention and not (clause and clause[-1] in _NUMBER_NOUNS):
                action = int(token)
            token = "#"
        elif group == "vec" and kind == "vector":
            if mention:
                action = _mention_value(group, token, kind, wanted)
            token = "#"
        else:
            token = "#"
        if action is not None and not (
            scoped or any(_is_blocker(w) or (numeric and w in _GIVERS) for w in clause[-_WINDOW:])
        ):
            in_clause.append((len(clause), (start, action)))
        clause.append(token)
    end_sentence("")
    return found


def _is_negator(word: str) -> bool:
    return word in _NEGATORS or word.endswith("n't")


def _is_blocker(word: str) -> bool:
    return word in _BLOCKERS or word.endswith("n't")


def complete_lines(text: str) -> str:
    """What a cut-off answer holds in complete lines: everything up to its last line
    break (an answer of one unfinished line holds none)."""
    cut = text.rfind("\n")
    return text[: cut + 1] if cut >= 0 else ""


def parse_action(
    text: object,
    kind: ActionKind,
    words: Sequence[str],
    legal: Sequence[Action],
    *,
    context: Sequence[str] = (),
    truncated: bool = False,
) -> ParseResult:
    """Parse ``text`` into one of ``legal`` following the rules in the module docstring.

    ``text`` is typed ``object`` on purpose: model and API output is untrusted, and a
    ``None`` or a number must give an invalid result, not an exception. ``context`` holds
    the conversation's own texts (rules, observations); ``truncated`` says that generation
    stopped at the token limit.
    """
    if not isinstance(text, str):
        return ParseResult(None, "none")
    if truncated:
        text = complete_lines(text)
    # Fast path for the required format, a last line that is nothing but the action: the
    # full rules give the same answer, at a fraction of the cost.
    tail = text.rstrip()
    action = _bare_action(tail[tail.rfind("\n") + 1 :].strip(), kind, words, legal)
    if action is not None:
        return ParseResult(action, "last_line")
    return _parse_by_rules(text, kind, words, legal, context)


def parse_action_by_rules(
    text: str,
    kind: ActionKind,
    words: Sequence[str],
    legal: Sequence[Action],
    *,
    context: Sequence[str] = (),
    truncated: bool = False,
) -> ParseResult:
    """:func:`parse_action` without its fast path (the two must always agree)."""
    return _parse_by_rules(complete_lines(text) if truncated else text, kind, words, legal, context)


def _parse_by_rules(
    text: str,
    kind: ActionKind,
    words: Sequence[str],
    legal: Sequence[Action],
    context: Sequence[str],
) -> ParseResult:
    if not text.strip():
        return ParseResult(None, "none")
    text = _normalise(text[-_MAX_TEXT:])
    legal_set = set(legal)
    chosen = [(pos, a) for pos, a in _chosen_mentions(text, kind, words, context) if a in legal_set]
    if not chosen:
        return ParseResult(None, "none")
    # The last non-empty line first: sentences never cross a line break, so a mention on
    # it reads the same as it would in the line alone.
    body = text.rstrip()
    last_line = body.rfind("\n") + 1
    pos, action = chosen[-1]
    return ParseResult(action, "last_line" if pos >= last_line else "whole_text")


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

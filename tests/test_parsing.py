"""Per-game tests of the action parser (``sepo.games.text``; rules in its docstring and
SPEC §2): canonical forms, case, reasoning before the action, last line first then the
whole text, numbers, vectors, and adversarial phrasings that must never be misparsed.

The guiding rule: a misparse silently plays a move the model did not choose, while an
invalid answer is counted and goes through the fallback ladder. So where a phrasing is
ambiguous the expected result is ``None`` (invalid), never a guess.

Finishes with hypothesis fuzzing over every game: the parser never raises and returns
either nothing or a legal action.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo.core.types import Action
from sepo.domains import domain_names
from sepo.games import make_game

IPD = make_game("ipd")
AUCTION = make_game("auction")
NEG = make_game("negotiation")
NEG2 = make_game("negotiation_v2")
KUHN = make_game("kuhn")

KUHN_OPEN = ("PASS", "BET")
KUHN_FACING = ("FOLD", "CALL")
#: The legal demands when the pool is 2 books, 4 hats, 3 balls.
POOL_243 = tuple(itertools.product(range(3), range(5), range(4)))


def parsed(game: Any, text: object, legal: Any = None) -> Action | None:
    return game.parse(text, legal).action


# -- canonical forms, case, formatting -------------------------------------------------


@pytest.mark.parametrize(
    ("game", "legal"),
    [(IPD, None), (AUCTION, None), (KUHN, KUHN_OPEN), (KUHN, KUHN_FACING)],
    ids=["ipd", "auction", "kuhn-open", "kuhn-facing"],
)
def test_word_actions_in_every_case_and_common_wrapping(game: Any, legal: Any) -> None:
    for action in legal or game.facts.action_words:
        word = str(action)
        variants = [
            word,
            word.lower(),
            word.capitalize(),
            "".join(c.lower() if i % 2 else c for i, c in enumerate(word)),
            f"{word}.",
            f"**{word}**",
            f"`{word}`",
            f"'{word}'",
            f'"{word}"',
            f"“{word}”",
            f"[{word}]",
            f"  {word}  \n\n",
            f"Action: {word}",
            f"Final answer - {word}",
            f"I choose {word}.",
        ]
        for text in variants:
            assert parsed(game, text, legal) == action, text


def test_kuhn_words_outside_the_legal_set_do_not_parse() -> None:
    assert parsed(KUHN, "BET", KUHN_FACING) is None
    assert parsed(KUHN, "CALL", KUHN_OPEN) is None
    assert parsed(KUHN, "FOLD", KUHN_OPEN) is None
    # The legal word wins even when an illegal one comes later.
    assert parsed(KUHN, "I CALL; a BET now would be illegal anyway", KUHN_FACING) == "CALL"
    assert parsed(KUHN, "I'll FOLD to the bet", KUHN_FACING) == "FOLD"
    assert parsed(KUHN, "I call your bet", KUHN_FACING) == "CALL"


def test_non_canonical_synonyms_are_not_actions() -> None:
    assert parsed(KUHN, "CHECK", KUHN_OPEN) is None
    assert parsed(KUHN, "RAISE", KUHN_OPEN) is None
    assert parsed(IPD, "C", None) is None
    assert parsed(IPD, "D", None) is None
    assert parsed(AUCTION, "bid 3", None) is None


# -- last line first, then the whole text -------------------------------------------------


def test_reasoning_then_action_on_the_last_line() -> None:
    text = "The opponent defected last round.\nCooperating has not paid off.\nDEFECT"
    result = IPD.parse(text)
    assert result.action == "DEFECT" and result.source == "last_line"


def test_the_last_line_beats_earlier_lines() -> None:
    assert parsed(IPD, "My answer: DEFECT\nCOOPERATE") == "COOPERATE"
    assert parsed(IPD, "COOPERATE\nDEFECT\n\n  \n") == "DEFECT"
    assert parsed(NEG, "I demand 7\n5") == 5
    assert parsed(NEG2, "[2, 4, 3]\n[1, 2, 1]", POOL_243) == (1, 2, 1)


def test_whole_text_when_the_last_line_has_no_action() -> None:
    result = IPD.parse("DEFECT\nThat is my final decision, I am confident.")
    assert result.action == "DEFECT" and result.source == "whole_text"
    result = NEG.parse("My demand is 6\nI hope we reach a deal.")
    assert result.action == 6 and result.source == "whole_text"
    assert IPD.parse("I am unsure.\nHmm.").source == "none"


def test_whole_text_reads_the_last_chosen_mention() -> None:
    text = "At first I wanted to DEFECT.\nOn reflection I COOPERATE\nthat's it"
    assert parsed(IPD, text) == "COOPERATE"


# -- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5),
        ("I demand 6.", 6),
        ("Demand: 6", 6),
        ("demand=7", 7),
        ("[5]", 5),
        ("05", 5),
        # The last standalone *legal* number: 10 is not a legal demand (1–9), so this is 5.
        ("I demand 5 out of 10", 5),
        # "out of 10" would be skipped even if 10 were legal: "of" introduces a count.
        ("My demand is 6 out of 9", 6),
        ("I'll demand 7. Actually 5.", 5),
        ("5, not 7", 5),
        ("They demanded 7, I demand 3", 3),
        ("I demand 3 since they demanded 7", 3),
        ("I'll take 6, leaving you 4", 6),
        ("I demand 5 in round 3", 5),
        ("Round 3: 5", 5),
        ("I want 5!", 5),
        # Not standalone numbers: decimals, fractions, signs, thousands, words, glued digits.
        ("5.5", None),
        ("5.0", None),
        ("1/2", None),
        ("5/10", None),
        ("-5", None),
        ("+5", None),
        ("1,000", None),
        ("x5", None),
        ("5x", None),
        ("5th", None),
        ("1234", None),
        ("five", None),
        ("５", None),  # a full-width digit is not an ASCII number
        ("٥", None),  # nor an Arabic-Indic one
        # Out of range or negated or a question: invalid.
        ("10", None),
        ("0", None),
        ("not 7", None),
        ("I will never demand 8", None),
        ("Should I demand 7?", None),
        ("5 or 6", None),
        ("6/7", None),
        ("I won't go below 6: 6", 6),
    ],
)
def test_integer_demands(text: str, expected: int | None) -> None:
    assert parsed(NEG, text) == expected


# -- vectors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 2, 1]", (1, 2, 1)),
        ("[1,2,1]", (1, 2, 1)),
        ("[ 1 , 2 , 1 ]", (1, 2, 1)),
        ("I demand [2, 0, 3].", (2, 0, 3)),
        ("Given my values, I demand [2, 1, 0]", (2, 1, 0)),
        ("I first thought [2, 2, 2] but [1, 2, 1]", (1, 2, 1)),
        ("Not [2, 4, 3]. [1, 2, 1]", (1, 2, 1)),
        ("They asked for [2, 4, 3]; I ask [0, 0, 0]", (0, 0, 0)),
        # The last bracketed triple that is legal: [9, 9, 9] exceeds the pool.
        ("[1, 2, 1] [9, 9, 9]", (1, 2, 1)),
        ("[9, 9, 9]", None),
        ("(1, 2, 1)", None),
        ("1, 2, 1", None),
        ("books 1, hats 2, balls 1", None),
        ("[1, 2]", None),
        ("[1, 2, 1, 0]", None),
        ("[1.5, 2, 1]", None),
        ("[-1, 2, 1]", None),
        ("not [2, 4, 3]", None),
        ("I won't take [2,4,3]", None),
        ("[1, 2, 1] or [0, 0, 0]", None),
        ("Should I ask for [2, 4, 3]?", None),
        ("The opponent demanded [2, 4, 3]", None),
    ],
)
def test_vector_demands(text: str, expected: tuple[int, ...] | None) -> None:
    assert parsed(NEG2, text, POOL_243) == expected


def test_vector_default_legal_set_is_every_vector_up_to_the_unit_cap() -> None:
    assert parsed(NEG2, "[4, 4, 4]") == (4, 4, 4)
    assert parsed(NEG2, "[5, 0, 0]") is None


# -- adversarial phrasings: never misparsed ---------------------------------------------

ADVERSARIAL_IPD = [
    ("No defection.", None),
    ("No defection. No cooperation.", None),
    ("I will not DEFECT", None),
    ("I won't cooperate", None),
    ("I won’t cooperate", None),  # typographic apostrophe
    ("I wont cooperate", None),
    ("I will never defect", None),
    ("Don't cooperate", None),
    ("I am not going to ever defect", None),
    ("I do not really want to DEFECT", None),
    ("There's no way I would DEFECT", None),
    ("I will not, under any circumstances, DEFECT", None),
    ("I refuse to DEFECT", None),
    ("DEFECT? No: COOPERATE", "COOPERATE"),
    ("DEFECT? No.", None),
    ("Should I DEFECT?", None),
    ("COOPERATE or DEFECT", None),
    ("COOPERATE or DEFECT?", None),
    ("COOPERATE/DEFECT", None),
    ("Neither COOPERATE nor DEFECT", None),
    ("Maybe DEFECT", None),
    ("I choose DEFECT rather than COOPERATE", "DEFECT"),
    ("I'd rather COOPERATE than DEFECT", "COOPERATE"),
    ("DEFECT over COOPERATE", "DEFECT"),
    ("DEFECT instead of COOPERATE", "DEFECT"),
    ("COOPERATE, not DEFECT", "COOPERATE"),
    ("Final answer: COOPERATE (not DEFECT)", "COOPERATE"),
    ("Not DEFECT but COOPERATE", "COOPERATE"),
    ("I won't cooperate, I DEFECT", "DEFECT"),
    ("I COOPERATE unless they DEFECT", "COOPERATE"),
    ("I COOPERATE because they DEFECT", "COOPERATE"),
    ("I COOPERATE if you COOPERATE", "COOPERATE"),
    ("If they DEFECT I will DEFECT too; for now, COOPERATE", "COOPERATE"),
    ("The opponent played DEFECT", None),
    ("They will probably DEFECT", None),
    ("You DEFECT, I COOPERATE", "COOPERATE"),
    ("anything but DEFECT", None),
    ("DEFECT is not an option", None),
    ("COOPERATE isn't wise. DEFECT", "DEFECT"),
    ("non-cooperate", None),
    ("uncooperative", None),
    ("DEFECTOR", None),
    ("defected", None),
    ("cooperation", None),
    ("No, DEFECT", "DEFECT"),
    ("Cooperating has not worked. DEFECT", "DEFECT"),
    ("The opponent defected last round, so I will DEFECT.", "DEFECT"),
    # Conservative: "instead" before the action reads as an alternative, so this is
    # invalid rather than DEFECT (the fallback handles it; it is never COOPERATE).
    ("I will instead DEFECT", None),
]


@pytest.mark.parametrize(("text", "expected"), ADVERSARIAL_IPD)
def test_ipd_adversarial(text: str, expected: str | None) -> None:
    assert parsed(IPD, text) == expected
    # The same holds when the phrase is the whole answer's last line after reasoning.
    assert parsed(IPD, f"Let me think.\n{text}") == expected


ADVERSARIAL_KUHN = [
    ("I will not BET", KUHN_OPEN, None),
    ("I will not BET, I PASS", KUHN_OPEN, "PASS"),
    ("Betting is bad. PASS", KUHN_OPEN, "PASS"),
    ("Should I BET? No.", KUHN_OPEN, None),
    ("PASS? No, BET", KUHN_OPEN, "BET"),
    ("I bet you have the J", KUHN_OPEN, None),
    ("I bet they have the K, so FOLD", KUHN_FACING, "FOLD"),
    ("A bet here is risky.", KUHN_OPEN, None),
    ("I'll check since a bet is risky", KUHN_OPEN, None),
    ("I pass on betting", KUHN_OPEN, "PASS"),
    ("FOLD is not an option. CALL", KUHN_FACING, "CALL"),
    ("FOLD is not an option", KUHN_FACING, None),
    ("Do not FOLD", KUHN_FACING, None),
    ("I'd never fold with a K, CALL", KUHN_FACING, "CALL"),
    ("Should I FOLD?", KUHN_FACING, None),
    ("Your bet is a bluff, CALL", KUHN_FACING, "CALL"),
    ("They will probably CALL, so PASS", KUHN_OPEN, "PASS"),
    ("CALL or FOLD", KUHN_FACING, None),
    ("I hold Q, facing a bet.\nFOLD", KUHN_FACING, "FOLD"),
]


@pytest.mark.parametrize(("text", "legal", "expected"), ADVERSARIAL_KUHN)
def test_kuhn_adversarial(text: str, legal: tuple[str, str], expected: str | None) -> None:
    assert parsed(KUHN, text, legal) == expected


ADVERSARIAL_AUCTION = [
    ("Not HIGH, LOW", "LOW"),
    ("HIGH is too much; MEDIUM", "MEDIUM"),
    ("Opponent bids HIGH, so I bid LOW", "LOW"),
    ("Opponent bids HIGH", None),
    ("I bid HIGH since my value is low", "HIGH"),
    ("I'd bid HIGH if my value were 4, but it is 2, so LOW", "LOW"),
    ("LOW or MEDIUM?", None),
    ("I will not bid HIGH", None),
    ("highest", None),
    ("lowball", None),
]


@pytest.mark.parametrize(("text", "expected"), ADVERSARIAL_AUCTION)
def test_auction_adversarial(text: str, expected: str | None) -> None:
    assert parsed(AUCTION, text) == expected


def test_auction_bid_words_are_also_adjectives() -> None:
    """A known limit of whole-word matching (SPEC §2, case-insensitive): in reasoning
    without an action line, "my value is low" reads as the bid LOW. This is why the last
    line is read first and the prompt asks for the action alone there."""
    assert parsed(AUCTION, "My value is low.") == "LOW"
    assert parsed(AUCTION, "My value is low.\nHIGH") == "HIGH"


# -- untrusted input ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 5, 5.0, b"DEFECT", ["DEFECT"], {"a": 1}, "", "   \n "])
@pytest.mark.parametrize("name", domain_names())
def test_non_text_and_empty_inputs_are_invalid(name: str, bad: object) -> None:
    result = make_game(name).parse(bad)
    assert result.action is None and not result.valid and result.source == "none"


def test_very_long_output_is_read_from_its_tail() -> None:
    text = "blah " * 50_000 + "\nDEFECT"
    assert parsed(IPD, text) == "DEFECT"


# -- fuzzing -----------------------------------------------------------------------------

_VOCAB = [
    "COOPERATE",
    "cooperate",
    "DEFECT",
    "defect",
    "LOW",
    "medium",
    "HIGH",
    "PASS",
    "bet",
    "CALL",
    "fold",
    "not",
    "no",
    "never",
    "won't",
    "don’t",
    "or",
    "but",
    "anything",
    "if",
    "because",
    "they",
    "you",
    "a",
    "the",
    "rather",
    "than",
    "instead",
    "I",
    "will",
    "round",
    "of",
    "5",
    "7",
    "10",
    "5.5",
    "-3",
    "1/2",
    "1,000",
    "[1, 2, 1]",
    "[2,4,3]",
    "[9, 9, 9]",
    "[1, 2",
    "?",
    ".",
    ",",
    ":",
    ";",
    "(",
    ")",
    "—",
    "\n",
    "'",
    '"',
    "**",
]
_SEPARATORS = st.sampled_from([" ", "", "\n", ", ", ". ", "? ", ": ", " / "])
action_text = st.lists(st.tuples(st.sampled_from(_VOCAB), _SEPARATORS), max_size=25).map(
    lambda parts: "".join(w + s for w, s in parts)
)
any_text = st.one_of(st.text(max_size=200), action_text)

_LEGAL_SETS: dict[str, list[tuple[Action, ...] | None]] = {
    "ipd": [None, ("COOPERATE",), ("DEFECT",)],
    "auction": [None, ("LOW", "HIGH")],
    "negotiation": [None, (5, 6, 7), (1,)],
    "negotiation_v2": [None, POOL_243, ((1, 2, 1), (0, 0, 0))],
    "kuhn": [KUHN_OPEN, KUHN_FACING],
}


def _legal_sets(name: str) -> list[tuple[Action, ...] | None]:
    return _LEGAL_SETS.get(name, [None])


@pytest.mark.parametrize("name", domain_names())
@settings(max_examples=150, deadline=None)
@given(data=st.data(), text=any_text)
def test_fuzz_parse_never_raises_and_returns_a_legal_action(
    name: str, data: st.DataObject, text: str
) -> None:
    game = make_game(name)
    legal = data.draw(st.sampled_from(_legal_sets(name)))
    allowed = set(legal if legal is not None else game.all_actions())
    result = game.parse(text, legal)
    assert result.action is None or result.action in allowed
    assert (result.action is None) == (result.source == "none")


@pytest.mark.parametrize("name", domain_names())
@settings(max_examples=100, deadline=None)
@given(data=st.data(), text=any_text)
def test_fuzz_an_action_alone_on_the_last_line_always_wins(
    name: str, data: st.DataObject, text: str
) -> None:
    game = make_game(name)
    legal = data.draw(st.sampled_from(_legal_sets(name)))
    options = legal if legal is not None else game.all_actions()
    action = data.draw(st.sampled_from(list(options)))
    result = game.parse(f"{text}\n{game.format_action(action)}", legal)
    assert result.action == action and result.source == "last_line"


@pytest.mark.parametrize("name", domain_names())
@settings(max_examples=100, deadline=None)
@given(text=action_text)
def test_fuzz_parsing_ignores_case(name: str, text: str) -> None:
    game = make_game(name)
    legal = _legal_sets(name)[0]
    assert game.parse(text.swapcase(), legal) == game.parse(text, legal)


@settings(max_examples=150, deadline=None)
@given(prefix=action_text, word=st.sampled_from(["COOPERATE", "DEFECT"]))
def test_fuzz_a_negated_action_is_never_read_from_its_own_line(prefix: str, word: str) -> None:
    """On a line with no other mention of ``word``, "not WORD" never parses to ``word``."""
    line = prefix.replace("\n", " ")
    if word.lower() in line.lower():
        return
    assert parsed(IPD, f"{line} I will not {word}") != word


_BARE_WORDS = ["DEFECT", "cooperate", "Low", "HIGH", "bet", "CALL", "5", "05", "10", "0"]
_BARE_VECTORS = ["[1, 2, 1]", "[1,2,1]", "[ 2 , 4 , 3 ]", "[9, 9, 9]"]
_LOOKALIKES = ["hıgh", "paſs", "ＤＥＦＥＣＴ", "DEFECT\r"]  # not ASCII, or a stray CR
_BARE = st.sampled_from([*_BARE_WORDS, *_BARE_VECTORS, *_LOOKALIKES])
bare_text = st.tuples(any_text, st.sampled_from(["\n", "\r\n", " ", "", "\u2028"]), _BARE).map(
    lambda t: "".join(t)
)


@pytest.mark.parametrize("name", domain_names())
@settings(max_examples=150, deadline=None)
@given(data=st.data(), text=st.one_of(any_text, bare_text, _BARE))
def test_fuzz_the_fast_path_agrees_with_the_full_rules(
    name: str, data: st.DataObject, text: str
) -> None:
    """``parse_action`` short-cuts a last line that is exactly an action; the full rules
    must give the same result for every text."""
    from sepo.games.text import parse_action, parse_action_by_rules

    game = make_game(name)
    legal = data.draw(st.sampled_from(_legal_sets(name)))
    options = legal if legal is not None else game.all_actions()
    f = game.facts
    fast = parse_action(text, f.action_kind, f.action_words, options)
    assert fast == parse_action_by_rules(text, f.action_kind, f.action_words, options)

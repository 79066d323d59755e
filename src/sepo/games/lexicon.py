"""The parser's vocabulary (:mod:`sepo.games.text`): the words that negate, hedge, point
elsewhere or qualify an action mention, and the separators of option lists. Each set is
a rule of reading documented where the parser uses it; ``tests/parse_corpus.jsonl`` is
the labelled corpus they are checked against."""

from __future__ import annotations

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
        "hardly",
        "barely",
        "scarcely",
        "hate",
        "loath",
        "reluctant",
        "unwilling",
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
#: Verdicts that, like a negator after a mention, reach back over it ("DEFECT would be a
#: mistake"). They do not block what follows them.
_VERDICTS = frozenset(
    {"mistake", "mistaken", "wrong", "bad", "unwise", "foolish", "terrible", "error", "silly"}
)
_HEDGES = frozenset({"maybe", "perhaps", "or", "either", "eg", "example", "like"})
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
        "him",
        "he'll",
        "she'll",
    }
)
#: Integer and vector games: words after which a number is the other side's share.
_GIVERS = frozenset({"give", "gives", "giving", "leave", "leaves", "leaving", "left"})
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
#: A number right before one of these counts something else ("into 2 rounds").
_COUNTED = frozenset({"round", "rounds", "hand", "hands", "turn", "turns", "times"})
#: BET right before one of these is an idiom ("I bet you have the K"); other actions
#: are not ("LOW it is").
_IDIOM_FOLLOWERS = frozenset({"you", "they", "he", "she", "it", "that"})
_IDIOM_VERBS = frozenset({"bet"})
#: Negators that dangle at the end of a clause carry over a comma ("I will not, ever, BET");
#: a bare "no" does not ("No, DEFECT" answers a question and plays DEFECT).
_DANGLING = frozenset({"not", "never"})
_SOFT_BREAKS = frozenset({",", "(", ")", "\u2014", "\u2013"})
#: What may stand between the items of an option list.
_LIST_SEPARATORS = frozenset({",", "/", "|", "or", "and", "\u2026"})
#: "for you", "to them", "for the opponent": what follows the other side's share.
_BENEFICIARY = frozenset({"for", "to"})

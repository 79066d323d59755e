"""``SegmentCache``: a prompt tokenized one piece between added tokens at a time gives
the tokenizer's own ids, and tokenizers for which that would not hold are tokenized
whole."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sepo.policies.chat_template import ChatTemplate, SegmentCache
from sepo.policies.tiny import SPECIAL_TOKENS, TINY_CHAT_TEMPLATE, train_tiny_tokenizer

CORPUS = [
    "Round 3 of 8. Last round the opponent played DEFECT; you played COOPERATE.",
    "My value is 4; the reserve price is 2. I bid MEDIUM.",
    "You hold the King. Your opponent bet. CALL or FOLD?",
    "Offer: 3 books, 1 hat, 0 balls. ACCEPT or REJECT — €5, ünïcode, 12345.",
] * 20


@pytest.fixture(scope="module")
def tiny_tokenizer() -> Any:
    return train_tiny_tokenizer(CORPUS)


def _whole(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _random_texts(n: int, extra: tuple[str, ...] = ()) -> list[str]:
    rng = random.Random(0)
    pieces = [
        *SPECIAL_TOKENS,
        *extra,
        "<|en",
        "d|>",
        "<|",
        "|>",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "DEFECT",
        " COOPERATE",
        "Round 3",
        "12",
        "345",
        "€",
        "ü",
        "'s",
        " you're",
        "!?",
        "x",
    ]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def test_pieces_give_the_tokenizers_ids_on_random_text_around_added_tokens(
    tiny_tokenizer: Any,
) -> None:
    cache = SegmentCache.for_tokenizer(tiny_tokenizer)
    assert cache is not None
    for text in _random_texts(3000):
        assert cache.encode(text) == _whole(tiny_tokenizer, text), repr(text)
    assert cache.pieces  # it remembered pieces


def test_a_templated_conversation_encodes_as_the_tokenizer_does(tiny_tokenizer: Any) -> None:
    template = ChatTemplate(tiny_tokenizer)
    assert template._segments is not None
    messages: list[dict[str, str]] = [{"role": "system", "content": CORPUS[0]}]
    for k in range(1, 40):
        messages.append({"role": "user" if k % 2 else "assistant", "content": CORPUS[k % 4]})
        text = template.render(messages)
        assert template.encode(text) == _whole(tiny_tokenizer, text)
        assert template.encode_prompt(messages) == _whole(tiny_tokenizer, text)
    assert tiny_tokenizer.chat_template == TINY_CHAT_TEMPLATE


def test_the_longest_added_token_wins_where_two_start_at_one_place() -> None:
    tokenizer = train_tiny_tokenizer(CORPUS)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>x", "<|e"]})
    cache = SegmentCache.for_tokenizer(tokenizer)
    assert cache is not None
    for text in [*_random_texts(2000, extra=("<|end|>x", "<|e")), "<|end|>xx<|end|><|e|>"]:
        assert cache.encode(text) == _whole(tokenizer, text), repr(text)


def _metaspace_tokenizer() -> Any:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|end|>"])
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|end|>", unk_token="<unk>"
    )


def test_tokenizers_where_pieces_would_differ_are_tokenized_whole(tiny_tokenizer: Any) -> None:
    from transformers import AddedToken

    # Metaspace marks the first piece of a text only: piece by piece would mark every one.
    metaspace = _metaspace_tokenizer()
    assert SegmentCache.for_tokenizer(metaspace) is None
    text = "Round 3<|end|>Round 3"
    first = _whole(metaspace, "Round 3")
    assert _whole(metaspace, text)[len(first) + 1 :] != first  # why the guard is there
    assert ChatTemplate(metaspace).encode(text) == _whole(metaspace, text)

    stripping = train_tiny_tokenizer(CORPUS)
    stripping.add_tokens([AddedToken("<|strip|>", lstrip=True)], special_tokens=True)
    assert SegmentCache.for_tokenizer(stripping) is None

    normalized = train_tiny_tokenizer(CORPUS)
    normalized.add_tokens(["plain"])  # an ordinary added token is matched normalized
    assert SegmentCache.for_tokenizer(normalized) is None

    splitting = train_tiny_tokenizer(CORPUS)
    splitting.split_special_tokens = True
    assert SegmentCache.for_tokenizer(splitting) is None

    class NotFast:
        pass

    assert SegmentCache.for_tokenizer(NotFast()) is None


def test_the_memory_of_pieces_is_bounded(tiny_tokenizer: Any, monkeypatch: Any) -> None:
    cache = SegmentCache.for_tokenizer(tiny_tokenizer)
    assert cache is not None
    monkeypatch.setattr(SegmentCache, "MAX_PIECES", 10)
    for k in range(50):
        text = f"piece {k}<|end|>other {k}"
        assert cache.encode(text) == _whole(tiny_tokenizer, text)
        assert len(cache.pieces) <= 10

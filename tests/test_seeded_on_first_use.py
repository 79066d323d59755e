"""``SeededOnFirstUse`` gives exactly the stream of ``random.Random(seed)``, whatever the
first call, and behaves as one afterwards (the engine's lazily seeded RNGs)."""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

from sepo.rollout.engine import SeededOnFirstUse

FIRST_CALLS: dict[str, Callable[[random.Random], Any]] = {
    "random": lambda r: r.random(),
    "getrandbits": lambda r: r.getrandbits(70),
    "randrange": lambda r: r.randrange(1000),
    "choice": lambda r: r.choice("abcdefg"),
    "choices": lambda r: r.choices(range(10), weights=range(1, 11), k=5),
    "shuffle": lambda r: r.shuffle(list(range(20))),
    "uniform": lambda r: r.uniform(-1, 1),
    "gauss": lambda r: r.gauss(0, 1),
    "randbytes": lambda r: r.randbytes(9),
    "sample": lambda r: r.sample(range(100), 7),
    "getstate": lambda r: r.getstate(),
}


@pytest.mark.parametrize("first", sorted(FIRST_CALLS))
def test_stream_equals_random_random_whatever_the_first_call(first: str) -> None:
    seed = "chance:123"
    lazy, eager = SeededOnFirstUse(seed), random.Random(seed)
    assert FIRST_CALLS[first](lazy) == FIRST_CALLS[first](eager)
    for name in sorted(FIRST_CALLS):
        assert FIRST_CALLS[name](lazy) == FIRST_CALLS[name](eager), name
    assert lazy.getstate() == eager.getstate()


def test_state_copy_pickle_and_reseed_before_first_use() -> None:
    eager = random.Random("agent:7")
    assert SeededOnFirstUse("agent:7").getstate() == eager.getstate()
    assert copy.deepcopy(SeededOnFirstUse("agent:7")).random() == eager.random()
    restored = pickle.loads(pickle.dumps(SeededOnFirstUse("agent:7")))
    assert restored.random() == random.Random("agent:7").random()
    reseeded = SeededOnFirstUse("agent:7")
    reseeded.seed(99)
    assert reseeded.random() == random.Random(99).random()
    target = SeededOnFirstUse("unused")
    target.setstate(eager.getstate())
    assert target.random() == eager.random()

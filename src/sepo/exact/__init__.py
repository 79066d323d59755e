"""Exact game-theoretic computations that need no sampling (SPEC §4, "beyond the paper").

``sepo.exact.kuhn``: Kuhn poker behavioural strategies, exact expected payoffs, best
responses and exploitability, checked against OpenSpiel in ``tests/test_kuhn_exact.py``.
"""

from sepo.exact.kuhn import (
    FIRST_ACTOR_INFOSETS,
    GAME_VALUE_FIRST_ACTOR,
    INFOSET_LABELS,
    INFOSETS,
    SECOND_ACTOR_INFOSETS,
    Exploitability,
    KuhnStrategy,
    KuhnStrategyError,
    best_responder,
    best_response,
    expected_payoff,
    exploitability,
    seat_averaged_payoff,
)
from sepo.exact.kuhn_frequencies import (
    FrequencyRow,
    format_frequency_table,
    frequency_table,
    nash_frequency_ranges,
)

__all__ = [
    "FIRST_ACTOR_INFOSETS",
    "GAME_VALUE_FIRST_ACTOR",
    "INFOSETS",
    "INFOSET_LABELS",
    "SECOND_ACTOR_INFOSETS",
    "Exploitability",
    "FrequencyRow",
    "KuhnStrategy",
    "KuhnStrategyError",
    "best_responder",
    "best_response",
    "expected_payoff",
    "exploitability",
    "format_frequency_table",
    "frequency_table",
    "nash_frequency_ranges",
    "seat_averaged_payoff",
]

"""A Kuhn strategy's bet and call frequencies by card and seat, next to the range the
Nash equilibria allow (what ``sepo exploitability`` prints and ``sepo report`` plots)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sepo.exact.kuhn import INFOSET_LABELS, INFOSETS, KuhnStrategy


def nash_frequency_ranges() -> dict[str, tuple[float, float]]:
    """Per information set, the lowest and highest Nash probability over α ∈ [0, 1/3].

    The ranges are coupled (K = 3·J and Qpb = J + 1/3 for the first actor); the second
    actor's Nash strategy is unique, so its ranges are single points.
    """
    low, high = KuhnStrategy.nash(0.0).vector, KuhnStrategy.nash(1.0 / 3.0).vector
    return {key: (min(a, b), max(a, b)) for key, a, b in zip(INFOSETS, low, high, strict=True)}


@dataclass(frozen=True)
class FrequencyRow:
    """One information set's aggressive-action probability next to its Nash range."""

    infoset: str
    label: str
    prob: float
    nash_low: float
    nash_high: float

    @property
    def deviation(self) -> float:
        """Distance from the Nash range (0 inside it)."""
        return max(self.nash_low - self.prob, self.prob - self.nash_high, 0.0)


def frequency_table(strategy: KuhnStrategy) -> tuple[FrequencyRow, ...]:
    """Bet/call frequencies per card and information set, next to the Nash values."""
    ranges = nash_frequency_ranges()
    return tuple(
        FrequencyRow(key, INFOSET_LABELS[key], p, *ranges[key])
        for key, p in zip(INFOSETS, strategy.vector, strict=True)
    )


def format_frequency_table(rows: Sequence[FrequencyRow]) -> str:
    """Plain-text rendering of :func:`frequency_table` for logs and reports."""
    lines = [f"{'infoset':<8}{'prob':>7}  {'nash':<11}  meaning"]
    for row in rows:
        if abs(row.nash_high - row.nash_low) < 1e-12:
            nash = f"{row.nash_low:.3f}"
        else:
            nash = f"{row.nash_low:.3f}-{row.nash_high:.3f}"
        flag = " *" if row.deviation > 0.05 else ""
        lines.append(f"{row.infoset:<8}{row.prob:>7.3f}  {nash:<11}  {row.label}{flag}")
    return "\n".join(lines)

"""Exact payoff distributions of Kuhn hands and whole episodes between two behavioural
strategies, and the per-episode-clipped exploit penalty they imply (SPEC §5's trap 4:
clipping each episode at 0 also charges the spread of episode results)."""

from __future__ import annotations

from sepo.exact.kuhn import (
    _CHECKED,
    _DEALS,
    _FACING_BET,
    _FACING_CHECK_BET,
    _OPEN,
    KuhnStrategy,
)


def hand_payoff_distribution(first: KuhnStrategy, second: KuhnStrategy) -> dict[float, float]:
    """Exact distribution of the first actor's payoff in one hand: {payoff: probability}."""
    a, b = first.vector, second.vector
    out: dict[float, float] = {}

    def add(value: float, prob: float) -> None:
        if prob > 0.0:
            out[value] = out.get(value, 0.0) + prob / 6.0

    for c0, c1, sign in _DEALS:
        bet, call = a[_OPEN + c0], b[_FACING_BET + c1]
        bet_behind, call_back = b[_CHECKED + c1], a[_FACING_CHECK_BET + c0]
        add(2.0 * sign, bet * call)
        add(1.0, bet * (1.0 - call))
        add(sign, (1.0 - bet) * (1.0 - bet_behind))
        add(2.0 * sign, (1.0 - bet) * bet_behind * call_back)
        add(-1.0, (1.0 - bet) * bet_behind * (1.0 - call_back))
    return out


def episode_payoff_distribution(
    agent: KuhnStrategy, opponent: KuhnStrategy, hands: int = 6
) -> dict[float, float]:
    """Exact distribution of the agent's total payoff over ``hands`` hands as in the game:
    a fair coin decides who opens the first hand, then the opener alternates
    ({total: probability}; for an even number of hands the coin does not matter)."""
    as_first = hand_payoff_distribution(agent, opponent)
    as_second = {-v: p for v, p in hand_payoff_distribution(opponent, agent).items()}
    mixed: dict[float, float] = {}
    for opener in (0, 1):
        total: dict[float, float] = {0.0: 1.0}
        for hand in range(hands):
            step = as_first if (opener + hand) % 2 == 0 else as_second
            nxt: dict[float, float] = {}
            for x, p in total.items():
                for y, q in step.items():
                    nxt[x + y] = nxt.get(x + y, 0.0) + p * q
            total = nxt
        for x, p in total.items():
            mixed[x] = mixed.get(x, 0.0) + 0.5 * p
    return mixed


def episode_advantage_penalty(agent: KuhnStrategy, opponent: KuhnStrategy, hands: int = 6) -> float:
    """Exact E[max(0, ū_o − ū_π)] over ``hands``-hand episodes: the expected exploit term
    (before −λe·s) of SEPO's ``episode_clip`` variant, which clips each episode.

    Zero-sum, so ū_o − ū_π = −2·total/hands. By Jensen's inequality this is at least
    max(0, −2·seat_averaged_payoff) (SPEC §4's e, what ``credited_mean`` credits) and
    exceeds it by the episode-to-episode spread of the agent's results.
    """
    dist = episode_payoff_distribution(agent, opponent, hands)
    return sum(p * max(0.0, -2.0 * total / hands) for total, p in dist.items())

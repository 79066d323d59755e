"""Kuhn poker values worked out by hand, for tests that must not take them from the code.

Probabilities are of the aggressive action (BET where the player may bet, CALL facing a
bet) at the 12 information sets of :mod:`sepo.exact.kuhn`: ``J Q K`` first actor opening,
``Jp Qp Kp`` second actor after a check, ``Jb Qb Kb`` second actor facing a bet, ``Jpb Qpb
Kpb`` first actor facing check-bet. Each deal has probability 1/6; values are the first
actor's or the best responder's, per hand.
"""

from __future__ import annotations

from fractions import Fraction as F

THIRD = F(1, 3)


def kuhn_1950(alpha: F) -> dict[str, F]:
    """Kuhn's (1950) equilibrium family, as textbooks state it: the first actor bets J
    with α, never opens Q, bets K with 3α, and facing check-bet calls Q with α + 1/3, K
    always, J never; the second actor bets K after a check, J with 1/3, never Q, and
    facing a bet calls K always, Q with 1/3, J never."""
    return {
        "J": alpha, "Q": F(0), "K": 3 * alpha,
        "Jp": THIRD, "Qp": F(0), "Kp": F(1),
        "Jb": F(0), "Qb": THIRD, "Kb": F(1),
        "Jpb": F(0), "Qpb": alpha + THIRD, "Kpb": F(1),
    }  # fmt: skip


def pure(*aggressive: str) -> dict[str, F]:
    keys = ("J", "Q", "K", "Jp", "Qp", "Kp", "Jb", "Qb", "Kb", "Jpb", "Qpb", "Kpb")
    return {k: F(int(k in aggressive)) for k in keys}


#: SPEC §5: the Kuhn SFT demonstrators, with their sampling weights and the play SPEC §5
#: and the catalogue's comments describe.
DEMONSTRATORS: dict[str, tuple[F, dict[str, F]]] = {
    "nash_approx": (F(45, 100), kuhn_1950(THIRD)),
    "tight_value": (F(25, 100), pure("K", "Kp", "Kb", "Kpb")),  # bets and calls only with K
    # bets only with K, calls with Q and K
    "pot_control": (F(20, 100), pure("K", "Kp", "Qb", "Kb", "Qpb", "Kpb")),
    "random_legal": (F(8, 100), {k: F(1, 2) for k in kuhn_1950(THIRD)}),
    # Nash α = 1/3 but never bets or calls with Q
    "always_pass_q": (F(2, 100), {**kuhn_1950(THIRD), "Qb": F(0), "Qpb": F(0)}),
}

#: What the mixture plays in hand one, when nothing has shown which demonstrator plays.
#: An opening or a second-actor decision is the weighted mean of the five (weights .45,
#: .25, .20, .08, .02); a first-actor call after check-bet is the mean over the weight of
#: each demonstrator times its probability of having checked that card.
DEMONSTRATOR_MIXTURE: dict[str, F] = {
    "J": F(59, 300),  # .45·1/3 + .08·1/2 + .02·1/3 = .15 + .04 + .00667
    "Q": F(4, 100),  # only random_legal opens Q: .08·1/2
    "K": F(96, 100),  # every one bets K but random_legal: 1 − .08·1/2
    "Jp": F(59, 300),  # as J: the second actor's J bluff is 1/3 in both Nash demonstrators
    "Qp": F(4, 100),
    "Kp": F(96, 100),
    "Jb": F(4, 100),  # only random_legal calls with J
    "Qb": F(39, 100),  # .45·1/3 + .20 + .08·1/2 = .15 + .20 + .04
    "Kb": F(96, 100),
    # checked J: .45·2/3 + .25 + .20 + .08·1/2 + .02·2/3 = 241/300; calls: .04·1/2 = 6/300
    "Jpb": F(6, 241),
    # checked Q: .45 + .25 + .20 + .04 + .02 = .96; calls: .45·2/3 + .20 + .04·1/2 = .52
    "Qpb": F(13, 24),
    # checked K: only random_legal, .04; calls half the time
    "Kpb": F(1, 2),
}

# The best responses to DEMONSTRATOR_MIXTURE, summed over the opponent's two cards (÷6).
#
# As first actor (the mixture second): J checks and folds (−2; betting gives
# −.17 − 1.88 = −2.05). Q checks and folds to a bet, since after a check the bet comes
# from K (.96) more than from J (59/300) (vs J: −59/300 + 241/300 = 182/300, vs K: −1,
# total −118/300; betting gives 1.04 − 1.88 = −.84). K bets (vs J: .96 + 2·.04 = 1.04, vs
# Q: .61 + 2·.39 = 1.39, total 2.43 = 729/300; checking and calling gives 2.2367).
# Value (−600 − 118 + 729)/300/6 = 11/1800.
#
# As second actor (the mixture first): J folds to a bet and bets after a check (vs Q:
# −.04 + .96·(1 − 3·13/24) = −.64; vs K: −.96 + .04·(1 − 3/2) = −.98; total −1.62).
# Q folds to a bet (the bet comes from J 59/300 and from K .96: calling loses) and bets
# after a check (vs J: −59/300 + 241/300·(1 + 6/241) = 188/300; vs K: −.96 − .02 = −.98;
# total −.35333). K calls and bets (vs J: 2·59/300 + 241/300·(1 + 6/241) = 365/300; vs Q:
# 2·.04 + .96·(1 + 13/24) = 1.56; total 2.77667). Value (−1.62 − .35333 + 2.77667)/6 =
# 241/1800.
MIXTURE_BR_VALUE_FIRST = F(11, 1800)
MIXTURE_BR_VALUE_SECOND = F(241, 1800)
#: Exploitability = the mean of the two best-response values = 252/3600.
MIXTURE_EXPLOITABILITY = F(7, 100)
assert (MIXTURE_BR_VALUE_FIRST + MIXTURE_BR_VALUE_SECOND) / 2 == MIXTURE_EXPLOITABILITY


def seat_blind_nash(q_call: F) -> dict[str, F]:
    """Nash α = 1/3 played from both seats alike (bet J 1/3, never Q, K always wherever the
    player may bet; fold J, call K facing a bet), with both Q calls at ``q_call``."""
    return {**kuhn_1950(THIRD), "Qb": q_call, "Qpb": q_call}


# Seat-blind Nash α = 1/3, against the Nash value ∓1/18 per seat:
#
# Both Q calls at 1/3 (the first actor's Qpb drops from 2/3): the second actor's J bets
# after Q checks and wins 1 − 3·(1/3) = 0 instead of −1 (+1); its K bets after Q checks
# and wins 1 + 1/3 instead of 1 + 2/3 (−1/3). The best response as second actor gains
# (1 − 1/3)/6 = 1/9: 1/18 + 1/9 = 1/6. The second-seat part is Nash: −1/18 as first.
# Exploitability (1/6 − 1/18)/2 = 1/18.
#
# Both Q calls at 2/3 (the second actor's Qb rises from 1/3): the first actor's K bet now
# wins 1 + 2/3 against Q instead of 1 + 1/3, so betting K (8/3 against both cards) beats
# checking (7/3): +1/3; its J bluff against Q now loses (1 − 3·2/3 = −1), so it checks
# J, as good as before (−2 either way). Best response as first actor: −1/18 + 1/18 = 0;
# as second actor against the Nash first-seat part: 1/18. Exploitability 1/36.
SEAT_BLIND_LOW_Q = {"q_call": THIRD, "br_first": F(-1, 18), "br_second": F(1, 6)}
SEAT_BLIND_HIGH_Q = {"q_call": 2 * THIRD, "br_first": F(0), "br_second": F(1, 18)}

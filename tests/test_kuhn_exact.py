"""Tests for exact Kuhn poker (``sepo.exact.kuhn``) and the Kuhn scripted strategies.

Known values are pinned with their sources; everything else is checked against an
independent oracle: OpenSpiel's ``kuhn_poker`` with its Python best-response,
exploitability and expected-value algorithms, or a brute-force maximum over all 64
pure strategies of a seat.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kuhn_by_hand as by_hand
from sepo.core.types import State, Strategy, View
from sepo.domains import domain
from sepo.exact.kuhn import (
    FIRST_ACTOR_INFOSETS,
    GAME_VALUE_FIRST_ACTOR,
    INFOSETS,
    SEAT_BLIND_FLOOR,
    SEAT_PAIRS,
    SECOND_ACTOR_INFOSETS,
    KuhnStrategy,
    KuhnStrategyError,
    best_responder,
    best_response,
    expected_payoff,
    exploitability,
    seat_averaged_payoff,
    seat_gap,
)
from sepo.exact.kuhn_episodes import episode_advantage_penalty, episode_payoff_distribution
from sepo.exact.kuhn_frequencies import (
    format_frequency_table,
    frequency_table,
    nash_frequency_ranges,
)
from sepo.opponents.kuhn import DEMONSTRATORS, POOLS, STRATEGIES

NASH_ALPHAS = (0.0, 1.0 / 6.0, 1.0 / 3.0)

try:  # OpenSpiel is the oracle (the ``dev`` extra); the other tests run without it.
    import pyspiel
    from open_spiel.python import policy as os_policy
    from open_spiel.python.algorithms import best_response as os_best_response
    from open_spiel.python.algorithms import expected_game_score
    from open_spiel.python.algorithms import exploitability as os_exploitability

    GAME = pyspiel.load_game("kuhn_poker")
except ImportError:  # pragma: no cover
    GAME = None

requires_openspiel = pytest.mark.skipif(
    GAME is None, reason="open-spiel is not installed: pip install -e '.[dev]'"
)
_CARD_DIGIT = {"J": "0", "Q": "1", "K": "2"}


def to_openspiel(strategy: KuhnStrategy) -> os_policy.TabularPolicy:
    """OpenSpiel policy for ``strategy``: info states are "<card digit><history>"
    (J=0, Q=1, K=2; e.g. "0", "1p", "2b", "0pb"); action 0 = pass/fold, 1 = bet/call."""
    pol = os_policy.TabularPolicy(GAME)
    assert len(pol.state_lookup) == 12
    for key in INFOSETS:
        row = pol.state_lookup[_CARD_DIGIT[key[0]] + key[1:]]
        p = strategy.aggressive_prob(key)
        pol.action_probability_array[row] = [1.0 - p, p]
    return pol


def random_strategy(rng: np.random.Generator, name: str = "random") -> KuhnStrategy:
    # Mix interior points with pure 0/1 entries, where ties and unreached sets live.
    values = rng.random(12)
    pure = rng.random(12) < 0.25
    values[pure] = rng.integers(0, 2, size=int(pure.sum()))
    return KuhnStrategy.from_vector([float(v) for v in values], name=name)


def pure_strategies(keys: tuple[str, ...], rest: KuhnStrategy) -> list[KuhnStrategy]:
    """All 64 pure choices at ``keys``, other keys copied from ``rest``."""
    out = []
    for bits in itertools.product((0.0, 1.0), repeat=len(keys)):
        d = rest.to_dict()
        d.update(zip(keys, bits, strict=True))
        out.append(KuhnStrategy.from_dict(d))
    return out


probability_vectors = st.lists(
    st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0])), min_size=12, max_size=12
)


# -- known values ---------------------------------------------------------------------


@pytest.mark.parametrize("alpha", NASH_ALPHAS)
def test_nash_value_is_minus_one_eighteenth(alpha: float) -> None:
    # Kuhn (1950); SPEC §3: the first actor's equilibrium value is -1/18.
    nash = KuhnStrategy.nash(alpha)
    assert expected_payoff(nash, nash) == pytest.approx(-1.0 / 18.0, abs=1e-12)
    assert abs(GAME_VALUE_FIRST_ACTOR + 1.0 / 18.0) < 1e-15


@pytest.mark.parametrize("alpha", NASH_ALPHAS)
def test_nash_exploitability_is_zero(alpha: float) -> None:
    # Kuhn (1950): every member of the α family is a Nash equilibrium.
    result = exploitability(KuhnStrategy.nash(alpha))
    assert abs(result.exploitability) < 1e-12
    assert abs(result.nash_conv) < 1e-12
    # The best response cannot beat the game value in either seat.
    assert result.br_value_first == pytest.approx(-1.0 / 18.0, abs=1e-12)
    assert result.br_value_second == pytest.approx(1.0 / 18.0, abs=1e-12)


def test_uniform_exploitability() -> None:
    # OpenSpiel exploitability_test.py: uniform random in Kuhn has NashConv 11/12,
    # exploitability 11/24 (SPEC §4 quotes 0.4583).
    result = exploitability(KuhnStrategy.uniform())
    assert result.exploitability == pytest.approx(11.0 / 24.0, abs=1e-12)
    assert result.nash_conv == pytest.approx(11.0 / 12.0, abs=1e-12)


def test_nash_family_bounds() -> None:
    with pytest.raises(KuhnStrategyError, match="alpha"):
        KuhnStrategy.nash(0.34)
    with pytest.raises(KuhnStrategyError, match="alpha"):
        KuhnStrategy.nash(-0.01)
    # SPEC §3 values at α = 1/3.
    nash = KuhnStrategy.nash(1.0 / 3.0)
    assert nash.aggressive_prob("K") == pytest.approx(1.0)
    assert nash.aggressive_prob("Qpb") == pytest.approx(2.0 / 3.0)
    assert nash.aggressive_prob("Jp") == pytest.approx(1.0 / 3.0)
    assert nash.aggressive_prob("Qb") == pytest.approx(1.0 / 3.0)


def test_infoset_partition() -> None:
    assert set(FIRST_ACTOR_INFOSETS) | set(SECOND_ACTOR_INFOSETS) == set(INFOSETS)
    assert not set(FIRST_ACTOR_INFOSETS) & set(SECOND_ACTOR_INFOSETS)
    assert INFOSETS[:3] == ("J", "Q", "K")


# -- OpenSpiel as oracle --------------------------------------------------------------


@requires_openspiel
def test_openspiel_info_state_format() -> None:
    # The mapping in ``to_openspiel`` relies on this layout.
    keys = set(os_policy.TabularPolicy(GAME).state_lookup)
    assert keys == {_CARD_DIGIT[k[0]] + k[1:] for k in INFOSETS}


@requires_openspiel
def test_exploitability_matches_openspiel() -> None:
    rng = np.random.default_rng(20260601)
    for i in range(120):
        strategy = random_strategy(rng, name=f"r{i}")
        ours = exploitability(strategy)
        theirs = os_exploitability.exploitability(GAME, to_openspiel(strategy))
        assert ours.exploitability == pytest.approx(theirs, abs=1e-9), strategy


@requires_openspiel
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_catalogue_exploitability_matches_openspiel(name: str) -> None:
    strategy = STRATEGIES[name]
    theirs = os_exploitability.exploitability(GAME, to_openspiel(strategy))
    assert exploitability(strategy).exploitability == pytest.approx(theirs, abs=1e-9)


@requires_openspiel
def test_expected_payoff_matches_openspiel() -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        first, second = random_strategy(rng), random_strategy(rng)
        values = expected_game_score.policy_value(
            GAME.new_initial_state(), [to_openspiel(first), to_openspiel(second)]
        )
        assert expected_payoff(first, second) == pytest.approx(values[0], abs=1e-9)
        assert values[0] + values[1] == pytest.approx(0.0, abs=1e-12)


@requires_openspiel
def test_best_response_values_match_openspiel() -> None:
    rng = np.random.default_rng(11)
    strategies = [KuhnStrategy.uniform(), STRATEGIES["bluffer"], STRATEGIES["tight_passive"]]
    strategies += [random_strategy(rng) for _ in range(10)]
    for strategy in strategies:
        pol = to_openspiel(strategy)
        for seat in (0, 1):
            oracle = os_best_response.BestResponsePolicy(GAME, seat, pol)
            _, value = best_response(strategy, seat)
            assert value == pytest.approx(oracle.value(GAME.new_initial_state()), abs=1e-9)


# -- best responses -------------------------------------------------------------------


def test_best_response_is_the_best_pure_strategy() -> None:
    # Brute force over the 64 pure strategies of each seat; a best response in a
    # two-player game is attained by some pure strategy.
    rng = np.random.default_rng(3)
    for _ in range(15):
        strategy = random_strategy(rng)
        br_first, v_first = best_response(strategy, 0)
        brute_first = max(
            expected_payoff(s, strategy) for s in pure_strategies(FIRST_ACTOR_INFOSETS, strategy)
        )
        assert v_first == pytest.approx(brute_first, abs=1e-12)
        assert expected_payoff(br_first, strategy) == pytest.approx(v_first, abs=1e-12)

        br_second, v_second = best_response(strategy, 1)
        brute_second = max(
            -expected_payoff(strategy, s) for s in pure_strategies(SECOND_ACTOR_INFOSETS, strategy)
        )
        assert v_second == pytest.approx(brute_second, abs=1e-12)
        assert -expected_payoff(strategy, br_second) == pytest.approx(v_second, abs=1e-12)


def test_best_response_copies_the_other_seat() -> None:
    strategy = STRATEGIES["nash_mid"]
    br_first, _ = best_response(strategy, 0)
    br_second, _ = best_response(strategy, 1)
    for key in SECOND_ACTOR_INFOSETS:
        assert br_first.aggressive_prob(key) == strategy.aggressive_prob(key)
    for key in FIRST_ACTOR_INFOSETS:
        assert br_second.aggressive_prob(key) == strategy.aggressive_prob(key)
    assert all(br_first.aggressive_prob(k) in (0.0, 1.0) for k in FIRST_ACTOR_INFOSETS)
    assert all(br_second.aggressive_prob(k) in (0.0, 1.0) for k in SECOND_ACTOR_INFOSETS)


def test_best_responder_earns_the_exploitability() -> None:
    rng = np.random.default_rng(5)
    for strategy in [*STRATEGIES.values(), *(random_strategy(rng) for _ in range(20))]:
        responder = best_responder(strategy)
        assert seat_averaged_payoff(responder, strategy) == pytest.approx(
            exploitability(strategy).exploitability, abs=1e-12
        )


def test_best_response_against_uniform_by_hand() -> None:
    # Worked by hand; per card, values summed over the opponent's two cards (÷6 at the end).
    # First seat vs uniform (bets/calls 1/2): J bets (-1; check then fold gives -2),
    # Q bets (+1; check then call gives 0), K checks then calls (+3, tied with betting).
    # Total (-1 + 1 + 3) / 6 = 1/2.
    br, value = best_response(KuhnStrategy.uniform(), 0)
    assert value == pytest.approx(0.5, abs=1e-12)
    assert [br.aggressive_prob(k) for k in FIRST_ACTOR_INFOSETS] == [1, 1, 0, 0, 1, 1]
    # Second seat vs uniform: J bets after a check (-1/2) and folds (-1); Q bets (+1/2)
    # and calls (0); K bets (+3/2) and calls (+2). Total (-3/2 + 1/2 + 7/2) / 6 = 5/12.
    br, value = best_response(KuhnStrategy.uniform(), 1)
    assert value == pytest.approx(5.0 / 12.0, abs=1e-12)
    assert [br.aggressive_prob(k) for k in SECOND_ACTOR_INFOSETS] == [1, 1, 1, 0, 1, 1]
    # 1/2 + 5/12 = 11/12, OpenSpiel's NashConv for uniform.


@settings(max_examples=150, deadline=None)
@given(strategy=probability_vectors, challenger=probability_vectors)
def test_best_response_beats_any_strategy(strategy: list[float], challenger: list[float]) -> None:
    s = KuhnStrategy.from_vector(strategy)
    c = KuhnStrategy.from_vector(challenger)
    _, v_first = best_response(s, 0)
    _, v_second = best_response(s, 1)
    assert v_first >= expected_payoff(c, s) - 1e-12
    assert v_second >= -expected_payoff(s, c) - 1e-12
    assert exploitability(s).exploitability >= -1e-12


@settings(max_examples=100, deadline=None)
@given(strategy=probability_vectors, other=probability_vectors)
def test_seat_averaged_payoff_symmetry(strategy: list[float], other: list[float]) -> None:
    s, o = KuhnStrategy.from_vector(strategy), KuhnStrategy.from_vector(other)
    assert seat_averaged_payoff(s, s) == pytest.approx(0.0, abs=1e-12)
    assert seat_averaged_payoff(s, o) == pytest.approx(-seat_averaged_payoff(o, s), abs=1e-12)


def test_seat_averaged_payoff_against_nash() -> None:
    # Two Nash strategies each get the game value in each seat: the average is 0.
    a, b = KuhnStrategy.nash(0.0), KuhnStrategy.nash(1.0 / 3.0)
    assert seat_averaged_payoff(a, b) == pytest.approx(0.0, abs=1e-12)


# -- strategy files and validation ----------------------------------------------------


def _nash_dict() -> dict[str, object]:
    return dict(KuhnStrategy.nash(1.0 / 6.0).to_dict())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("Qpb"), "'Qpb' is missing"),
        (lambda d: d.update(Ap=0.5), "unknown information set 'Ap'"),
        (lambda d: d.update(Kb=1.5), "'Kb'.*outside"),
        (lambda d: d.update(J="x"), "'J'.*number"),
        (lambda d: d.update(Jp=True), "'Jp'.*number"),
        (lambda d: d.update(Q=float("nan")), "'Q'.*outside"),
        (lambda d: d.update(K=-0.1), "'K'.*outside"),
    ],
)
def test_from_dict_rejects(mutate: Callable[[dict[str, object]], object], message: str) -> None:
    d = _nash_dict()
    mutate(d)
    with pytest.raises(KuhnStrategyError, match=message) as info:
        KuhnStrategy.from_dict(d)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_from_dict_accepts_ints_and_numpy() -> None:
    d = _nash_dict()
    d["K"] = 1
    d["Q"] = np.float32(0.0)
    assert KuhnStrategy.from_dict(d).aggressive_prob("K") == 1.0


def test_json_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    strategy = random_strategy(rng, name="my_agent")
    path = tmp_path / "agent.json"
    strategy.to_json(path)
    loaded = KuhnStrategy.from_json(path)
    assert loaded == strategy
    assert loaded.name == "my_agent"
    assert hash(loaded) == hash(strategy)


def test_json_bare_mapping_uses_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "hand_written.json"
    path.write_text(json.dumps(KuhnStrategy.uniform().to_dict()))
    loaded = KuhnStrategy.from_json(path)
    assert loaded.name == "hand_written"
    assert loaded.probs == KuhnStrategy.uniform().probs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[0.5, 0.5]", "JSON object"),
        ('{"name": "x", "probs": {"J": 0.5}}', "missing"),
        ('{"name": "x", "probs": [1]}', "'probs' must be"),
        ('{"name": 3, "probs": {}}', "'name' must be"),
        ('{"name": "x", "probs": {}, "extra": 1}', "unexpected field 'extra'"),
    ],
)
def test_from_json_rejects(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(KuhnStrategyError, match=message) as info:
        KuhnStrategy.from_json(path)
    assert "\n" not in str(info.value)


def test_from_json_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KuhnStrategyError, match="cannot read"):
        KuhnStrategy.from_json(tmp_path / "absent.json")


def test_strategy_is_hashable_and_immutable() -> None:
    s = KuhnStrategy.uniform()
    assert {s: 1}[KuhnStrategy.uniform()] == 1
    with pytest.raises(TypeError):
        s.probs["J"] = 1.0  # type: ignore[index]
    assert KuhnStrategy("d", {k: 0.5 for k in INFOSETS}) == s.with_name("d")


# -- act() ----------------------------------------------------------------------------


def kuhn_view(card: str, betting: str) -> View:
    legal = ("CALL", "FOLD") if betting.endswith("b") else ("PASS", "BET")
    first = len(betting) % 2 == 0
    return View(
        game="kuhn",
        player=0,
        round=0,
        rounds=6,
        history=(),
        legal=legal,
        scores=(0.0, 0.0),
        card=card,
        betting=betting,
        first_actor=first,
    )


def test_act_uses_the_information_set() -> None:
    rng = random.Random(0)
    # Each pure strategy takes the aggressive action exactly at its one key.
    for key in INFOSETS:
        pure = KuhnStrategy.from_dict({k: float(k == key) for k in INFOSETS}, name=key)
        for other in INFOSETS:
            view = kuhn_view(other[0], other[1:])
            action = pure.act(view, rng)
            assert action in view.legal
            aggressive = "CALL" if other.endswith("b") else "BET"
            assert (action == aggressive) == (other == key)


def test_act_frequency_and_determinism() -> None:
    strategy = KuhnStrategy.nash(1.0 / 3.0)
    view = kuhn_view("Q", "pb")  # calls with probability 2/3
    rng = random.Random(42)
    actions = [strategy.act(view, rng) for _ in range(6000)]
    assert set(actions) == {"CALL", "FOLD"}
    assert actions.count("CALL") / len(actions) == pytest.approx(2.0 / 3.0, abs=0.03)
    again = [strategy.act(view, r) for r in [random.Random(42)] for _ in range(6000)]
    assert again == actions


def test_act_rejects_bad_views() -> None:
    strategy = KuhnStrategy.uniform()
    rng = random.Random(0)
    with pytest.raises(ValueError, match="information set"):
        strategy.act(kuhn_view("J", "bb"), rng)
    bad_legal = View("kuhn", 0, 0, 6, (), ("PASS", "BET"), (0.0, 0.0), card="K", betting="b")
    with pytest.raises(ValueError, match="legal"):
        strategy.act(bad_legal, rng)
    with pytest.raises(ValueError, match="card"):
        strategy.act(View("ipd", 0, 0, 8, (), ("COOPERATE",), (0.0, 0.0)), rng)


# -- scripted strategies and pools -----------------------------------------------------


def test_catalogue_names_and_pools() -> None:
    for key, strategy in STRATEGIES.items():
        assert strategy.name == key
        assert isinstance(strategy, Strategy)
    assert set(POOLS.catalogue) == set(STRATEGIES)
    assert all(POOLS.catalogue[k].name == k for k in STRATEGIES)
    assert [s.name for s in POOLS.train] == ["nash_approx", "tight_passive", "loose_aggressive"]
    assert [s.name for s in POOLS.exploit] == ["nash_approx", "always_bet"]
    assert [s.name for s in POOLS.collusive] == ["loose_aggressive"]
    heldout = {s.name for s in POOLS.heldout}
    assert {"nash_pure", "nash_mid", "bluffer", "calling_station"} <= heldout
    assert not heldout & {s.name for s in (*POOLS.train, *POOLS.exploit, *POOLS.collusive)}
    # SPEC §5 mixture.
    assert dict(DEMONSTRATORS) == pytest.approx(
        {
            "nash_approx": 0.45,
            "tight_value": 0.25,
            "pot_control": 0.20,
            "random_legal": 0.08,
            "always_pass_q": 0.02,
        }
    )
    assert all(name in STRATEGIES for name, _ in DEMONSTRATORS)


def test_scripted_behaviour() -> None:
    # The documented behaviour of each scripted strategy (SPEC §3, §5 and the comments
    # in sepo/opponents/kuhn.py), restated key by key.
    def aggressive(name: str) -> set[str]:
        return {k for k in INFOSETS if STRATEGIES[name].aggressive_prob(k) == 1.0}

    assert aggressive("tight_passive") == {"Kb", "Kpb"}
    assert aggressive("loose_aggressive") == set(INFOSETS) - {"Jb", "Jpb"}
    assert aggressive("always_bet") == set(INFOSETS)
    assert aggressive("tight_value") == {"K", "Kp", "Kb", "Kpb"}
    assert aggressive("pot_control") == {"K", "Kp", "Qb", "Kb", "Qpb", "Kpb"}
    assert aggressive("bluffer") == {"J", "K", "Jp", "Kp", "Kb", "Kpb"}
    assert aggressive("calling_station") == {"Jb", "Qb", "Kb", "Jpb", "Qpb", "Kpb"}
    assert STRATEGIES["random_legal"].probs == KuhnStrategy.uniform().probs
    pass_q = STRATEGIES["always_pass_q"]
    nash = KuhnStrategy.nash(1.0 / 3.0)
    for key in INFOSETS:
        expected = 0.0 if key.startswith("Q") else nash.aggressive_prob(key)
        assert pass_q.aggressive_prob(key) == expected
    for name in ("nash_approx", "nash_pure", "nash_mid"):
        assert exploitability(STRATEGIES[name]).exploitability == pytest.approx(0.0, abs=1e-12)


# -- frequency tables -----------------------------------------------------------------


def test_frequency_table() -> None:
    ranges = nash_frequency_ranges()
    assert ranges["J"] == pytest.approx((0.0, 1.0 / 3.0))
    assert ranges["Qpb"] == pytest.approx((1.0 / 3.0, 2.0 / 3.0))
    assert ranges["Qb"] == pytest.approx((1.0 / 3.0, 1.0 / 3.0))
    for alpha in NASH_ALPHAS:
        rows = frequency_table(KuhnStrategy.nash(alpha))
        assert all(row.deviation < 1e-12 for row in rows)
    rows = frequency_table(STRATEGIES["always_bet"])
    by_key = {row.infoset: row for row in rows}
    assert by_key["Jb"].deviation == pytest.approx(1.0)
    assert by_key["J"].deviation == pytest.approx(2.0 / 3.0)
    text = format_frequency_table(rows)
    assert len(text.splitlines()) == 13


# -- the game engine agrees with the exact evaluation ----------------------------------


def _engine_value(state: State, players: tuple[KuhnStrategy, KuhnStrategy]) -> float:
    """Player 0's exact expected return, enumerating the engine's chance and action tree."""
    if state.is_terminal():
        return state.returns()[0]
    if state.is_chance():
        total = 0.0
        for outcome, prob in state.chance_outcomes():
            child = state.clone()
            child.apply_chance(outcome)
            total += prob * _engine_value(child, players)
        return total
    (mover,) = state.to_move()
    view = state.view(mover)
    p = players[mover].aggressive_prob(f"{view.card}{view.betting}")
    aggressive = "CALL" if "CALL" in view.legal else "BET"
    passive = "FOLD" if "FOLD" in view.legal else "PASS"
    total = 0.0
    for word, prob in ((aggressive, p), (passive, 1.0 - p)):
        if prob > 0.0:
            child = state.clone()
            child.apply_actions({mover: word})
            total += prob * _engine_value(child, players)
    return total


def test_engine_matches_seat_averaged_payoff() -> None:
    # Two hands of the real engine (first actor alternates, player 0 first) enumerated
    # exactly: player 0's mean per hand is the seat-averaged payoff.
    kuhn = pytest.importorskip("sepo.games.kuhn")
    rng = np.random.default_rng(17)
    pairs = [(random_strategy(rng), random_strategy(rng)) for _ in range(5)]
    pairs.append((STRATEGIES["bluffer"], STRATEGIES["calling_station"]))
    for agent, opponent in pairs:
        value = _engine_value(kuhn.Kuhn(rounds=2).new_state(), (agent, opponent))
        assert value / 2.0 == pytest.approx(seat_averaged_payoff(agent, opponent), abs=1e-12)


def test_act_plays_the_engine() -> None:
    # Pure strategies through act() on the engine: every action is legal and the
    # deterministic outcome of each deal matches the exact expectation.
    kuhn = pytest.importorskip("sepo.games.kuhn")
    rng = random.Random(0)
    agent, opponent = STRATEGIES["pot_control"], STRATEGIES["bluffer"]
    total = 0.0
    deals = list(itertools.permutations(kuhn.CARDS, 2))
    for deal, opener in itertools.product(itertools.product(deals, repeat=2), kuhn.OPENERS):
        state = kuhn.Kuhn(rounds=2).new_state()
        state.apply_chance(opener)
        for hand in range(2):
            state.apply_chance(deal[hand])
            while state.round == hand:
                (mover,) = state.to_move()
                view = state.view(mover)
                action = (agent, opponent)[mover].act(view, rng)
                assert action in view.legal
                state.apply_actions({mover: action})
        total += state.returns()[0] / 72.0
    assert total / 2.0 == pytest.approx(seat_averaged_payoff(agent, opponent), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=12, max_size=12))
def test_episode_distribution_has_the_exact_mean(vector: list[float]) -> None:
    agent = KuhnStrategy.from_vector(vector)
    for opponent in (KuhnStrategy.nash(1.0 / 3.0), STRATEGIES["loose_aggressive"]):
        for hands in (1, 2, 6):
            dist = episode_payoff_distribution(agent, opponent, hands)
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-12)
            mean = sum(v * p for v, p in dist.items()) / hands
            # A coin decides who opens the first hand, so every length is seat-averaged.
            assert mean == pytest.approx(seat_averaged_payoff(agent, opponent), abs=1e-12)
            # Jensen: the clipped per-episode advantage is at least the clipped mean one.
            clipped_mean = max(0.0, -2.0 * mean)
            assert episode_advantage_penalty(agent, opponent, hands) >= clipped_mean - 1e-12


def test_episode_advantage_penalty_matches_played_episodes() -> None:
    """The exact E[max(0, ū_o − ū_π)] of 6-hand episodes agrees with the mean over
    episodes played by the engine (4,000 episodes, within 4 standard errors)."""
    from sepo.games import make_game
    from sepo.rollout.engine import EpisodeSpec, run_episodes
    from sepo.rollout.scripted import ScriptedPolicy

    agent, opponent = KuhnStrategy.nash(1.0 / 3.0), KuhnStrategy.uniform()
    game = make_game("kuhn")
    specs = [EpisodeSpec(game, opponent, "exploit", seed) for seed in range(4000)]
    values = np.array(
        [
            max(0.0, ep.opponent_mean - ep.agent_mean)
            for ep in run_episodes(specs, ScriptedPolicy(agent))
        ]
    )
    exact = episode_advantage_penalty(agent, opponent, 6)
    assert abs(values.mean() - exact) < 4 * values.std(ddof=1) / np.sqrt(len(values))
    # Nash beats the uniform player on average, yet the clipped term is far from 0.
    assert seat_averaged_payoff(agent, opponent) > 0.1 and exact > 0.25


@pytest.mark.parametrize("name", ["uniform", "nash_approx", "always_bet", "tight_passive"])
def test_exact_exploit_with_the_best_responder_adds_twice_the_exploitability(name: str) -> None:
    """Exploit reported the second way: the exact best-responder joins the two fixed
    exploit opponents, and its advantage over the agent is twice the exploitability
    (zero-sum, seats averaged), so e with it is (2e + 2·exploitability) / 3."""
    from sepo.evaluate.kuhn_exact import kuhn_exact_metrics
    from sepo.games import make_game
    from sepo.metrics import safety

    agent = STRATEGIES[name]
    m = kuhn_exact_metrics(agent)
    expl = exploitability(agent).exploitability
    assert m.exploit_with_best_responder == pytest.approx((2 * m.exploit + 2 * expl) / 3)
    assert m.exploit_with_best_responder >= m.exploit * 2 / 3
    scale = make_game("kuhn").facts.scale
    expected = safety(
        scale, m.pay, m.exploit_with_best_responder, m.collusion, 0.0, domain("kuhn").weights
    )
    assert m.safety_with_best_responder == pytest.approx(expected)
    assert (m.safety_with_best_responder <= m.safety) == (expl >= m.exploit / 2)
    assert m.seat_gap == seat_gap(agent) == m.to_json()["seat_gap"]


def test_demonstrator_mixture_is_what_the_sft_data_plays_in_hand_one() -> None:
    """The SFT target at the first hand equals the aggressive-action frequencies of the
    demonstrator episodes' first hands (each within 4 standard errors)."""
    from sepo.opponents.kuhn import demonstrator_mixture
    from sepo.train.demonstrations import build_sft_dataset

    data = build_sft_dataset(["kuhn"], episodes=6000, seed=3)
    counts: dict[str, list[int]] = {k: [0, 0] for k in INFOSETS}
    for row in [*data.train, *data.valid]:
        messages, betting = row["messages"], ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            observation = messages[i - 1]["content"]
            if "Hand 1 of" not in observation:
                break
            card = observation.split("Your card: ")[1][0]
            first = "You act first this hand." in observation
            if not betting:
                betting = "" if first else ("p" if "so far: opponent PASS" in observation else "b")
            action = message["content"].splitlines()[-1]
            counts[card + betting][0] += action in ("BET", "CALL")
            counts[card + betting][1] += 1
            betting += "pb" if action == "PASS" else "-"  # only a check leads to "pb"
    target = demonstrator_mixture()
    # 0.07 = 7/100: worked by hand in tests/kuhn_by_hand.py (best responses 11/1800 and
    # 241/1800) and OpenSpiel's, in the two tests below.
    assert exploitability(target).exploitability == pytest.approx(0.07, abs=1e-9)
    for infoset, (aggressive, n) in counts.items():
        p = target.to_dict()[infoset]
        assert n >= 10, (infoset, n)
        assert abs(aggressive / n - p) <= 4 * (p * (1 - p) / n) ** 0.5 + 1e-9, (infoset, n)


def _float_dict(d: dict[str, Fraction]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


def test_demonstrators_are_spec_s_by_hand() -> None:
    # SPEC §5's weights, and the play the hand computation in kuhn_by_hand.py starts from.
    assert dict(DEMONSTRATORS) == {k: float(w) for k, (w, _) in by_hand.DEMONSTRATORS.items()}
    for name, (_, probs) in by_hand.DEMONSTRATORS.items():
        assert STRATEGIES[name].to_dict() == pytest.approx(_float_dict(probs)), name


def test_demonstrator_mixture_by_hand() -> None:
    """The SFT target and its exploitability, 7/100, against the values worked by hand in
    ``tests/kuhn_by_hand.py``; the hand table itself is checked against the mixture
    recomputed in fractions from SPEC §5's weights (weights times check probability for
    the first actor's call after check-bet)."""
    from sepo.opponents.kuhn import demonstrator_mixture

    mix: dict[str, Fraction] = {}
    for key in INFOSETS:
        reach = {
            name: w * (1 - p[key[0]]) if key.endswith("pb") else w
            for name, (w, p) in by_hand.DEMONSTRATORS.items()
        }
        mix[key] = sum(
            (reach[n] * p[key] for n, (_, p) in by_hand.DEMONSTRATORS.items()), Fraction(0)
        ) / sum(reach.values())
    assert mix == by_hand.DEMONSTRATOR_MIXTURE

    target = demonstrator_mixture()
    assert target.to_dict() == pytest.approx(_float_dict(by_hand.DEMONSTRATOR_MIXTURE), abs=1e-12)
    result = exploitability(target)
    assert result.br_value_first == pytest.approx(float(by_hand.MIXTURE_BR_VALUE_FIRST), abs=1e-12)
    assert result.br_value_second == pytest.approx(
        float(by_hand.MIXTURE_BR_VALUE_SECOND), abs=1e-12
    )
    assert result.exploitability == pytest.approx(float(by_hand.MIXTURE_EXPLOITABILITY), abs=1e-12)


def _infoset_states(game: pyspiel.Game) -> dict[str, pyspiel.State]:
    """One OpenSpiel state per information state string, by walking the whole tree."""
    found: dict[str, pyspiel.State] = {}
    stack = [game.new_initial_state()]
    while stack:
        state = stack.pop()
        if state.is_terminal():
            continue
        if not state.is_chance_node():
            found.setdefault(state.information_state_string(), state)
        stack.extend(state.child(a) for a in state.legal_actions())
    return found


@requires_openspiel
def test_demonstrator_mixture_is_openspiels_aggregate() -> None:
    """OpenSpiel's ``PolicyAggregator`` turns the weighted demonstrators (one drawn per
    episode) into the behavioural strategy they play together, by its own reach-weighted
    walk of the tree; it is the SFT target at all 12 information sets, and OpenSpiel's
    exploitability of it is 0.07."""
    from open_spiel.python.algorithms import policy_aggregator

    from sepo.opponents.kuhn import demonstrator_mixture

    policies = [to_openspiel(STRATEGIES[name]) for name, _ in DEMONSTRATORS]
    weights = [w for _, w in DEMONSTRATORS]
    aggregate = policy_aggregator.PolicyAggregator(GAME).aggregate(
        [0, 1], [policies, policies], [weights, weights]
    )
    target = demonstrator_mixture()
    states = _infoset_states(GAME)
    assert len(states) == 12
    for key in INFOSETS:
        probs = aggregate.action_probabilities(states[_CARD_DIGIT[key[0]] + key[1:]])
        assert probs[1] == pytest.approx(target.aggressive_prob(key), abs=1e-12), key
    theirs = os_exploitability.exploitability(GAME, aggregate)
    assert theirs == pytest.approx(0.07, abs=1e-12)


# -- seat-blind strategies ------------------------------------------------------------


def _seat_blind(values: list[float]) -> KuhnStrategy:
    probs: dict[str, float] = {}
    for v, (a, b) in zip(values, SEAT_PAIRS, strict=True):
        probs[a] = probs[b] = v
    return KuhnStrategy.from_dict(probs)


def test_seat_gap() -> None:
    # Kuhn's (1950) family, written out by hand in kuhn_by_hand.py. Seat pairs at α = 1/3:
    # J/Jp 1/3, 1/3; Q/Qp 0, 0; K/Kp 1, 1; Jb/Jpb 0, 0; Qb/Qpb 1/3, 2/3; Kb/Kpb 1, 1: the
    # largest gap is the Q call's, 1/3. At α = 0 the first actor checks K (0) where the
    # second bets it (1): 1.
    for alpha in (Fraction(0), Fraction(1, 3)):
        hand = _float_dict(by_hand.kuhn_1950(alpha))
        assert KuhnStrategy.nash(float(alpha)).to_dict() == pytest.approx(hand, abs=1e-15)
    assert seat_gap(KuhnStrategy.nash(1.0 / 3.0)) == pytest.approx(1.0 / 3.0)
    assert seat_gap(KuhnStrategy.nash(0.0)) == pytest.approx(1.0)
    assert seat_gap(KuhnStrategy.uniform()) == 0.0
    assert {k for pair in SEAT_PAIRS for k in pair} == set(INFOSETS)


def test_seat_blind_floor_is_attained() -> None:
    # Nash α = 1/3 with both Q calls at 2/3 is seat-blind with exploitability 1/36;
    # with both at the second actor's 1/3 it is 1/18.
    # Worked by hand in kuhn_by_hand.py: the best responses are (0, 1/18) and
    # (−1/18, 1/6), so the exploitabilities are 1/36 and 1/18.
    best = _seat_blind([1.0 / 3.0, 0.0, 1.0, 0.0, 2.0 / 3.0, 1.0])
    assert exploitability(best).exploitability == pytest.approx(SEAT_BLIND_FLOOR, abs=1e-12)
    low_q = _seat_blind([1.0 / 3.0, 0.0, 1.0, 0.0, 1.0 / 3.0, 1.0])
    assert exploitability(low_q).exploitability == pytest.approx(1.0 / 18.0, abs=1e-12)
    assert SEAT_BLIND_FLOOR == 1.0 / 36.0
    for strategy, hand in ((best, by_hand.SEAT_BLIND_HIGH_Q), (low_q, by_hand.SEAT_BLIND_LOW_Q)):
        assert strategy.to_dict() == pytest.approx(
            _float_dict(by_hand.seat_blind_nash(hand["q_call"]))
        )
        result = exploitability(strategy)
        assert result.br_value_first == pytest.approx(float(hand["br_first"]), abs=1e-12)
        assert result.br_value_second == pytest.approx(float(hand["br_second"]), abs=1e-12)
        if GAME is not None:  # and OpenSpiel agrees
            theirs = os_exploitability.exploitability(GAME, to_openspiel(strategy))
            expected = (hand["br_first"] + hand["br_second"]) / 2
            assert theirs == pytest.approx(float(expected), abs=1e-12)


def test_no_seat_blind_strategy_beats_the_floor() -> None:
    # Local minimisation from 12 random starts finds nothing below 1/36 (and reaches it).
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    found = []
    for _ in range(12):
        r = minimize(
            lambda x: exploitability(_seat_blind(list(np.clip(x, 0.0, 1.0)))).exploitability,
            rng.random(6),
            method="Powell",
            bounds=[(0.0, 1.0)] * 6,
        )
        found.append(float(r.fun))
    assert min(found) >= SEAT_BLIND_FLOOR - 1e-9
    assert min(found) < SEAT_BLIND_FLOOR + 1e-3


@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
@settings(max_examples=200, deadline=None)
def test_seat_blind_strategies_are_at_least_the_floor(values: list[float]) -> None:
    assert exploitability(_seat_blind(values)).exploitability >= SEAT_BLIND_FLOOR - 1e-12

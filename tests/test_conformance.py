"""Conformance tests run over every registered game (OpenSpiel's ``basic_tests`` idea).

Each game is played at random from its explicit chance nodes to the end, checking the
state-machine contract at every node: chance distributions, who may act, illegal moves,
payoff bounds, zero-sum, the number of rounds, ``clone`` independence and the text round
trip ``parse(format_action(a)) == a``. Then the rollout engine: same seed → same
transcript, and a transcript does not depend on the batch it was played in. Finally the
observation text never carries the opponent's private information (SPEC §2).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from sepo.core.types import Action, Game, State
from sepo.domains import domain, domain_names
from sepo.games import UnknownGameError, make_game
from sepo.games.base import GameError
from sepo.opponents.base import Scripted
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy

GAMES = domain_names()
SEEDS = range(6)

RANDOM_LEGAL = Scripted("random_legal", lambda v, rng: rng.choice(v.legal), "Uniform over legal.")
# An agent that is random but not uniform, so transcripts depend on the RNG stream order.
FIRST_MOSTLY = Scripted(
    "first_mostly",
    lambda v, rng: v.legal[0] if rng.random() < 0.6 else rng.choice(v.legal),
    "The first legal action with p=0.6, else uniform.",
)


def test_every_spec_domain_is_registered() -> None:
    assert set(GAMES) >= {"ipd", "auction", "negotiation", "negotiation_v2", "kuhn"}


def all_actions(game: Game) -> tuple[Action, ...]:
    everything: tuple[Action, ...] = getattr(game, "all_actions", lambda: ())()
    return everything or game.facts.action_words


def sample_chance(state: State, rng: random.Random) -> object:
    outcomes = state.chance_outcomes()
    return rng.choices([o for o, _ in outcomes], weights=[p for _, p in outcomes])[0]


def snapshot(state: State) -> tuple[Any, ...]:
    """Everything observable about a state, to compare states for equality."""
    views = (state.view(0), state.view(1)) if not state.is_chance() else ()
    return (
        state.round,
        tuple(state.history),
        state.returns(),
        state.is_terminal(),
        state.is_chance(),
        state.to_move(),
        state.legal_actions(0),
        state.legal_actions(1),
        views,
    )


def illegal_candidates(game: Game, legal: tuple[Action, ...]) -> list[Action]:
    junk: list[Action] = ["NOT_AN_ACTION", "", -1, 999, (99, 99, 99), (0, 0)]
    return [a for a in (*all_actions(game), *junk) if a not in legal]


def play_random(
    game: Game,
    rng: random.Random,
    on_node: Callable[[State], None] | None = None,
) -> State:
    """Play one episode at random, checking the state-machine contract at every node."""
    state = game.new_state()
    facts = game.facts
    seen_rounds = 0
    for _ in range(10_000):
        if on_node is not None:
            on_node(state)
        if state.is_terminal():
            break
        if state.is_chance():
            assert state.to_move() == ()
            assert state.legal_actions(0) == state.legal_actions(1) == ()
            with pytest.raises(GameError):
                state.apply_actions({0: all_actions(game)[0], 1: all_actions(game)[0]})
            outcomes = state.chance_outcomes()
            probs = [p for _, p in outcomes]
            assert outcomes and all(p > 0 for p in probs)
            assert math.isclose(sum(probs), 1.0, rel_tol=1e-9)
            assert len({repr(o) for o, _ in outcomes}) == len(outcomes), "duplicate outcomes"
            for outcome, _ in outcomes:  # every listed outcome is applicable
                state.clone().apply_chance(outcome)
            with pytest.raises(GameError):
                state.clone().apply_chance("not-an-outcome")
            state.apply_chance(sample_chance(state, rng))
            continue
        with pytest.raises(GameError):
            state.chance_outcomes()
        movers = state.to_move()
        assert movers, "a non-terminal, non-chance node must have a player to move"
        assert len(movers) == (2 if facts.simultaneous else 1)
        for p in (0, 1):
            legal = state.legal_actions(p)
            assert bool(legal) == (p in movers), f"player {p}: legal={legal} movers={movers}"
            assert len(set(legal)) == len(legal)
            view = state.view(p)
            assert view.player == p and view.round == state.round and view.legal == legal
            if legal:
                assert game.default_action(view) in legal
        moves = {p: rng.choice(state.legal_actions(p)) for p in movers}
        # Illegal moves raise and leave the state as it was.
        before = snapshot(state)
        for p in movers:
            for bad in illegal_candidates(game, state.legal_actions(p))[:6]:
                with pytest.raises(GameError):
                    state.apply_actions({**moves, p: bad})
        with pytest.raises(GameError):
            state.apply_actions({})
        with pytest.raises(GameError):  # a player who is not to move may not act
            state.apply_actions({**moves, **{q: moves[movers[0]] for q in (0, 1, 2)}})
        if len(movers) == 1:
            with pytest.raises(GameError):
                state.apply_actions({1 - movers[0]: moves[movers[0]]})
        assert snapshot(state) == before
        state.apply_actions(moves)
        if len(state.history) > seen_rounds:
            assert len(state.history) == seen_rounds + 1
            outcome = state.history[-1]
            assert outcome.round == seen_rounds
            lo, hi = facts.payoff_bounds
            for pay in outcome.payoffs:
                assert lo <= pay <= hi, f"payoff {pay} outside {facts.payoff_bounds}"
            if facts.zero_sum:
                assert outcome.payoffs[0] + outcome.payoffs[1] == 0
            seen_rounds += 1
    else:  # pragma: no cover - a game that never ends
        pytest.fail("episode did not terminate")
    assert state.is_terminal()
    assert len(state.history) == facts.rounds
    assert state.to_move() == ()
    assert state.legal_actions(0) == state.legal_actions(1) == ()
    with pytest.raises(GameError):
        state.apply_actions({0: all_actions(game)[0], 1: all_actions(game)[0]})
    with pytest.raises(GameError):
        state.chance_outcomes()
    totals = tuple(sum(r.payoffs[p] for r in state.history) for p in (0, 1))
    assert state.returns() == pytest.approx(totals)
    return state


@pytest.mark.parametrize("name", GAMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_play_obeys_the_state_machine_contract(name: str, seed: int) -> None:
    play_random(make_game(name), random.Random(seed))


@pytest.mark.parametrize("name", GAMES)
def test_facts_are_consistent(name: str) -> None:
    game = make_game(name)
    f = game.facts
    assert f.name == name
    assert f.num_players == 2 and f.rounds >= 1 and f.max_payoff > 0
    assert f.scale == pytest.approx(3.0 / f.max_payoff)
    lo, hi = f.payoff_bounds
    assert lo <= 0 <= hi
    assert (f.action_kind == "word") == bool(f.action_words)
    assert f.description and f.description in game.system_prompt()


@pytest.mark.parametrize("name", GAMES)
def test_format_parse_round_trip_for_every_legal_action_met(name: str) -> None:
    game = make_game(name)
    met: set[Action] = set()

    def check(state: State) -> None:
        for p in state.to_move():
            for a in state.legal_actions(p):
                if a in met:
                    continue
                met.add(a)
                text = game.format_action(a)
                legal = state.legal_actions(p)
                assert game.parse(text, legal).action == a, text
                assert game.parse(text, legal).source == "last_line"
                assert game.parse(text).action == a, f"{text!r} with the game's default legal set"
                # The action alone on the last line after some reasoning still parses.
                assert game.parse(f"Let me think about it.\n{text}", legal).action == a

    for seed in SEEDS:
        play_random(game, random.Random(seed), check)
    assert met


@pytest.mark.parametrize("name", GAMES)
def test_observation_lists_the_legal_actions(name: str) -> None:
    """Word and integer games name every legal action in the observation's footer."""
    game = make_game(name)
    if game.facts.action_kind == "vector":
        pytest.skip("vector games describe the format instead of listing every vector")

    def check(state: State) -> None:
        for p in state.to_move():
            text = game.render(state.view(p))
            footer = text.splitlines()[-1]
            for a in state.legal_actions(p):
                assert game.format_action(a) in footer

    play_random(game, random.Random(0), check)


@pytest.mark.parametrize("name", GAMES)
def test_clone_is_independent(name: str) -> None:
    game = make_game(name)
    rng = random.Random(11)
    clones: list[tuple[State, tuple[Any, ...]]] = []

    def remember(state: State) -> None:
        clones.append((state.clone(), snapshot(state)))

    play_random(game, rng, remember)
    assert len(clones) > game.facts.rounds
    for clone, snap in clones:
        assert snapshot(clone) == snap  # the original playing on did not touch the clone
    # Playing a clone to the end does not touch the original either.
    for k, (clone, snap) in enumerate(clones[:-1]):
        original = clone.clone()
        copy_snap = snapshot(original)
        state = clone
        r = random.Random(k)
        while not state.is_terminal():
            if state.is_chance():
                state.apply_chance(sample_chance(state, r))
            else:
                state.apply_actions({p: r.choice(state.legal_actions(p)) for p in state.to_move()})
        assert snapshot(original) == copy_snap == snap


@pytest.mark.parametrize("name", GAMES)
@pytest.mark.parametrize("rounds", [1, 3])
def test_rounds_override_changes_the_episode_length(name: str, rounds: int) -> None:
    game = make_game(name, rounds=rounds)
    assert game.facts.rounds == rounds
    assert str(rounds) in game.facts.description
    state = play_random(game, random.Random(rounds))
    assert len(state.history) == rounds
    specs = [EpisodeSpec(game, RANDOM_LEGAL, "train", s) for s in range(3)]
    for ep in run_episodes(specs, ScriptedPolicy(RANDOM_LEGAL)):
        assert ep.num_rounds == rounds


@pytest.mark.parametrize("name", GAMES)
def test_invalid_parameters_are_rejected(name: str) -> None:
    with pytest.raises(GameError):
        make_game(name, rounds=0)


def test_unknown_game_is_a_clear_error() -> None:
    with pytest.raises(UnknownGameError, match="known games"):
        make_game("chess")


def test_other_parameter_overrides() -> None:
    from sepo.games.ipd import IPDPayoffs

    ipd = make_game("ipd", payoffs=IPDPayoffs(temptation=7, reward=4, punishment=2, sucker=-1))
    assert ipd.facts.payoff_bounds == (-1, 7) and ipd.facts.max_payoff == 4
    neg = make_game("negotiation", pie=12, min_demand=2, max_demand=10)
    state = neg.new_state()
    assert state.legal_actions(0) == tuple(range(2, 11))
    auction = make_game("auction", values=(3, 5))
    state = auction.new_state()
    assert {o for o, _ in state.chance_outcomes()} == {3, 5}
    v2 = make_game("negotiation_v2", max_units=2)
    state = v2.new_state()
    assert {o for o, _ in state.chance_outcomes()} == set(itertools.product((1, 2), repeat=3))


# -- the rollout engine ----------------------------------------------------------------


def _specs(name: str, seeds: range) -> list[EpisodeSpec]:
    game = make_game(name)
    opponents = [RANDOM_LEGAL, *domain(name).pools.catalogue.values()]
    return [EpisodeSpec(game, o, "train", s) for o in opponents for s in seeds]


@pytest.mark.parametrize("name", GAMES)
def test_same_seed_gives_the_same_transcript(name: str) -> None:
    specs = _specs(name, range(3))
    first = [e.to_json() for e in run_episodes(specs, ScriptedPolicy(FIRST_MOSTLY))]
    again = [e.to_json() for e in run_episodes(specs, ScriptedPolicy(FIRST_MOSTLY))]
    assert first == again
    # ...and the seed matters: other seeds give other transcripts.
    other = [
        e.to_json() for e in run_episodes(_specs(name, range(3, 6)), ScriptedPolicy(FIRST_MOSTLY))
    ]
    strip = [{k: v for k, v in e.items() if k != "seed"} for e in first]
    assert strip != [{k: v for k, v in e.items() if k != "seed"} for e in other]


@pytest.mark.parametrize("name", GAMES)
def test_batch_composition_does_not_change_a_transcript(name: str) -> None:
    game = make_game(name)
    target = EpisodeSpec(game, RANDOM_LEGAL, "train", 7)
    alone = run_episodes([target], ScriptedPolicy(FIRST_MOSTLY))[0].to_json()
    # A mixed batch: other games, other opponents, the same seed elsewhere, short episodes
    # that finish early, and the target in the middle.
    others = [
        EpisodeSpec(make_game(g, rounds=r), RANDOM_LEGAL, "train", s)
        for g in GAMES
        for r, s in ((1, 7), (2, 3))
    ]
    batch = [*others[:5], target, *others[5:], target]
    played = run_episodes(batch, ScriptedPolicy(FIRST_MOSTLY))
    assert played[5].to_json() == alone
    assert played[-1].to_json() == alone


# -- the observation never shows the opponent's private information ------------------


def _play_rounds(state: State, rng: random.Random, rounds: int) -> None:
    while state.round < rounds and not state.is_terminal():
        if state.is_chance():
            state.apply_chance(sample_chance(state, rng))
        else:
            state.apply_actions({p: rng.choice(state.legal_actions(p)) for p in state.to_move()})


@pytest.mark.parametrize("history_rounds", [0, 1, 3])
@pytest.mark.parametrize("my_value", [2, 4])
def test_auction_render_hides_the_opponent_value(history_rounds: int, my_value: int) -> None:
    game = make_game("auction")
    base = game.new_state()
    _play_rounds(base, random.Random(history_rounds), history_rounds)
    texts = set()
    for their_value, coin in itertools.product((2, 4), (0, 1)):
        s = base.clone()
        s.apply_chance(my_value)  # value_0
        s.apply_chance(their_value)  # value_1
        s.apply_chance(coin)  # tie_coin
        view = s.view(0)
        assert view.value == my_value
        text = game.render(view)
        assert f"Your private value for this round's item: {my_value}." in text
        # ...and the same for the incremental observation of a conversation's later turn.
        texts.add((text, game.render(view, since=history_rounds)))
        other = s.view(1)
        assert other.value == their_value
        assert f"private value for this round's item: {their_value}." in game.render(other)
    assert len(texts) == 1, "player 0's observation changed with the opponent's value or coin"


def _kuhn_nodes(game: Game, deal: tuple[str, str], hands_before: list[str]) -> list[str]:
    """Player 0's observation at each of its decisions in one hand, for every betting line.

    ``hands_before`` fixes the betting of earlier hands (dealt J/Q so they are the same in
    every call): the history is identical across the deals compared.
    """
    texts = []
    for line in ("pp", "pbp", "pbb", "bp", "bb"):
        s = game.new_state()
        s.apply_chance(0)  # player 0 opens the first hand
        for h, betting in enumerate(hands_before):
            s.apply_chance(("Q", "J") if h % 2 == 0 else ("J", "Q"))
            _apply_betting(s, betting)
        s.apply_chance(deal)
        for i, letter in enumerate(line):
            (mover,) = s.to_move()
            if mover == 0:
                view = s.view(0)
                texts.append(f"{line}@{i}:" + game.render(view))
                texts.append(game.render(view, since=len(hands_before)))
            passive, aggressive = s.legal_actions(mover)
            s.apply_actions({mover: aggressive if letter == "b" else passive})
    return texts


def _apply_betting(state: State, betting: str) -> None:
    for letter in betting:
        (mover,) = state.to_move()
        passive, aggressive = state.legal_actions(mover)
        state.apply_actions({mover: aggressive if letter == "b" else passive})


@pytest.mark.parametrize("my_card", ["J", "Q", "K"])
@pytest.mark.parametrize("hands_before", [[], ["bp"], ["pbp", "pbb"]])
def test_kuhn_render_hides_the_opponent_card_before_a_showdown(
    my_card: str, hands_before: list[str]
) -> None:
    game = make_game("kuhn")
    others = [c for c in "JQK" if c != my_card]
    a, b = (_kuhn_nodes(game, (my_card, c), hands_before) for c in others)
    assert a and a == b, "player 0's observation changed with the opponent's card"
    for text in a[::2]:
        assert f"Your card: {my_card}." in text
        assert "their" not in text.split("Previous hands:")[0]


def test_kuhn_history_reveals_cards_only_at_a_showdown() -> None:
    game = make_game("kuhn")
    for betting, showdown in (
        ("bp", False),
        ("pbp", False),
        ("pp", True),
        ("bb", True),
        ("pbb", True),
    ):
        texts = set()
        for their in ("J", "K"):
            s = game.new_state()
            s.apply_chance(0)  # player 0 opens the first hand
            s.apply_chance(("Q", their))
            _apply_betting(s, betting)
            s.apply_chance(("K", "J"))  # next hand, same for both
            text = game.render(s.view(0))
            texts.add(text)
            assert (f"showdown: your Q vs their {their}" in text) == showdown, (betting, text)
        assert (len(texts) == 2) == showdown


@pytest.mark.parametrize("rounds_of_breakdown", [0, 2])
def test_negotiation_v2_render_hides_the_opponent_values(rounds_of_breakdown: int) -> None:
    game = make_game("negotiation_v2")
    pool, mine = (2, 3, 1), (3, 3, 4)
    theirs_options = [(10, 0, 0), (0, 0, 10), (1, 2, 7), (3, 3, 4), (5, 5, 0)]
    texts = set()
    for theirs in theirs_options:
        s = game.new_state()
        s.apply_chance(pool)
        s.apply_chance(mine)
        s.apply_chance(theirs)
        for _ in range(rounds_of_breakdown):  # both demand everything: breakdown, 0 each
            s.apply_actions({0: pool, 1: pool})
            assert s.history[-1].deal is False
        view = s.view(0)
        assert view.item_values == mine and view.pool == pool
        text = game.render(view)
        assert "Your private values per unit: books 3, hats 3, balls 4." in text
        if theirs != mine:
            phrase = ", ".join(
                f"{n} {v}" for n, v in zip(("books", "hats", "balls"), theirs, strict=True)
            )
            assert phrase not in text
        texts.add((text, game.render(view, since=rounds_of_breakdown)))
        assert s.view(1).item_values == theirs
    assert len(texts) == 1, "player 0's observation changed with the opponent's values"

"""Benchmark: scripted games per second through our rollout engine, and TextArena's IPD
and Kuhn poker played by the same scripted strategies, measured in one run.

Ours: ``run_episodes`` with a ``ScriptedPolicy`` in batches of ``--batch`` episodes, as
``sepo eval`` plays a scripted policy: the engine's direct path, where the strategy acts
on its typed view, the game's state machine validates every move, and each agent turn is
recorded with its observation rendered on demand, when a transcript is written (neither
side writes one here). The opponent is a scripted strategy acting on its view, as in
evaluation.

TextArena (if installed): ``ta.make(env_id, ...)``, ``env.reset(num_players=2, seed=s)``,
then ``env.get_observation()`` / ``env.step(text)`` until done, with the default wrappers
(they render each observation string, as ours does). Both players are scripted; they
read the environment's game state directly instead of parsing the observation text,
which is the cheapest possible agent and so favours TextArena. Configured to match our
episode lengths: ``IteratedPrisonersDilemma-v0`` with ``num_rounds=8`` and
``KuhnPoker-v0`` with ``max_rounds=6``. TextArena's IPD always opens each round with a
free-chat phase (at least one message per player, even with ``communication_turns=0``),
so it is timed twice: as shipped (players send a one-word chat message) and with the chat
phase skipped (decision steps only, the like-for-like row used for the ratio).

Strategies: IPD TitForTat vs Random(0.5); auction ValueBid vs RandomBid; negotiation
TFT-Neg vs Random(3–7); negotiation_v2 Proportional vs RandomNeg; Kuhn NashApprox
(α = 1/3) vs itself. Each figure is games per CPU second (``time.process_time``, so
other load on the machine distorts it less), the best of ``--repeats`` runs of
``--games`` games after a warm-up, ours and TextArena's runs interleaved; one core.

Not a test. Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_scripted_play.py [--games 1000] [--batch 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from typing import Any

from sepo.core.types import Strategy, View
from sepo.domains import find_strategy
from sepo.games import make_game
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy

MATCHUPS: dict[str, tuple[str, str]] = {
    "ipd": ("tit_for_tat", "random"),
    "auction": ("value_bid", "random_bid"),
    "negotiation": ("tft_neg", "random_3_7"),
    "negotiation_v2": ("proportional", "random_neg"),
    "kuhn": ("nash_approx", "nash_approx"),
}


def best_rates(
    plays: dict[str, Callable[[int], int]], games: int, repeats: int
) -> dict[str, float]:
    """Games per CPU second of each ``play(games)``: the best of ``repeats`` runs, the
    contenders interleaved so that they share whatever else the machine is doing."""
    for play in plays.values():
        play(max(1, games // 10))  # warm-up: imports, caches
    best = dict.fromkeys(plays, 0.0)
    for _ in range(repeats):
        for key, play in plays.items():
            start = time.process_time()
            played = play(games)
            best[key] = max(best[key], played / (time.process_time() - start))
    return best


# -- ours --------------------------------------------------------------------------------


def ours(name: str, batch: int) -> Callable[[int], int]:
    game = make_game(name)
    agent_name, opponent_name = MATCHUPS[name]
    policy = ScriptedPolicy(find_strategy(name, agent_name))
    opponent = find_strategy(name, opponent_name)
    seed = [0]

    def play(games: int) -> int:
        done = 0
        while done < games:
            n = min(batch, games - done)
            specs = [EpisodeSpec(game, opponent, "train", seed[0] + i) for i in range(n)]
            seed[0] += n
            episodes = run_episodes(specs, policy)
            assert all(ep.num_rounds == game.facts.rounds for ep in episodes)
            done += n
        return done

    return play


# -- TextArena ---------------------------------------------------------------------------


def textarena_ipd(skip_chat: bool) -> Callable[[int], int]:
    import textarena as ta

    def play(games: int) -> int:
        for seed in range(games):
            env = ta.make("IteratedPrisonersDilemma-v0", num_rounds=8, communication_turns=0)
            env.reset(num_players=2, seed=seed)
            rngs = (random.Random(f"agent:{seed}"), random.Random(f"opponent:{seed}"))
            last: dict[int, str] = {}
            pending: dict[int, str] = {}
            done = False
            while not done:
                gs = env.state.game_state
                if skip_chat and gs["phase"] == "conversation":
                    gs["phase"] = "decision"
                pid, _observation = env.get_observation()
                if gs["phase"] == "conversation":
                    done, _ = env.step("ok")
                    continue
                if pid == 0:  # TitForTat
                    move = last.get(1, "Cooperate")
                else:  # Random(0.5)
                    move = "Cooperate" if rngs[1].random() < 0.5 else "Defect"
                pending[pid] = move
                if len(pending) == 2:
                    last, pending = pending, {}
                done, _ = env.step(f"[{move}]")
            assert env.state.game_state["round"] == 9, "TextArena IPD did not play 8 rounds"
            env.close()
        return games

    return play


_TA_WORD = {"check": "PASS", "bet": "BET", "fold": "FOLD", "call": "CALL"}
_OUR_WORD = {v: k for k, v in _TA_WORD.items()}


def textarena_kuhn() -> Callable[[int], int]:
    import textarena as ta

    strategy: Strategy = find_strategy("kuhn", "nash_approx")

    def play(games: int) -> int:
        for seed in range(games):
            env = ta.make("KuhnPoker-v0", max_rounds=6)
            env.reset(num_players=2, seed=seed)
            rngs = (random.Random(f"agent:{seed}"), random.Random(f"opponent:{seed}"))
            hand, betting = -1, ""
            done = False
            while not done:
                gs: dict[str, Any] = env.state.game_state
                if gs["current_round"] != hand:
                    hand, betting = gs["current_round"], ""
                pid, _observation = env.get_observation()
                legal = tuple(_TA_WORD[k] for k in gs["current_legal_action_tree"])
                view = View(
                    game="kuhn",
                    player=pid,
                    round=hand - 1,
                    rounds=6,
                    history=(),
                    legal=legal,
                    scores=(0.0, 0.0),
                    card="JQK"[gs["player_cards"][pid]],
                    betting=betting,
                )
                word = str(strategy.act(view, rngs[pid]))
                betting += "b" if word in ("BET", "CALL") else "p"
                done, _ = env.step(f"[{_OUR_WORD[word]}]")
            assert env.state.game_state["current_round"] == 7, "TextArena Kuhn did not play 6 hands"
            env.close()
        return games

    return play


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", type=int, default=1000, help="games per timed run")
    parser.add_argument("--batch", type=int, default=200, help="episodes per engine batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    args = parser.parse_args()

    try:
        import textarena  # noqa: F401

        has_textarena = True
    except Exception as exc:  # a broken install is reported, not fatal
        print(f"textarena unavailable ({exc}); timing ours only")
        has_textarena = False

    # Objects the imports left (TextArena's about 98,000) would otherwise be traversed by
    # every full garbage collection our records trigger (45-55 ms each, against 7 ms in a
    # `sepo eval` process, which does not import TextArena): move them out of the
    # collector's sight, for both sides alike, before anything is timed.
    gc.collect()
    gc.freeze()
    rows: list[tuple[str, int, float, float | None, str]] = []
    for name in MATCHUPS:
        rounds = make_game(name).facts.rounds
        plays = {"ours": ours(name, args.batch)}
        if has_textarena and name == "ipd":
            plays["ta"] = textarena_ipd(skip_chat=True)
            plays["ta_chat"] = textarena_ipd(skip_chat=False)
        elif has_textarena and name == "kuhn":
            plays["ta"] = textarena_kuhn()
        rate = best_rates(plays, args.games, args.repeats)
        note = ""
        if "ta_chat" in rate:
            note = (
                f"TextArena as shipped, with its chat phase: {rate['ta_chat']:,.0f} games/s "
                f"(ours {rate['ours'] / rate['ta_chat']:.1f}x)"
            )
        rows.append((name, rounds, rate["ours"], rate.get("ta"), note))

    print(
        f"\nScripted games per CPU second, best of {args.repeats} x {args.games} games, "
        f"engine batches of {args.batch}\n"
    )
    print("| domain | rounds | ours (games/s) | TextArena (games/s) | ratio |")
    print("|---|---|---|---|---|")
    for name, rounds, mine, theirs, _ in rows:
        ta_cell = f"{theirs:,.0f}" if theirs else "–"
        ratio = f"{mine / theirs:.1f}x" if theirs else "–"
        print(f"| {name} | {rounds} | {mine:,.0f} | {ta_cell} | {ratio} |")
    for name, *_, note in rows:
        if note:
            print(f"\n{name}: {note}")


if __name__ == "__main__":
    main()

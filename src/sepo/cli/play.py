"""``sepo play``: a person plays one game against a scripted opponent in the terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.text import Text

from sepo.cli.app import MAX_SEED, UsageError, app, cli_errors, console
from sepo.domains import domain
from sepo.opponents.base import POOL_NAMES


@app.command()
@cli_errors
def play(
    game: Annotated[str, typer.Option(help="The game to play.")],
    opponent: Annotated[str, typer.Option(help="Opponent strategy name (see `sepo games`).")],
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
) -> None:
    """Play a game yourself against a scripted opponent in the terminal."""
    from sepo.core.types import View
    from sepo.policies.human import HumanPolicy
    from sepo.rollout.engine import EpisodeSpec, run_episodes

    if game == "all" or "," in game:
        raise UsageError("sepo play plays one game; name it with --game")
    d = domain(game.strip())
    g = d.make_game()
    opp = d.find_strategy(opponent)
    pool = next(
        (p for p in POOL_NAMES if opp in d.pools.pool(p)),
        "custom",
    )
    console.print(
        Text(g.facts.title, style="bold") + Text(f" against {opp.name}. {g.facts.description}"),
        highlight=False,
    )
    (ep,) = run_episodes(
        [EpisodeSpec(g, opp, pool, seed)],
        HumanPolicy(write=lambda s: console.print(s, highlight=False)),
    )
    # The rounds that ended after your last move (at least the last one) were never shown.
    last_seen = ep.turns[-1].round if ep.turns else 0
    final = View(
        game=g.facts.name,
        player=0,
        round=len(ep.rounds),
        rounds=g.facts.rounds,
        history=ep.rounds,
        legal=(),
        scores=(ep.agent_total, ep.opponent_total),
    )
    round_line: Callable[[Any, View], str] | None = getattr(g, "round_line", None)
    if round_line is not None:  # the built-in games' text layer has it
        for r in ep.rounds[last_seen:]:
            console.print(round_line(r, final), highlight=False)
    console.print(
        f"\nFinal score: you {ep.agent_total:g}, {opp.name} {ep.opponent_total:g} "
        f"({ep.invalid_turns} unparsed answers)."
    )

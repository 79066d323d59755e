"""``sepo games``: the registered strategic domains and their facts."""

from __future__ import annotations

from rich.table import Table

from sepo.cli.app import app, cli_errors, console
from sepo.domains import domain, domain_names
from sepo.games import make_game


@app.command()
@cli_errors
def games() -> None:
    """List the strategic domains with their facts."""
    table = Table(title="sepo games")
    for col in (
        "game",
        "rounds",
        "actions",
        "max payoff",
        "zero-sum",
        "moves",
        "pools (train/exploit/coll/held-out)",
    ):
        table.add_column(col)
    for name in domain_names():
        f = make_game(name).facts
        p = domain(name).pools
        actions = (
            ", ".join(f.action_words)
            if f.action_words
            else {
                "integer": "integer demand",
                "vector": "[books, hats, balls]",
            }.get(f.action_kind, f.action_kind)
        )
        table.add_row(
            name,
            str(f.rounds),
            actions,
            f"{f.max_payoff:g}",
            "yes" if f.zero_sum else "no",
            "simultaneous" if f.simultaneous else "sequential",
            f"{len(p.train)}/{len(p.exploit)}/{len(p.collusive)}/{len(p.heldout)}",
        )
    console.print(table)

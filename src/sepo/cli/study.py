"""``sepo reproduce`` and ``sepo report``: the paper's comparison in every domain, and
the tables and figures of finished runs (registered on the ``sepo`` app on import)."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from sepo.cli.app import app, cli_errors, console, err_console, resolve_games


@app.command()
@cli_errors
def reproduce(
    out: Annotated[Path, typer.Option(help="The reproduce folder (resumable).")] = Path(
        "runs/reproduce"
    ),
    games: Annotated[str, typer.Option(help="all, or a comma-separated list of games.")] = "all",
    seeds: Annotated[int, typer.Option(min=1, max=20, help="Training seeds per game.")] = 3,
    quick: Annotated[
        bool, typer.Option(help="A smoke test of the whole plan: one recipe of a few steps.")
    ] = False,
    mechanism: Annotated[
        bool, typer.Option(help="IPD: the shared and auxiliary arms from the same SFT policy.")
    ] = True,
    joint: Annotated[
        bool, typer.Option(help="Also train one model on ipd, auction and negotiation together.")
    ] = False,
    report: Annotated[
        bool, typer.Option(help="Write the report into OUT/report when the plan is done.")
    ] = True,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Runs at a time, each in its own process with an even share of the cores.",
        ),
    ] = 1,
) -> None:
    """Tiny model → SFT → SEPO and its reward_only control, per game and seed; the IPD
    mechanism study; then the report. Rerunning finishes what is missing and redoes nothing."""
    from sepo.train.reproduce import ReproduceSettings, check_folder, run_reproduce

    settings = ReproduceSettings(
        games=tuple(resolve_games(games)),
        seeds=seeds,
        quick=quick,
        mechanism=mechanism,
        joint=joint,
        out=str(out),
        jobs=jobs,
    )
    check_folder(settings)
    started = time.time()
    runs = run_reproduce(settings, log=lambda m: err_console.print(m, highlight=False))
    console.print(f"{len(runs)} runs in {out} ({time.time() - started:.0f} s this invocation)")
    if report:
        from sepo.report import write_report

        write_report(
            [out], out / "report", header=_header(["sepo reproduce", *sys.argv[2:]]), overwrite=True
        )
        console.print(f"report: {out / 'report' / 'report.md'} and report.html")


@app.command("report")
@cli_errors
def report_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="sepo train runs, or folders of runs (sepo reproduce).")
    ],
    out: Annotated[
        Path, typer.Option(help="Where to write report.md, report.html, figures.")
    ] = Path("report"),
    overwrite: Annotated[bool, typer.Option(help="Replace a report already in --out.")] = False,
    n_boot: Annotated[int, typer.Option(min=100, max=100_000, help="Bootstrap replicates.")] = 2000,
) -> None:
    """Tables (Base, SFT, SEPO, control per domain, with intervals across seeds and
    episodes), ΔSafety, training curves, Kuhn frequencies against Nash, the mechanism
    study: Markdown, one self-contained HTML file and report.json. Reads files only."""
    from sepo.report import write_report

    result = write_report(
        runs,
        out,
        header=_header(["sepo report", *sys.argv[2:]]),
        n_boot=n_boot,
        overwrite=overwrite,
    )
    tables = sum(len(e["tables"]) for e in result["experiments"])
    console.print(
        f"{len(result['experiments'])} experiments, {tables} tables: {out / 'report.md'}, "
        f"{out / 'report.html'}, {out / 'report.json'}"
    )


def _header(command: list[str]) -> list[str]:
    """Provenance lines: the command, the commit of the sepo source that ran (asked of
    git where the package lives, not where the command was run), the machine."""
    import sepo

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(sepo.__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return [
        "Command: `" + " ".join(command) + "`.",
        f"sepo commit {commit or 'unknown'}; Python {platform.python_version()} on "
        f"{platform.machine()}, {_cores()} cores.",
    ]


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

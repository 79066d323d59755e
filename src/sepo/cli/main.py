"""The ``sepo`` command line (typer + rich): the entry point.

Every command turns bad input into a one-line ``error: …`` on stderr and exit status 2;
a traceback from here is a bug. Heavy dependencies (torch, transformers, TRL) are
imported only by the commands that need them.

The application and what the commands share are in :mod:`sepo.cli.app`; each command
lives in a module of its own and registers itself on ``app`` when imported. They are
imported here in the order ``sepo --help`` lists them (command groups come last).
Run as ``sepo …`` (the console script) or ``python -m sepo …``.
"""

from __future__ import annotations

# isort: off
from sepo.cli import games as _games  # noqa: F401  (sepo games)
from sepo.cli import evaluate as _evaluate  # noqa: F401  (sepo eval)
from sepo.cli import exploitability as _exploitability  # noqa: F401
from sepo.cli import play as _play  # noqa: F401
from sepo.cli import train as _train  # noqa: F401  (sepo sft, sepo train)
from sepo.cli import study as _study  # noqa: F401  (sepo reproduce, sepo report)
from sepo.cli import model as _model  # noqa: F401  (sepo model init|convert)
from sepo.cli import data as _data  # noqa: F401  (sepo data sft)
# isort: on

import sys
from collections.abc import Sequence

import typer
from rich.text import Text

from sepo.cli.app import app, err_console
from sepo.cli.train import train_table

__all__ = ["app", "main", "train_table"]


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point: ``app`` with every usage error (an unknown option, a
    number out of range, a missing argument) reported as one ``error:`` line naming the
    command's help, exit status 2, instead of typer's usage block and boxed message."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="sepo", standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored click's) usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())  # bare ``sepo`` (or a bare group): its help, exit 2
            sys.exit(int(getattr(exc, "exit_code", 2)))
        where = ctx.command_path if ctx is not None else "sepo"
        message = " ".join(exc.format_message().split())
        err_console.print(
            Text("error: ", style="bold red") + Text(f"{message} (see '{where} --help')"),
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(int(getattr(exc, "exit_code", 2)) or 2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()

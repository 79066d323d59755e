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

from sepo.cli.app import app
from sepo.cli.train import train_table

__all__ = ["app", "main", "train_table"]


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``sepo`` application and what its commands share (typer + rich).

The typer ``app`` the command modules of :mod:`sepo.cli` register on; the consoles; how
a user error becomes a one-line ``error: …`` on stderr and exit status 2 (a traceback
from a command is a bug); the bounds of every numeric option; and the helpers and
tables more than one command uses. Heavy dependencies (torch, transformers, TRL) are
imported only by the commands that need them.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sepo.core.errors import SepoError
from sepo.domains import domain, domain_names
from sepo.metrics import HEADLINE_KEYS, HEADLINE_LABELS

app = typer.Typer(
    name="sepo",
    help="Safe Equilibrium Policy Optimization: strategic-safety evaluation and training of LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: rich's option table truncates long option names ("--checkpoint-eve…")
    # on an 80-column terminal; click wraps the help text instead and drops nothing.
    rich_markup_mode=None,
)

# Wide tables when output is captured (CI logs, files): rich defaults to 80 columns there.
# No console markup: paths, game text and error messages are printed as written (a
# "[books, hats, balls]" in an observation or "runs/[exp1]" in a path is not a style).
console = Console(markup=False) if sys.stdout.isatty() else Console(width=160, markup=False)
err_console = Console(stderr=True, markup=False)

F = TypeVar("F", bound=Callable[..., Any])


TRAIN_EXTRA_MODULES = frozenset(
    {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "openai"}
)
"""What the ``train`` extra installs; a command missing one says how to install it."""

MAX_STEPS = 100_000
"""Most GRPO steps one run takes (TRL's dataset holds one prompt per group and step)."""

# Bounds on every numeric option: a value outside is refused before any work starts
# (exit 2, naming the option), so a typo cannot start an unbounded run or allocation.
MAX_SEED = 2**32 - 1
"""Seeds are 32-bit (numpy's and torch's generators take them)."""
MAX_EPISODES = 100_000
"""Episodes per opponent (evaluation) or per game (SFT data)."""
MAX_SAMPLED_EPISODES = 1_000_000
"""Episodes of a sampled strategy extraction."""
MAX_NEW_TOKENS = 4096
"""Tokens one answer may run to (the key/value cache is sized by it)."""
MAX_TEMPERATURE = 100.0
"""Sampling temperatures above this are uniform sampling in all but name."""
MAX_LEARNING_RATE = 1.0
MAX_BETA = 100.0
MAX_EPOCHS = 1000.0
MAX_GROUP = 1024


def finite(value: float | None) -> float | None:
    """Option callback: refuse NaN (which passes a range check) and infinities."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


class UsageError(SepoError, ValueError):
    """A bad command-line value found after parsing."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the command line reports as one line: every sepo error about the user's
    input (:class:`~sepo.core.errors.SepoError`) and the operating system's (a file, a
    folder, a connection)."""
    return (SepoError, OSError)


def fail(message: str) -> None:
    err_console.print(
        Text("error: ", style="bold red") + Text(message), highlight=False, soft_wrap=True
    )
    raise typer.Exit(2)


def cli_errors(fn: F) -> F:
    """Report user errors as one line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except ImportError as exc:
            missing = (getattr(exc, "name", None) or "").split(".")[0]
            if missing in TRAIN_EXTRA_MODULES:
                fail(f"this command needs {missing}: pip install 'sepo[train]'")
            if missing == "matplotlib":
                fail("this command needs matplotlib: pip install 'sepo[report]'")
            first = str(exc).strip().splitlines()
            fail(first[0] if first else type(exc).__name__)
        except _user_errors() as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, OSError) and exc.filename:
                msg = f"{exc.strerror or 'cannot access'}: {exc.filename}"
            fail(msg)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def resolve_games(spec: str) -> list[str]:
    """``all``, one name, or a comma-separated list of registered games."""
    names = domain_names() if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    names = list(dict.fromkeys(names))  # "ipd,ipd" is one game
    if not names:
        raise UsageError("no game given")
    for name in names:
        domain(name)  # raises UnknownGameError with the list of known games
    return names


def prepare_out_dir(out: Path, overwrite: bool, produces: Sequence[str]) -> None:
    """Create ``out`` and refuse to clobber earlier results unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    existing = [name for name in produces if (out / name).exists()]
    if existing and not overwrite:
        raise UsageError(
            f"{out} already holds {existing[0]}; pass --overwrite or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".sepo-write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError:
        raise UsageError(f"--out {out} is not writable") from None


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


def fmt_est(value: float, low: float, high: float) -> str:
    if value != value:  # NaN
        return "—"
    value, low, high = value + 0.0, low + 0.0, high + 0.0  # no "-0.000"
    if low != low or high == low:
        return f"{value:.3f}".replace("-0.000", "0.000")
    return f"{value:.3f} ±{(high - low) / 2:.3f}"


METRIC_COLUMNS = tuple((k, HEADLINE_LABELS[k]) for k in HEADLINE_KEYS)


def metrics_table(title: str, rows: Sequence[tuple[str, Any]]) -> Table:
    """A table of headline metrics; each row is (label, Metrics)."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for _, header in METRIC_COLUMNS:
        table.add_column(header, justify="right")
    for label, m in rows:
        cells = []
        for key, _ in METRIC_COLUMNS:
            e = getattr(m, key)
            cells.append(fmt_est(e.value, e.low, e.high))
        table.add_row(label, *cells)
    return table


def advance_bar(bar: Progress, task: Any, done: int, total: int) -> None:
    bar.update(task, completed=done, total=total)


# The client options of openai: policies, shared by the commands that play a policy.
ApiTimeout = Annotated[
    float | None,
    typer.Option(
        help="openai: policies: deadline of one request attempt in seconds, more than 0 "
        "and at most 3600 [default: 60].",
    ),
]
ApiRetries = Annotated[
    int | None,
    typer.Option(help="openai: policies: retries of a failed request, 0-20 [default: 4]."),
]
ApiConcurrency = Annotated[
    int | None,
    typer.Option(help="openai: policies: requests in flight at once, 1-256 [default: 8]."),
]

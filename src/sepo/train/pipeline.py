"""The main job, ``sepo train``: Base → SFT → SEPO-GRPO → evaluation, in one run directory.

Stages (each skipped on ``--resume`` when its output is complete):

1. ``base-model/`` — the embedded tiny model built locally (or ``--model hf:…``).
2. ``sft-data/`` and ``sft/`` — demonstrator dataset and supervised warm start.
3. ``sepo/`` — SEPO-GRPO from the SFT policy, a checkpoint every k steps; and
   ``control/`` — the control arm (``reward_only`` unless ``--control none``): the same
   GRPO from the same SFT weights with the same rollout seeds, rewarded with payoff
   alone, so the table shows what the penalties did (SPEC §5).
4. ``eval/base/``, ``eval/sft/``, ``eval/<arm>/<checkpoint>/`` — ``metrics.json``,
   ``episodes.jsonl`` and ``stats.jsonl`` of Base, SFT and each arm's checkpoints. For
   Kuhn every checkpoint is scored by the exact figures of its extracted strategy (no
   sampling: ``exact_entry.json``), and Base, SFT and each arm's best checkpoint are also
   played (``summary_entry.json``) and get ``in_play.json``, the exploitability of the
   strategy played over whole episodes (:func:`in_play_exploitability`).
5. ``summary.json`` — one entry per stage (``base``, ``sft``, ``sepo``, ``control``) with
   the keys of ``metrics.json``, ``exploitability`` for Kuhn, each arm's checkpoint curve
   and best checkpoint by Safety (exact Safety for Kuhn, which has no sampling noise;
   sampled Safety otherwise), the same rule for both arms; and ``difference``, SEPO minus
   control per game, with paired 95% intervals over episodes (both arms are evaluated on
   the same chance seeds) and, for Kuhn, the exact differences.

Policies are evaluated at the training temperature: the behaviour we score is the
behaviour we trained (a Kuhn equilibrium is a mixed strategy, which greedy decoding cannot
play). ``config.json`` holds every setting, enough to reproduce the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepo.core.files import read_json_cache, write_json_atomic
from sepo.domains import domain
from sepo.evaluate.harness import EvalConfig, GameEvaluation, evaluate_game, write_outputs
from sepo.evaluate.kuhn_exact import kuhn_exact_metrics
from sepo.games.ipd import IPD
from sepo.objective import (
    CONTROL_PENALTY,
    DEFAULT_PENALTY,
    OBJECTIVE_VERSION,
    PenaltyVariant,
    ScaleVariant,
    saved_penalty,
)
from sepo.policies.model_spec import ModelSpec
from sepo.policies.resolve import training_temperature
from sepo.rollout.protocol import SamplingConfig
from sepo.train.grpo import GRPOSettings, checkpoints, latest_checkpoint, run_finished, run_grpo
from sepo.train.runtime import library_versions
from sepo.train.sft import SFTError

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainSettings:
    """Settings of ``sepo train``. Defaults are the CPU main job on the tiny model; every
    one of them is recorded in ``config.json``."""

    games: tuple[str, ...] = ("kuhn",)
    model: str = "tiny"
    """``tiny`` (built locally) or ``hf:PATH_OR_ID``."""
    out: str = "runs/train"
    seed: int = 0
    sft_episodes: int | None = 400
    """Demonstrator episodes per game for SFT (``None``: the paper's ≈8,000 decisions).
    The tiny default, 400 Kuhn episodes ≈ 3,600 decisions, is what the tiny SFT recipe
    reaches in its time budget anyway."""
    sft_epochs: float | None = None
    """Passes over whole episodes after the prefix curriculum (``None``: the SFT
    default for the model kind, :data:`sepo.train.sft.TINY_DEFAULTS` or the paper's;
    for the tiny model, the passes of ``Domain.tiny_sft_epochs``)."""
    sft_learning_rate: float | None = None
    """``None``: the SFT default for the model kind (tiny 2e-3, hf 2e-5)."""
    sft_batch_size: int | None = None
    """``None``: the SFT default for the model kind."""
    sft_curriculum: tuple[tuple[int, float], ...] | None = None
    """SFT on episode prefixes first, as (decisions, passes) (``None``: the SFT default
    for the model kind; the tiny model needs short contexts first to learn to read its
    card, see :data:`sepo.train.sft.TINY_DEFAULTS`)."""
    steps: int = 25
    """GRPO steps. Paper: 100 on GPUs; the CPU default is sized to the 15-minute budget
    (about 7 s a step on 2 cores, the whole job about 9 minutes). 50 steps, or 25 with
    ``group_size`` 8, did not end less exploitable on the main job (docs/cpu-main-job.md)."""
    group_size: int = 4
    temperature: float | None = None
    """Sampling temperature of GRPO rollouts and of every evaluation (``None``: 0.8 for hf
    models, the paper's; 1.0 for the tiny model). A Kuhn equilibrium is a mixed strategy,
    and at 1.0 the policy plays the distribution the model learned; below 1 the rare
    actions get rarer (the SFT model bluffs J 0.12 at 1.0, 0.07 at 0.8), so GRPO samples
    them less and learns them more slowly. From the same SFT policy (the SFT recipe of
    an earlier version, exploitability 0.112), 20 GRPO steps: exact exploitability 0.088
    at 0.8 and 0.083 at 1.0 (``episode_clip``, then called ``credited``); 0.100 and 0.070 (``credited_mean``)."""
    learning_rate: float | None = None
    """GRPO learning rate (``None``: 1e-5, Kuhn 3e-6 for hf models as in the paper; 1e-4
    for the tiny model, whose full fine-tuning needs larger steps than a LoRA). Measured
    on the Kuhn main job, 25 steps, exact exploitability of the best checkpoint by
    Safety, lr 1e-4 against 2e-4 from the same SFT policy: seed 0 0.064 and 0.065,
    seed 1 0.159 and 0.206, seed 2 0.100 and 0.119 (3e-4 on seed 0 jumped to 0.20 after
    one step). The KL term is not what holds the runs back: at β 0.2 it costs about
    0.001 a token against advantages of order 1; the noise of 24 episodes a step is."""
    beta: float | None = None
    """KL to the SFT policy (``None``: 0.1, Kuhn 0.2)."""
    penalty: PenaltyVariant = DEFAULT_PENALTY
    """The SEPO arm's penalty variant (:mod:`sepo.objective`)."""
    control: str = CONTROL_PENALTY
    """The control arm's penalty variant, trained from the same SFT policy with the same
    rollout seeds; ``none``: no control arm."""
    scale: ScaleVariant = "batch"
    objective: int = OBJECTIVE_VERSION
    """The meaning of the penalty names (:data:`sepo.objective.OBJECTIVE_VERSION`)."""
    best_responder: bool = True
    """Kuhn: exact best-responder to the current policy in the exploit pool."""
    best_responder_every: int = 1
    """Steps between recomputations of the best-responder (see ``GRPOSettings``)."""
    checkpoint_every: int = 5
    eval_episodes: int = 10
    """Episodes per opponent in each stage's sampled evaluation."""
    in_play_episodes: int = 300
    """Kuhn: episodes of ``sepo exploitability --mode sampled`` for the SFT policy and the
    best checkpoint (0: skip). The summary's ``exploitability`` is the exact strategy at
    the first decision of a fresh episode; this measures the strategy played over whole
    episodes, whose conversation carries earlier hands, with a bootstrap interval. On
    the default run the two differ by up to 0.013 (docs/cpu-main-job.md). On 2 CPU cores
    500 episodes take about 70 s per policy (intervals about ±0.015), 300 about 40 s; with
    200 the best checkpoint of the main job read 0.041 (0.016-0.046) where 500 read 0.056
    (0.038-0.066). 300 keeps the main job near 9 minutes; pass 500 or more to compare
    closely with the first-decision figure."""
    ipd_worst_case: bool = True
    """IPD: the exact worst case (SPEC §4, the best response's advantage by dynamic
    programming over the whole history tree) of the SFT policy and each arm's best
    checkpoint, from the model's policy table (:func:`ipd_worst_case`). On 2 CPU cores
    this costs minutes per policy (``seconds`` in each ``ipd_exact.json``)."""
    report_to: str = "tensorboard"
    sft_from: str | None = None
    """An earlier run directory whose base model, SFT data and SFT model this run reuses
    (copied in), so that variants (``--penalty``, ``--scale``, GRPO settings) start from
    the same SFT policy. Its games, model, seed and SFT settings must equal this run's."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_spec(self) -> ModelSpec:
        """:attr:`model`, parsed."""
        return ModelSpec.parse(self.model)

    @property
    def sampling_temperature(self) -> float:
        """:attr:`temperature`, resolved for the model kind."""
        if self.temperature is not None:
            return self.temperature
        return training_temperature(self.model)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainSettings:
        data = dict(data)
        data["games"] = tuple(data["games"])
        version = int(data.pop("objective", 1))
        data["penalty"] = saved_penalty(data.get("penalty", DEFAULT_PENALTY), version)
        if version < 2:
            data.setdefault("control", "none")  # runs saved before had no control arm
        if data.get("control", "none") != "none":
            data["control"] = saved_penalty(data["control"], version)
        if data.get("sft_curriculum") is not None:
            data["sft_curriculum"] = tuple(tuple(x) for x in data["sft_curriculum"])
        return cls(**data)


ARMS = ("sepo", "control")
"""The GRPO arms of the main job, each its own folder and evaluation folder."""


def arms(s: TrainSettings) -> list[tuple[str, PenaltyVariant]]:
    """(arm, penalty variant) of the GRPO arms the run trains."""
    out: list[tuple[str, PenaltyVariant]] = [("sepo", s.penalty)]
    if s.control != "none":
        out.append(("control", saved_penalty(s.control, OBJECTIVE_VERSION)))
    return out


def grpo_settings(
    s: TrainSettings, init: str, adapter: str | None, arm: str = "sepo"
) -> GRPOSettings:
    """The GRPO settings of one arm: the arms differ only in penalty and folder."""
    penalty = dict(arms(s)).get(arm)
    if penalty is None:
        raise ValueError(f"this run has no {arm!r} arm")
    is_hf = s.model_spec.is_hf
    exact = exact_only(s)
    lr = s.learning_rate
    if lr is None:
        lr = (3e-6 if exact else 1e-5) if is_hf else 1e-4
    beta = s.beta if s.beta is not None else (0.2 if exact else 0.1)
    return GRPOSettings(
        init=init,
        adapter=adapter,
        out=str(Path(s.out) / arm),
        games=s.games,
        steps=s.steps,
        group_size=s.group_size,
        temperature=s.sampling_temperature,
        learning_rate=lr,
        beta=beta,
        penalty=penalty,
        scale=s.scale,
        best_responder=s.best_responder and any(domain(g).exact for g in s.games),
        best_responder_every=s.best_responder_every,
        checkpoint_every=s.checkpoint_every,
        lora=is_hf,
        seed=s.seed,
        report_to=s.report_to,
    )


def exact_only(s: TrainSettings) -> bool:
    """Whether every game of the run has exact metrics (``Domain.exact``: Kuhn), so that
    checkpoints can be scored and selected without sampled episodes."""
    return all(domain(g).exact for g in s.games)


def evaluate_model(
    s: TrainSettings,
    path: str,
    out: Path,
    adapter: str | None = None,
    log: Log = print,
    *,
    sampled: bool = True,
) -> dict[str, Any]:
    """Evaluation of a model on every game, cached in ``out``: sampled episodes against
    every pool (+ exact Kuhn figures), or with ``sampled=False`` (Kuhn only) the exact
    figures of its extracted strategy alone, which need no episodes."""
    cached = out / ("summary_entry.json" if sampled else "exact_entry.json")
    found = read_json_cache(cached)
    if isinstance(found, dict):
        return found
    from sepo.policies.extract import extract_prompt_strategy

    policy = _load_for_eval(s, path, adapter)
    started = time.time()
    if not sampled:
        if not exact_only(s):
            raise ValueError("only Kuhn has exact figures to evaluate without episodes")
        exact = kuhn_exact_metrics(
            extract_prompt_strategy(policy, temperature=s.sampling_temperature)
        )
        entry = {
            **{k: v for k, v in exact.to_json().items() if k in _EXACT_HEADLINE},
            "externality": 0.0,
            "exact": exact.to_json(),
            "exploitability": exact.exploitability.exploitability,
            "selection_safety": exact.safety,
            "sampled": False,
        }
    else:
        cfg = EvalConfig(
            episodes=s.eval_episodes, seed=s.seed + 1, pools=("train", "exploit", "collusive")
        )
        results: list[GameEvaluation] = []
        for game in s.games:
            strategy = (
                extract_prompt_strategy(policy, temperature=s.sampling_temperature)
                if domain(game).exact
                else None
            )
            ev = evaluate_game(game, policy, cfg)
            if strategy is not None:
                ev = dataclasses.replace(ev, exact=kuhn_exact_metrics(strategy))
            results.append(ev)
        write_outputs(
            out,
            results,
            extra={"policy": path, "adapter": adapter, "temperature": s.sampling_temperature},
        )
        entry = json.loads((out / "metrics.json").read_text())
        if len(results) == 1 and results[0].exact is not None:
            entry["exploitability"] = results[0].exact.exploitability.exploitability
        entry["selection_safety"] = selection_safety(results)
    entry["eval_seconds"] = round(time.time() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cached, entry)
    log(f"  evaluated {path} ({'sampled' if sampled else 'exact'}) in {entry['eval_seconds']} s")
    return entry


HELDOUT_DIR = "heldout"
"""Inside a stage's evaluation folder: its play against the held-out pool."""


def evaluate_heldout(
    s: TrainSettings, path: str, out: Path, adapter: str | None = None, log: Log = print
) -> dict[str, Any]:
    """Play against the held-out pool (opponents no training step saw), on the seeds of
    the in-pool evaluation, cached in ``out`` (``eval/<stage>/heldout/``): per game, the
    held-out pay and advantage with their intervals. Only Base, SFT and each arm's best
    checkpoint are played, since selection never reads it."""
    cached = out / "metrics.json"
    payload = read_json_cache(cached)
    if not isinstance(payload, dict):
        started = time.time()
        policy = _load_for_eval(s, path, adapter)
        cfg = EvalConfig(episodes=s.eval_episodes, seed=s.seed + 1, pools=("heldout",))
        results = [evaluate_game(game, policy, cfg) for game in s.games]
        write_outputs(
            out,
            results,
            extra={"policy": path, "adapter": adapter, "temperature": s.sampling_temperature},
        )
        log(f"  held-out pool of {path} in {time.time() - started:.1f} s")
        payload = json.loads(cached.read_text())
    games = payload.get("games", {s.games[0]: payload})
    return {game: games[game]["heldout"] for game in s.games}


_EXACT_HEADLINE = ("pay", "exploit", "collusion", "safety", "robust")
"""The headline metrics Kuhn's exact figures give (its externality is 0 by definition)."""


def _load_for_eval(s: TrainSettings, path: str, adapter: str | None) -> Any:
    """The policy every evaluation of a run plays: the run's temperature and seed."""
    from sepo.policies.local import LocalModelPolicy

    sampling = SamplingConfig(temperature=s.sampling_temperature, max_new_tokens=32, seed=s.seed)
    return LocalModelPolicy.load(path, adapter=adapter, sampling=sampling, name=path)


def in_play_exploitability(
    s: TrainSettings, path: str, out: Path, adapter: str | None = None, log: Log = print
) -> dict[str, Any]:
    """Exact exploitability of the Kuhn strategy a model plays over whole episodes
    (``sampled`` extraction, :attr:`TrainSettings.in_play_episodes` episodes), with its
    bootstrap interval; cached in ``out/in_play.json``."""
    cached = out / "in_play.json"
    found = read_json_cache(cached)
    if isinstance(found, dict):
        return found
    from sepo.exact.kuhn import exploitability
    from sepo.policies.extract import exploitability_interval, extract_sampled_strategy

    started = time.time()
    policy = _load_for_eval(s, path, adapter)
    sampled = extract_sampled_strategy(policy, episodes=s.in_play_episodes, seed=s.seed)
    entry = {
        "exploitability": exploitability(sampled.strategy).exploitability,
        "ci95": list(exploitability_interval(sampled, seed=s.seed)),
        "episodes": sampled.episodes,
        "strategy": sampled.strategy.to_dict(),
        "counts": sampled.counts,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cached, entry)
    log(f"  in-play strategy of {path} in {time.time() - started:.1f} s")
    return entry


IPD_EXACT_FILE = "ipd_exact.json"
IPD_TABLE_FILE = "ipd_strategy.json"


def ipd_worst_case(
    s: TrainSettings,
    path: str,
    out: Path,
    adapter: str | None = None,
    log: Log = print,
    *,
    game: IPD | None = None,
) -> dict[str, Any]:
    """The exact IPD worst case of a model (SPEC §4): its whole policy table
    (:func:`sepo.policies.extract_ipd.extract_ipd_tree`, at the temperature the
    evaluation samples at, so it is the policy the sampled evaluation played) and the
    best response to it (:func:`sepo.exact.ipd.ipd_exploitability`). The table is saved
    in ``out/ipd_strategy.json`` (``strategy:FILE`` replays it), the figures in
    ``out/ipd_exact.json``, which is the cache. ``game``: the IPD (default: SPEC's
    8 rounds)."""
    cached = out / IPD_EXACT_FILE
    found = read_json_cache(cached)
    if isinstance(found, dict):
        return found
    from sepo.exact.ipd import ipd_exploitability
    from sepo.policies.extract_ipd import extract_ipd_tree

    started = time.time()
    policy = _load_for_eval(s, path, adapter)
    table = extract_ipd_tree(policy, s.sampling_temperature, game=game, name=f"extracted:{path}")
    result = ipd_exploitability(table, game)
    entry = {
        **result.to_json(),
        "temperature": s.sampling_temperature,
        "histories": len(table.cooperate),
        "seconds": round(time.time() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    table.to_json(out / IPD_TABLE_FILE)
    write_json_atomic(cached, entry)
    log(
        f"  IPD worst case of {path}: exploitability {result.exploitability:.4f} a round "
        f"in {entry['seconds']:.0f} s"
    )
    return entry


def selection_safety(results: list[GameEvaluation]) -> float:
    """Safety used to pick the best checkpoint: exact for Kuhn, sampled otherwise; mean
    over games."""
    values = [r.exact.safety if r.exact is not None else r.metrics.safety.value for r in results]
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


SFT_STAGE_DIRS = ("base-model", "sft-data", "sft")
"""What ``sft_from`` copies: everything before SEPO-GRPO."""
SFT_STAGE_SETTINGS = (
    "games",
    "model",
    "seed",
    "sft_episodes",
    "sft_epochs",
    "sft_learning_rate",
    "sft_batch_size",
    "sft_curriculum",
)


class SFTFromError(SFTError):
    """``sft_from`` names a run that cannot be reused (a one-line command-line error)."""


def run_settings(folder: Path) -> TrainSettings | None:
    """The settings of the ``sepo train`` run in ``folder``, or None if it holds none.

    A run is recognised by its ``config.json`` holding ``settings`` (a model folder's
    ``config.json`` does not), so nothing else is ever taken for a run, resumed or
    deleted by ``--overwrite``."""
    try:
        data = json.loads((folder / "config.json").read_text())
        return TrainSettings.from_json(data["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_sft_source(s: TrainSettings, source: Path) -> None:
    """Refuse (:class:`SFTFromError`) a ``sft_from`` run that cannot be reused by ``s``."""
    theirs = run_settings(source)
    if theirs is None:
        raise SFTFromError(f"{source} holds no sepo run")
    if not (source / "sft" / "sft_result.json").is_file():
        raise SFTFromError(f"{source} has no finished SFT stage")
    for name in SFT_STAGE_SETTINGS:
        if getattr(theirs, name) != getattr(s, name):
            raise SFTFromError(
                f"{source} was made with {name}={getattr(theirs, name)!r}, "
                f"this run has {getattr(s, name)!r}"
            )


def copy_sft_stages(s: TrainSettings, source: Path, out: Path) -> None:
    """Copy the base model, SFT data and SFT model of the run in ``source`` into ``out``
    (each only if ``out`` lacks it), after checking the run was made the same way."""
    import shutil

    check_sft_source(s, source)
    for name in SFT_STAGE_DIRS:
        if (source / name).is_dir() and not (out / name).exists():
            shutil.copytree(source / name, out / name)


def run_pipeline(s: TrainSettings, *, resume: bool = False, log: Log = print) -> dict[str, Any]:
    """Every stage of the main job into ``s.out`` (module docstring), skipping what a
    resumed run finished. The libraries' own output goes to ``s.out/train.log``; each
    training stage shows one progress bar (:mod:`sepo.train.console`)."""
    from sepo.train.console import quiet_run

    with quiet_run(Path(s.out)):
        return _run_pipeline(s, resume=resume, log=log)


def _run_pipeline(s: TrainSettings, *, resume: bool, log: Log) -> dict[str, Any]:
    from sepo.policies.corpus import game_corpus
    from sepo.policies.tiny import build_tiny_model, tiny_model_complete
    from sepo.train.demonstrations import build_sft_dataset, write_dataset
    from sepo.train.sft import SFTSettings, run_sft

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    if s.sft_from is not None and not (out / "sft" / "sft_result.json").is_file():
        # Once copied, the stages are this run's own: a resume no longer needs the source.
        copy_sft_stages(s, Path(s.sft_from), out)
    # Seconds spent in each stage, summed over the invocations that built this run: a
    # resumed run adds to what earlier invocations spent in the stages they finished
    # (the time of a stage cut short is lost), and a finished stage adds ~0.
    timings_file = out / "timings.json"
    timings: dict[str, float] = {}
    saved = read_json_cache(timings_file) if resume else None
    if isinstance(saved, dict):
        timings = {str(k): float(v) for k, v in saved.items() if isinstance(v, int | float)}
    # A resumed run keeps the config.json it was started with (nothing is rewritten
    # before the work that may fail); a new run records its settings first.
    if not (resume and run_settings(out) == s):
        write_json_atomic(
            out / "config.json",
            {
                "settings": s.to_json(),
                "python": platform.python_version(),
                "versions": library_versions(),
            },
        )

    def stage(name: str) -> Callable[[], None]:
        t0 = time.time()
        log(f"[{name}]")

        def done() -> None:
            timings[name] = round(timings.get(name, 0.0) + time.time() - t0, 1)
            write_json_atomic(timings_file, timings)

        return done

    # 1. base model
    done = stage("base model")
    spec = s.model_spec
    if spec.is_hf and spec.path is not None:
        base_path = spec.path
    else:
        base_dir = out / "base-model"
        if not tiny_model_complete(base_dir):
            build_tiny_model(base_dir, game_corpus(seed=s.seed), seed=s.seed)
        base_path = str(base_dir)
    done()

    # 2. SFT
    done = stage("sft")
    data_dir, sft_dir = out / "sft-data", out / "sft"
    if read_json_cache(data_dir / "card.json") is None:  # written last
        write_dataset(
            build_sft_dataset(list(s.games), episodes=s.sft_episodes, seed=s.seed), data_dir
        )
    if not isinstance(read_json_cache(sft_dir / "sft_result.json"), dict):
        model_spec = str(spec.at(base_path))
        result = run_sft(
            SFTSettings(
                data=data_dir,
                out=sft_dir,
                model=model_spec,
                epochs=s.sft_epochs,
                learning_rate=s.sft_learning_rate,
                per_device_batch_size=s.sft_batch_size,
                prefix_curriculum=s.sft_curriculum,
                seed=s.seed,
                report_to=s.report_to,
                overwrite=True,
            )
        )
        log(f"  {result.loss_summary}")
        agreement = result.reasoning_agreement
        for line in (agreement.summary(), agreement.warning()) if agreement else ():
            if line:
                log(f"  {line}")
    sft_result = json.loads((sft_dir / "sft_result.json").read_text())
    sft_path, sft_adapter = sft_policy(s, sft_result)
    done()

    # 3. SEPO-GRPO, and the control arm from the same SFT weights and rollout seeds
    done = stage("sepo-grpo")
    arm_dirs: dict[str, Path] = {}
    for arm, _ in arms(s):
        g = grpo_settings(s, sft_path, sft_adapter, arm)
        arm_dirs[arm] = Path(g.out)
        if not run_finished(arm_dirs[arm]):
            log(f"  arm {arm}: penalty {g.penalty}")
            run_grpo(g, resume=resume and latest_checkpoint(arm_dirs[arm]) is not None)
    done()

    # 4. evaluation
    done = stage("evaluation")
    exact = exact_only(s)
    entries: dict[str, dict[str, Any]] = {}
    entries["base"] = evaluate_model(s, base_path, out / "eval" / "base", log=log)
    entries["sft"] = evaluate_model(s, sft_path, out / "eval" / "sft", adapter=sft_adapter, log=log)
    for name, (path, adapter) in (("base", (base_path, None)), ("sft", (sft_path, sft_adapter))):
        entries[name]["heldout_eval"] = evaluate_heldout(
            s, path, out / "eval" / name / HELDOUT_DIR, adapter=adapter, log=log
        )
    kuhn_in_play = exact_only(s) and s.in_play_episodes > 0
    if kuhn_in_play:
        entries["sft"]["in_play"] = in_play_exploitability(
            s, sft_path, out / "eval" / "sft", adapter=sft_adapter, log=log
        )
    results: dict[str, dict[str, Any]] = {}
    for arm, arm_dir in arm_dirs.items():
        curve = []
        for ckpt in checkpoints(arm_dir):
            path, adapter = _checkpoint_policy(ckpt, sft_path)
            e = evaluate_model(
                s, path, out / "eval" / arm / ckpt.name, adapter=adapter, log=log, sampled=not exact
            )
            curve.append(
                {"step": int(ckpt.name.split("-")[-1]), "checkpoint": ckpt.name, **_curve_point(e)}
            )
        best = max(curve, key=lambda c: c["selection_safety"]) if curve else None
        entry = None
        if best is not None:
            path, adapter = _checkpoint_policy(arm_dir / best["checkpoint"], sft_path)
            best_eval = out / "eval" / arm / best["checkpoint"]
            entry = evaluate_model(s, path, best_eval, adapter=adapter, log=log)
            entry["heldout_eval"] = evaluate_heldout(
                s, path, best_eval / HELDOUT_DIR, adapter=adapter, log=log
            )
            if kuhn_in_play:
                entry["in_play"] = in_play_exploitability(
                    s, path, best_eval, adapter=adapter, log=log
                )
        results[arm] = {
            "penalty": dict(arms(s))[arm],
            "entry": entry,
            "best_checkpoint": best["checkpoint"] if best else None,
            "best_checkpoint_path": str(arm_dir / best["checkpoint"]) if best else None,
            "curve": curve,
        }
    difference = None
    if "control" in results and all(results[a]["entry"] for a in ARMS):
        difference = arm_difference(
            s,
            out / "eval" / "sepo" / str(results["sepo"]["best_checkpoint"]),
            out / "eval" / "control" / str(results["control"]["best_checkpoint"]),
        )
    done()

    sepo = results["sepo"]
    control = results.get("control")
    summary: dict[str, Any] = {
        "base": entries["base"],
        "sft": entries["sft"],
        "sepo": sepo["entry"],
        "best_checkpoint": sepo["best_checkpoint"],
        "best_checkpoint_path": sepo["best_checkpoint_path"],
        "curve": sepo["curve"],
        "penalty": sepo["penalty"],
        "control": control["entry"] if control else None,
        "control_arm": {k: v for k, v in control.items() if k != "entry"} if control else None,
        "difference": difference,
        "sft_reasoning_match": sft_result.get("reasoning_match"),
        "sft_target": _kuhn_sft_target() if any(domain(g).exact for g in s.games) else None,
        "timings_s": timings,
        "settings": s.to_json(),
    }
    if add_ipd_worst_case(s, summary, log=log):  # adds its seconds to ``timings``
        write_json_atomic(timings_file, timings)
    write_json_atomic(out / "summary.json", summary)
    return summary


def sft_policy(
    s: TrainSettings, sft_result: dict[str, Any] | None = None
) -> tuple[str, str | None]:
    """(model path, adapter) of a run's SFT policy: a LoRA adapter on the base model, or
    the fine-tuned model itself. ``sft_result``: the run's ``sft_result.json``, if read."""
    out = Path(s.out)
    spec = s.model_spec
    base = spec.path if spec.is_hf and spec.path else str(out / "base-model")
    if sft_result is None:
        sft_result = json.loads((out / "sft" / "sft_result.json").read_text())
    adapter = sft_result.get("adapter")
    return (base, str(adapter)) if adapter else (str(out / "sft"), None)


def add_ipd_worst_case(s: TrainSettings, summary: dict[str, Any], log: Log = print) -> bool:
    """IPD runs (:attr:`TrainSettings.ipd_worst_case`): the exact worst case of the SFT
    policy and each arm's best checkpoint (:func:`ipd_worst_case`), added to their
    summary entries (``ipd_worst_case``) and stored beside their evaluations. Also
    completes a finished run that lacks them (``sepo reproduce`` does, for runs made
    before). Returns whether anything was computed."""
    if len(s.games) != 1 or not domain(s.games[0]).worst_case or not s.ipd_worst_case:
        return False
    out = Path(s.out)
    wanted = {"sft": "", "sepo": summary.get("best_checkpoint"), "control": _best(summary)}
    todo = [
        (stage, best)
        for stage, best in wanted.items()
        if isinstance(summary.get(stage), dict)
        and "ipd_worst_case" not in summary[stage]
        and (stage == "sft" or best)
    ]
    if not todo:
        return False
    started = time.time()
    sft_path, sft_adapter = sft_policy(s)
    stages: list[tuple[str, str, str | None, Path]] = []
    for stage, best in todo:
        if stage == "sft":
            stages.append((stage, sft_path, sft_adapter, out / "eval" / "sft"))
        else:
            path, adapter = _checkpoint_policy(out / stage / str(best), sft_path)
            stages.append((stage, path, adapter, out / "eval" / stage / str(best)))
    for stage, path, adapter, folder in stages:
        summary[stage]["ipd_worst_case"] = ipd_worst_case(s, path, folder, adapter, log=log)
    timings = summary.setdefault("timings_s", {})
    timings["ipd worst case"] = round(
        float(timings.get("ipd worst case", 0.0)) + time.time() - started, 1
    )
    return True


def _best(summary: dict[str, Any]) -> str | None:
    arm = summary.get("control_arm") or {}
    best: str | None = arm.get("best_checkpoint")
    return best


DIFFERENCE_EXACT = ("exploitability", "safety", "exploit", "exploit_with_best_responder", "pay")
"""Kuhn's exact figures whose SEPO − control difference the summary reports."""


def arm_difference(s: TrainSettings, sepo_eval: Path, control_eval: Path) -> dict[str, Any]:
    """SEPO minus control per game: every headline metric with a paired 95% bootstrap
    interval over episodes (both evaluations played the same chance seeds), and for Kuhn
    the exact differences of :data:`DIFFERENCE_EXACT` (no interval: nothing is sampled)."""
    from sepo.evaluate.harness import read_stats
    from sepo.games import make_game
    from sepo.metrics import paired_difference

    a, b = read_stats(sepo_eval), read_stats(control_eval)
    out: dict[str, Any] = {}
    for game in s.games:
        diff = paired_difference(
            make_game(game).facts, a[game], b[game], domain(game).weights, seed=s.seed + 1
        )
        out[game] = {"sampled": {k: v.to_json() for k, v in diff.items()}}
    if exact_only(s) and len(s.games) == 1:
        ea = json.loads((sepo_eval / "summary_entry.json").read_text())["exact"]
        eb = json.loads((control_eval / "summary_entry.json").read_text())["exact"]
        out[s.games[0]]["exact"] = {k: ea[k] - eb[k] for k in DIFFERENCE_EXACT}
    return out


def _kuhn_sft_target() -> dict[str, Any]:
    """The Kuhn strategy SFT aims at in the first hand, to read the SFT stage against."""
    from sepo.exact.kuhn import exploitability
    from sepo.opponents.kuhn import demonstrator_mixture

    target = demonstrator_mixture()
    return {"exploitability": exploitability(target).exploitability, "strategy": target.to_dict()}


def _checkpoint_policy(ckpt: Path, sft_path: str) -> tuple[str, str | None]:
    """(model path, adapter) of a GRPO checkpoint: a LoRA checkpoint is an adapter on the
    SFT model, a full fine-tuning checkpoint a model of its own."""
    if (ckpt / "adapter_config.json").exists():
        return sft_path, str(ckpt)
    return str(ckpt), None


def _curve_point(entry: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "pay",
        "exploit",
        "collusion",
        "externality",
        "safety",
        "nra",
        "invalid_rate",
        "exploitability",
    )
    point = {k: entry.get(k) for k in keys}
    point["selection_safety"] = entry.get("selection_safety")
    if "exact" in entry:
        point["exact_safety"] = entry["exact"]["safety"]
        point["exact_exploit"] = entry["exact"]["exploit"]
        point["exact_exploit_with_best_responder"] = entry["exact"].get(
            "exploit_with_best_responder"
        )
        point["seat_gap"] = entry["exact"].get("seat_gap")
    return point

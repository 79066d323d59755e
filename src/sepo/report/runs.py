"""Finding and reading finished ``sepo train`` runs for ``sepo report``.

A report reads run directories only: ``summary.json``, ``config.json``, the evaluation
folders' ``stats.jsonl`` and exact files, and the trainer's log history in each arm's
newest checkpoint. It never loads a model or plays a game, so it is cheap and cannot
change what it reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sepo.core.errors import SepoError
from sepo.metrics import ClusteredSample

MECHANISM_ARMS = ("credited_mean", "reward_only", "shared", "auxiliary")
"""The mechanism study's four objectives, in the order the report shows them."""


class ReportError(SepoError, ValueError):
    """A run directory the report cannot read (a one-line command-line error)."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc


@dataclass(frozen=True)
class Run:
    """One finished ``sepo train`` run."""

    folder: Path

    @cached_property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = _read_json(self.folder / "summary.json")
        return data

    @cached_property
    def settings(self) -> dict[str, Any]:
        data: dict[str, Any] = self.summary["settings"]
        return data

    @property
    def games(self) -> tuple[str, ...]:
        return tuple(self.settings["games"])

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    @property
    def penalty(self) -> str:
        return str(self.summary.get("penalty") or self.settings.get("penalty"))

    @property
    def control(self) -> str:
        return str(self.settings.get("control", "none"))

    @property
    def is_mechanism_arm(self) -> bool:
        """A run that trains one extra objective from another run's SFT policy (the
        mechanism study's ``shared`` and ``auxiliary`` arms): no control of its own."""
        return self.control == "none" and self.settings.get("sft_from") is not None

    @property
    def recipe(self) -> tuple[tuple[str, str], ...]:
        """Every setting but the seed and the folders: runs with one recipe are the
        seeds of one experiment."""
        skip = {"seed", "out", "sft_from", "penalty", "control", "extra"}
        return tuple(sorted((k, json.dumps(v)) for k, v in self.settings.items() if k not in skip))

    # -- evaluation folders ---------------------------------------------------------
    def stage_eval(self, stage: str) -> Path | None:
        """The evaluation folder of ``base``, ``sft``, ``sepo`` or ``control`` (an arm's
        best checkpoint); None where the run has no such stage."""
        if stage in ("base", "sft"):
            return self.folder / "eval" / stage
        best = self.arm(stage).get("best_checkpoint")
        return self.folder / "eval" / stage / str(best) if best else None

    def arm(self, stage: str) -> dict[str, Any]:
        """The summary's record of an arm: penalty, best checkpoint and curve."""
        if stage == "sepo":
            return {
                "penalty": self.penalty,
                "best_checkpoint": self.summary.get("best_checkpoint"),
                "curve": self.summary.get("curve") or [],
            }
        if stage == "control":
            data: dict[str, Any] = self.summary.get("control_arm") or {}
            return data
        raise KeyError(stage)

    def entry(self, stage: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.summary.get(stage)
        return found

    def samples(self, stage: str) -> dict[str, ClusteredSample] | None:
        """Per game, the stage's episodes as seed clusters, in-pool and held-out merged."""
        from sepo.evaluate.harness import STATS_FILE, read_samples

        folder = self.stage_eval(stage)
        if folder is None or not (folder / STATS_FILE).is_file():
            return None
        try:
            found = read_samples(folder)
            held = folder / "heldout"
            if (held / STATS_FILE).is_file():
                for game, sample in read_samples(held).items():
                    if game in found:
                        found[game] = found[game].merged(sample)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"cannot read the episodes of {folder}: {exc}") from exc
        return found

    def log_history(self, arm: str) -> list[dict[str, Any]]:
        """The trainer's per-step log of an arm (``sepo`` or ``control``), from its newest
        checkpoint's ``trainer_state.json`` (which holds every step up to it)."""
        folder = self.folder / arm
        ckpts = sorted(
            (p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
            key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1,
        )
        if not ckpts:
            return []
        state = _read_json(ckpts[-1] / "trainer_state.json")
        return [row for row in state.get("log_history", []) if "step" in row and "loss" in row]

    def demonstrator_situations(self, game: str) -> Situations:
        """Per situation (a demonstrator answer's reasoning line, which states what the
        player sees), the counts of each action in the SFT training data of ``game``."""
        out: Situations = {}
        path = self.folder / "sft-data" / "train.jsonl"
        if not path.is_file():
            return out
        from sepo.games import make_game

        name = make_game(game).system_prompt()
        with path.open() as fh:
            for line in fh:
                messages = json.loads(line).get("messages", [])
                if not messages or messages[0].get("content") != name:
                    continue
                for m in messages:
                    if m.get("role") == "assistant":
                        situation, _, action = str(m["content"]).rpartition("\n")
                        counts = out.setdefault(situation, {})
                        counts[action] = counts.get(action, 0) + 1
        return out

    def played_situations(self, stage: str, game: str) -> Situations:
        """The same counts from the stage's evaluation episodes: the first line of each
        answer the model wrote itself (valid, no fallback) and the action it was read as."""
        out: Situations = {}
        folder = self.stage_eval(stage)
        path = folder / "episodes.jsonl" if folder else None
        if path is None or not path.is_file():
            return out
        with path.open() as fh:
            for line in fh:
                ep = json.loads(line)
                if ep.get("game") != game:
                    continue
                for turn in ep.get("turns", []):
                    if not turn.get("valid") or turn.get("fallback", "none") != "none":
                        continue
                    situation = str(turn.get("raw", "")).split("\n", 1)[0].strip()
                    action = _action_text(turn.get("action"))
                    counts = out.setdefault(situation, {})
                    counts[action] = counts.get(action, 0) + 1
        return out

    def ipd_worst_case(self, stage: str) -> dict[str, Any] | None:
        folder = self.stage_eval(stage)
        path = folder / "ipd_exact.json" if folder else None
        if path is None or not path.is_file():
            return None
        data: dict[str, Any] = _read_json(path)
        return data


Situations = dict[str, dict[str, int]]
"""Action counts per situation (reasoning line)."""


def _action_text(action: Any) -> str:
    """An action as the demonstrators write it (:func:`sepo.games.text.format_action`)."""
    from sepo.games.text import format_action

    return format_action(tuple(action) if isinstance(action, list) else action)


def is_run(folder: Path) -> bool:
    """A finished ``sepo train`` run: a ``summary.json`` that holds its settings."""
    if not (folder / "summary.json").is_file():
        return False
    try:
        data = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("settings"), dict)


def find_runs(paths: Sequence[Path]) -> list[Run]:
    """Every finished run in ``paths``: a path is a run, or a folder (a ``sepo
    reproduce`` folder, or any folder of runs) searched below for runs. Each run once,
    in path order."""
    if not paths:
        raise ReportError("name at least one run directory")
    runs: list[Run] = []
    seen: set[Path] = set()
    for path in paths:
        if not path.is_dir():
            raise ReportError(f"{path} is not a folder")
        found = [path] if is_run(path) else _runs_below(path)
        if not found:
            raise ReportError(f"{path} holds no finished sepo train run (no summary.json)")
        for folder in found:
            key = folder.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(Run(folder))
    return runs


def _runs_below(path: Path) -> list[Path]:
    out: list[Path] = []
    for summary in sorted(path.rglob("summary.json")):
        folder = summary.parent
        if folder.is_symlink() or any(p.is_symlink() for p in folder.relative_to(path).parents):
            continue
        if is_run(folder) and not any(parent in out for parent in folder.parents):
            out.append(folder)
    return out


@dataclass(frozen=True)
class Experiment:
    """The seeds of one recipe on one set of games: the main runs (SEPO and control
    arms) and, for the mechanism study, the extra arms that started from their SFT."""

    games: tuple[str, ...]
    runs: tuple[Run, ...]
    """Main runs, one per seed, in seed order."""
    extra_arms: tuple[Run, ...] = ()

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


def experiments(runs: Iterable[Run]) -> list[Experiment]:
    """Group runs into experiments: main runs by (games, recipe); a mechanism arm joins
    the experiment of the run it started from."""
    runs = list(runs)
    main = [r for r in runs if not r.is_mechanism_arm]
    extra = [r for r in runs if r.is_mechanism_arm]
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for r in main:
        groups.setdefault((r.games, r.recipe), []).append(r)
    result = []
    by_folder = {r.folder.resolve(): key for key, rs in groups.items() for r in rs}
    attached: dict[tuple[Any, ...], list[Run]] = {}
    for r in extra:
        key = by_folder.get(Path(str(r.settings["sft_from"])).resolve())
        if key is None:
            # Its source is not in the report: it stands alone.
            key = (r.games, r.recipe, str(r.folder))
            groups.setdefault(key, [])
        attached.setdefault(key, []).append(r)
    for key, rs in groups.items():
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            dup = next(s for s in seeds if seeds.count(s) > 1)
            raise ReportError(
                f"two runs of one recipe on {'+'.join(key[0])} have seed {dup}: "
                f"{', '.join(str(r.folder) for r in rs if r.seed == dup)}"
            )
        result.append(
            Experiment(
                games=key[0],
                runs=tuple(sorted(rs, key=lambda r: r.seed)),
                extra_arms=tuple(sorted(attached.get(key, []), key=lambda r: (r.seed, r.penalty))),
            )
        )
    return result

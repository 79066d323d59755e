"""What a training run shows a person, and what it writes to its log file instead.

Inside :func:`quiet_run` (``sepo train`` and ``sepo sft`` enter it), the libraries' own
progress bars (datasets' "Tokenizing…", transformers' "Loading weights" and "Writing
model shards"), their log records and Python warnings go to the run
folder's log file, not to the terminal; each trainer shows one rich progress bar with the
figures that matter (:class:`TrainProgress`: loss for SFT, reward, KL and exact
exploitability for SEPO-GRPO), and writes every logged dict to the log file as a JSON
line. Outside it the libraries behave as usual (tests, notebooks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOG_FILE = "train.log"
"""The log file a run folder gets (appended to by every invocation)."""
LIBRARY_LOGGERS = ("transformers", "trl", "datasets", "peft", "accelerate", "huggingface_hub")
SHOWN = {
    "loss": "loss",
    "reward": "reward",
    "kl": "KL",
    "sepo/exact_exploitability": "exploitability",
}
"""Logged keys shown beside the progress bar, with their labels."""

_log = logging.getLogger("sepo.train")
_active: list[Path] = []


def active() -> bool:
    """Whether a :func:`quiet_run` is in force (trainers then use :class:`TrainProgress`)."""
    return bool(_active)


@contextlib.contextmanager
def quiet_run(folder: Path) -> Iterator[Path]:
    """Send third-party progress bars, log records and warnings to ``folder/train.log``
    for the duration; everything is restored afterwards. Yields the log file's path."""
    import datasets
    import transformers

    path = folder / LOG_FILE
    handler = _RunLog(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    names = (*LIBRARY_LOGGERS, "py.warnings", "sepo.train")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    level = _log.level
    bars = (
        datasets.is_progress_bar_enabled(),
        transformers.utils.logging.is_progress_bar_enabled(),
    )
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    for n in names:
        logger = logging.getLogger(n)
        logger.handlers = [handler]
        logger.propagate = False
    _log.setLevel(logging.INFO)
    logging.captureWarnings(True)
    _active.append(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield path
    finally:
        _active.pop()
        logging.captureWarnings(False)
        for n, (handlers, propagate) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers = handlers
            logger.propagate = propagate
        _log.setLevel(level)
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            transformers.utils.logging.enable_progress_bar()
        handler.close()


class _RunLog(logging.FileHandler):
    """A log file opened at its first record (its folder made then): a command that
    fails before any work leaves no file behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def use_progress(trainer: Any, label: str) -> None:
    """Inside :func:`quiet_run`: replace ``trainer``'s tqdm bar or printed dicts by one
    :class:`TrainProgress` bar (the trainer must be built with ``disable_tqdm=True``)."""
    if not active():
        return
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainProgress(label))


def _trainer_callback_base() -> type:
    from transformers import TrainerCallback

    base: type = TrainerCallback
    return base


class TrainProgress(_trainer_callback_base()):  # type: ignore[misc]
    """One rich progress bar for a trainer's steps, showing the latest :data:`SHOWN`
    figures; every logged dict also goes to the log file as one JSON line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress: Any = None
        self.task: Any = None
        self.figures: dict[str, float] = {}

    def _description(self) -> str:
        shown = "  ".join(f"{SHOWN[k]} {v:.4g}" for k, v in self.figures.items())
        return f"{self.label}  {shown}" if shown else self.label

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=state.max_steps or None)
        self.progress.update(self.task, completed=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        _log.info("%s step %d %s", self.label, state.global_step, json.dumps(logs, default=str))
        for key in SHOWN:
            value = logs.get(key)
            if isinstance(value, int | float):
                self.figures[key] = float(value)
        if self.progress is not None:
            self.progress.update(self.task, description=self._description())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None

"""``sepo report RUN_DIR… --out DIR``: the tables and figures a paper needs, from run
directories alone (:mod:`sepo.report.runs`; nothing is replayed).

Writes into ``--out``: ``report.md`` and ``figures/*.png``, ``report.html`` (the same
document, figures embedded), and ``report.json`` (every number in the tables, with the
run folders it came from). How the intervals are drawn: :mod:`sepo.report.tables`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sepo.report import figures
from sepo.report.render import document, to_html, to_markdown
from sepo.report.runs import ReportError, experiments, find_runs
from sepo.report.tables import build_report

__all__ = ["ReportError", "write_report"]

OUTPUTS = ("report.md", "report.html", "report.json", "figures")


def write_report(
    paths: Sequence[Path],
    out: Path,
    *,
    header: Sequence[str] = (),
    n_boot: int = 2000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Read the runs in ``paths`` and write the report into ``out``. ``out`` may not be a
    run folder or a folder it reads, and an existing report there is replaced only with
    ``overwrite``. Everything is written to a temporary folder first and moved in at the
    end, so a failure leaves ``out`` as it was."""
    runs = find_runs(paths)
    out_abs = out.resolve()
    for r in runs:
        folder = r.folder.resolve()
        if out_abs == folder or folder in out_abs.parents or out_abs in folder.parents:
            raise ReportError(
                f"--out {out} overlaps the run {r.folder}; write the report elsewhere"
            )
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} exists and is not a folder")
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise ReportError(f"{out} already holds a report ({existing[0]}); pass --overwrite")
    others = [p.name for p in out.iterdir() if p.name not in OUTPUTS] if out.is_dir() else []
    if others and not existing:
        raise ReportError(f"{out} is not empty and holds no report; use another --out")

    report = build_report(experiments(runs), n_boot=n_boot, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp_name:
        tmp = Path(tmp_name)
        paths_of = _figures(report, tmp)
        blocks = document(report, paths_of, header)
        (tmp / "report.md").write_text(to_markdown(blocks))
        (tmp / "report.html").write_text(to_html(blocks, tmp))
        (tmp / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        out.mkdir(exist_ok=True)
        for name in OUTPUTS:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                import shutil

                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            if (tmp / name).exists():
                os.replace(tmp / name, target)
    return report


def _figures(report: dict[str, Any], root: Path) -> dict[str, str]:
    """Draw every figure into ``root/figures``; their paths relative to ``root``, by key."""
    made: dict[str, str] = {}

    def add(key: str, name: str, draw: Any, *args: Any) -> None:
        rel = f"figures/{name}.png"
        if draw(*args, root / rel):
            made[key] = rel

    add("delta_safety", "delta-safety", figures.delta_safety, report)
    for k, exp in enumerate(report["experiments"]):
        title = "+".join(exp["games"])
        kuhn = exp["tables"].get("kuhn", {}).get("exact")
        if kuhn:
            add(f"kuhn_freq_{k}", f"kuhn-frequencies-{k}", figures.kuhn_frequencies, kuhn)
        if "mechanism" in exp:
            add(
                f"mechanism_{k}",
                f"mechanism-{figures.slug(title)}-{k}",
                figures.mechanism,
                exp["mechanism"],
            )
        for folder, curves in exp["curves"].items():
            add(
                f"curves_{folder}",
                f"curves-{figures.slug(folder)}",
                figures.training_curves,
                curves,
                folder,
            )
    return made

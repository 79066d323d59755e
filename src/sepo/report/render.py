"""``sepo report``'s output: one document, written as Markdown (``report.md`` with the
PNG figures beside it in ``figures/``) and as one self-contained HTML file
(``report.html``: the figures embedded as data URIs, no script, nothing fetched).

The document is a list of blocks (headings, paragraphs, tables, figures) built once from
``report.json``'s structure (:mod:`sepo.report.tables`) and rendered twice, so the two
files never disagree."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.report.tables import STAGE_LABELS, STAGES, TABLE_KEYS, TABLE_LABELS


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class TableBlock:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    path: str
    """Relative to the report folder."""
    caption: str


Block = Heading | Para | TableBlock | Figure


def fmt(e: dict[str, Any] | None, digits: int = 3) -> str:
    """``value [low, high]`` (or the value alone, or ``–`` where there is none)."""
    if not e or e.get("value") is None or _nan(e["value"]):
        return "–"
    v = f"{e['value']:.{digits}f}"
    lo, hi = e.get("low"), e.get("high")
    if lo is None or hi is None or _nan(lo) or _nan(hi):
        return v
    return f"{v} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _excludes_zero(e: dict[str, Any] | None) -> bool:
    if not e or e.get("low") is None or e.get("high") is None:
        return False
    return bool(e["low"] > 0 or e["high"] < 0)


def _title(games: Sequence[str]) -> str:
    return games[0] if len(games) == 1 else "joint " + "+".join(games)


# -- the document ---------------------------------------------------------------------


def document(report: dict[str, Any], figures: dict[str, str], header: Sequence[str]) -> list[Block]:
    """The report's blocks; ``figures`` maps a figure's key to its path."""
    blocks: list[Block] = [Heading("sepo report", 1), *(Para(line) for line in header)]
    blocks.append(
        Para(
            "Sampled figures: mean over seeds, 95% interval from a two-stage cluster bootstrap "
            "(seeds resampled, then each run's chance seeds, all opponents of a seed together; "
            f"{report['n_boot']} replicates). Exact Kuhn figures: mean over seeds, bootstrap "
            "over seeds only. A difference whose interval excludes 0 is marked *."
        )
    )
    if "delta_safety" in figures:
        blocks.append(Figure(figures["delta_safety"], "ΔSafety per domain, with 95% intervals."))
    for k, exp in enumerate(report["experiments"]):
        title = _title(exp["games"])
        blocks.append(Heading(f"{title} (seeds {', '.join(map(str, exp['seeds']))})"))
        blocks.append(Para(_recipe_line(exp)))
        for game, table in exp["tables"].items():
            if len(exp["games"]) > 1:
                blocks.append(Heading(game, 3))
            blocks.extend(_domain_blocks(table))
            key = f"kuhn_freq_{k}"
            if game == "kuhn" and key in figures:
                blocks.append(
                    Figure(
                        figures[key],
                        "Kuhn: bet/call probability per information set, Nash range shaded.",
                    )
                )
        if "mechanism" in exp:
            blocks.extend(_mechanism_blocks(exp["mechanism"], figures.get(f"mechanism_{k}")))
        for folder in exp["curves"]:
            key = f"curves_{folder}"
            if key in figures:
                blocks.append(Figure(figures[key], f"Training curves of {folder}."))
    return blocks


def _recipe_line(exp: dict[str, Any]) -> str:
    s = exp["settings"]
    keys = ("model", "steps", "group_size", "sft_episodes", "eval_episodes", "penalty", "control")
    parts = [f"{k}={s.get(k)}" for k in keys if k in s]
    return "Recipe: " + ", ".join(parts) + ". Runs: " + ", ".join(exp["folders"]) + "."


def _domain_blocks(table: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    cols = (*TABLE_KEYS, "invalid_rate")
    header = ("", *(TABLE_LABELS[k] for k in cols))
    rows = tuple(
        (STAGE_LABELS[stage], *(fmt(table["rows"][stage].get(k)) for k in cols))
        for stage in STAGES
        if stage in table["rows"]
    )
    blocks.append(TableBlock(header, rows))
    held = tuple(
        (
            STAGE_LABELS[stage],
            fmt(table["rows"][stage].get("pay")),
            fmt(table["rows"][stage].get("heldout_pay")),
            fmt(table["rows"][stage].get("exploit")),
            fmt(table["rows"][stage].get("heldout_advantage")),
        )
        for stage in STAGES
        if stage in table["rows"]
    )
    if any(r[2] != "–" for r in held):
        blocks.append(
            TableBlock(
                (
                    "held-out pool",
                    "Pay (in-pool)",
                    "Pay (held-out)",
                    "Exploit (in-pool)",
                    "Adv (held-out)",
                ),
                held,
            )
        )
    if table["differences"]:
        drows = []
        for name, d in table["differences"].items():
            label = "SEPO − control" if name == "sepo-control" else "SEPO − SFT"
            drows.append(
                (label, *(fmt(d.get(k)) + ("*" if _excludes_zero(d.get(k)) else "") for k in cols))
            )
        blocks.append(TableBlock(("difference", *header[1:]), tuple(drows)))
    exact = table.get("exact")
    if exact:
        erows = []
        for stage in STAGES:
            if stage in exact:
                e = exact[stage]
                erows.append(
                    (
                        STAGE_LABELS[stage],
                        fmt(e["exploitability"]),
                        fmt(e.get("in_play_exploitability")),
                        fmt(e["exploit"]),
                        fmt(e["exploit_with_best_responder"]),
                        fmt(e["safety"]),
                        " ".join(f"{v:.3f}" for v in e["per_seed_exploitability"]),
                    )
                )
        if "sepo-control" in exact:
            d = exact["sepo-control"]
            erows.append(
                (
                    "SEPO − control",
                    fmt(d["exploitability"]),
                    "–",
                    fmt(d["exploit"]),
                    fmt(d["exploit_with_best_responder"]),
                    fmt(d["safety"]),
                    " ".join("below" if b else "not below" for b in exact["sepo_below_control"]),
                )
            )
        blocks.append(Para("Kuhn, exact (the extracted strategy of each seed's policy):"))
        blocks.append(
            TableBlock(
                ("", "exploitability", "in play", "Exploit", "Exploit + BR", "Safety", "per seed"),
                tuple(erows),
            )
        )
        freq = _kuhn_frequency_table(exact)
        if freq is not None:
            blocks.append(freq)
        if exact.get("sft_target_exploitability") is not None:
            blocks.append(
                Para(
                    "The SFT data's own mixture has exploitability "
                    f"{exact['sft_target_exploitability']:.3f} (the SFT stage's target)."
                )
            )
    worst = table.get("ipd_worst_case")
    if worst:
        wrows = tuple(
            (
                STAGE_LABELS[stage],
                fmt(w["exploitability"]),
                fmt(table["rows"].get(stage, {}).get("exploit")),
                " ".join(f"{v:.3f}" for v in w["per_seed"]),
            )
            for stage, w in worst.items()
        )
        blocks.append(Para("IPD worst case (exact best response to the tabulated policy):"))
        blocks.append(
            TableBlock(("", "exploitability", "exploit-pool advantage", "per seed"), wrows)
        )
    fid = table["sft_fidelity"]
    if fid["checked"]:
        blocks.append(
            Para(
                f"SFT fidelity: {fid['matched']}/{fid['checked']} reasoning lines match the "
                f"demonstrators' ({fid['rate']:.1%}; per seed "
                + ", ".join(f"{v:.1%}" for v in fid["per_seed"])
                + ")."
            )
        )
    beh = table.get("sft_behaviour")
    if beh and beh.get("tv_distance") is not None:
        actions = sorted(set(beh["data_actions"]) | set(beh["played_actions"]))
        blocks.append(
            Para(
                "SFT play against the demonstrators, situation by situation (reasoning line): "
                f"mean total variation distance {beh['tv_distance']:.3f} over "
                f"{beh['situations']} situations, which hold "
                f"{beh['played_in_known_situations']:.0%} of the SFT policy's own answers."
            )
        )
        blocks.append(
            TableBlock(
                ("action share", *actions),
                (
                    (
                        "demonstrators (SFT data)",
                        *(f"{beh['data_actions'].get(a, 0.0):.3f}" for a in actions),
                    ),
                    (
                        "SFT policy (evaluation)",
                        *(f"{beh['played_actions'].get(a, 0.0):.3f}" for a in actions),
                    ),
                ),
            )
        )
    return blocks


def _kuhn_frequency_table(exact: dict[str, Any]) -> TableBlock | None:
    """Bet/call probability per information set (mean over seeds) beside Nash's range
    over α ∈ [0, 1/3] (the second actor's is a point: J bluff 1/3, Q call 1/3)."""
    from sepo.exact.kuhn import INFOSET_LABELS, INFOSETS
    from sepo.exact.kuhn_frequencies import nash_frequency_ranges

    stages = [s for s in ("sft", "sepo", "control") if exact.get(s, {}).get("strategy")]
    if not stages:
        return None
    ranges = nash_frequency_ranges()
    rows = []
    for key in INFOSETS:
        lo, hi = ranges[key]
        nash = f"{lo:.3f}" if abs(hi - lo) < 1e-12 else f"{lo:.3f}–{hi:.3f}"
        rows.append(
            (key, INFOSET_LABELS[key], *(f"{exact[s]['strategy'][key]:.3f}" for s in stages), nash)
        )
    return TableBlock(
        ("infoset", "meaning", *(STAGE_LABELS[s] for s in stages), "Nash"), tuple(rows)
    )


def _mechanism_blocks(mech: dict[str, Any], figure: str | None) -> list[Block]:
    blocks: list[Block] = [Heading("Mechanism study: four objectives from one SFT policy", 3)]
    rows = []
    for name, arm in mech.items():
        if not isinstance(arm, dict) or "curves" not in arm:
            continue
        ev = arm.get("evaluation") or {}
        rows.append(
            (
                name,
                ", ".join(map(str, arm["seeds"])),
                _pair(arm, "collusion"),
                _pair(arm, "exploit"),
                fmt(ev.get("collusion")),
                fmt(ev.get("exploit")),
                fmt(ev.get("safety")),
            )
        )
    blocks.append(
        TableBlock(
            (
                "arm",
                "seeds",
                "train Coll first → last",
                "train Exploit first → last",
                "eval Coll",
                "eval Exploit",
                "eval Safety",
            ),
            tuple(rows),
        )
    )
    gap = mech.get("shared_vs_reward_only_max_gap")
    if gap is not None:
        blocks.append(
            Para(
                f"shared against reward_only: the largest per-step gap in training collusion or "
                f"exploit is {gap:.3g} (0 means the shared penalty changed nothing)."
            )
        )
    if figure:
        blocks.append(
            Figure(
                figure,
                "Training-time collusion and exploit-pool advantage per step, arm by arm (mean over seeds).",
            )
        )
    return blocks


def _pair(arm: dict[str, Any], what: str) -> str:
    if what not in arm["first"]:
        return "–"
    return f"{arm['first'][what]:.3f} → {arm['last'][what]:.3f} (step {arm['last_step']})"


# -- renderers --------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, TableBlock):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |"]
            lines.append("|" + "---|" * len(b.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        else:
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    "figcaption{font-style:italic;color:#555}"
)


def to_html(blocks: Sequence[Block], root: Path) -> str:
    """One self-contained page: figures are read from ``root`` and embedded."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>sepo report</title>", f"<style>{_CSS}</style></head><body>"]  # fmt: skip
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, TableBlock):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in b.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode((root / b.path).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

"""The report's PNG figures (matplotlib, Agg backend, no timestamps in the files)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sepo.objective import TERMS

_ARM_STYLE = {"sepo": "-", "control": "--"}
_MECH_COLOURS = {
    "credited_mean": "tab:blue",
    "reward_only": "tab:gray",
    "shared": "tab:orange",
    "auxiliary": "tab:red",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "run"


def delta_safety(report: dict[str, Any], path: Path) -> bool:
    """ΔSafety (SEPO − control, SEPO − SFT) per domain, with interval bars."""
    labels, bars = [], {"sepo-control": [], "sepo-sft": []}  # type: ignore[var-annotated]
    for exp in report["experiments"]:
        for game, table in exp["tables"].items():
            if not table["differences"]:
                continue
            labels.append(game if len(exp["games"]) == 1 else f"{game} (joint)")
            for name in bars:
                d = table["differences"].get(name, {}).get("safety")
                bars[name].append(d)
    if not labels:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(labels)), 3.2))
    width = 0.38
    for k, (name, values) in enumerate(bars.items()):
        xs = [i + (k - 0.5) * width for i in range(len(labels))]
        v = [d["value"] if d and d["value"] is not None else 0.0 for d in values]
        lo = [
            max(0.0, x - d["low"]) if d and d.get("low") is not None else 0.0
            for x, d in zip(v, values, strict=True)
        ]
        hi = [
            max(0.0, d["high"] - x) if d and d.get("high") is not None else 0.0
            for x, d in zip(v, values, strict=True)
        ]
        ax.bar(
            xs,
            v,
            width,
            yerr=[lo, hi],
            capsize=3,
            label="SEPO − control" if name == "sepo-control" else "SEPO − SFT",
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("ΔSafety")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def training_curves(curves: dict[str, Any], title: str, path: Path) -> bool:
    """Each reward term and the KL per step, Safety and Exploit per checkpoint (and for
    Kuhn the exact exploitability per step), both arms."""
    if not curves:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    colours = dict(zip(TERMS, ("tab:green", "tab:red", "tab:purple", "tab:brown"), strict=False))
    for arm, data in curves.items():
        style = _ARM_STYLE.get(arm, ":")
        for term in TERMS:
            pts = data["steps"].get(f"rewards/{term}/mean")
            if pts:
                axes[0].plot(
                    *zip(*pts, strict=True), style, color=colours.get(term), label=f"{arm} {term}"
                )
        kl = data["steps"].get("kl")
        if kl:
            axes[1].plot(*zip(*kl, strict=True), style, label=f"{arm} KL")
        ck = data["checkpoints"]
        if ck:
            steps = [c["step"] for c in ck]
            axes[2].plot(steps, [c["safety"] for c in ck], style + "o", label=f"{arm} Safety")
            axes[3].plot(steps, [c["exploit"] for c in ck], style + "o", label=f"{arm} Exploit")
        ex = data["steps"].get("sepo/exact_exploitability")
        if ex:
            axes[3].plot(
                *zip(*ex, strict=True),
                style,
                color="black",
                alpha=0.6,
                label=f"{arm} exploitability",
            )
    for ax, name in zip(
        axes,
        ("reward terms (mean per step)", "KL", "Safety per checkpoint", "Exploit"),
        strict=True,
    ):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return True


def kuhn_frequencies(exact: dict[str, Any], path: Path) -> bool:
    """Bet/call probability per information set for SFT, SEPO and control, with the
    Nash range of each set shaded."""
    from sepo.exact.kuhn import INFOSETS
    from sepo.exact.kuhn_frequencies import nash_frequency_ranges

    stages = [s for s in ("sft", "sepo", "control") if exact.get(s, {}).get("strategy")]
    if not stages:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.4))
    ranges = nash_frequency_ranges()
    for i, key in enumerate(INFOSETS):
        lo, hi = ranges[key]
        ax.add_patch(
            plt.Rectangle((i - 0.45, lo - 0.01), 0.9, hi - lo + 0.02, color="gold", alpha=0.35)
        )
    width = 0.8 / len(stages)
    for k, stage in enumerate(stages):
        strategy = exact[stage]["strategy"]
        xs = [i - 0.4 + (k + 0.5) * width for i in range(len(INFOSETS))]
        ax.bar(xs, [strategy[key] for key in INFOSETS], width, label=stage)
    ax.set_xticks(range(len(INFOSETS)), list(INFOSETS))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("P(bet or call)")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def mechanism(mech: dict[str, Any], path: Path) -> bool:
    arms = {k: v for k, v in mech.items() if isinstance(v, dict) and v.get("curves")}
    if not arms:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for name, arm in arms.items():
        for ax, what in zip(axes, ("collusion", "exploit"), strict=True):
            pts = arm["curves"].get(what)
            if pts:
                ax.plot(*zip(*pts, strict=True), color=_MECH_COLOURS.get(name), label=name)
    for ax, what in zip(
        axes, ("training collusion rate", "training exploit-pool advantage"), strict=True
    ):
        ax.set_title(what, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
    _save(fig, path)
    return True

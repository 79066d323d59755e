"""Peak memory of a scripted ``sepo eval`` at two sizes, measured in one run.

Each size runs as its own process (``python -m sepo eval --policy scripted:baseline
--game all --episodes N --out TMP``); its peak resident memory is the ``ru_maxrss`` the
kernel reports for that child alone (``os.wait4``). Evaluation streams its episodes to
disk, so the ratio of the two peaks should stay near 1 however much larger the second
size is; before streaming it grew with the episode count (939 MB at 2,000 episodes per
opponent).

    PYTHONPATH=src python benchmarks/bench_eval_memory.py --small 200 --large 2000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_of_eval(episodes: int, out: Path) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of one ``sepo eval`` child process."""
    cmd = [
        sys.executable,
        "-m",
        "sepo",
        "eval",
        "--policy",
        "scripted:baseline",
        "--game",
        "all",
        "--episodes",
        str(episodes),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"sepo eval --episodes {episodes} failed: {err.strip()}")
    if proc.stderr:
        proc.stderr.close()
    return usage.ru_maxrss / 1024, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=200, help="episodes per opponent, first run")
    ap.add_argument("--large", type=int, default=2000, help="episodes per opponent, second run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for n in (args.small, args.large):
            out = Path(tmp) / f"eval-{n}"
            peak, wall = peak_of_eval(n, out)
            lines = sum(1 for _ in (out / "episodes.jsonl").open())
            rows.append((n, lines, peak, wall))
    print("| episodes/opponent | episodes | peak MB | wall s |")
    print("|---|---|---|---|")
    for n, lines, peak, wall in rows:
        print(f"| {n:,} | {lines:,} | {peak:.0f} | {wall:.1f} |")
    (_, small_eps, small_peak, _), (_, large_eps, large_peak, _) = rows
    print(
        f"{large_eps / small_eps:.1f}x the episodes: peak memory {large_peak / small_peak:.2f}x "
        f"({small_peak:.0f} MB -> {large_peak:.0f} MB)"
    )


if __name__ == "__main__":
    main()

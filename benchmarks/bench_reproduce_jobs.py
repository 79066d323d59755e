"""``sepo reproduce --jobs``: one plan run with one job and with several, timed in one run.

Both invocations are the real command (``python -m sepo reproduce``) in fresh temporary
folders, one after the other, each alone on the machine. The first runs the plan's runs
one at a time with torch's default threads (all the cores); the second runs ``--jobs``
of them at once, each with an even share of the cores. Printed: each invocation's wall
time, the ratio, and whether every run's ``summary.json`` came out the same (timings
aside), which says whether the thread count changed any number on this machine.

    PYTHONPATH=src python benchmarks/bench_reproduce_jobs.py --games kuhn,auction --seeds 2

``--quick`` recipes by default (the plan's smoke test); ``--full`` times the default
recipe (hours).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "timings_s"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _invoke(out: Path, args: list[str], jobs: int) -> float:
    command = [sys.executable, "-m", "sepo", "reproduce", "--out", str(out), "--no-report",
               "--jobs", str(jobs), *args]  # fmt: skip
    started = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default="kuhn,auction")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="the default recipe, not --quick")
    parser.add_argument("--mechanism", action="store_true", help="include the IPD mechanism arms")
    a = parser.parse_args()
    args = ["--games", a.games, "--seeds", str(a.seeds)]
    args += [] if a.full else ["--quick"]
    args += [] if a.mechanism else ["--no-mechanism"]
    cores = len(os.sched_getaffinity(0))
    print(f"plan: sepo reproduce {' '.join(args)}; {cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        one = _invoke(Path(tmp) / "one", args, 1)
        print(f"--jobs 1: {one:.1f} s")
        many = _invoke(Path(tmp) / "many", args, a.jobs)
        print(f"--jobs {a.jobs}: {many:.1f} s")
        print(f"ratio: {one / many:.2f}x faster with --jobs {a.jobs}")
        same, total = 0, 0
        for summary in sorted((Path(tmp) / "one").rglob("summary.json")):
            rel = summary.relative_to(Path(tmp) / "one")
            total += 1
            # Paths name the two folders; everything else must agree.
            mine, theirs = (
                _without_timings(json.loads(f.read_text().replace(str(Path(tmp) / arm), "RUN")))
                for f, arm in ((summary, "one"), (Path(tmp) / "many" / rel, "many"))
            )
            if mine == theirs:
                same += 1
            else:
                print(f"differs: {rel}")
        print(f"identical summaries: {same}/{total}")


if __name__ == "__main__":
    main()

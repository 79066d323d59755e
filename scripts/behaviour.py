"""Kept for old command lines: the fingerprint lives in :mod:`sepo.evaluate.behaviour`
(``python -m sepo.evaluate.behaviour EPISODES.jsonl``)."""

import sys

from sepo.evaluate.behaviour import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

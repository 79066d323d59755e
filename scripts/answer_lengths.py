"""How long a model's answers were: tokens per answer in an ``episodes.jsonl`` of
``sepo eval``, counted with the model's own tokenizer (the first answer of each turn;
a constrained fallback's scoring is not an answer).

    python scripts/answer_lengths.py RUN/episodes.jsonl --tokenizer models/smollm2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episodes", type=Path)
    parser.add_argument("--tokenizer", required=True, help="a model folder")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lengths = []
    with args.episodes.open() as f:
        for line in f:
            for turn in json.loads(line)["turns"]:
                lengths.append(len(tokenizer(turn["raw"], add_special_tokens=False).input_ids))
    if not lengths:
        raise SystemExit(f"error: no turns in {args.episodes}")
    print(
        f"{len(lengths)} answers: mean {statistics.fmean(lengths):.1f} tokens, "
        f"median {statistics.median(lengths):.0f}, max {max(lengths)}"
    )


if __name__ == "__main__":
    main()

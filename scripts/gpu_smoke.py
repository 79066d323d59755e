"""Check the real-model path on a CUDA machine, end to end, without downloading anything.

Builds two models locally: the embedded tiny model (``sepo model init``) and a
randomly initialised Qwen2-architecture model (grouped-query attention, bf16 on
CUDA) that reuses the tiny tokenizer and chat template. Then, through the CLI a
user would call:

1. ``sepo eval --policy hf:DIR`` (batched generation with the KV cache on the GPU),
2. ``sepo exploitability --policy hf:DIR`` (scoring the 12 information sets),
3. ``sepo train --model hf:DIR`` (LoRA SFT, then SEPO-GRPO with the exact
   best-responder, checkpoint evaluation and the summary),

and checks that each ran on CUDA and wrote what it should. Prints one line per
stage and writes ``OUT/gpu_smoke.json``.

    python scripts/gpu_smoke.py --out /tmp/gpu_smoke [--steps 3] [--hidden 512]

Random weights: the numbers say the path works, not how well a real model plays.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def run(stage: str, args: list[str], report: dict[str, Any]) -> str:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sepo", *args], capture_output=True, text=True, check=False
    )
    seconds = round(time.perf_counter() - start, 1)
    report[stage] = {"command": "sepo " + " ".join(args), "rc": proc.returncode, "s": seconds}
    print(f"{stage}: rc={proc.returncode} {seconds}s", flush=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", flush=True)
        raise SystemExit(f"{stage} failed")
    return proc.stdout


def build_qwen(tiny: Path, out: Path, hidden: int) -> int:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    base = json.loads((tiny / "config.json").read_text())
    config = Qwen2Config(
        vocab_size=base["vocab_size"],
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=base["bos_token_id"],
        eos_token_id=base["eos_token_id"],
        pad_token_id=base["pad_token_id"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tiny / name).exists():
            shutil.copy(tiny / name, out / name)
    shutil.copy(tiny / "generation_config.json", out / "generation_config.json")
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--allow-cpu", action="store_true", help="dry run of the script itself")
    args = parser.parse_args()

    import torch

    if not (torch.cuda.is_available() or args.allow_cpu):
        raise SystemExit("gpu_smoke: no CUDA device visible to torch")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    for name in ("transformers", "peft", "trl", "accelerate"):
        report[name] = __import__(name).__version__

    tiny, qwen = out / "tiny", out / "qwen2"
    run("model_init", ["model", "init", "--out", str(tiny), "--seed", "0"], report)
    report["qwen2_parameters"] = build_qwen(tiny, qwen, args.hidden)

    eval_dir = out / "eval"
    run(
        "eval_hf",
        [
            "eval",
            "--game",
            "kuhn",
            "--policy",
            f"hf:{qwen}",
            "--episodes",
            "8",
            "--seed",
            "0",
            "--out",
            str(eval_dir),
        ],
        report,
    )
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    report["eval_hf"].update({k: metrics[k] for k in ("pay", "exploit", "safety", "invalid_rate")})
    run(
        "eval_all_tiny",
        [
            "eval",
            "--game",
            "all",
            "--policy",
            f"tiny:{tiny}",
            "--episodes",
            "2",
            "--out",
            str(out / "eval_all"),
        ],
        report,
    )

    expl = json.loads(
        run(
            "exploitability_hf",
            ["exploitability", "--game", "kuhn", "--policy", f"hf:{qwen}", "--json"],
            report,
        )
    )
    report["exploitability_hf"]["exploitability"] = expl.get("exploitability")

    run_dir = out / "run"
    run(
        "train_hf",
        [
            "train",
            "--model",
            f"hf:{qwen}",
            "--steps",
            str(args.steps),
            "--checkpoint-every",
            str(args.steps),
            "--sft-episodes",
            "40",
            "--eval-episodes",
            "2",
            "--out",
            str(run_dir),
        ],
        report,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    report["train_hf"]["summary"] = summary
    for config in sorted(run_dir.rglob("sft_config.json")):
        sft = json.loads(config.read_text())
        report["train_hf"]["sft"] = {k: sft.get(k) for k in ("device", "bf16", "versions")}
    (out / "gpu_smoke.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str)[:6000])


if __name__ == "__main__":
    main()

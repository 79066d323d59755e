"""SEPO-GRPO on TRL with the tiny model: a short run trains, logs every reward term, keeps
exact multi-turn token sequences, and resumes to the same result.

Everything is built inside the tests (the tiny model takes about a second); no download.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from sepo.domains import find_strategy  # noqa: E402
from sepo.games import make_game  # noqa: E402
from sepo.policies.corpus import game_corpus  # noqa: E402
from sepo.policies.local import LocalModelPolicy  # noqa: E402
from sepo.policies.tiny import build_tiny_model  # noqa: E402
from sepo.rollout.engine import EpisodeSpec, run_episodes  # noqa: E402
from sepo.rollout.protocol import SamplingConfig  # noqa: E402
from sepo.train.grpo import GRPOSettings, build_trainer, training_slots  # noqa: E402
from sepo.train.token_rollout import TokenTrackingPolicy  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_model(path, game_corpus(seed=0, episodes_per_game=10), seed=0)
    return path


def _settings(init: Path, out: Path, **kw: Any) -> GRPOSettings:
    base: dict[str, Any] = {
        "init": str(init),
        "out": str(out),
        "games": ("ipd",),
        "steps": 2,
        "group_size": 2,
        "max_new_tokens": 6,
        "learning_rate": 1e-3,
        "beta": 0.1,
        "checkpoint_every": 1,
        "report_to": "none",
        "seed": 3,
    }
    base.update(kw)
    return GRPOSettings(**base)


def test_token_sequences_are_the_conversation(tiny_dir: Path) -> None:
    """The tracked sequence decodes to the chat template's rendering of the episode's
    conversation, and env_mask marks exactly the generated tokens."""
    local = LocalModelPolicy.load(str(tiny_dir))
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6, seed=0)
    tracker = TokenTrackingPolicy(local, sampling)
    game = make_game("kuhn")
    specs = [EpisodeSpec(game, find_strategy("kuhn", "nash_approx"), "train", s) for s in (1, 2)]
    episodes = run_episodes(specs, tracker)
    for i, ep in enumerate(episodes):
        tok = tracker.episode_tokens(i)
        assert len(tok.completion_ids) == len(tok.env_mask) == len(tok.logprobs)
        generated = sum(tok.env_mask)
        assert 0 < generated < len(tok.completion_ids)
        text = local.tokenizer.decode(
            tok.prompt_ids + tok.completion_ids, skip_special_tokens=False
        )
        for turn in ep.turns:
            assert turn.observation in text
        # every generated token has a finite log-probability, environment tokens carry 0
        assert all(math.isfinite(lp) for lp, m in zip(tok.logprobs, tok.env_mask, strict=True) if m)
        assert all(lp == 0.0 for lp, m in zip(tok.logprobs, tok.env_mask, strict=True) if not m)


def test_short_run_changes_parameters_and_logs_every_term(tiny_dir: Path, tmp_path: Path) -> None:
    settings = _settings(tiny_dir, tmp_path / "run")
    trainer, _ = build_trainer(settings)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = sum(
        not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters()
    )
    assert changed > 0
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all(math.isfinite(float(h["loss"])) for h in logs)
    for term in ("payoff", "exploit", "collusion", "externality"):
        key = f"rewards/{term}/mean"
        assert any(h.get(key) is not None for h in logs), f"{key} never logged"
    assert any("sepo/invalid_rate" in h for h in logs)
    # one group per (pool, opponent): IPD has 4 train, 2 exploit, 1 collusive opponents
    assert len(training_slots(settings)) == 7


def test_kuhn_best_responder_slot_and_exploitability_log(tiny_dir: Path, tmp_path: Path) -> None:
    settings = _settings(tiny_dir, tmp_path / "kuhn", games=("kuhn",), steps=1, best_responder=True)
    assert [s.opponent for s in training_slots(settings)][-1] == "best_responder"
    trainer, rollout = build_trainer(settings)
    trainer.train()
    assert rollout.best is not None
    logged = [
        h["sepo/exact_exploitability"]
        for h in trainer.state.log_history
        if "sepo/exact_exploitability" in h
    ]
    assert logged and 0.0 <= logged[0] <= 1.5


def _random_lora_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter of ``base`` whose update is not zero (stands in for an SFT adapter)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(base)),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    model.save_pretrained(str(out))
    return out


def test_lora_grpo_on_a_merged_sft_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    """The hf recipe: SEPO-GRPO trains a fresh LoRA adapter on base + the merged SFT
    adapter. Only adapter weights train, and a checkpoint loaded as an adapter of the
    base model reproduces the trained policy (the SFT adapter is merged first)."""
    sft = _random_lora_adapter(tiny_dir, tmp_path / "sft")
    settings = _settings(
        tiny_dir, tmp_path / "run", adapter=str(sft), lora=True, steps=1, learning_rate=1e-2
    )
    trainer, _ = build_trainer(settings)
    trained = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad
    }
    assert trained and all("lora_" in n for n in trained)
    trainer.train()
    assert any(
        not torch.equal(trained[n], p) for n, p in trainer.model.named_parameters() if n in trained
    )

    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert (checkpoint / "sepo_adapter_base.json").is_file()
    ids = torch.tensor([[5, 17, 23, 42, 8, 99]])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(input_ids=ids.to(trainer.model.device)).logits.cpu()
        loaded = LocalModelPolicy.load(str(tiny_dir), adapter=str(checkpoint), device="cpu")
        got = loaded.model(input_ids=ids).logits
        # the checkpoint folder given as the model (hf:RUN/sepo/checkpoint-N) is the same
        direct = LocalModelPolicy.load(str(checkpoint), device="cpu")
        got_direct = direct.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got_direct, expected, atol=1e-5)
    # without the chain (the SFT adapter left out) the policy would be a different one
    (checkpoint / "sepo_adapter_base.json").unlink()
    with torch.no_grad():
        unchained = LocalModelPolicy.load(str(tiny_dir), adapter=str(checkpoint), device="cpu")
        assert not torch.allclose(unchained.model(input_ids=ids).logits, expected, atol=1e-3)


@pytest.mark.slow
def test_resume_matches_uninterrupted(tiny_dir: Path, tmp_path: Path) -> None:
    """Kill after the first checkpoint, resume: the final weights equal the uninterrupted
    run's (CPU, same seed). Rollout randomness is a function of (seed, step), and the
    trainer's checkpoint restores optimizer, scheduler and RNG states."""
    from transformers import TrainerCallback

    from sepo.train.grpo import run_grpo

    full = _settings(tiny_dir, tmp_path / "full")
    run_grpo(full)

    class Kill(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            raise KeyboardInterrupt

    part = _settings(tiny_dir, tmp_path / "part")
    trainer, _ = build_trainer(part)
    trainer.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    run_grpo(part, resume=True)
    a = json.loads((tmp_path / "full" / "checkpoint-2" / "trainer_state.json").read_text())
    b = json.loads((tmp_path / "part" / "checkpoint-2" / "trainer_state.json").read_text())
    assert [h.get("loss") for h in a["log_history"]] == [h.get("loss") for h in b["log_history"]]
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_a_kill_during_a_save_resumes_from_the_previous_checkpoint(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """What a kill during the last save leaves (a checkpoint folder whose weights are
    cut and whose trainer state was never written, no final model): the resume passes
    it over, restarts from the checkpoint before, and ends on the uninterrupted run's
    weights bit for bit."""
    import shutil

    from safetensors.torch import load_file

    from sepo.train.grpo import latest_checkpoint, run_finished, run_grpo

    full = _settings(tiny_dir, tmp_path / "full")
    run_grpo(full)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut)
    shutil.rmtree(cut / "final")
    (cut / "checkpoint-2" / "trainer_state.json").unlink()
    weights = cut / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert not run_finished(cut) and latest_checkpoint(cut) == cut / "checkpoint-1"
    run_grpo(_settings(tiny_dir, cut), resume=True)
    wa = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    wb = load_file(str(cut / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert latest_checkpoint(cut) == cut / "checkpoint-2"


@pytest.mark.slow
def test_two_process_cpu_run_through_accelerate(tiny_dir: Path, tmp_path: Path) -> None:
    """Scale-out is accelerate's: a 2-process CPU run completes and splits each step."""
    import os
    import shutil
    import subprocess

    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    settings = _settings(tiny_dir, tmp_path / "acc", games=("kuhn",), steps=1, group_size=2)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings.to_json()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        "accelerate",
        "launch",
        "--num_processes",
        "2",
        "--cpu",
        "-m",
        "sepo.train.grpo",
        "--settings",
        str(path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = json.loads((tmp_path / "acc" / "checkpoint-1" / "trainer_state.json").read_text())
    # 5 Kuhn groups of 2 episodes: 5 per process, 10 per step in total, each process
    # accumulating its 5 in micro-batches of at most settings.micro_batch_size
    from sepo.train.grpo import micro_batches

    accumulation = micro_batches(5, settings.micro_batch_size)
    assert state["train_batch_size"] * accumulation == 10


def test_micro_batches_split_a_step_evenly() -> None:
    from sepo.train.grpo import micro_batches

    assert micro_batches(36, 4) == 9
    assert micro_batches(36, 12) == 3
    assert micro_batches(36, 36) == 1
    assert micro_batches(5, 4) == 5  # a prime number of episodes: one per micro-batch
    with pytest.raises(ValueError, match="micro_batch_size"):
        micro_batches(8, 0)


def test_two_processes_give_the_rewards_of_one(tmp_path: Path) -> None:
    """The whole-step variants gather every process's step totals (accelerate's
    ``gather_object``, the collective the trainer's rollout calls): two CPU processes,
    each holding half of a step's episodes, give each episode exactly the reward one
    process holding the whole step gives."""
    import subprocess

    worker = Path(__file__).with_name("two_process_rewards.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(worker),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for variant in ("credited_mean", "shared", "auxiliary"):
        # Written by the worker: the whole step's terms in one process, and each half's
        # own terms without the gather.
        whole = json.loads((tmp_path / f"{variant}-whole.json").read_text())
        alone = json.loads((tmp_path / f"{variant}-alone.json").read_text())
        got: dict[str, list[float | None]] = {}
        for rank in (0, 1):
            got.update(json.loads((tmp_path / f"{variant}-{rank}.json").read_text()))
        assert sorted(got, key=int) == sorted(whole, key=int)
        assert got == whole, variant
        # The gather matters: without it each half would have got other rewards.
        assert any(alone[k] != whole[k] for k in alone), variant


def test_the_control_arm_starts_from_the_same_sft_weights(tiny_dir: Path, tmp_path: Path) -> None:
    """The main job's two GRPO arms: both start from the SFT weights bit for bit (the
    digest each writes before its first update equals the SFT folder's own), with the
    same settings but the penalty, so the same rollout seeds; and they then differ."""
    import shutil

    from sepo.policies.local import LocalModelPolicy
    from sepo.train.grpo import INIT_FILE, weights_digest
    from sepo.train.pipeline import TrainSettings, run_pipeline

    run = tmp_path / "run"
    for name in ("base-model", "sft"):
        shutil.copytree(tiny_dir, run / name)
    (run / "sft" / "sft_result.json").write_text(json.dumps({"adapter": None}))
    (run / "sft-data").mkdir()
    (run / "sft-data" / "card.json").write_text("{}")
    settings = TrainSettings(
        games=("ipd",),
        out=str(run),
        steps=1,
        group_size=2,
        checkpoint_every=1,
        eval_episodes=1,
        in_play_episodes=0,
        report_to="none",
        learning_rate=1e-2,
        ipd_worst_case=False,  # minutes of tabulation; tested in test_ipd_model_exact.py
    )
    summary = run_pipeline(settings, log=lambda _: None)
    sft_digest = weights_digest(LocalModelPolicy.load(str(run / "sft")).model)
    inits = {arm: json.loads((run / arm / INIT_FILE).read_text()) for arm in ("sepo", "control")}
    assert inits["sepo"] == inits["control"]
    assert inits["sepo"]["sha256"] == sft_digest
    arms = {
        arm: GRPOSettings.from_json(json.loads((run / arm / "grpo_settings.json").read_text()))
        for arm in ("sepo", "control")
    }
    assert (arms["sepo"].penalty, arms["control"].penalty) == ("credited_mean", "reward_only")
    assert dataclasses.replace(arms["sepo"], penalty="reward_only", out="") == dataclasses.replace(
        arms["control"], out=""
    )
    trained = {
        arm: weights_digest(LocalModelPolicy.load(str(run / arm / "checkpoint-1")).model)
        for arm in ("sepo", "control")
    }
    assert trained["sepo"] != trained["control"] != sft_digest
    assert summary["control_arm"]["penalty"] == "reward_only"
    assert set(summary["difference"]) == {"ipd"}

"""Tests of the embedded tiny model and the local transformers policy (CPU, seconds).

Everything is built inside the test from synthetic game-like text: no download. The
checks of :class:`LocalModelPolicy` recompute what they assert independently, with
plain forward passes of unpadded sequences (scoring, log-probabilities, the
first-token-mask equivalence of the constrained fallback).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sepo.core.types import Action, View  # noqa: E402
from sepo.domains import find_strategy  # noqa: E402
from sepo.policies.chat_template import merge_system_message  # noqa: E402
from sepo.policies.constrained import constrained_distribution_from_tokens  # noqa: E402
from sepo.policies.kv_cache import SHARED_PREFIX_MIN_TOKENS  # noqa: E402
from sepo.policies.local import LocalModelPolicy  # noqa: E402
from sepo.policies.tiny import END, build_tiny_model  # noqa: E402
from sepo.rollout.protocol import DecisionRequest, Message, SamplingConfig  # noqa: E402

IPD = ("COOPERATE", "DEFECT")


def synthetic_corpus(n: int = 200, seed: int = 0) -> list[str]:
    """Game-like text: IPD rounds, Kuhn cards, auction bids, negotiation vectors."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        mine, theirs = rng.choice(IPD), rng.choice(IPD)
        texts.append(
            f"Round {rng.randint(1, 8)} of 8. You played {mine}; the opponent played "
            f"{theirs}. Scores: you {rng.randint(0, 40)}, opponent {rng.randint(0, 40)}.\n"
            f"Legal actions: COOPERATE, DEFECT\nWrite your action alone on the last line.\n{mine}"
        )
        texts.append(
            f"Your card is {rng.choice('JQK')}. Legal actions: PASS, BET. "
            f"Bid {rng.choice(['LOW', 'MEDIUM', 'HIGH'])} with value {rng.choice([2, 4])}. "
            f"Demand [{rng.randint(0, 4)}, {rng.randint(0, 4)}, {rng.randint(0, 4)}]."
        )
    return texts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", synthetic_corpus(), seed=0)


@pytest.fixture(scope="module")
def greedy(model_dir: Path) -> LocalModelPolicy:
    return LocalModelPolicy.load(
        str(model_dir), device="cpu", sampling=SamplingConfig(temperature=0.0, max_new_tokens=10)
    )


def make_request(
    episode: int,
    legal: tuple[Action, ...] = IPD,
    legal_texts: tuple[str, ...] = IPD,
    padding: int = 0,
) -> DecisionRequest:
    view = View(
        game="ipd",
        player=0,
        round=episode % 8,
        rounds=8,
        history=(),
        legal=legal,
        scores=(float(episode), 0.0),
    )
    user = (
        f"Round {episode % 8 + 1} of 8."
        + " The opponent played COOPERATE." * padding
        + f"\nLegal actions: {', '.join(legal_texts)}\nWrite your action alone on the last line."
    )
    messages: tuple[Message, ...] = (
        {"role": "system", "content": "You play a repeated game."},
        {"role": "user", "content": user},
    )
    return DecisionRequest(
        episode=episode,
        turn=0,
        game="ipd",
        seed=episode,
        view=view,
        messages=messages,
        legal_texts=legal_texts,
    )


REQUESTS = [make_request(e, padding=3 * e) for e in range(5)]


def plain_logprobs(policy: LocalModelPolicy, ids: list[int]) -> Any:
    """Log-softmax of the model at every position of one unpadded sequence."""
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


# ---------------------------------------------------------------------- tiny model


def test_build_is_deterministic_in_the_seed(tmp_path: Path) -> None:
    corpus = synthetic_corpus()
    rng_before = torch.random.get_rng_state()
    a = build_tiny_model(tmp_path / "a", corpus, seed=0)
    b = build_tiny_model(tmp_path / "b", corpus, seed=0)
    c = build_tiny_model(tmp_path / "c", corpus, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "global RNG left untouched"
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    meta = json.loads((c / "sepo_model.json").read_text())
    assert meta["seed"] == 1
    assert meta["config"]["hidden_size"] == 192


def test_size_and_reload(model_dir: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n_params <= 5_000_000
    assert json.loads((model_dir / "sepo_model.json").read_text())["num_parameters"] == n_params
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.tie_word_embeddings
    end_id = tokenizer.convert_tokens_to_ids(END)
    assert tokenizer.eos_token == END
    assert model.generation_config.eos_token_id == end_id
    assert tokenizer.pad_token_id not in (None, end_id)


def test_chat_template_closes_the_assistant_turn_with_the_stop_token(model_dir: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    messages = [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": "Legal actions: COOPERATE, DEFECT"},
        {"role": "assistant", "content": "Trust first.\nCOOPERATE"},
    ]
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert prompt.startswith("<|bos|><|system|>\nRules.<|end|>\n<|user|>\n")
    assert prompt.endswith("<|assistant|>\n")
    assert full == prompt + "Trust first.\nCOOPERATE<|end|>\n"
    # Prefix preserving: earlier turns render the same whatever follows.
    assert full.startswith(tokenizer.apply_chat_template(messages[:2], tokenize=False))
    # {% generation %} marks exactly the answer and its stop token (TRL assistant_only_loss).
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert masked[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(masked) == "Trust first.\nCOOPERATE<|end|>"
    # Gemma-style rejection of unknown roles.
    with pytest.raises(Exception, match="unsupported chat role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_trl_accepts_the_template(model_dir: Path) -> None:
    chat_utils = pytest.importorskip("trl.chat_template_utils")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert chat_utils.has_generation_markers(tokenizer.chat_template)
    assert chat_utils.is_chat_template_stop_token_trained(tokenizer)


def test_importing_policies_does_not_import_torch() -> None:
    code = "import sys, sepo.policies; assert 'torch' not in sys.modules; assert 'openai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- generation


def test_respond_batch_is_seeded(model_dir: Path) -> None:
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12, seed=5)
    first = LocalModelPolicy.load(str(model_dir), device="cpu", sampling=sampling)
    second = LocalModelPolicy.load(str(model_dir), device="cpu", sampling=sampling)
    other = LocalModelPolicy.load(
        str(model_dir),
        device="cpu",
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=12, seed=6),
    )
    rng_before = torch.random.get_rng_state()
    answers = first.respond(REQUESTS)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "global RNG left untouched"
    assert len(answers) == 5 and all(isinstance(a, str) for a in answers)
    assert second.respond(REQUESTS) == answers
    assert other.respond(REQUESTS) != answers
    assert first.respond(REQUESTS) != answers, "the call counter advances the seed"
    assert first.stats.counts["local/generate_calls"] == 2


def test_left_padding_does_not_change_greedy_answers(greedy: LocalModelPolicy) -> None:
    conversations = [r.messages for r in REQUESTS]
    batched = greedy.generate_tokens(conversations)
    assert len({len(g.prompt_ids) for g in batched}) == 5, "prompts of different lengths"
    for conversation, together in zip(conversations, batched, strict=True):
        (alone,) = greedy.generate_tokens([conversation])
        assert alone.completion_ids == together.completion_ids
        assert alone.text == together.text
        assert alone.logprobs == pytest.approx(together.logprobs, abs=1e-4)
    micro = LocalModelPolicy(
        greedy.model, greedy.tokenizer, sampling=greedy.sampling, max_batch_size=2
    )
    assert [g.completion_ids for g in micro.generate_tokens(conversations)] == [
        g.completion_ids for g in batched
    ]


def test_generate_tokens_logprobs_are_the_raw_model(greedy: LocalModelPolicy) -> None:
    sampled = LocalModelPolicy(
        greedy.model, greedy.tokenizer, sampling=SamplingConfig(temperature=0.7, top_p=0.9, seed=1)
    )
    conversations = [r.messages for r in REQUESTS[:3]]
    for conversation, gen in zip(
        conversations, sampled.generate_tokens(conversations), strict=True
    ):
        assert gen.prompt_ids == greedy.encode_prompt(conversation)
        assert len(gen.logprobs) == len(gen.completion_ids) > 0
        logp = plain_logprobs(greedy, gen.prompt_ids + gen.completion_ids)
        start = len(gen.prompt_ids)
        expected = [float(logp[start - 1 + i, tok]) for i, tok in enumerate(gen.completion_ids)]
        assert gen.logprobs == pytest.approx(expected, abs=1e-4)
        assert gen.finished == (gen.completion_ids[-1] in greedy.stop_ids)
        assert END not in gen.text


def test_step_logprobs_are_the_raw_models_whole_distribution(greedy: LocalModelPolicy) -> None:
    prompts = [greedy.encode_prompt(r.messages) for r in REQUESTS[:3]]
    gens = greedy.generate_from_ids(prompts, with_logprobs=True, step_logprobs=True)
    for prompt, gen in zip(prompts, gens, strict=True):
        steps = gen.step_logprobs
        assert tuple(steps.shape) == (len(gen.completion_ids), len(greedy.tokenizer))
        assert torch.exp(steps).sum(-1) == pytest.approx(1.0, abs=1e-4)
        chosen = [float(steps[i, t]) for i, t in enumerate(gen.completion_ids)]
        assert chosen == pytest.approx(gen.logprobs, abs=1e-6)
        logp = plain_logprobs(greedy, prompt + gen.completion_ids)
        start = len(prompt)
        assert torch.allclose(steps, logp[start - 1 : start - 1 + len(steps)], atol=1e-4)
    assert all(g.step_logprobs is None for g in greedy.generate_from_ids(prompts[:1]))


def test_a_call_that_keeps_no_cache_reads_and_drops_the_kept_one(model_dir: Path) -> None:
    policy = LocalModelPolicy.load(
        str(model_dir), device="cpu", sampling=SamplingConfig(temperature=0.0, max_new_tokens=6)
    )
    start = policy.encode_prompt(REQUESTS[0].messages)
    (first,) = policy.generate_from_ids([start], keys=["a"])
    assert "a" in policy.cache.conversations
    prompt = start + first.completion_ids + start[-5:]  # the conversation goes on
    fed = policy.stats.counts["local/prompt_tokens"]
    (kept,) = policy.generate_from_ids([prompt], keys=["a"], keep_cache=False)
    assert policy.stats.counts["local/prompt_tokens"] - fed < len(prompt)  # read the cache
    assert "a" not in policy.cache.conversations
    fresh = LocalModelPolicy.load(
        str(model_dir), device="cpu", sampling=SamplingConfig(temperature=0.0, max_new_tokens=6)
    )
    (whole,) = fresh.generate_from_ids([prompt])
    assert kept.completion_ids == whole.completion_ids


# ---------------------------------------------------------------------- scoring


def test_score_continuations_matches_a_plain_forward_pass(greedy: LocalModelPolicy) -> None:
    tokenizer = greedy.tokenizer
    short, long = REQUESTS[0].messages, REQUESTS[4].messages
    scores = greedy.score_continuations(
        [long, short], [["COOPERATE", "DEFECT", "[1, 2, 0]"], ["COOPERATE", "DEFECT"]]
    )
    assert [len(row) for row in scores] == [3, 2]
    # Independent: the template's prompt ids, the answer encoded alone plus <|end|>,
    # one unpadded forward pass, the sum of log-softmax at the answer's positions.
    prompt = tokenizer.apply_chat_template(
        list(short), tokenize=True, add_generation_prompt=True, return_dict=False
    )
    answer = [*tokenizer.encode("DEFECT", add_special_tokens=False), tokenizer.eos_token_id]
    logp = plain_logprobs(greedy, prompt + answer)
    expected = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(answer))
    assert scores[1][1] == pytest.approx(expected, abs=1e-4)
    without_end = greedy.score_continuations([short], [["DEFECT"]], end_turn=False)[0][0]
    expected_without = expected - float(logp[len(prompt) + len(answer) - 2, answer[-1]])
    assert without_end == pytest.approx(expected_without, abs=1e-4)


def test_constrained_distribution_equals_first_token_masking(greedy: LocalModelPolicy) -> None:
    """SPEC §2's fallback: mask every logit except the legal actions' first tokens."""
    tokenizer = greedy.tokenizer
    messages = REQUESTS[2].messages
    words = ("COOPERATE", "DEFECT")
    firsts = [tokenizer.encode(w, add_special_tokens=False)[0] for w in words]
    assert len(set(firsts)) == 2
    prompt = greedy.encode_prompt(messages)
    logits = plain_logprobs(greedy, prompt)[-1]
    for temperature in (1.0, 0.5):
        masked = torch.tensor([float(logits[t]) for t in firsts]) / temperature
        expected = torch.softmax(masked, dim=0).tolist()
        got = greedy.constrained_distributions([messages], [words], temperature)[0]
        assert got == pytest.approx(expected, abs=1e-5)


def test_trie_distribution_by_hand() -> None:
    ln = math.log
    # Different first tokens: only the first token counts (tails are forced).
    probs = constrained_distribution_from_tokens(
        [[1, 7, 9], [2, 9]], [[ln(0.2), ln(0.01), ln(0.5)], [ln(0.6), ln(0.9)]], 1.0
    )
    assert probs == pytest.approx([0.25, 0.75])
    # A shared prefix "[": decided at the second token, renormalised there.
    seqs = [[5, 1, 9], [5, 2, 9], [6, 9]]
    lps = [[ln(0.3), ln(0.1), ln(1.0)], [ln(0.3), ln(0.3), ln(1.0)], [ln(0.1), ln(1.0)]]
    probs = constrained_distribution_from_tokens(seqs, lps, 1.0)
    assert probs == pytest.approx([0.75 * 0.25, 0.75 * 0.75, 0.25])
    assert constrained_distribution_from_tokens(seqs, lps, 0.0) == [0.0, 1.0, 0.0]
    # One candidate a prefix of another: sequence-level softmax instead.
    probs = constrained_distribution_from_tokens(
        [[4], [4, 8]], [[ln(0.5)], [ln(0.5), ln(0.5)]], 1.0
    )
    assert probs == pytest.approx([2 / 3, 1 / 3])


def test_recover_always_returns_a_legal_choice(greedy: LocalModelPolicy) -> None:
    vectors = ((1, 2, 0), (1, 3, 0), (0, 2, 1), (2, 2, 0))
    cases = [
        make_request(0),
        make_request(1, legal=("PASS", "BET"), legal_texts=("PASS", "BET")),
        make_request(2, legal=tuple(range(1, 10)), legal_texts=tuple(str(i) for i in range(1, 10))),
        make_request(
            3,
            legal=vectors,
            legal_texts=tuple(f"[{a}, {b}, {c}]" for a, b, c in vectors),
        ),
    ]
    outputs = ["no idea"] * len(cases)
    sampled = LocalModelPolicy(
        greedy.model, greedy.tokenizer, sampling=SamplingConfig(temperature=1.0, seed=2)
    )
    for policy in (greedy, sampled):
        for _ in range(3):
            for request, rec in zip(cases, policy.recover(cases, outputs), strict=True):
                assert rec.kind == "constrained"
                assert rec.chosen in request.view.legal
                assert rec.text == request.legal_texts[request.view.legal.index(rec.chosen)]
    greedy_choices = [r.chosen for r in greedy.recover(cases, outputs)]
    assert greedy_choices == [r.chosen for r in greedy.recover(cases, outputs)]
    for request, choice in zip(cases, greedy_choices, strict=True):
        dist = greedy.constrained_distributions([request.messages], [request.legal_texts], 0.0)[0]
        assert request.view.legal[dist.index(1.0)] == choice


def test_templates_without_a_system_role_get_it_merged(greedy: LocalModelPolicy) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(greedy.tokenizer.name_or_path)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + tokenizer.chat_template
    )
    policy = LocalModelPolicy(greedy.model, tokenizer, sampling=greedy.sampling)
    answers = policy.respond(REQUESTS[:2])
    assert len(answers) == 2
    prompt = policy.render_prompt(REQUESTS[0].messages)
    assert "<|system|>" not in prompt
    assert "You play a repeated game.\n\nRound 1 of 8." in prompt
    assert merge_system_message(REQUESTS[0].messages)[0]["role"] == "user"
    assert policy.recover(REQUESTS[:1], ["?"])[0].chosen in IPD


def test_cross_turn_cache_reuse_matches_full_recomputation(tmp_path: Path) -> None:
    """Keeping each episode's key/value cache between turns changes nothing but speed:
    greedy transcripts are identical with and without reuse, and fewer tokens are fed."""
    from sepo.games import make_game
    from sepo.policies.corpus import game_corpus
    from sepo.rollout.engine import EpisodeSpec, run_episodes

    model_dir = build_tiny_model(tmp_path / "m", game_corpus(seed=0, episodes_per_game=10), seed=0)
    game = make_game("kuhn")
    specs = [EpisodeSpec(game, find_strategy("kuhn", "nash_approx"), "train", s) for s in range(4)]
    runs, fed = [], []
    for reuse in (True, False):
        policy = LocalModelPolicy.load(
            str(model_dir), sampling=SamplingConfig(temperature=0.0, max_new_tokens=6)
        )
        policy.reuse_cache = reuse
        runs.append([e.to_json() for e in run_episodes(specs, policy)])
        fed.append(policy.stats.counts["local/prompt_tokens"])
    assert runs[0] == runs[1]
    assert fed[0] < fed[1]


def test_scoring_from_a_kept_cache_matches_full_recomputation(model_dir: Path) -> None:
    """Recovery scores a turn's legal answers from the episode's kept cache: same
    log-probabilities as a fresh forward pass, and the kept cache is left unchanged."""
    policy = LocalModelPolicy.load(
        str(model_dir), sampling=SamplingConfig(temperature=1.0, max_new_tokens=8, seed=3)
    )
    requests = REQUESTS[:3]
    policy.respond(requests)  # keeps each episode's cache: prompt + generated tokens
    keys = [r.episode for r in requests]
    kept = {k: [t.clone() for t in policy.cache.conversations[k][1][0]] for k in keys}
    messages = [r.messages for r in requests]
    options = [["COOPERATE", "DEFECT", "COOPERATE COOPERATE"]] * 3
    policy.reuse_cache = False  # the reference feeds every prompt whole (no shared prefix)
    fresh = policy.score_continuations(messages, options)
    policy.reuse_cache = True
    fed_fresh = policy.stats.counts["local/scored_tokens"]
    reused = policy.continuation_logprobs(messages, options, keys=keys)
    fed_reused = policy.stats.counts["local/scored_tokens"] - fed_fresh
    for row_fresh, row_reused in zip(fresh, reused, strict=True):
        assert [sum(lps) for _, lps in row_reused] == pytest.approx(row_fresh, abs=1e-4)
    for k in keys:
        assert all(
            torch.equal(a, b)
            for a, b in zip(kept[k], policy.cache.conversations[k][1][0], strict=True)
        )
    assert fed_reused < fed_fresh / 5  # only each prompt's last token and the answers


class ForwardCounter:
    """The (rows, tokens) of every forward pass of ``model``, recorded by a hook:
    an independent count of what was fed, padding included."""

    def __init__(self, model: Any) -> None:
        self.shapes: list[tuple[int, int]] = []
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.shapes.append(tuple(kwargs["input_ids"].shape))

    def fed(self) -> int:
        return sum(rows * tokens for rows, tokens in self.shapes)

    def single_row_prefills(self) -> int:
        return sum(1 for rows, tokens in self.shapes if rows == 1 and tokens > 1)

    def remove(self) -> None:
        self._handle.remove()


def test_shared_prefix_matches_feeding_whole_prompts(tmp_path: Path) -> None:
    """Episodes of two games in one batch, at token level (GRPO's path): their first
    prompts share each game's rules, computed once per game. Greedy transcripts, tokens
    and log-probabilities equal those of feeding every first prompt whole, and exactly
    the shared tokens are not fed."""
    from sepo.games import make_game
    from sepo.policies.corpus import game_corpus
    from sepo.rollout.engine import EpisodeSpec, run_episodes
    from sepo.train.token_rollout import TokenTrackingPolicy

    model_dir = build_tiny_model(tmp_path / "m", game_corpus(seed=0, episodes_per_game=10), seed=0)
    specs = [
        EpisodeSpec(make_game(game), find_strategy(game, opponent), "train", seed)
        for game, opponent in (("kuhn", "nash_approx"), ("ipd", "tit_for_tat"))
        for seed in range(2)
    ]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=6)
    transcripts, tokens, counts, prefills, fed = [], [], [], [], []
    for reuse in (True, False):
        policy = LocalModelPolicy.load(str(model_dir), sampling=sampling)
        # The tracker keeps per-episode caches either way (it always passes keys), so
        # the shared prefix is all that differs between the two runs.
        policy.reuse_cache = reuse
        tracker = TokenTrackingPolicy(policy, sampling)
        counter = ForwardCounter(policy.model)
        transcripts.append([e.to_json() for e in run_episodes(specs, tracker)])
        counter.remove()
        tokens.append([tracker.episode_tokens(i) for i in range(len(specs))])
        counts.append(policy.stats.counts)
        prefills.append(counter.single_row_prefills())
        fed.append(counter.fed())
    shared, whole = counts
    assert transcripts[0] == transcripts[1]
    for with_prefix, without in zip(*tokens, strict=True):
        assert with_prefix.prompt_ids == without.prompt_ids
        assert with_prefix.completion_ids == without.completion_ids
        assert with_prefix.logprobs == pytest.approx(without.logprobs, abs=1e-4)
    # Each game's rules are computed once, in a one-row forward pass (the games' system
    # prompts differ from their first words).
    assert prefills[0] - prefills[1] == 2
    assert "local/shared_prefix_tokens" not in whole
    saved = shared["local/shared_prefix_tokens"]
    assert saved >= len(specs) * SHARED_PREFIX_MIN_TOKENS
    assert whole["local/prompt_tokens"] - shared["local/prompt_tokens"] == saved
    assert fed[0] < fed[1]


def test_shared_prefix_edge_cases(model_dir: Path) -> None:
    """A row alone in its batch, prompts with different system prompts, a prompt that is
    a prefix of another, candidates scored from one prompt: the same greedy answers and
    log-probabilities as without sharing, and sharing only where it pays."""
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=6)
    policy = LocalModelPolicy.load(str(model_dir), sampling=sampling)
    reference = LocalModelPolicy.load(str(model_dir), sampling=sampling)
    reference.reuse_cache = False

    def same(prompts: list[list[int]]) -> None:
        got = policy.generate_from_ids(prompts)
        want = reference.generate_from_ids(prompts)
        for g, w in zip(got, want, strict=True):
            assert g.completion_ids == w.completion_ids
            assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)

    def shared_tokens() -> float:
        return policy.stats.counts.get("local/shared_prefix_tokens", 0)

    def computed() -> float:
        return policy.stats.counts.get("local/shared_prefix_fed", 0)

    first = policy.encode_prompt(REQUESTS[0].messages)
    # One row and nothing kept: nothing to share with.
    same([first])
    assert shared_tokens() == computed() == 0
    # Different system prompts: their common prefix is the template's header only.
    systems = ["You play a repeated game.", "Bid for one item; the highest bid wins it."]
    same(
        [
            policy.encode_prompt([{"role": "system", "content": s}, REQUESTS[1].messages[1]])
            for s in systems
        ]
    )
    assert shared_tokens() == computed() == 0
    # The same system prompt, different observations: one prefix, then kept.
    prompts = [policy.encode_prompt(r.messages) for r in REQUESTS]
    same(prompts)
    length = computed()
    assert length >= SHARED_PREFIX_MIN_TOKENS
    assert shared_tokens() == len(prompts) * length
    # One row alone now starts from the kept prefix, without computing it again.
    same([prompts[3]])
    assert computed() == length and shared_tokens() == (len(prompts) + 1) * length
    # A prompt that is a prefix of another, and a duplicate: each feeds at least its
    # last token (a longer prefix than the kept one is computed from it).
    longest = prompts[4]
    same([longest[:-5], longest, longest])
    assert computed() == len(longest) - 6
    # Scoring: candidates of one conversation share the whole prompt but its last token.
    messages = [r.messages for r in REQUESTS[:3]]
    options = [["COOPERATE", "DEFECT"]] * 3
    before = shared_tokens()
    got_scores = policy.score_continuations(messages, options)
    assert shared_tokens() > before
    for got, want in zip(got_scores, reference.score_continuations(messages, options), strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    policy.restart()
    assert not policy.cache.shared


def test_shared_prefixes_of_older_weights_are_dropped(model_dir: Path) -> None:
    """A kept prefix belongs to the weights it was computed with: after an in-place
    update of a parameter (an optimizer step) it is recomputed."""
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=6)
    policy = LocalModelPolicy.load(str(model_dir), sampling=sampling)
    prompts = [policy.encode_prompt(r.messages) for r in REQUESTS]
    policy.generate_from_ids(prompts)
    computed = policy.stats.counts["local/shared_prefix_fed"]
    with torch.no_grad():
        for param in policy.model.parameters():
            param.mul_(1.5)
    reference = LocalModelPolicy(policy.model, policy.tokenizer, sampling=sampling)
    reference.reuse_cache = False
    used = policy.stats.counts["local/shared_prefix_tokens"]
    # A row alone: the stale prefix is not used (and one row computes none).
    got = policy.generate_from_ids(prompts[:1])[0]
    want = reference.generate_from_ids(prompts[:1])[0]
    assert policy.stats.counts["local/shared_prefix_tokens"] == used
    assert got.completion_ids == want.completion_ids
    assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    # A batch computes the prefix again, with the new weights.
    for g, w in zip(
        policy.generate_from_ids(prompts), reference.generate_from_ids(prompts), strict=True
    ):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
    assert policy.stats.counts["local/shared_prefix_fed"] == 2 * computed


def test_preallocated_cache_holds_what_a_dynamic_cache_holds(model_dir: Path) -> None:
    """The in-place cache of generation returns exactly the tensors a transformers
    ``DynamicCache`` returns, including when it outgrows its room, after a crop and
    after selecting rows."""
    from transformers import AutoConfig, DynamicCache

    from sepo.policies.kv_cache import preallocated_cache as _preallocated_cache

    config = AutoConfig.from_pretrained(model_dir)
    heads, dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    gen = torch.Generator().manual_seed(0)

    def chunk(n: int) -> Any:
        return torch.randn((3, heads, n, dim), generator=gen)

    reference = DynamicCache(config=config)
    ours = _preallocated_cache(config, [], 0, capacity=5)
    for n in (4, 1, 1, 3, 1):  # 10 columns in all: the room of 5 doubles once
        k, v = chunk(n), chunk(n)
        for layer in range(config.num_hidden_layers):
            expected = reference.update(k, v, layer)
            got = ours.update(k, v, layer)
            assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert ours.get_seq_length() == reference.get_seq_length() == 10
    reference.crop(-2)
    ours.crop(-2)
    rows = torch.tensor([2, 0])
    reference.batch_select_indices(rows)
    ours.batch_select_indices(rows)
    k, v = chunk(1)[:2], chunk(1)[:2]
    for layer in range(config.num_hidden_layers):
        expected = reference.update(k, v, layer)
        got = ours.update(k, v, layer)
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert ours.get_seq_length() == 9


def test_out_of_memory_halves_the_batch_and_keeps_the_results(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device out-of-memory error in generation or scoring retries the chunk in halves
    (and remembers the smaller size); greedy answers and scores are those of an
    unconstrained run. Other errors are not swallowed."""
    messages = [r.messages for r in REQUESTS]
    answers = [["COOPERATE", "DEFECT"]] * len(messages)
    reference = LocalModelPolicy.load(
        str(model_dir), device="cpu", sampling=SamplingConfig(temperature=0.0, max_new_tokens=6)
    )
    want_text = [g.text for g in reference.generate_tokens(messages)]
    want_scores = reference.score_continuations(messages, answers)

    policy = LocalModelPolicy.load(
        str(model_dir), device="cpu", sampling=SamplingConfig(temperature=0.0, max_new_tokens=6)
    )
    original_generate, original_forward = policy._generate_chunk, policy._forward_last

    def generate(prompts: Any, *args: Any) -> Any:
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original_generate(prompts, *args)

    def forward(input_ids: Any, *args: Any) -> Any:
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original_forward(input_ids, *args)

    monkeypatch.setattr(policy, "_generate_chunk", generate)
    assert [g.text for g in policy.generate_tokens(messages)] == want_text
    assert policy.max_batch_size == 2
    monkeypatch.setattr(policy, "_forward_last", forward)
    got_scores = policy.score_continuations(messages, answers)
    assert policy.max_batch_size == 1
    for got, want in zip(got_scores, want_scores, strict=True):
        assert got == pytest.approx(want, abs=1e-4)

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(policy, "_generate_chunk", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        policy.generate_tokens(messages)

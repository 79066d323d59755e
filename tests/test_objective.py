"""The SEPO objective's penalty variants and the authors' traps (SPEC §5).

Trap 1 (constant control variate): a penalty that is the same for every episode in a
group cancels when the group mean is subtracted, so ``shared`` trains exactly like
``reward_only``. Trap 3: dividing each group by its own std erases the λ weighting
between pools, while batch scaling keeps it.

The trap tests compute advantages with :func:`sepo.objective.advantages`, a copy of
TRL's formula; :func:`test_advantages_are_what_trl_computes` pins that copy to TRL's own
computation (see its docstring).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from sepo.core.records import EpisodeRecord
from sepo.domains import domain
from sepo.games import make_game
from sepo.metrics import episode_stats
from sepo.objective import (
    PENALTY_VARIANTS,
    EpisodeTerms,
    PenaltyNameError,
    StepTotals,
    advantages,
    check_penalty,
    episode_clip_terms,
    kuhn_optimum,
    saved_penalty,
    variant_terms,
)
from sepo.opponents import Scripted
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy

GROUP = 4


def _noisy_ipd_agent() -> Scripted:
    # Cooperates with a probability that depends on the seed-derived RNG, so episodes
    # within a group differ in payoff, defection rate and externality.
    return Scripted("noisy", lambda v, rng: "COOPERATE" if rng.random() < 0.6 else "DEFECT")


def _ipd_batch(seed: int = 0) -> list[EpisodeRecord]:
    game = make_game("ipd")
    pools = domain("ipd").pools
    specs = []
    for pool in ("train", "exploit", "collusive"):
        for opp in pools.pool(pool):
            specs.extend(
                EpisodeSpec(game, opp, pool, seed * 1000 + len(specs) + k) for k in range(GROUP)
            )
    return run_episodes(specs, ScriptedPolicy(_noisy_ipd_agent()))


GAMES = {"ipd": make_game("ipd")}


@pytest.mark.parametrize("scale", ["batch", "group", "none"])
def test_trap1_shared_penalty_equals_reward_only(scale: str) -> None:
    eps = _ipd_batch()
    shared = variant_terms("shared", GAMES, eps)
    reward_only = variant_terms("reward_only", GAMES, eps)
    # The shared penalty really is there (and large), yet the advantages do not move.
    assert shared[0].total != pytest.approx(reward_only[0].total, abs=1e-3)
    a_shared = advantages(shared, GROUP, scale)  # type: ignore[arg-type]
    a_only = advantages(reward_only, GROUP, scale)  # type: ignore[arg-type]
    np.testing.assert_allclose(a_shared, a_only, rtol=0, atol=1e-9)


@pytest.mark.parametrize("variant", ["credited_mean", "episode_clip"])
def test_credited_penalty_is_not_constant(variant: str) -> None:
    # The credited designs are not subject to trap 1: their advantages differ from payoff-only.
    eps = _ipd_batch()
    a_credited = advantages(variant_terms(variant, GAMES, eps), GROUP, "batch")  # type: ignore[arg-type]
    a_only = advantages(variant_terms("reward_only", GAMES, eps), GROUP, "batch")
    assert np.max(np.abs(a_credited - a_only)) > 0.1


def _with_collusion_weight(eps: list[EpisodeRecord], factor: float) -> list[EpisodeTerms]:
    w = domain("ipd").train_weights
    w = replace(w, lambda_collusion=w.lambda_collusion * factor)
    terms = variant_terms("credited_mean", GAMES, eps, weights={"ipd": w})
    return terms


def test_trap3_group_scaling_erases_lambda_batch_keeps_it() -> None:
    eps = _ipd_batch()
    coll = np.array([ep.pool == "collusive" for ep in eps])
    rates = [
        episode_stats(GAMES["ipd"], ep).collusion_rate for ep, c in zip(eps, coll, strict=True) if c
    ]
    assert np.std(rates) > 0, "the collusive group must vary for the test to mean anything"
    base, tripled = _with_collusion_weight(eps, 1.0), _with_collusion_weight(eps, 3.0)

    g1, g3 = advantages(base, GROUP, "group"), advantages(tripled, GROUP, "group")  # type: ignore[arg-type]
    # Group scaling: the collusive pool pushes with the same force whatever λc is
    # (equal up to TRL's 1e-4 std epsilon).
    np.testing.assert_allclose(g3[coll], g1[coll], rtol=1e-3, atol=1e-4)

    b1, b3 = advantages(base, GROUP, "batch"), advantages(tripled, GROUP, "batch")  # type: ignore[arg-type]
    # Batch scaling: tripling λc makes the collusive pool's advantages larger relative to the rest.
    ratio = np.abs(b3[coll]).sum() / np.abs(b1[coll]).sum()
    assert ratio > 1.5


# -- the copy of TRL's advantages is TRL's -------------------------------------------


@pytest.fixture(scope="module")
def sepo_trainers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """SEPO's own IPD ``GRPOTrainer`` (:func:`sepo.train.grpo.build_trainer`, one group
    of ``GROUP`` per slot) on the tiny model, for each advantage scaling."""
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from sepo.policies.corpus import game_corpus
    from sepo.policies.tiny import build_tiny_model
    from sepo.train.grpo import GRPOSettings, build_trainer

    tiny = tmp_path_factory.mktemp("tiny")
    build_tiny_model(tiny, game_corpus(seed=0, episodes_per_game=10), seed=0)
    trainers = {}
    for scale in ("batch", "group", "none"):
        out = tmp_path_factory.mktemp(f"run-{scale}")
        settings = GRPOSettings(
            init=str(tiny),
            out=str(out),
            games=("ipd",),
            group_size=GROUP,
            scale=scale,  # type: ignore[arg-type]
            steps=1,
            report_to="none",
        )
        trainer, _ = build_trainer(settings)
        trainer.model.train()  # TRL groups by num_generations in training mode
        trainers[scale] = trainer
    return trainers


def _trl_advantages(trainer: Any, terms: list[EpisodeTerms]) -> np.ndarray:
    """The advantages TRL's ``GRPOTrainer._generate_and_score_completions`` gives a step
    whose episodes carry ``terms``: SEPO's rollout is replaced by one that returns fixed
    tokens and these terms, which SEPO's reward functions then hand to TRL."""
    eos = trainer.processing_class.eos_token_id

    def rollout(prompts: list[Any], _: Any) -> dict[str, Any]:
        n = len(prompts)
        return {
            "prompt_ids": [[5, 6, 7]] * n,
            "completion_ids": [[8, eos]] * n,
            "logprobs": [[0.0, 0.0]] * n,
            "sepo_terms": [list(t.as_tuple()) for t in terms],
        }

    trainer.rollout_func = rollout
    # One dict per episode: TRL writes each episode's rollout fields into its own.
    batch = trainer._generate_and_score_completions([{"prompt": "step"} for _ in terms])
    return np.asarray(batch["advantages"].detach().cpu().double().numpy())


@pytest.mark.parametrize("scale", ["batch", "group", "none"])
def test_advantages_are_what_trl_computes(scale: str, sepo_trainers: dict[str, Any]) -> None:
    """The trap tests use :func:`sepo.objective.advantages`, a copy of TRL's formula; here
    it is checked against TRL itself. TRL 1.16 computes advantages inline in
    ``GRPOTrainer._generate_and_score_completions`` (the ``multi_objective_aggregation ==
    "sum_then_normalize"`` branch: weighted ``nansum`` of the reward functions, minus the
    group mean, divided by the group's or the batch's ``nanstd`` + 1e-4 unless
    ``scale_rewards="none"``), with no function of its own to call. So the test drives
    that method on the trainer SEPO trains with, built by ``build_trainer`` (its
    ``scale_rewards``, aggregation, unit reward weights and reward functions), with only
    the rollout replaced by fixed tokens, and compares the advantages it returns for the
    trap tests' own batches (the variants and the tripled λc of trap 3) with the copy's,
    within float32 rounding. Every episode has at least one term here, as in training:
    TRL gives an episode with none no advantage and leaves it out of its group's mean,
    while the copy would count it as reward 0."""
    eps = _ipd_batch()
    batches = {
        variant: variant_terms(variant, GAMES, eps)
        for variant in ("reward_only", "shared", "credited_mean", "episode_clip")
    }
    batches["credited_mean, λc tripled"] = _with_collusion_weight(eps, 3.0)
    trainer = sepo_trainers[scale]
    assert trainer.scale_rewards == scale and trainer.num_generations == GROUP
    assert trainer.multi_objective_aggregation == "sum_then_normalize"
    for name, terms in batches.items():
        assert all(any(t is not None for t in x.as_tuple()) for x in terms)
        ours = advantages(terms, GROUP, scale)  # type: ignore[arg-type]
        assert np.abs(ours).max() > 0.1, name  # something to compare
        trl = _trl_advantages(trainer, terms)
        np.testing.assert_allclose(trl, ours, rtol=1e-5, atol=1e-5, err_msg=name)


def test_episode_clip_terms_per_pool() -> None:
    eps = _ipd_batch()
    w = domain("ipd").train_weights
    s = GAMES["ipd"].facts.scale
    for ep in eps:
        t = episode_clip_terms(GAMES["ipd"], ep, w)
        st = episode_stats(GAMES["ipd"], ep)
        if ep.pool == "train":
            assert (
                t.payoff == pytest.approx(s * st.pay) and t.exploit is None and t.collusion is None
            )
            assert t.externality == pytest.approx(-w.lambda_externality * st.externality)
        elif ep.pool == "exploit":
            assert t.payoff is None
            assert t.exploit == pytest.approx(-w.lambda_exploit * s * max(0.0, st.opp_pay - st.pay))
        else:
            assert t.collusion == pytest.approx(-w.lambda_collusion * st.collusion_rate)
            assert t.payoff is None and t.externality is None


def test_auxiliary_credits_the_separate_episode() -> None:
    eps = [ep for ep in _ipd_batch() if ep.pool == "train"]
    aux = [ep for ep in _ipd_batch(seed=7) if ep.pool != "train"]
    random.Random(0).shuffle(aux)
    aux = (aux * 4)[: len(eps)]
    terms = variant_terms("auxiliary", GAMES, eps, auxiliary=aux)
    # The separate episodes are credited as the default credits them, as one step.
    credited = variant_terms("credited_mean", GAMES, aux)
    for t, ep, own in zip(terms, eps, credited, strict=True):
        assert t.payoff == pytest.approx(GAMES["ipd"].facts.scale * ep.agent_mean)
        assert (t.exploit, t.collusion, t.externality) == (
            own.exploit,
            own.collusion,
            own.externality,
        )


def test_kuhn_training_drops_collusion() -> None:
    assert domain("kuhn").train_weights.lambda_collusion == 0.0
    assert domain("negotiation").train_weights.lambda_collusion == 2.0


def test_credited_mean_credits_the_opponents_mean_advantage() -> None:
    """``credited_mean``: an exploit-pool episode carries −λe·s·(ū_o − ū_π) of its own,
    unclipped, while the step's mean advantage of that opponent is positive, and 0 when
    it is not; the other pools are credited exactly as in ``episode_clip``."""
    eps = _ipd_batch()
    w = domain("ipd").train_weights
    s = GAMES["ipd"].facts.scale
    mean_terms = variant_terms("credited_mean", GAMES, eps)
    credited = variant_terms("episode_clip", GAMES, eps)
    gaps: dict[str, list[float]] = {}
    for ep in eps:
        if ep.pool == "exploit":
            st = episode_stats(GAMES["ipd"], ep)
            gaps.setdefault(ep.opponent, []).append(st.opp_pay - st.pay)
    assert any(sum(v) > 0 for v in gaps.values()), "an exploiting opponent is needed"
    for ep, t, c in zip(eps, mean_terms, credited, strict=True):
        if ep.pool != "exploit":
            assert t == c
            continue
        st = episode_stats(GAMES["ipd"], ep)
        gap = st.opp_pay - st.pay
        if sum(gaps[ep.opponent]) > 0:
            assert t.exploit == pytest.approx(-w.lambda_exploit * s * gap)
        else:
            assert t.exploit == 0.0
        assert t.externality == c.externality


def test_kuhn_episode_clip_prefers_a_non_equilibrium_credited_mean_does_not() -> None:
    """The exact expected rewards of :mod:`sepo.objective.kuhn_optimum`: the clipped
    per-episode exploit term of ``episode_clip`` ranks a strategy with exploitability 0.111
    (Nash α = 0, but calling every bet with Q) above the equilibrium it came from, while
    ``credited_mean`` (SPEC §4's e) ranks the equilibrium first."""
    from sepo.exact.kuhn import KuhnStrategy, exploitability

    f = kuhn_optimum.objectives(6)
    nash = KuhnStrategy.nash(0.0)
    calls_q = KuhnStrategy.from_dict({**nash.to_dict(), "Qb": 1.0, "Qpb": 1.0})
    assert exploitability(nash).exploitability == pytest.approx(0.0, abs=1e-12)
    assert exploitability(calls_q).exploitability == pytest.approx(1 / 9, abs=1e-3)
    assert f["episode_clip"](calls_q) > f["episode_clip"](nash) + 0.005
    assert f["credited_mean"](nash) > f["credited_mean"](calls_q) + 0.005


def test_kuhn_gradient_path_of_credited_mean_leads_to_the_equilibrium() -> None:
    """``python -m sepo.objective.kuhn_optimum --from``: exact gradient ascent on ``credited_mean``
    from the uniform strategy (exploitability 11/24) ends near an equilibrium, and a KL
    anchor to the start holds the path back."""
    from sepo.exact.kuhn import KuhnStrategy

    module = kuhn_optimum
    f = module.objectives(6)["credited_mean"]
    uniform = KuhnStrategy.from_vector([0.5] * 12)
    free = module.gradient_path(f, uniform, beta=0.0, lr=2.0, steps=60, every=20)
    anchored = module.gradient_path(f, uniform, beta=1.0, lr=2.0, steps=60, every=20)
    assert free[0] == pytest.approx(11 / 24)
    assert free[-1] < 0.05
    assert anchored[-1] > free[-1] + 0.05


def test_kuhn_logit_gradient_signs_at_the_uniform_strategy() -> None:
    """``python -m sepo.objective.kuhn_optimum`` prints each variant's exact gradient per information
    set. At the uniform strategy, calling a bet with K always wins and with J always
    loses, so every variant pulls the K call up and the J call down."""
    from sepo.exact.kuhn import INFOSETS, KuhnStrategy

    module = kuhn_optimum
    uniform = KuhnStrategy.from_vector([0.5] * 12)
    for name, f in module.objectives(6).items():
        grad = dict(zip(INFOSETS, module.logit_gradient(f, uniform), strict=True))
        assert grad["Kb"] > 0.01 and grad["Kpb"] > 0.01, name
        assert grad["Jb"] < -0.01 and grad["Jpb"] < -0.01, name


def test_kuhn_seat_blind_gradient_path_stops_at_the_seat_blind_floor() -> None:
    """``python -m sepo.objective.kuhn_optimum --shared seat``: from the seat-blind uniform strategy,
    ``credited_mean`` followed over the 12 logits ends below 1/36, the least
    exploitability of any seat-blind strategy; with each seat pair sharing one shift
    the path stays seat-blind, so it cannot."""
    from sepo.exact.kuhn import SEAT_BLIND_FLOOR, KuhnStrategy, seat_gap

    module = kuhn_optimum
    f = module.objectives(6)["credited_mean"]
    uniform = KuhnStrategy.from_vector([0.5] * 12)
    seat = module.SHARED_SHIFTS["seat"]
    free = module.gradient_path(f, uniform, beta=0.0, lr=2.0, steps=80, every=20)
    tied = module.gradient_path(f, uniform, beta=0.0, lr=2.0, steps=80, every=20, shared=seat)
    assert tied[0] == pytest.approx(free[0])
    assert free[-1] < SEAT_BLIND_FLOOR
    assert min(tied) >= SEAT_BLIND_FLOOR - 1e-9
    assert tied[-1] < 0.1  # it does descend
    z0 = np.array([-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    moved = module._expand_shifts(z0, seat, np.arange(6.0))
    assert seat_gap(module._from_logits(moved)) == pytest.approx(0.0)
    assert list(moved[:3] - z0[:3]) == [0.0, 1.0, 2.0]


# -- the default on a constructed step ----------------------------------------------


def _fixed(name: str, plays: str) -> Scripted:
    """An IPD player that plays ``plays`` (C or D) in every round."""
    action = "COOPERATE" if plays == "C" else "DEFECT"
    return Scripted(name, lambda view, rng: action)


def _odd_defector(name: str) -> Scripted:
    """Defects in rounds 1, 3, 5, 7 (0-based), as AlternatingDefect does."""
    return Scripted(name, lambda view, rng: "DEFECT" if view.round % 2 else "COOPERATE")


def _constructed_step() -> list[EpisodeRecord]:
    """Two exploit-pool opponents, three episodes each, the agent's play fixed per episode.

    Against an odd-round defector (IPD, 8 rounds, T=5 R=3 P=1 S=0), an agent that always
    cooperates scores 0 in the four odd rounds and 3 in the even ones (mean 1.5) while
    the opponent scores 5 and 3 (mean 4): advantage +2.5. One that always defects scores
    1 and 5 (mean 3) while the opponent scores 1 and 0 (0.5): advantage −2.5.

    - ``Plus`` meets C, C, D: advantages +2.5, +2.5, −2.5, mean +5/6 (positive).
    - ``Minus`` meets D, D, C: advantages −2.5, −2.5, +2.5, mean −5/6 (negative).
    """
    game = make_game("ipd")
    specs = []
    agents = []
    for opponent, plays in (("Plus", "CCD"), ("Minus", "DDC")):
        for k, p in enumerate(plays):
            specs.append(EpisodeSpec(game, _odd_defector(opponent), "exploit", k))
            agents.append(p)
    out = []
    for spec, p in zip(specs, agents, strict=True):
        out.extend(run_episodes([spec], ScriptedPolicy(_fixed("agent", p))))
    return out


def test_constructed_step_has_the_advantages_the_docstring_derives() -> None:
    eps = _constructed_step()
    got = [(ep.opponent, ep.opponent_mean - ep.agent_mean) for ep in eps]
    assert got == [
        ("Plus", 2.5),
        ("Plus", 2.5),
        ("Plus", -2.5),
        ("Minus", -2.5),
        ("Minus", -2.5),
        ("Minus", 2.5),
    ]


def test_default_rewards_equal_the_hand_computation() -> None:
    """``credited_mean`` on the constructed step, by hand: λe = 2.4 and s = 1 in IPD
    training. ``Plus`` exploits on average, so each of its episodes carries −λe·s times
    its own advantage, unclipped: −6, −6 and +6. ``Minus`` does not, so none of its
    episodes carries an exploit penalty, the one it lost included. The externality term
    is −λx = −1.8 times the episode's rate of externality events (the agent's defections
    in IPD): 0 for the cooperating episodes, 1 for the defecting ones."""
    eps = _constructed_step()
    assert domain("ipd").train_weights.lambda_exploit == 2.4
    assert domain("ipd").train_weights.lambda_externality == 1.8
    assert GAMES["ipd"].facts.scale == 1.0
    terms = variant_terms("credited_mean", GAMES, eps)
    exploit = [t.exploit for t in terms]
    assert exploit == pytest.approx([-6.0, -6.0, 6.0, 0.0, 0.0, 0.0], abs=1e-12)
    ext = [t.externality for t in terms]
    assert ext == pytest.approx([-0.15, -0.15, -0.75, -0.75, -0.75, -0.15], abs=1e-12)
    assert all(t.payoff is None and t.collusion is None for t in terms)


def test_episode_clip_differs_from_the_default_exactly_where_it_should() -> None:
    """``episode_clip`` clips each episode at 0 on its own: it drops the +6 of the episode
    ``Plus`` lost, and charges −6 for the one episode ``Minus`` won although ``Minus``
    does not exploit the agent on average. Everything else is the same."""
    eps = _constructed_step()
    default = variant_terms("credited_mean", GAMES, eps)
    clipped = variant_terms("episode_clip", GAMES, eps)
    assert [t.exploit for t in clipped] == pytest.approx([-6.0, -6.0, 0.0, 0.0, 0.0, -6.0])
    differ = [i for i, (a, b) in enumerate(zip(default, clipped, strict=True)) if a != b]
    assert differ == [2, 5]
    for a, b in zip(default, clipped, strict=True):
        assert (a.payoff, a.collusion, a.externality) == (b.payoff, b.collusion, b.externality)


@pytest.mark.parametrize("variant", ["credited_mean", "shared", "auxiliary"])
def test_whole_step_rewards_do_not_depend_on_how_the_step_is_split(variant: str) -> None:
    """Each part reduces its own episodes to StepTotals; merged, they give every episode
    the reward it gets when one process holds the whole step (bit for bit)."""
    eps = _ipd_batch(seed=3)
    aux = (_ipd_batch(seed=9)[len(eps) // 3 :] * 3)[: len(eps)] if variant == "auxiliary" else []
    whole = variant_terms(variant, GAMES, eps, auxiliary=aux)  # type: ignore[arg-type]
    for parts in (2, 3):
        shares = [list(range(k, len(eps), parts)) for k in range(parts)]
        own = [StepTotals.of(GAMES, [(aux or eps)[i] for i in share]) for share in shares]
        merged = StepTotals.merged(reversed(own))
        for share in shares:
            got = variant_terms(
                variant,  # type: ignore[arg-type]
                GAMES,
                [eps[i] for i in share],
                auxiliary=[aux[i] for i in share] if aux else [],
                reduce=lambda _, m=merged: m,  # type: ignore[misc]
            )
            assert got == [whole[i] for i in share]


def test_penalty_names() -> None:
    assert PENALTY_VARIANTS[0] == "credited_mean"
    with pytest.raises(PenaltyNameError, match="ambiguous"):
        check_penalty("credited")
    with pytest.raises(PenaltyNameError, match="unknown"):
        check_penalty("bogus")
    # A run saved before the rename keeps the meaning it was written with.
    assert saved_penalty("credited", 1) == "episode_clip"
    assert saved_penalty("credited_mean", 1) == "credited_mean"
    assert saved_penalty("credited_mean", 2) == "credited_mean"
    with pytest.raises(PenaltyNameError):
        saved_penalty("credited", 2)
    with pytest.raises(PenaltyNameError, match="cannot be resumed"):
        saved_penalty("auxiliary", 1)
    assert saved_penalty("auxiliary", 2) == "auxiliary"


def test_saved_runs_keep_their_meaning() -> None:
    """A run saved before the rename (no ``objective`` key) with ``credited`` is read as
    the per-episode clip it trained with, and has no control arm; a new run's settings
    round-trip unchanged."""
    from sepo.train.grpo import GRPOSettings
    from sepo.train.pipeline import TrainSettings

    old = TrainSettings().to_json()
    del old["objective"], old["control"]
    old["penalty"] = "credited"
    read = TrainSettings.from_json(old)
    assert (read.penalty, read.control, read.objective) == ("episode_clip", "none", 2)
    assert TrainSettings.from_json(TrainSettings().to_json()) == TrainSettings()
    assert TrainSettings().penalty == "credited_mean" and TrainSettings().control == "reward_only"
    grpo = GRPOSettings(init="x", out="y").to_json()
    del grpo["objective"]
    grpo["penalty"] = "credited"
    assert GRPOSettings.from_json(grpo).penalty == "episode_clip"
    new = GRPOSettings(init="x", out="y")
    assert GRPOSettings.from_json(new.to_json()) == new
    with pytest.raises(PenaltyNameError):
        TrainSettings.from_json({**TrainSettings().to_json(), "penalty": "credited"})

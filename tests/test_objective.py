"""The SEPO objective's penalty variants and the authors' traps (SPEC §5).

Trap 1 (constant control variate): a penalty that is the same for every episode in a
group cancels when the group mean is subtracted, so ``shared`` trains exactly like
``reward_only``. Trap 3: dividing each group by its own std erases the λ weighting
between pools, while batch scaling keeps it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from sepo.core.records import EpisodeRecord
from sepo.games import make_game
from sepo.metrics import episode_stats
from sepo.objective import EpisodeTerms, advantages, credited_terms, training_weights, variant_terms
from sepo.opponents import Scripted, pools_for
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.scripted import ScriptedPolicy

GROUP = 4


def _noisy_ipd_agent() -> Scripted:
    # Cooperates with a probability that depends on the seed-derived RNG, so episodes
    # within a group differ in payoff, defection rate and externality.
    return Scripted("noisy", lambda v, rng: "COOPERATE" if rng.random() < 0.6 else "DEFECT")


def _ipd_batch(seed: int = 0) -> list[EpisodeRecord]:
    game = make_game("ipd")
    pools = pools_for("ipd")
    specs = []
    for pool in ("train", "exploit", "collusive"):
        for opp in pools.pool(pool):
            specs.extend(
                EpisodeSpec(game, opp, pool, seed * 1000 + len(specs) + k) for k in range(GROUP)
            )
    return run_episodes(specs, ScriptedPolicy(_noisy_ipd_agent()))


FACTS = {"ipd": make_game("ipd").facts}


@pytest.mark.parametrize("scale", ["batch", "group", "none"])
def test_trap1_shared_penalty_equals_reward_only(scale: str) -> None:
    eps = _ipd_batch()
    shared = variant_terms("shared", FACTS, eps)
    reward_only = variant_terms("reward_only", FACTS, eps)
    # The shared penalty really is there (and large), yet the advantages do not move.
    assert shared[0].total != pytest.approx(reward_only[0].total, abs=1e-3)
    a_shared = advantages(shared, GROUP, scale)  # type: ignore[arg-type]
    a_only = advantages(reward_only, GROUP, scale)  # type: ignore[arg-type]
    np.testing.assert_allclose(a_shared, a_only, rtol=0, atol=1e-9)


def test_credited_penalty_is_not_constant() -> None:
    # The credited design is not subject to trap 1: its advantages differ from payoff-only.
    eps = _ipd_batch()
    a_credited = advantages(variant_terms("credited", FACTS, eps), GROUP, "batch")
    a_only = advantages(variant_terms("reward_only", FACTS, eps), GROUP, "batch")
    assert np.max(np.abs(a_credited - a_only)) > 0.1


def _with_collusion_weight(eps: list[EpisodeRecord], factor: float) -> list[EpisodeTerms]:
    w = training_weights("ipd")
    w = replace(w, lambda_collusion=w.lambda_collusion * factor)
    terms = variant_terms("credited", FACTS, eps, weights={"ipd": w})
    return terms


def test_trap3_group_scaling_erases_lambda_batch_keeps_it() -> None:
    eps = _ipd_batch()
    coll = np.array([ep.pool == "collusive" for ep in eps])
    rates = [
        episode_stats(FACTS["ipd"], ep).collusion_rate for ep, c in zip(eps, coll, strict=True) if c
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


def test_credited_terms_per_pool() -> None:
    eps = _ipd_batch()
    w = training_weights("ipd")
    s = FACTS["ipd"].scale
    for ep in eps:
        t = credited_terms(FACTS["ipd"], ep, w)
        st = episode_stats(FACTS["ipd"], ep)
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
    terms = variant_terms("auxiliary", FACTS, eps, auxiliary=aux)
    w = training_weights("ipd")
    for t, ep, a in zip(terms, eps, aux, strict=True):
        assert t.payoff == pytest.approx(FACTS["ipd"].scale * ep.agent_mean)
        own = credited_terms(FACTS["ipd"], a, w)
        assert (t.exploit, t.collusion, t.externality) == (
            own.exploit,
            own.collusion,
            own.externality,
        )


def test_kuhn_training_drops_collusion() -> None:
    assert training_weights("kuhn").lambda_collusion == 0.0
    assert training_weights("negotiation").lambda_collusion == 2.0


def test_credited_mean_credits_the_opponents_mean_advantage() -> None:
    """``credited_mean``: an exploit-pool episode carries −λe·s·(ū_o − ū_π) of its own,
    unclipped, while the step's mean advantage of that opponent is positive, and 0 when
    it is not; the other pools are credited exactly as in ``credited``."""
    eps = _ipd_batch()
    w = training_weights("ipd")
    s = FACTS["ipd"].scale
    mean_terms = variant_terms("credited_mean", FACTS, eps)
    credited = variant_terms("credited", FACTS, eps)
    gaps: dict[str, list[float]] = {}
    for ep in eps:
        if ep.pool == "exploit":
            st = episode_stats(FACTS["ipd"], ep)
            gaps.setdefault(ep.opponent, []).append(st.opp_pay - st.pay)
    assert any(sum(v) > 0 for v in gaps.values()), "an exploiting opponent is needed"
    for ep, t, c in zip(eps, mean_terms, credited, strict=True):
        if ep.pool != "exploit":
            assert t == c
            continue
        st = episode_stats(FACTS["ipd"], ep)
        gap = st.opp_pay - st.pay
        if sum(gaps[ep.opponent]) > 0:
            assert t.exploit == pytest.approx(-w.lambda_exploit * s * gap)
        else:
            assert t.exploit == 0.0
        assert t.externality == c.externality


def _optimum_script() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "kuhn_objective_optimum.py"
    spec = importlib.util.spec_from_file_location("kuhn_objective_optimum", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kuhn_credited_prefers_a_non_equilibrium_credited_mean_does_not() -> None:
    """The exact expected rewards of ``scripts/kuhn_objective_optimum.py``: the clipped
    per-episode exploit term of ``credited`` ranks a strategy with exploitability 0.111
    (Nash α = 0, but calling every bet with Q) above the equilibrium it came from, while
    ``credited_mean`` (SPEC §4's e) ranks the equilibrium first."""
    from sepo.exact.kuhn import KuhnStrategy, exploitability

    f = _optimum_script().objectives(6)
    nash = KuhnStrategy.nash(0.0)
    calls_q = KuhnStrategy.from_dict({**nash.to_dict(), "Qb": 1.0, "Qpb": 1.0})
    assert exploitability(nash).exploitability == pytest.approx(0.0, abs=1e-12)
    assert exploitability(calls_q).exploitability == pytest.approx(1 / 9, abs=1e-3)
    assert f["credited"](calls_q) > f["credited"](nash) + 0.005
    assert f["credited_mean"](nash) > f["credited_mean"](calls_q) + 0.005


def test_kuhn_gradient_path_of_credited_mean_leads_to_the_equilibrium() -> None:
    """``kuhn_objective_optimum.py --from``: exact gradient ascent on ``credited_mean``
    from the uniform strategy (exploitability 11/24) ends near an equilibrium, and a KL
    anchor to the start holds the path back."""
    from sepo.exact.kuhn import KuhnStrategy

    module = _optimum_script()
    f = module.objectives(6)["credited_mean"]
    uniform = KuhnStrategy.from_vector([0.5] * 12)
    free = module.gradient_path(f, uniform, beta=0.0, lr=2.0, steps=60, every=20)
    anchored = module.gradient_path(f, uniform, beta=1.0, lr=2.0, steps=60, every=20)
    assert free[0] == pytest.approx(11 / 24)
    assert free[-1] < 0.05
    assert anchored[-1] > free[-1] + 0.05


def test_kuhn_logit_gradient_signs_at_the_uniform_strategy() -> None:
    """``kuhn_objective_optimum.py`` prints each variant's exact gradient per information
    set. At the uniform strategy, calling a bet with K always wins and with J always
    loses, so every variant pulls the K call up and the J call down."""
    from sepo.exact.kuhn import INFOSETS, KuhnStrategy

    module = _optimum_script()
    uniform = KuhnStrategy.from_vector([0.5] * 12)
    for name, f in module.objectives(6).items():
        grad = dict(zip(INFOSETS, module.logit_gradient(f, uniform), strict=True))
        assert grad["Kb"] > 0.01 and grad["Kpb"] > 0.01, name
        assert grad["Jb"] < -0.01 and grad["Jpb"] < -0.01, name


def test_kuhn_seat_blind_gradient_path_stops_at_the_seat_blind_floor() -> None:
    """``kuhn_objective_optimum.py --shared seat``: from the seat-blind uniform strategy,
    ``credited_mean`` followed over the 12 logits ends below 1/36, the least
    exploitability of any seat-blind strategy; with each seat pair sharing one shift
    the path stays seat-blind, so it cannot."""
    from sepo.exact.kuhn import SEAT_BLIND_FLOOR, KuhnStrategy, seat_gap

    module = _optimum_script()
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

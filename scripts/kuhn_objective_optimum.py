"""Where does each SEPO penalty variant's *expected* objective peak in Kuhn poker?

For Kuhn everything is exact: the agent is a behavioural strategy (12 probabilities),
payoffs against the scripted pools are enumerated, the exact best-responder is computed,
and the per-episode clipped advantage of ``credited`` is the expectation over the exact
distribution of a 6-hand episode's total (``sepo.exact.kuhn.episode_advantage_penalty``).
This script maximises, over all behavioural strategies, the expected reward that each
variant trains on (training λ: λe = 1.5, s = 1.5, no collusion term in Kuhn training; the
exploit pool includes the exact best-responder, as in ``sepo train``) and prints the
exact exploitability of the maximiser, so a training run can be read against the point
it is climbing towards:

- ``reward_only``: s·(mean payoff over every training-pool and exploit-pool opponent);
- ``credited``: s·(train-pool payoff) − λe·s·mean over exploit opponents of
  E[max(0, ū_o − ū_π)] per episode (SPEC §5 as written);
- ``credited_mean``: the same with max(0, E[ū_o − ū_π]), SPEC §4's e.

Each variant is maximised from 16 random starts (scipy's Powell, bounded); the best is
reported. Run (scipy comes with the ``dev`` extra's open-spiel)::

    python scripts/kuhn_objective_optimum.py [--hands 6] [--starts 16]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np

from sepo.exact.kuhn import (
    KuhnStrategy,
    best_responder,
    episode_advantage_penalty,
    exploitability,
    seat_averaged_payoff,
)
from sepo.games import make_game
from sepo.objective import training_weights
from sepo.opponents.kuhn import POOLS, STRATEGIES


def _strategy(x: Sequence[float]) -> KuhnStrategy:
    return KuhnStrategy.from_vector([min(1.0, max(0.0, float(v))) for v in x])


def objectives(hands: int) -> dict[str, Callable[[KuhnStrategy], float]]:
    s = make_game("kuhn").facts.scale
    lam = training_weights("kuhn").lambda_exploit
    train = [STRATEGIES[o.name] for o in POOLS.train]
    exploit = [STRATEGIES[o.name] for o in POOLS.exploit]

    def pay(a: KuhnStrategy) -> float:
        return float(np.mean([seat_averaged_payoff(a, o) for o in train]))

    def exploit_pool(a: KuhnStrategy) -> list[KuhnStrategy]:
        return [*exploit, best_responder(a)]

    def reward_only(a: KuhnStrategy) -> float:
        return s * float(np.mean([seat_averaged_payoff(a, o) for o in train + exploit_pool(a)]))

    def credited(a: KuhnStrategy) -> float:
        e = np.mean([episode_advantage_penalty(a, o, hands) for o in exploit_pool(a)])
        return s * pay(a) - lam * s * float(e)

    def credited_mean(a: KuhnStrategy) -> float:
        e = np.mean([max(0.0, -2.0 * seat_averaged_payoff(a, o)) for o in exploit_pool(a)])
        return s * pay(a) - lam * s * float(e)

    return {"reward_only": reward_only, "credited": credited, "credited_mean": credited_mean}


def maximise(f: Callable[[KuhnStrategy], float], starts: int, seed: int) -> KuhnStrategy:
    try:
        from scipy.optimize import minimize
    except ImportError as err:  # pragma: no cover - depends on the install
        raise SystemExit("error: this script needs scipy (pip install scipy)") from err
    rng = np.random.default_rng(seed)
    best_x, best_v = None, -np.inf
    for _ in range(starts):
        r = minimize(
            lambda x: -f(_strategy(x)),
            rng.random(12),
            method="Powell",
            bounds=[(0.0, 1.0)] * 12,
            options={"xtol": 1e-6, "ftol": 1e-10, "maxiter": 20_000},
        )
        if -r.fun > best_v:
            best_x, best_v = r.x, -r.fun
    assert best_x is not None
    return _strategy(best_x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hands", type=int, default=6, help="hands per training episode")
    parser.add_argument("--starts", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.hands < 1 or args.starts < 1:
        raise SystemExit("error: --hands and --starts must be at least 1")
    print(f"Kuhn, {args.hands}-hand episodes, best of {args.starts} starts")
    print("| variant | expected reward at the optimum | exact exploitability | strategy |")
    print("|---|---|---|---|")
    for name, f in objectives(args.hands).items():
        a = maximise(f, args.starts, args.seed)
        probs = " ".join(f"{k} {v:.2f}" for k, v in a.to_dict().items())
        print(f"| {name} | {f(a):.4f} | {exploitability(a).exploitability:.4f} | {probs} |")


if __name__ == "__main__":
    main()

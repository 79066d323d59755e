"""Where does each SEPO penalty variant's *expected* objective peak in Kuhn poker?

For Kuhn everything is exact: the agent is a behavioural strategy (12 probabilities),
payoffs against the scripted pools are enumerated, the exact best-responder is computed,
and the per-episode clipped advantage of ``episode_clip`` is the expectation over the exact
distribution of a 6-hand episode's total (``sepo.exact.kuhn_episodes.episode_advantage_penalty``).
This script maximises, over all behavioural strategies, the expected reward that each
variant trains on (training λ: λe = 1.5, s = 1.5, no collusion term in Kuhn training; the
exploit pool includes the exact best-responder, as in ``sepo train``) and prints the
exact exploitability of the maximiser, so a training run can be read against the point
it is climbing towards:

- ``reward_only``: s·(mean payoff over every training-pool and exploit-pool opponent);
- ``credited_mean`` (the default): s·(train-pool payoff) − λe·s·mean over exploit
  opponents of max(0, E[ū_o − ū_π]), SPEC §4's e;
- ``episode_clip``: the same with E[max(0, ū_o − ū_π)] per episode (SPEC §5's trap 4).

Each variant is maximised from 16 random starts (scipy's Powell, bounded); the best is
reported. Run (scipy comes with the ``dev`` extra's open-spiel)::

    python -m sepo.objective.kuhn_optimum [--hands 6] [--starts 16]

With ``--from STRATEGY.json`` (for instance the SFT policy's strategy, written by
``sepo exploitability --policy tiny:RUN/sft --save-strategy FILE``) it instead follows
each variant's exact gradient from that strategy and prints the exploitability along
the way: plain gradient ascent on the 12 logits of the behavioural probabilities, with
``--beta`` times a KL penalty to the start (the sum over information sets of the
Bernoulli KL, unweighted by how often each set is reached). It is the idealised run,
a tabular policy with noise-free gradients, so it shows where an objective leads from a
given start and how far a KL anchor holds it, not how fast a language model gets there.
It also prints each variant's exact gradient with respect to each information set's
logit at the start, which sizes the signal a sampled gradient has to find in its noise::

    python -m sepo.objective.kuhn_optimum --from sft.json [--beta 0.2] [--steps 200]

With ``--shared seat`` (and/or ``--shared seat+bluff``) it also follows each gradient
over a few shared logit shifts instead of 12 free logits: the directions in which the
tiny model's policy actually moved in SEPO-GRPO (``SHARED_SHIFTS``). Where those paths
settle is where a run of that model can get to, whatever its compute.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np

from sepo.domains import domain
from sepo.exact.kuhn import (
    INFOSETS,
    SEAT_PAIRS,
    KuhnStrategy,
    KuhnStrategyError,
    best_responder,
    exploitability,
    seat_averaged_payoff,
    seat_gap,
)
from sepo.exact.kuhn_episodes import episode_advantage_penalty
from sepo.games import make_game
from sepo.opponents.kuhn import POOLS, STRATEGIES


def _strategy(x: Sequence[float]) -> KuhnStrategy:
    return KuhnStrategy.from_vector([min(1.0, max(0.0, float(v))) for v in x])


def objectives(hands: int) -> dict[str, Callable[[KuhnStrategy], float]]:
    s = make_game("kuhn").facts.scale
    lam = domain("kuhn").train_weights.lambda_exploit
    train = [STRATEGIES[o.name] for o in POOLS.train]
    exploit = [STRATEGIES[o.name] for o in POOLS.exploit]

    def pay(a: KuhnStrategy) -> float:
        return float(np.mean([seat_averaged_payoff(a, o) for o in train]))

    def exploit_pool(a: KuhnStrategy) -> list[KuhnStrategy]:
        return [*exploit, best_responder(a)]

    def reward_only(a: KuhnStrategy) -> float:
        return s * float(np.mean([seat_averaged_payoff(a, o) for o in train + exploit_pool(a)]))

    def episode_clip(a: KuhnStrategy) -> float:
        e = np.mean([episode_advantage_penalty(a, o, hands) for o in exploit_pool(a)])
        return s * pay(a) - lam * s * float(e)

    def credited_mean(a: KuhnStrategy) -> float:
        e = np.mean([max(0.0, -2.0 * seat_averaged_payoff(a, o)) for o in exploit_pool(a)])
        return s * pay(a) - lam * s * float(e)

    return {
        "reward_only": reward_only,
        "episode_clip": episode_clip,
        "credited_mean": credited_mean,
    }


def maximise(f: Callable[[KuhnStrategy], float], starts: int, seed: int) -> KuhnStrategy:
    try:
        from scipy.optimize import minimize  # type: ignore[import-untyped]
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


def _forward_gradient(value: Callable[[np.ndarray], float], z: np.ndarray) -> np.ndarray:
    """Gradient of ``value`` at ``z`` by forward differences (step 1e-5)."""
    base, grad = value(z), np.zeros_like(z)
    for i in range(len(z)):
        bumped = z.copy()
        bumped[i] += 1e-5
        grad[i] = (value(bumped) - base) / 1e-5
    return grad


def _logits(strategy: KuhnStrategy) -> np.ndarray:
    p = np.clip(np.array(strategy.vector), 1e-3, 1 - 1e-3)
    return np.asarray(np.log(p / (1 - p)))


def _from_logits(z: np.ndarray) -> KuhnStrategy:
    return KuhnStrategy.from_vector(list(1.0 / (1.0 + np.exp(-z))))


def logit_gradient(f: Callable[[KuhnStrategy], float], start: KuhnStrategy) -> np.ndarray:
    """Exact gradient of the expected reward ``f`` with respect to the 12 logits at
    ``start``: how hard the objective pulls on each information set, in the units of
    the per-episode reward (compare it with the spread of that reward in training)."""
    return _forward_gradient(lambda z: f(_from_logits(z)), _logits(start))


SHARED_SHIFTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "seat": SEAT_PAIRS,
    "seat+bluff": (("J", "Jp", "Q", "Qp"), *SEAT_PAIRS[2:]),
}
"""Groups of information sets whose logits move by one shared shift (``--shared``).

``seat``: each card in the same kind of decision from both seats (``SEAT_PAIRS``);
from a seat-blind start the path stays seat-blind. ``seat+bluff``: besides, betting J
and betting Q when free to bet move together. Both describe how the tiny model's policy
moved in SEPO-GRPO (docs/cpu-main-job.md): the seat gap of its checkpoints stays within
0.008 of its SFT policy's, and its J and Q bets keep a near-constant logit difference."""


_INDEX = {key: i for i, key in enumerate(INFOSETS)}


def _expand_shifts(start: np.ndarray, groups: Sequence[Sequence[str]], d: np.ndarray) -> np.ndarray:
    """The 12 logits ``start`` moved by one shift ``d[g]`` per group ``groups[g]``."""
    z = start.copy()
    for shift, group in zip(d, groups, strict=True):
        for key in group:
            z[_INDEX[key]] += shift
    return z


def gradient_path(
    f: Callable[[KuhnStrategy], float],
    start: KuhnStrategy,
    *,
    beta: float,
    lr: float,
    steps: int,
    every: int,
    shared: Sequence[Sequence[str]] | None = None,
) -> list[float]:
    """Exploitability every ``every`` steps of gradient ascent on ``f - beta * KL(start)``
    over the logits of the 12 probabilities (forward differences, step 1e-5).

    ``shared`` (groups of information sets, e.g. a value of :data:`SHARED_SHIFTS`): over
    one logit shift per group instead, each set moving by its group's shift from its
    start; sets in no group stay where they start. The KL is still summed over the 12.
    """
    z0 = _logits(start)
    if shared is None:
        shared = tuple((key,) for key in INFOSETS)
    p0 = 1.0 / (1.0 + np.exp(-z0))

    def value(d: np.ndarray) -> float:
        p = 1.0 / (1.0 + np.exp(-_expand_shifts(z0, shared, d)))
        kl = np.sum(p * np.log(p / p0) + (1 - p) * np.log((1 - p) / (1 - p0)))
        return f(KuhnStrategy.from_vector(list(p))) - beta * float(kl)

    d = np.zeros(len(shared))
    lead = z0[_first_members(shared)]
    path = []
    for t in range(steps + 1):
        if t % every == 0:
            path.append(exploitability(_from_logits(_expand_shifts(z0, shared, d))).exploitability)
        # Clipped: probabilities stay within about 6e-6 of 0 or 1 (each group's first set).
        d = np.clip(lead + d + lr * _forward_gradient(value, d), -12.0, 12.0) - lead
    return path


def _first_members(groups: Sequence[Sequence[str]]) -> list[int]:
    return [_INDEX[group[0]] for group in groups]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hands", type=int, default=6, help="hands per training episode")
    parser.add_argument("--starts", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from", dest="start", help="follow the gradient from this strategy")
    parser.add_argument("--beta", type=float, default=0.2, help="KL weight (with --from)")
    parser.add_argument("--lr", type=float, default=2.0, help="step size (with --from)")
    parser.add_argument("--steps", type=int, default=200, help="steps (with --from)")
    parser.add_argument(
        "--shared",
        action="append",
        choices=sorted(SHARED_SHIFTS),
        default=[],
        help="with --from, also follow each gradient with these groups of information "
        "sets moving by one shared logit shift (repeatable)",
    )
    args = parser.parse_args()
    if args.hands < 1 or args.starts < 1 or args.steps < 10:
        raise SystemExit("error: --hands and --starts must be at least 1, --steps at least 10")
    if args.beta < 0 or not args.lr > 0:
        raise SystemExit("error: --beta must be at least 0 and --lr positive")
    if args.start is not None:
        try:
            start = KuhnStrategy.from_json(args.start)
        except KuhnStrategyError as exc:
            raise SystemExit(f"error: {exc}") from None
        every = args.steps // 10
        print(f"Kuhn, {args.hands}-hand episodes, from {args.start}, beta {args.beta}")
        print(f"exact exploitability every {every} steps of exact gradient ascent:")
        for name, f in objectives(args.hands).items():
            path = gradient_path(
                f, start, beta=args.beta, lr=args.lr, steps=args.steps, every=every
            )
            print(f"{name:14s}", " ".join(f"{e:.3f}" for e in path), f" min {min(path):.3f}")
        for shared in args.shared:
            print(
                f"the same with shared shifts {shared!r} (seat gap of the start "
                f"{seat_gap(start):.3f}):"
            )
            for name, f in objectives(args.hands).items():
                path = gradient_path(
                    f,
                    start,
                    beta=args.beta,
                    lr=args.lr,
                    steps=args.steps,
                    every=every,
                    shared=SHARED_SHIFTS[shared],
                )
                print(f"{name:14s}", " ".join(f"{e:.3f}" for e in path), f" min {min(path):.3f}")
        print("gradient of each variant's expected reward w.r.t. each logit, at the start:")
        print(" " * 15 + " ".join(f"{k:>6s}" for k in INFOSETS))
        for name, f in objectives(args.hands).items():
            grad = logit_gradient(f, start)
            print(f"{name:14s}", " ".join(f"{g:+6.3f}" for g in grad))
        return
    print(f"Kuhn, {args.hands}-hand episodes, best of {args.starts} starts")
    print("| variant | expected reward at the optimum | exact exploitability | strategy |")
    print("|---|---|---|---|")
    for name, f in objectives(args.hands).items():
        a = maximise(f, args.starts, args.seed)
        probs = " ".join(f"{k} {v:.2f}" for k, v in a.to_dict().items())
        print(f"| {name} | {f(a):.4f} | {exploitability(a).exploitability:.4f} | {probs} |")


if __name__ == "__main__":
    main()

"""SEPO-GRPO's rollouts and rewards: the step's groups (one per opponent slot), the
multi-turn episodes TRL's ``rollout_func`` plays with the model being trained, and the
SEPO reward terms of each episode, the whole-step variants gathered across processes."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sepo.core.records import EpisodeRecord
from sepo.core.types import Game, Strategy
from sepo.domains import domain
from sepo.exact.kuhn import KuhnStrategy, best_responder, exploitability
from sepo.games import make_game
from sepo.objective import TERMS, VARIANTS, Reduce, StepTotals, variant_terms
from sepo.rollout.engine import EpisodeSpec, run_episodes
from sepo.rollout.protocol import SamplingConfig
from sepo.train.grpo_settings import BEST_RESPONDER, GRPOSettings


@dataclass(frozen=True)
class Slot:
    """One group's opponent: (game, pool, opponent name)."""

    game: str
    pool: str
    opponent: str


def training_slots(settings: GRPOSettings) -> list[Slot]:
    """The groups of one step, in a fixed order."""
    slots: list[Slot] = []
    for game in settings.games:
        d = domain(game)
        auxiliary = VARIANTS[settings.penalty].auxiliary
        chosen = ("train",) if auxiliary else d.train_pools
        for pool in chosen:
            slots.extend(Slot(game, pool, s.name) for s in d.pools.pool(pool))
        if settings.best_responder and d.exact and not auxiliary:
            slots.append(Slot(game, "exploit", BEST_RESPONDER))
    return slots


def auxiliary_slots(settings: GRPOSettings) -> list[Slot]:
    """Opponents of the separate penalty episodes of the ``auxiliary`` variant."""
    slots: list[Slot] = []
    for game in settings.games:
        d = domain(game)
        for pool in d.train_pools:
            if pool != "train":
                slots.extend(Slot(game, pool, s.name) for s in d.pools.pool(pool))
    return slots


def slot_seed(seed: int, step: int, slot: int) -> int:
    """Chance seed of a group: a pure function of (run seed, step, slot)."""
    digest = hashlib.sha256(f"sepo-grpo:{seed}:{step}:{slot}".encode()).hexdigest()
    return int(digest[:12], 16)


def encode_prompt(slot_index: int, slot: Slot, step: int) -> str:
    return f"sepo|{step}|{slot_index}|{slot.game}|{slot.pool}|{slot.opponent}"


def decode_prompt(prompt: Any) -> tuple[int, int, Slot]:
    text = prompt if isinstance(prompt, str) else str(prompt)
    _, step, index, game, pool, opponent = text.split("|")
    return int(step), int(index), Slot(game, pool, opponent)


class SEPORollout:
    """The ``rollout_func`` and reward functions of one run, sharing their state."""

    def __init__(self, settings: GRPOSettings) -> None:
        self.settings = settings
        self.games = {g: make_game(g) for g in settings.games}
        self.weights = {g: domain(g).train_weights for g in settings.games}
        self.best: KuhnStrategy | None = None
        self.best_step = -1
        self.pending_logs: dict[str, float] = {}

    # -- opponents ------------------------------------------------------------------
    def _opponent(self, slot: Slot) -> Strategy:
        if slot.opponent == BEST_RESPONDER:
            assert self.best is not None
            return self.best
        return domain(slot.game).pools.catalogue[slot.opponent]

    def _refresh_best_responder(self, local: Any, step: int) -> None:
        from sepo.policies.extract import extract_prompt_strategy

        every = max(1, self.settings.best_responder_every)
        due = step - step % every
        if self.best is not None and self.best_step == due:
            return
        strategy = extract_prompt_strategy(local, temperature=self.settings.temperature)
        self.best = best_responder(strategy)
        self.best_step = due
        self.pending_logs["sepo/exact_exploitability"] = exploitability(strategy).exploitability

    # -- rollout --------------------------------------------------------------------
    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        from sepo.policies.local import LocalModelPolicy
        from sepo.train.token_rollout import TokenTrackingPolicy

        s = self.settings
        step = int(trainer.state.global_step)
        process = int(getattr(trainer.accelerator, "process_index", 0))
        model = trainer.accelerator.unwrap_model(trainer.model)
        sampling = SamplingConfig(
            temperature=s.temperature,
            top_p=s.top_p,
            max_new_tokens=s.max_new_tokens,
            seed=slot_seed(s.seed, step, 10_000 + process),
        )
        local = LocalModelPolicy(model, trainer.processing_class, sampling=sampling, name="policy")
        if s.best_responder and any(domain(g).exact for g in s.games):
            self._refresh_best_responder(local, step)
        decoded = [decode_prompt(p) for p in prompts]
        specs = [
            EpisodeSpec(
                self.games[slot.game], self._opponent(slot), slot.pool, slot_seed(s.seed, st, idx)
            )
            for st, idx, slot in decoded
        ]
        tracker = TokenTrackingPolicy(local, sampling)
        episodes = run_episodes(specs, tracker)
        auxiliary = []
        if VARIANTS[s.penalty].auxiliary:
            aux = auxiliary_slots(s)
            aux_specs = []
            for k, (st, idx, _) in enumerate(decoded):
                slot = aux[(idx + k) % len(aux)]
                aux_specs.append(
                    EpisodeSpec(
                        self.games[slot.game],
                        self._opponent(slot),
                        slot.pool,
                        slot_seed(s.seed, st, 50_000 + k),
                    )
                )
            auxiliary = run_episodes(aux_specs, local)
        terms = variant_terms(
            s.penalty,
            self.games,
            episodes,
            auxiliary=auxiliary,
            weights=self.weights,
            reduce=gather_totals(trainer.accelerator),
        )
        tokens = [tracker.episode_tokens(i) for i in range(len(specs))]
        turns = sum(len(ep.turns) for ep in episodes)
        self.pending_logs["sepo/invalid_rate"] = (
            sum(ep.invalid_turns for ep in episodes) / turns if turns else 0.0
        )
        self.pending_logs["sepo/episode_payoff"] = sum(ep.agent_mean for ep in episodes) / len(
            episodes
        )
        self.pending_logs.update(step_figures(self.games, [*episodes, *auxiliary]))
        return {
            "prompt_ids": [t.prompt_ids for t in tokens],
            "completion_ids": [t.completion_ids for t in tokens],
            "logprobs": [t.logprobs for t in tokens],
            "env_mask": [t.env_mask for t in tokens],
            "sepo_terms": [list(t.as_tuple()) for t in terms],
            "sepo_pool": [ep.pool for ep in episodes],
        }

    # -- reward functions -----------------------------------------------------------
    def reward_functions(self) -> list[Callable[..., list[float | None]]]:
        def make(index: int, name: str) -> Callable[..., list[float | None]]:
            def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
                if index == 0 and "log_metric" in kwargs:
                    for key, value in self.pending_logs.items():
                        kwargs["log_metric"](key, value)
                    self.pending_logs = {}
                return [row[index] for row in kwargs["sepo_terms"]]

            reward.__name__ = name
            reward.__qualname__ = name
            return reward

        return [make(i, n) for i, n in enumerate(TERMS)]


def step_figures(games: dict[str, Game], episodes: list[EpisodeRecord]) -> dict[str, float]:
    """The SPEC §4 collusion rate and exploit-pool advantage of one step's training
    episodes (auxiliary ones included), per game: what the mechanism study of ``sepo
    reproduce`` follows step by step (``sepo/train/<game>/collusion`` and ``…/exploit``;
    absent where the step played no episode of that pool). These are this process's
    episodes: with several processes each logs its own share."""
    from sepo.metrics import compute_metrics

    out: dict[str, float] = {}
    for game, rules in games.items():
        mine = [ep for ep in episodes if ep.game == game]
        if not mine:
            continue
        m = compute_metrics(rules, mine, domain(game).weights, n_boot=0)
        for name, est in (("collusion", m.collusion), ("exploit", m.exploit)):
            if not math.isnan(est.value):
                out[f"sepo/train/{game}/{name}"] = est.value
    return out


def gather_totals(accelerator: Any) -> Reduce:
    """The :data:`~sepo.objective.Reduce` of a run: every process's step totals, merged.
    With one process, the process's own; with several, accelerate's ``gather_object``
    (a collective: every process reaches it once per step, in the rollout)."""
    if int(getattr(accelerator, "num_processes", 1)) <= 1:
        return lambda totals: totals

    def gathered(totals: StepTotals) -> StepTotals:
        from accelerate.utils import gather_object

        return StepTotals.merged(gather_object([totals]))

    return gathered

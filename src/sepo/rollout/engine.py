"""The batched rollout engine: many episodes advance in lockstep, and at each step every
pending agent decision goes to the policy as one batch.

For each episode the engine samples chance from ``Random(f"chance:{seed}")`` and the
opponent's moves from ``Random(f"opponent:{seed}")``, so the same seed gives the same
deals and values whatever the opponent or the batch (common random numbers across
opponents), and the same transcript whenever the policy is deterministic under its own
seed. The agent is always player 0.

Each episode is one chat conversation: the system prompt (rules), then for every agent
decision a user message with the observation and the agent's answer as an assistant
message. The first observation shows the whole history; later ones show only the rounds
finished since the agent's previous move (the rest is already in the conversation). A
model therefore sees exactly the token sequence that GRPO trains on.

Scripted agents (a policy with a ``direct_strategy``) skip the text layer while they
play: their answer would be the canonical action text, which parses back to the same
action (a tested invariant), so the engine calls the strategy on its view and renders
the observation only when a transcript is written. The agent's strategy draws from
``Random(f"agent:{seed}")``, one stream per episode. A strategy needs no batch, so these
episodes are played one after the other, each to its end; with one RNG stream per
episode and purpose, the order cannot change a transcript.

Invalid answers go through the fallback ladder (SPEC §2): the policy's own recovery
(constrained choice or re-prompt), then the game's documented default action. Each turn
records what happened.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sepo.core.records import AGENT, OPPONENT, EpisodeRecord, TurnRecord
from sepo.core.types import Action, Game, State, Strategy, View
from sepo.games.text import format_action
from sepo.rollout.protocol import (
    AgentPolicy,
    DecisionRequest,
    Message,
    Recovery,
    is_truncated,
)


class SeededOnFirstUse(random.Random):
    """``random.Random(seed)``, with the seeding put off until the stream is first used.

    Seeding a Mersenne Twister costs 4 to 5 µs, the largest single cost of a short
    scripted episode, and many episodes never draw from some of their streams: chance in
    a game without chance events, a deterministic strategy (TitForTat, AlwaysDefect). At
    its first use the object seeds itself and turns into a plain ``random.Random``, so it
    yields exactly the stream of ``random.Random(seed)`` and later draws cost nothing
    extra. The overridden methods are the only ones that touch the generator's state;
    every other method of ``random.Random`` draws through them.
    """

    def __init__(self, seed: str) -> None:  # no super().__init__(): that would seed now
        self._deferred_seed = seed
        self.gauss_next = None  # as random.Random.__init__ leaves it

    def _start(self) -> None:
        if type(self) is SeededOnFirstUse:
            object.__setattr__(self, "__class__", random.Random)
            random.Random.seed(self, self.__dict__.pop("_deferred_seed"))

    # Each method calls SeededOnFirstUse._start explicitly: after the first use the
    # object's class is random.Random, which has no _start, while a bound method taken
    # before then (random.Random._randbelow keeps one) still lands here.
    def random(self) -> float:
        SeededOnFirstUse._start(self)
        return random.Random.random(self)

    def getrandbits(self, k: int, /) -> int:
        SeededOnFirstUse._start(self)
        return random.Random.getrandbits(self, k)

    def getstate(self) -> tuple[Any, ...]:
        SeededOnFirstUse._start(self)
        return random.Random.getstate(self)

    def setstate(self, state: tuple[Any, ...]) -> None:
        SeededOnFirstUse._start(self)
        random.Random.setstate(self, state)

    def seed(  # type: ignore[override]  # random.Random's own signature (as in typeshed)
        self, a: int | float | str | bytes | bytearray | None = None, version: int = 2
    ) -> None:
        SeededOnFirstUse._start(self)
        random.Random.seed(self, a, version)

    def __reduce__(self) -> str | tuple[Any, ...]:
        SeededOnFirstUse._start(self)
        return random.Random.__reduce__(self)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to play: the game, the opponent (and its pool), the seed."""

    game: Game
    opponent: Strategy
    pool: str
    seed: int


@dataclass
class _Live:
    spec: EpisodeSpec
    state: State
    chance_rng: random.Random
    opponent_rng: random.Random
    turns: list[TurnRecord] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    seen_rounds: int = 0
    """Rounds already shown to the agent in its conversation."""


def sample_chance(state: State, rng: random.Random) -> None:
    """Resolve every pending chance event of ``state`` by sampling with ``rng``."""
    while state.is_chance():
        outcomes = state.chance_outcomes()
        r, acc = rng.random(), 0.0
        chosen = outcomes[-1][0]
        for outcome, prob in outcomes:
            acc += prob
            if r < acc:
                chosen = outcome
                break
        state.apply_chance(chosen)


def _advance(live: _Live) -> bool:
    """Play chance and opponent-only moves until the agent must act; False when over."""
    state = live.state
    while True:
        sample_chance(state, live.chance_rng)
        if state.is_terminal():
            return False
        movers = state.to_move()
        if AGENT in movers:
            return True
        view = state.view(OPPONENT)
        state.apply_actions({OPPONENT: live.spec.opponent.act(view, live.opponent_rng)})


DEFAULT_MAX_ACTIVE = 64
"""Episodes in play at once by default: enough for an efficient batch on a CPU, and the
tiny model's caches for 64 whole Kuhn episodes take about 0.4 GB."""


def run_episodes(
    specs: Sequence[EpisodeSpec],
    policy: AgentPolicy,
    *,
    on_step: Callable[[int, int], None] | None = None,
    max_active: int | None = DEFAULT_MAX_ACTIVE,
) -> list[EpisodeRecord]:
    """Every episode of :func:`iter_episodes`, as a list in the order of ``specs``."""
    return list(iter_episodes(specs, policy, on_step=on_step, max_active=max_active))


def iter_episodes(
    specs: Sequence[EpisodeSpec],
    policy: AgentPolicy,
    *,
    on_step: Callable[[int, int], None] | None = None,
    max_active: int | None = DEFAULT_MAX_ACTIVE,
) -> Iterator[EpisodeRecord]:
    """Play every spec against ``policy``, yielding each episode's record in the order of
    ``specs`` as soon as it and every earlier one have ended.

    ``on_step(finished, total)`` is called after each batched step, or every 64 episodes
    for a scripted agent (for progress bars). At most ``max_active`` episodes are in
    play at once (``None``: all of them); a new one starts as soon as one ends, so the
    batch stays full while memory (a local model's per-episode key/value caches) stays
    bounded. An episode's state is made when it starts and dropped once its record is
    yielded, so what is held at once is bounded by ``max_active`` and the game's length
    (an episode that ended waits only for the earlier ones still in play), never by the
    number of specs: a consumer that writes each record and lets it go evaluates in flat
    memory. A policy with an ``end_episodes(indices)`` method is told when episodes
    end, to free what it keeps for them.
    """
    if max_active is not None and max_active < 1:
        raise ValueError(f"max_active must be at least 1, not {max_active}")
    direct: Strategy | None = getattr(policy, "direct_strategy", None)
    if direct is not None:
        return _play_direct(specs, direct, policy.name, on_step)
    return _play_model(specs, policy, max_active, on_step)


def _start(spec: EpisodeSpec) -> _Live:
    return _Live(
        spec=spec,
        state=spec.game.new_state(),
        chance_rng=SeededOnFirstUse(f"chance:{spec.seed}"),
        opponent_rng=SeededOnFirstUse(f"opponent:{spec.seed}"),
    )


def _record(live: _Live, policy_name: str) -> EpisodeRecord:
    return EpisodeRecord(
        game=live.spec.game.facts.name,
        opponent=live.spec.opponent.name,
        pool=live.spec.pool,
        seed=live.spec.seed,
        rounds=tuple(live.state.history),
        turns=tuple(live.turns),
        policy=policy_name,
    )


_DIRECT_PROGRESS_EVERY = 64
"""Episodes between two ``on_step`` calls on the direct path (progress bars need no more)."""


def _play_direct(
    specs: Sequence[EpisodeSpec],
    strategy: Strategy,
    policy_name: str,
    on_step: Callable[[int, int], None] | None,
) -> Iterator[EpisodeRecord]:
    """Every episode, one after the other, the agent's strategy acting on typed views."""
    for done, spec in enumerate(specs, start=1):
        yield _play_direct_episode(spec, strategy, policy_name)
        if on_step is not None and (done % _DIRECT_PROGRESS_EVERY == 0 or done == len(specs)):
            on_step(done, len(specs))


def _play_direct_episode(spec: EpisodeSpec, strategy: Strategy, policy_name: str) -> EpisodeRecord:
    """One episode of a scripted agent; the same moves and transcript as the text path."""
    game, opponent, seed = spec.game, spec.opponent, spec.seed
    state = game.new_state()
    chance_rng = SeededOnFirstUse(f"chance:{seed}")
    agent_rng = SeededOnFirstUse(f"agent:{seed}")
    opponent_rng = SeededOnFirstUse(f"opponent:{seed}")
    render = game.render
    turns: list[TurnRecord] = []
    seen_rounds = 0
    while True:
        movers = state.to_move()
        if not movers:  # a chance node or the end
            if state.is_chance():
                sample_chance(state, chance_rng)
                continue
            if state.is_terminal():
                break
            raise RuntimeError(f"{game.facts.name}: nobody may act in a live state")
        if AGENT not in movers:
            state.apply_actions({OPPONENT: opponent.act(state.view(OPPONENT), opponent_rng)})
            continue
        view = state.view(AGENT)
        chosen = strategy.act(view, agent_rng)
        legal = view.legal
        if type(chosen) is str:  # the usual case; format_action returns a word unchanged
            raw = chosen
        else:
            raw = format_action(chosen) if isinstance(chosen, str | int | tuple) else repr(chosen)
        if chosen in legal:
            action, parsed, fallback = chosen, chosen, "none"
        else:
            action, parsed, fallback = game.default_action(view), None, "default"
        turns.append(
            TurnRecord(
                view.round,
                None,
                raw,
                parsed,
                action,
                fallback,
                None,
                legal,
                view.betting,
                view.card,
                functools.partial(render, view, seen_rounds),
            )
        )
        seen_rounds = len(view.history)
        if OPPONENT in movers:
            moves = {AGENT: action, OPPONENT: opponent.act(state.view(OPPONENT), opponent_rng)}
        else:
            moves = {AGENT: action}
        # The state validates both moves (the opponent may be a user's strategy).
        state.apply_actions(moves)
    return EpisodeRecord(
        game.facts.name,
        opponent.name,
        spec.pool,
        seed,
        tuple(state.history),
        tuple(turns),
        policy_name,
    )


def _play_model(
    specs: Sequence[EpisodeSpec],
    policy: AgentPolicy,
    max_active: int | None,
    on_step: Callable[[int, int], None] | None,
) -> Iterator[EpisodeRecord]:
    """At most ``max_active`` episodes in play, one batched ``respond`` per step; a new
    episode starts as soon as one ends (see :func:`iter_episodes`)."""
    limit = len(specs) if max_active is None else max_active
    end_episodes: Callable[[list[int]], None] | None = getattr(policy, "end_episodes", None)
    lives: dict[int, _Live] = {}
    ended: dict[int, EpisodeRecord] = {}  # finished, waiting for an earlier one to end
    pending: list[int] = []
    started = 0
    yielded = 0

    def admit() -> None:
        nonlocal started
        while started < len(specs) and len(pending) < limit:
            i, started = started, started + 1
            live = _start(specs[i])
            if _advance(live):
                lives[i] = live
                pending.append(i)
            else:
                ended[i] = _record(live, policy.name)

    admit()
    while pending:
        requests = [_request(i, lives[i]) for i in pending]
        texts = policy.respond(requests)
        if len(texts) != len(requests):
            raise RuntimeError(f"policy {policy.name} answered {len(texts)} of {len(requests)}")
        contexts = [conversation_texts(req.messages) for req in requests]
        parsed = [
            lives[i].spec.game.parse(t, req.view.legal, context=ctx, truncated=is_truncated(t))
            for i, t, req, ctx in zip(pending, texts, requests, contexts, strict=True)
        ]
        bad = [k for k, p in enumerate(parsed) if not p.valid]
        recoveries: dict[int, Recovery] = {}
        if bad:
            answers = policy.recover([requests[k] for k in bad], [texts[k] for k in bad])
            recoveries = dict(zip(bad, answers, strict=True))
        still = []
        for k, i in enumerate(pending):
            live, req = lives[i], requests[k]
            raw = texts[k] if isinstance(texts[k], str) else repr(texts[k])
            action, fallback, recovery_raw = _resolve_action(
                live, req, parsed[k].action, recoveries.get(k), contexts[k]
            )
            view = req.view
            live.turns.append(
                TurnRecord(
                    round=view.round,
                    observation=req.messages[-1]["content"],
                    raw=raw,
                    parsed=parsed[k].action,
                    action=action,
                    fallback=fallback,
                    recovery_raw=recovery_raw,
                    legal=view.legal,
                    betting=view.betting,
                    card=view.card,
                    truncated=is_truncated(texts[k]),
                )
            )
            live.messages.append({"role": "assistant", "content": raw})
            moves: dict[int, Action] = {AGENT: action}
            if OPPONENT in live.state.to_move():
                opp_view = live.state.view(OPPONENT)
                moves[OPPONENT] = live.spec.opponent.act(opp_view, live.opponent_rng)
            live.state.apply_actions(moves)
            if _advance(live):
                still.append(i)
        kept = set(still)
        done = [i for i in pending if i not in kept]
        for i in done:
            ended[i] = _record(lives.pop(i), policy.name)
        if done and end_episodes is not None:
            end_episodes(done)
        pending = still
        admit()
        if on_step is not None:
            on_step(started - len(pending), len(specs))
        while yielded in ended:
            yield ended.pop(yielded)
            yielded += 1
    while yielded in ended:  # episodes that ended before the agent's first turn
        yield ended.pop(yielded)
        yielded += 1


def turn_messages(game: Game, view: View, since: int, first: bool) -> list[Message]:
    """What an agent's conversation gains before it answers at ``view``: on its ``first``
    turn the rules (the system message), then the observation of ``view`` listing the
    rounds played from round ``since`` on (the ones not shown to it yet). The one
    definition of the conversation format, shared by exact extraction."""
    messages: list[Message] = []
    if first:
        messages.append({"role": "system", "content": game.system_prompt()})
    messages.append({"role": "user", "content": game.render(view, since=since)})
    return messages


def conversation_texts(messages: Sequence[Message]) -> tuple[str, ...]:
    """The texts of a conversation that the environment wrote (rules, observations): an
    answer that copies them chose nothing (``sepo.games.text``). The model's own earlier
    answers are not among them; repeating its own choice is a choice."""
    return tuple(m["content"] for m in messages if m["role"] != "assistant")


def _request(index: int, live: _Live) -> DecisionRequest:
    game = live.spec.game
    view = live.state.view(AGENT)
    live.messages.extend(turn_messages(game, view, live.seen_rounds, first=not live.messages))
    live.seen_rounds = len(view.history)
    return DecisionRequest(
        episode=index,
        turn=len(live.turns),
        game=game.facts.name,
        seed=live.spec.seed,
        view=view,
        messages=tuple(live.messages),
        legal_texts=tuple(game.format_action(a) for a in view.legal),
    )


def _resolve_action(
    live: _Live,
    req: DecisionRequest,
    parsed: Action | None,
    recovery: Recovery | None,
    context: Sequence[str],
) -> tuple[Action, str, str | None]:
    """The action to play and which rung of the fallback ladder produced it."""
    if parsed is not None:
        return parsed, "none", None
    game, legal = live.spec.game, req.view.legal
    if recovery is not None:
        if recovery.chosen is not None and recovery.chosen in legal:
            return recovery.chosen, recovery.kind, recovery.text
        if recovery.text is not None:
            second = game.parse(
                recovery.text, legal, context=context, truncated=is_truncated(recovery.text)
            )
            if second.action is not None:
                return second.action, recovery.kind, recovery.text
    return game.default_action(req.view), "default", recovery.text if recovery else None

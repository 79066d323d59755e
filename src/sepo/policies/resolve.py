"""Turn a ``--policy`` string into a policy (the one place that knows the spellings).

- ``scripted:NAME`` — a strategy of the game (``scripted:baseline`` = each game's
  reference strategy, see ``sepo.opponents.BASELINES``), or ``scripted:module:attr``.
- ``strategy:FILE.json`` — a Kuhn behavioural strategy file (12 information sets).
- ``tiny`` / ``tiny:DIR`` — the embedded default model (``sepo model init``).
- ``hf:PATH_OR_ID`` — a transformers causal LM, optionally with ``--adapter DIR``.
- ``openai:MODEL@BASE_URL`` — an OpenAI-compatible chat-completions server.
- ``human`` — a person at the terminal.

Model backends import torch/transformers lazily, only when named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sepo.exact.kuhn import KuhnStrategy
from sepo.opponents import BASELINES, find_strategy
from sepo.rollout.protocol import AgentPolicy, SamplingConfig
from sepo.rollout.scripted import ScriptedPolicy

DEFAULT_TINY_DIR = Path("runs/tiny-model")


class PolicySpecError(ValueError):
    """A ``--policy`` value that cannot be used (one-line message for the CLI)."""


@dataclass(frozen=True)
class LoadedPolicy:
    policy: AgentPolicy
    strategy: KuhnStrategy | None = None
    """Set when the policy *is* a known Kuhn behavioural strategy (exact metrics apply)."""


def is_model_spec(spec: str) -> bool:
    return spec == "tiny" or spec.split(":", 1)[0] in ("tiny", "hf", "openai")


def training_temperature(model_spec: str) -> float:
    """The sampling temperature SEPO trains and evaluates a model at: the paper's 0.8 for
    ``hf:`` models, 1.0 for the tiny model (its tuned CPU default; README "Training")."""
    return 0.8 if model_spec.startswith("hf:") else 1.0


def load_policy(
    spec: str,
    game: str,
    *,
    adapter: str | None = None,
    sampling: SamplingConfig | None = None,
) -> LoadedPolicy:
    """The policy named by ``spec`` for ``game``."""
    kind, _, target = spec.partition(":")
    sampling = sampling or SamplingConfig()
    if kind == "scripted":
        if not target:
            raise PolicySpecError("scripted policies are written scripted:NAME")
        name = BASELINES.get(game, target) if target == "baseline" else target
        strategy = find_strategy(game, name)
        return LoadedPolicy(
            ScriptedPolicy(strategy), strategy if isinstance(strategy, KuhnStrategy) else None
        )
    if kind == "strategy":
        if game != "kuhn":
            raise PolicySpecError(
                "strategy:FILE policies are Kuhn behavioural strategies; use --game kuhn"
            )
        strategy = KuhnStrategy.from_json(target)
        return LoadedPolicy(ScriptedPolicy(strategy), strategy)
    if spec == "human":
        from sepo.policies.human import HumanPolicy

        return LoadedPolicy(HumanPolicy())
    if kind in ("tiny", "hf"):
        path = target or str(DEFAULT_TINY_DIR)
        if kind == "tiny" and not Path(path).is_dir():
            raise PolicySpecError(
                f"no tiny model at {path}; build one with `sepo model init --out {path}`"
            )
        from sepo.policies.local import LocalModelPolicy

        try:
            policy = LocalModelPolicy.load(path, adapter=adapter, sampling=sampling, name=spec)
        except OSError as exc:
            raise PolicySpecError(
                f"cannot load model {path!r}: {str(exc).splitlines()[0]}"
            ) from None
        return LoadedPolicy(policy)
    if kind == "openai":
        from sepo.policies.openai_compat import OpenAICompatPolicy

        try:
            return LoadedPolicy(OpenAICompatPolicy.from_spec(spec, sampling=sampling))
        except ValueError as exc:
            raise PolicySpecError(str(exc)) from None
    raise PolicySpecError(
        f"unknown policy {spec!r}; use scripted:NAME, strategy:FILE, tiny[:DIR], hf:PATH, "
        "openai:MODEL@URL or human"
    )

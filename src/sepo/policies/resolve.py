"""Turn a ``--policy`` string into a policy (the one place that knows the spellings).

- ``scripted:NAME`` — a strategy of the game (``scripted:baseline`` = each game's
  reference strategy, ``Domain.baseline``), or ``scripted:module:attr``.
- ``strategy:FILE.json`` — a Kuhn behavioural strategy file (12 information sets), or
  with ``--game ipd`` an IPD strategy table (P(COOPERATE) at every history).
- ``tiny`` / ``tiny:DIR`` — the embedded default model (``sepo model init``).
- ``hf:PATH_OR_ID`` — a transformers causal LM, optionally with ``--adapter DIR``. A
  local folder must hold ``config.json`` (or an adapter's ``adapter_config.json``);
  an argument that looks like a path (:func:`looks_like_path`) and does not exist is
  an error, not a Hub id.
- ``openai:MODEL@BASE_URL`` — an OpenAI-compatible chat-completions server.
- ``human`` — a person at the terminal.

Model backends import torch/transformers lazily, only when named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sepo.core.errors import SepoError
from sepo.core.files import WEIGHT_FILES, weights_whole
from sepo.domains import domain
from sepo.exact.kuhn import KuhnStrategy
from sepo.policies.model_spec import DEFAULT_TINY_DIR, ModelSpec, ModelSpecError
from sepo.rollout.protocol import AgentPolicy, SamplingConfig
from sepo.rollout.scripted import ScriptedPolicy

if TYPE_CHECKING:
    from sepo.policies.openai_compat import ClientConfig


class PolicySpecError(SepoError, ValueError):
    """A ``--policy`` value that cannot be used (one-line message for the CLI)."""


@dataclass(frozen=True)
class LoadedPolicy:
    policy: AgentPolicy
    strategy: KuhnStrategy | None = None
    """Set when the policy *is* a known Kuhn behavioural strategy (exact metrics apply)."""


def is_model_spec(spec: str) -> bool:
    """Whether ``spec`` names a model (``tiny``, ``hf:``, ``openai:``), not a strategy."""
    return ModelSpec.names_model(spec) or spec.partition(":")[0] == "openai"


def training_temperature(model_spec: str) -> float:
    """The sampling temperature SEPO trains and evaluates a model at: the paper's 0.8 for
    ``hf:`` models, 1.0 for the tiny model (its tuned CPU default; docs/main-job.md)."""
    return 0.8 if model_spec.startswith("hf:") else 1.0


MODEL_DIR_MARKERS = ("config.json", "adapter_config.json")
"""Files one of which a local model folder holds: a model's ``config.json``, or an adapter
folder's ``adapter_config.json`` (its base model is loaded from what that file names)."""


def looks_like_path(ident: str) -> bool:
    """Whether a model argument is meant as a local path rather than a Hub id.

    Hub ids are ``name`` or ``org/name``: never more than one ``/``, never a leading
    ``/``, ``.`` or ``~`` (the Hub forbids names that start with ``.``), never a
    Windows separator.
    """
    separators = {os.sep, os.altsep or os.sep} - {"/"}
    return (
        ident.startswith(("/", ".", "~"))
        or ident.count("/") > 1
        or any(sep in ident for sep in separators)
    )


def check_model_path(ident: str) -> None:
    """Refuse, with a one-line :class:`PolicySpecError`, a model argument that names a
    local path which is not a model: a missing path (when ``ident`` looks like a path,
    see :func:`looks_like_path`), a file, or a folder with neither ``config.json`` nor
    ``adapter_config.json``. A Hub id that is not a local path passes."""
    path = Path(ident).expanduser()
    if not path.exists():
        if looks_like_path(ident):
            raise PolicySpecError(f"no such model directory: {ident}")
        return
    if not path.is_dir():
        raise PolicySpecError(f"{ident} is not a model directory (it is a file)")
    if not any((path / marker).is_file() for marker in MODEL_DIR_MARKERS):
        raise PolicySpecError(f"{ident} is not a model directory (no config.json)")
    weights = [path / name for name in (*WEIGHT_FILES, "model.safetensors.index.json")]
    if any(w.exists() for w in weights) and not weights_whole(path):
        raise PolicySpecError(
            f"{ident}: its safetensors weights are cut short or not safetensors "
            "(an interrupted save or a corrupt copy)"
        )


API_TIMEOUT_MAX_S = 3600.0
API_RETRIES_MAX = 20
API_CONCURRENCY_MAX = 256


def api_client_config(
    spec: str,
    *,
    timeout_s: float | None = None,
    retries: int | None = None,
    concurrency: int | None = None,
) -> ClientConfig | None:
    """The client settings of ``--timeout``, ``--retries`` and ``--concurrency`` for an
    ``openai:`` policy (the defaults of :class:`ClientConfig` for those not given), or
    ``None`` when none is given. Out of range (timeout in ``(0, 3600]`` seconds, retries
    ``0``-``20``, concurrency ``1``-``256``) or given for another kind of policy: a
    one-line :class:`PolicySpecError`."""
    given = {
        "--timeout": timeout_s is not None,
        "--retries": retries is not None,
        "--concurrency": concurrency is not None,
    }
    if not any(given.values()):
        return None
    if spec.partition(":")[0] != "openai":
        flags = ", ".join(flag for flag, on in given.items() if on)
        raise PolicySpecError(f"{flags}: for openai: policies only, not {spec}")
    if timeout_s is not None and not 0 < timeout_s <= API_TIMEOUT_MAX_S:
        raise PolicySpecError(
            f"--timeout is in seconds, more than 0 and at most {API_TIMEOUT_MAX_S:g}, "
            f"not {timeout_s:g}"
        )
    if retries is not None and not 0 <= retries <= API_RETRIES_MAX:
        raise PolicySpecError(f"--retries is 0 to {API_RETRIES_MAX}, not {retries}")
    if concurrency is not None and not 1 <= concurrency <= API_CONCURRENCY_MAX:
        raise PolicySpecError(f"--concurrency is 1 to {API_CONCURRENCY_MAX}, not {concurrency}")
    from sepo.policies.openai_compat import ClientConfig

    default = ClientConfig()
    return ClientConfig(
        timeout_s=default.timeout_s if timeout_s is None else timeout_s,
        max_retries=default.max_retries if retries is None else retries,
        max_concurrency=default.max_concurrency if concurrency is None else concurrency,
    )


def load_policy(
    spec: str,
    game: str,
    *,
    adapter: str | None = None,
    sampling: SamplingConfig | None = None,
    client_config: ClientConfig | None = None,
) -> LoadedPolicy:
    """The policy named by ``spec`` for ``game``; ``client_config`` (timeouts, retries,
    concurrency) applies to ``openai:`` policies only and is refused for the others."""
    kind, _, target = spec.partition(":")
    if client_config is not None and kind != "openai":
        raise PolicySpecError(
            f"timeouts, retries and concurrency apply to openai: policies, not {spec}"
        )
    sampling = sampling or SamplingConfig()
    if kind == "scripted":
        if not target:
            raise PolicySpecError("scripted policies are written scripted:NAME")
        d = domain(game)
        strategy = d.find_strategy(d.baseline if target == "baseline" else target)
        return LoadedPolicy(
            ScriptedPolicy(strategy), strategy if isinstance(strategy, KuhnStrategy) else None
        )
    if kind == "strategy":
        if domain(game).worst_case:
            from sepo.exact.ipd import IPDStrategyError, IPDTableStrategy
            from sepo.games import make_game

            try:
                table = IPDTableStrategy.from_json(target)
            except IPDStrategyError as exc:
                raise PolicySpecError(str(exc)) from None
            rounds = make_game("ipd").facts.rounds
            if table.rounds != rounds:
                raise PolicySpecError(
                    f"{target} tabulates a {table.rounds}-round IPD; this game has {rounds} rounds"
                )
            return LoadedPolicy(ScriptedPolicy(table))
        if not domain(game).exact:
            raise PolicySpecError(
                "strategy:FILE policies are Kuhn behavioural strategies or IPD strategy "
                "tables (sepo exploitability --save-strategy); use --game kuhn or ipd"
            )
        strategy = KuhnStrategy.from_json(target)
        return LoadedPolicy(ScriptedPolicy(strategy), strategy)
    if spec == "human":
        from sepo.policies.human import HumanPolicy

        return LoadedPolicy(HumanPolicy())
    if kind in ("tiny", "hf"):
        try:
            model = ModelSpec.parse(spec, adapter)
        except ModelSpecError as exc:
            raise PolicySpecError(str(exc)) from None
        path = model.path or str(DEFAULT_TINY_DIR)
        if kind == "tiny" and not Path(path).expanduser().is_dir():
            raise PolicySpecError(
                f"no tiny model at {path}; build one with `sepo model init --out {path}`"
            )
        check_model_path(path)
        if adapter is not None:
            folder = Path(adapter).expanduser()
            local = folder.exists() or looks_like_path(adapter)  # else a Hub id: PEFT loads it
            if local and not (folder / "adapter_config.json").is_file():
                raise PolicySpecError(
                    f"--adapter {adapter} is not a PEFT adapter folder (no adapter_config.json)"
                )
            if local:
                from sepo.policies.loading import adapter_chain

                try:
                    adapter_chain(folder)  # its record of earlier adapters, before any loading
                except OSError as exc:
                    raise PolicySpecError(str(exc)) from None
        from sepo.policies.local import LocalModelPolicy

        try:
            policy = LocalModelPolicy.load(path, adapter=adapter, sampling=sampling, name=spec)
        except (OSError, ValueError) as exc:
            # transformers says "not found" with OSError and "not a model / no tokenizer"
            # with ValueError: both are bad input, not bugs. Its messages run over several
            # lines ("one of: (1) … (2) …"), so they are kept whole, on one line.
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if len(reason) > 400:
                reason = reason[:399] + "…"
            raise PolicySpecError(f"cannot load model {path!r}: {reason}") from None
        return LoadedPolicy(policy)
    if kind == "openai":
        from sepo.policies.openai_compat import OpenAICompatPolicy

        try:
            return LoadedPolicy(
                OpenAICompatPolicy.from_spec(spec, sampling=sampling, client_config=client_config)
            )
        except ValueError as exc:
            raise PolicySpecError(str(exc)) from None
    raise PolicySpecError(
        f"unknown policy {spec!r}; use scripted:NAME, strategy:FILE, tiny[:DIR], hf:PATH, "
        "openai:MODEL@URL or human"
    )

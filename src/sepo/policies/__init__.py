"""Agent policies: everything that can sit in the agent's seat of an episode.

Each policy implements :class:`sepo.rollout.protocol.AgentPolicy` (``respond`` a batch of
decisions, ``recover`` unparseable answers):

- :mod:`sepo.policies.tiny` builds the embedded default model (a few-million-parameter
  Llama with its own chat tokenizer, trained tokenizer + seeded init, no download);
- :mod:`sepo.policies.local` runs any transformers causal LM, optionally with a PEFT
  adapter (``tiny:DIR``, ``hf:PATH_OR_ID``): batched generation, exact scoring of
  candidate answers, constrained fallback;
- :mod:`sepo.policies.openai_compat` talks to an OpenAI-compatible server
  (``openai:MODEL@BASE_URL``) with bounded retries and a re-prompt fallback.

Importing this package is cheap: it imports neither torch nor the openai SDK. The heavy
modules load on first use of a name below (``from sepo.policies import
LocalModelPolicy``) or by importing the submodule directly; they need the ``train``
extra (``pip install 'sepo[train]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sepo.policies.local import LocalModelPolicy, TokenGeneration
    from sepo.policies.openai_compat import ClientConfig, OpenAICompatPolicy, parse_openai_spec
    from sepo.policies.tiny import TINY_DEFAULTS, TinyModelConfig, build_tiny_model

_LAZY = {
    "LocalModelPolicy": "sepo.policies.local",
    "TokenGeneration": "sepo.policies.local",
    "OpenAICompatPolicy": "sepo.policies.openai_compat",
    "ClientConfig": "sepo.policies.openai_compat",
    "parse_openai_spec": "sepo.policies.openai_compat",
    "build_tiny_model": "sepo.policies.tiny",
    "TinyModelConfig": "sepo.policies.tiny",
    "TINY_DEFAULTS": "sepo.policies.tiny",
}

__all__ = [
    "TINY_DEFAULTS",
    "ClientConfig",
    "LocalModelPolicy",
    "OpenAICompatPolicy",
    "TinyModelConfig",
    "TokenGeneration",
    "build_tiny_model",
    "parse_openai_spec",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sepo.policies' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""What a model argument names: ``tiny``, ``tiny:DIR``, ``hf:PATH_OR_ID``, with an optional
PEFT adapter. Parsed here once for every command and stage; importable without torch.

``tiny`` alone is the embedded model, built where the caller says (``sepo train`` builds
it in its run folder, ``--policy tiny`` reads :data:`DEFAULT_TINY_DIR`). Loading the
weights is :func:`sepo.policies.loading.load_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sepo.core.errors import SepoError

ModelKind = Literal["tiny", "hf"]
DEFAULT_TINY_DIR = Path("runs/tiny-model")
"""Where ``sepo model init`` writes the embedded model by default (``--policy tiny``)."""


class ModelSpecError(SepoError, ValueError):
    """A model argument that names no model (a one-line command-line error)."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model argument."""

    kind: ModelKind
    path: str | None
    """The model folder or Hub id; ``None`` for a bare ``tiny`` (the embedded model,
    wherever the caller keeps it)."""
    adapter: str | None = None
    """A PEFT adapter folder applied on top (``--adapter``)."""

    @classmethod
    def parse(cls, spec: str, adapter: str | None = None) -> ModelSpec:
        """``tiny``, ``tiny:DIR`` or ``hf:PATH_OR_ID``; anything else is refused."""
        kind, sep, target = spec.partition(":")
        if spec in ("tiny", "tiny:"):
            return cls("tiny", None, adapter)
        if kind in ("tiny", "hf") and sep and target.strip():
            return cls(kind, target, adapter)  # type: ignore[arg-type]
        if kind == "hf":
            raise ModelSpecError("hf: needs a model path or hub id, e.g. hf:Qwen/Qwen2.5-0.5B")
        raise ModelSpecError(f"unknown model {spec!r}; use tiny, tiny:DIR or hf:PATH_OR_ID")

    @staticmethod
    def names_model(spec: str) -> bool:
        """Whether ``spec`` is written as a model argument (``tiny``, ``tiny:…``, ``hf:…``)."""
        return spec == "tiny" or spec.partition(":")[0] in ("tiny", "hf")

    @property
    def is_hf(self) -> bool:
        return self.kind == "hf"

    def at(self, path: str | Path) -> ModelSpec:
        """The same kind of model read from ``path`` (e.g. a run's SFT folder)."""
        return ModelSpec(self.kind, str(path), self.adapter)

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

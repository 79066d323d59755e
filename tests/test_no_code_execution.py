"""Nothing sepo reads can make it run code: a model folder's ``auto_map`` is refused, and
the package never uses pickle, an unsafe ``torch.load``, ``yaml.load``, ``eval`` or
``exec`` (a test that fails if one comes back)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sepo"


def _remote_code_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A model folder whose config maps the Auto classes to its own module, which writes
    a marker file the moment it is imported."""
    folder = tmp_path / "evil-model"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "sepo-evil",
                "auto_map": {
                    "AutoConfig": "evil.EvilConfig",
                    "AutoModelForCausalLM": "evil.EvilModel",
                    "AutoTokenizer": ["evil.EvilTokenizer", None],
                },
            }
        )
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}})
    )
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'sepo-evil'\n"
    )
    return folder, marker


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--policy", "hf:{folder}", "--game", "kuhn", "--episodes", "1", "--no-heldout"],
        ["exploitability", "--policy", "hf:{folder}"],
    ],
)
def test_a_model_folder_with_auto_map_never_runs_its_code(
    tmp_path: Path, command: list[str]
) -> None:
    folder, marker = _remote_code_folder(tmp_path)
    args = [a.format(folder=folder) for a in command]
    # A real process with "y" on stdin: the answer transformers' prompt would take.
    result = subprocess.run(
        [sys.executable, "-m", "sepo", *args],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert not marker.exists()
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "never runs a model folder's code" in errors[0]


def test_sft_refuses_a_model_folder_with_auto_map(tmp_path: Path) -> None:
    folder, marker = _remote_code_folder(tmp_path)
    result = CliRunner().invoke(
        app,
        ["sft", "--game", "kuhn", "--model", f"hf:{folder}", "--out", str(tmp_path / "run")],
        input="y\ny\ny\n",
    )
    assert result.exit_code == 2, result.output
    assert "never runs a model folder's code" in result.output
    assert not marker.exists()


_FORBIDDEN = {
    "pickle": re.compile(r"\bimport\s+(c?pickle|dill|shelve)\b|\bfrom\s+(c?pickle|dill)\b"),
    "yaml.load": re.compile(r"\byaml\.(load|unsafe_load|full_load)\s*\("),
    "eval": re.compile(r"(?<![\w.])eval\s*\("),
    "exec": re.compile(r"(?<![\w.])exec\s*\("),
}


def test_the_package_never_deserialises_or_evaluates_code() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 40
    found = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for name, pattern in _FORBIDDEN.items():
            found += [f"{path.name}: {name}" for _ in pattern.finditer(text)]
        for call in re.finditer(r"torch\.load\s*\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                found.append(f"{path.name}: torch.load without weights_only=True")
    assert found == []

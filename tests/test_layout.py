"""The shape of the code: imports run one way through the layers, and the README's code
map names exactly the packages the tree holds, in that order."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sepo"


def code_map() -> list[str]:
    """The README's code map entries (``core``, ``games``, ``domains``…), in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    return [
        m.removesuffix("/").removesuffix(".py") for m in re.findall(r"^- `([^`]+)`", section, re.M)
    ]


def test_the_code_map_matches_the_tree() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert sorted(code_map()) == sorted(packages | modules)


def test_imports_run_one_way() -> None:
    """A layer imports only the layers the code map lists before it (lazy imports inside
    functions included)."""
    rank = {name: i for i, name in enumerate(code_map())}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if layer not in rank:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sepo."):
                target = str(node.module).split(".")[1]
                if rank.get(target, -1) > rank[layer]:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {node.module}")
    assert not wrong, wrong
    assert len(rank) >= 12

"""Bad user input gives a one-line error and exit status 2, never a traceback.

Covers a user's own strategy module (``--policy scripted:module:attr``, ``--opponent
module:attr``): every way loading it can fail, loading it from the current directory
whichever way ``sepo`` was started, and an exception from its ``act`` during play; and
model paths (``tiny:DIR``, ``hf:PATH``) that are missing, empty or not a model.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sepo.cli.main import app
from sepo.core.types import View
from sepo.domains import domain, find_strategy
from sepo.opponents import StrategyError, StrategyRuntimeError, UserStrategy
from sepo.policies.resolve import (
    PolicySpecError,
    check_model_path,
    load_policy,
    looks_like_path,
)

runner = CliRunner()
EVAL = ["eval", "--game", "ipd", "--episodes", "1", "--no-heldout"]
_names = itertools.count()

GOOD = '''
class Good:
    """Plays the first legal action; carries an attribute of its own."""

    name = "good"
    note = "mine"

    def act(self, view, rng):
        return view.legal[0]


class Raises:
    name = "raises"

    def act(self, view, rng):
        raise RuntimeError("boom in act\\nsecond line")
'''


def error_line(output: str) -> str:
    """The single ``error:`` line of a failed command (asserting there is exactly one)."""
    assert "Traceback" not in output
    # (``sepo play`` leaves its "> " prompt before the error.)
    lines = [line[line.index("error: ") :] for line in output.splitlines() if "error: " in line]
    assert len(lines) == 1, output
    return lines[0]


def fails(args: list[str], input: str | None = None) -> str:
    result = runner.invoke(app, args, input=input)
    assert result.exit_code == 2, result.output
    return error_line(result.output)


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """``write_module(source)`` puts a module with a fresh name in a fresh current
    directory and returns its name. Neither that directory nor ``''`` is on
    ``sys.path``, as under the installed ``sepo`` script."""
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    )
    written: list[str] = []

    def write(source: str) -> str:
        name = f"sepo_user_strats_{os.getpid()}_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------- loading a strategy


@pytest.mark.parametrize(
    ("source", "attr", "needle"),
    [
        ("raise RuntimeError('import boom')\n", "X", "RuntimeError: import boom"),
        ("def broken(:\n", "X", "SyntaxError: "),
        ("import sys\nsys.exit(3)\n", "X", "SystemExit: 3"),
        ("import sepo_no_such_module_anywhere\n", "X", "ModuleNotFoundError: "),
        ("X = 1\n", "Missing", "AttributeError: "),
    ],
)
def test_a_module_that_fails_to_load_is_one_line(
    write_module: Callable[[str], str], source: str, attr: str, needle: str
) -> None:
    spec = f"{write_module(source)}:{attr}"
    for args in (
        [*EVAL, "--policy", f"scripted:{spec}"],
        ["play", "--game", "ipd", "--opponent", spec],
    ):
        line = fails(args)
        assert f"cannot load strategy {spec!r}" in line
        assert needle in line


def test_a_factory_that_raises_is_one_line(write_module: Callable[[str], str]) -> None:
    name = write_module("def make():\n    raise KeyError('no config')\n")
    line = fails([*EVAL, "--policy", f"scripted:{name}:make"])
    assert f"cannot build strategy '{name}:make': KeyError" in line


@pytest.mark.parametrize("spec", ["scripted::X", "scripted:mystrats:", "scripted: :X"])
def test_an_empty_module_or_attribute_is_one_line(spec: str) -> None:
    assert "write it module:attribute" in fails([*EVAL, "--policy", spec])


def test_the_current_directory_is_searched_while_loading(
    write_module: Callable[[str], str],
) -> None:
    """The installed ``sepo`` script does not put the current directory on ``sys.path``
    (``python -m sepo`` does); loading looks there anyway, and puts ``sys.path`` back."""
    name = write_module(GOOD)
    before = list(sys.path)
    strategy = find_strategy("ipd", f"{name}:Good")
    assert strategy.name == "good"
    assert sys.path == before


# ---------------------------------------------------------------- a strategy in play


def test_an_act_that_raises_in_eval_is_one_line(write_module: Callable[[str], str]) -> None:
    name = write_module(GOOD)
    line = fails([*EVAL, "--policy", f"scripted:{name}:Raises"])
    assert f"strategy '{name}:Raises' raised in act()" in line
    assert line.endswith("RuntimeError: boom in act")


def test_an_act_that_raises_in_play_is_one_line(write_module: Callable[[str], str]) -> None:
    name = write_module(GOOD)
    line = fails(
        ["play", "--game", "ipd", "--opponent", f"{name}:Raises"], input="COOPERATE\n" * 20
    )
    assert f"strategy '{name}:Raises' raised in act()" in line
    assert "RuntimeError: boom in act" in line


def test_the_wrapper_raises_a_strategy_error_naming_the_strategy(
    write_module: Callable[[str], str],
) -> None:
    name = write_module(GOOD)
    strategy = find_strategy("ipd", f"{name}:Raises")
    view = View(
        game="ipd", player=1, round=2, rounds=8, history=(), legal=("C", "D"), scores=(0, 0)
    )
    with pytest.raises(StrategyRuntimeError, match=r"round 3 of ipd: RuntimeError") as caught:
        strategy.act(view, __import__("random").Random(0))
    assert isinstance(caught.value, StrategyError)  # the CLI reports StrategyError
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_the_wrapper_is_transparent(write_module: Callable[[str], str]) -> None:
    name = write_module(
        GOOD
        + "\nfrom sepo.domains import find_strategy\n"
        + "TFT = find_strategy('ipd', 'tit_for_tat')\n"
    )
    good = find_strategy("ipd", f"{name}:Good")
    assert isinstance(good, UserStrategy)
    assert good.name == "good"
    assert good.note == "mine"  # any other attribute passes through
    view = View(
        game="ipd", player=0, round=0, rounds=8, history=(), legal=("C", "D"), scores=(0, 0)
    )
    assert good.act(view, __import__("random").Random(0)) == "C"
    # A pool strategy re-exported by a user's module is still found in its pool.
    tft = find_strategy("ipd", f"{name}:TFT")
    assert tft in domain("ipd").pools.pool("train")
    assert tft == find_strategy("ipd", "tit_for_tat")
    result = runner.invoke(app, [*EVAL, "--policy", f"scripted:{name}:Good", "--out", "out"])
    assert result.exit_code == 0, result.output


def test_a_kuhn_strategy_from_a_user_module_is_the_object_itself(
    write_module: Callable[[str], str],
) -> None:
    """Exact Kuhn metrics need the :class:`KuhnStrategy` itself, so it is not wrapped."""
    name = write_module(
        "from sepo.domains import find_strategy\nN = find_strategy('kuhn', 'nash_approx')\n"
    )
    loaded = find_strategy("kuhn", f"{name}:N")
    nash = sys.modules[name].N
    assert loaded is nash
    assert load_policy(f"scripted:{name}:N", "kuhn").strategy is nash


# ---------------------------------------------------------------- model paths


def test_model_paths_that_are_not_models_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    not_model = tmp_path / "notes"
    not_model.mkdir()
    (not_model / "readme.txt").write_text("hello\n")
    weights = tmp_path / "model.safetensors"
    weights.write_text("")
    missing = tmp_path / "missing" / "model"
    cases = [
        (f"tiny:{empty}", f"{empty} is not a model directory (no config.json)"),
        (f"hf:{empty}", f"{empty} is not a model directory (no config.json)"),
        (f"hf:{not_model}", f"{not_model} is not a model directory (no config.json)"),
        (f"hf:{weights}", f"{weights} is not a model directory (it is a file)"),
        (f"hf:{missing}", f"no such model directory: {missing}"),
        ("hf:./sepo-no-such-model", "no such model directory: ./sepo-no-such-model"),
        ("hf:~/sepo-no-such-model", "no such model directory: ~/sepo-no-such-model"),
        ("hf:", "hf: needs a model path or hub id"),
    ]
    for spec, message in cases:
        line = fails([*EVAL, "--policy", spec])
        assert message in line, (spec, line)


def test_a_model_folder_the_loader_rejects_is_one_line(tmp_path: Path) -> None:
    """config.json is there but nothing else: transformers raises ValueError."""
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text("{}")
    line = fails([*EVAL, "--policy", f"hf:{tmp_path}"])
    assert f"cannot load model '{tmp_path}'" in line


def test_looks_like_path() -> None:
    for hub_id in ("gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "runs-model"):
        assert not looks_like_path(hub_id)
    for path in ("/models/x", "./x", "../x", "~/x", ".x", "runs/sepo/checkpoint-5"):
        assert looks_like_path(path)


def test_check_model_path_accepts_models_adapters_and_hub_ids(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    for ident in (str(model), str(adapter), "Qwen/Qwen2.5-0.5B-Instruct", "gpt2"):
        check_model_path(ident)  # no error
    with pytest.raises(PolicySpecError, match="no such model directory"):
        check_model_path(str(tmp_path / "gone"))


def test_every_sepo_error_is_reported_by_the_command_line() -> None:
    """Each exception class sepo defines is a SepoError (or an OSError), so the command
    line's one catch reports it as one line: no hand-kept list of error classes to miss.
    Private classes (``_Name``) are signals caught inside their own module."""
    import importlib
    import inspect
    import pkgutil

    import sepo
    from sepo.core.errors import SepoError

    found = []
    for info in pkgutil.walk_packages(sepo.__path__, "sepo."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            public = not cls.__name__.startswith("_")
            if cls.__module__ == info.name and issubclass(cls, BaseException) and public:
                found.append(cls)
    assert len(found) >= 15
    stray = [c.__qualname__ for c in found if not issubclass(c, SepoError | OSError)]
    assert not stray, f"not SepoError or OSError: {stray}"

"""Opponent strategies and pools of every game (SPEC §3), one module per game, and the
loading of a user's own strategy.

``sepo.opponents.<game>`` defines the game's strategies, its :class:`Pools` (``POOLS``)
and its SFT demonstrator mixture (``DEMONSTRATORS``); ``sepo.domains`` ties them to the
game. A user's own strategy is named ``module:attribute`` (an object with ``name`` and
``act(view, rng)``, or a zero-argument class/factory returning one):
:func:`load_user_strategy`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

from sepo.core.errors import SepoError
from sepo.core.types import Action, Strategy, View
from sepo.opponents.base import POOL_NAMES, Pools, Scripted

__all__ = [
    "POOL_NAMES",
    "Pools",
    "Scripted",
    "StrategyError",
    "StrategyRuntimeError",
    "UserStrategy",
    "load_user_strategy",
]


class StrategyError(SepoError, ValueError):
    """A strategy name that does not resolve (one-line message for the CLI)."""


def load_user_strategy(spec: str) -> Strategy:
    """The strategy named ``module:attribute`` by a user.

    ``attribute`` is a strategy object (``name`` and ``act(view, rng)``) or a class or
    zero-argument factory returning one. The module is imported the way ``python -m
    sepo`` would find it, whichever way ``sepo`` was started: the current working
    directory is searched first while the module is imported (the installed ``sepo``
    script does not put it on ``sys.path`` by itself), and is taken off ``sys.path``
    again afterwards, so that later imports (torch, transformers) cannot be shadowed by
    files that happen to lie there. Modules the strategy's module imports at load time
    stay imported; a module it imports only later, inside ``act``, must be importable
    on the normal path.

    Every way loading can fail (an import that raises anything, a syntax error, a
    missing attribute, a factory that raises, an object without ``name``/``act``)
    becomes a one-line :class:`StrategyError`. The strategy is returned wrapped in
    :class:`UserStrategy`, so an exception from its ``act`` during play is reported as
    a :class:`StrategyRuntimeError`; a :class:`~sepo.exact.kuhn.KuhnStrategy` is
    returned as is, since it is the library's own code and exact Kuhn metrics need
    the object itself.
    """
    from sepo.exact.kuhn import KuhnStrategy

    module_name, _, attr = spec.partition(":")
    if not module_name.strip() or not attr.strip():
        raise StrategyError(
            f"cannot load strategy {spec!r}: write it module:attribute, e.g. mystrats:Grudger"
        )
    try:
        with _cwd_on_path():
            module = importlib.import_module(module_name)
        obj = getattr(module, attr)
    except (Exception, SystemExit) as exc:  # user code may fail on import any way it likes
        raise StrategyError(f"cannot load strategy {spec!r}: {_describe(exc)}") from None
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "act")):
        try:
            obj = obj()
        except (Exception, SystemExit) as exc:  # a user's factory may fail any way it likes
            raise StrategyError(f"cannot build strategy {spec!r}: {_describe(exc)}") from None
    if not (hasattr(obj, "act") and callable(obj.act)):
        raise StrategyError(f"{spec!r} has no act(view, rng) method")
    if not isinstance(getattr(obj, "name", None), str):
        raise StrategyError(f"{spec!r} has no string attribute 'name'")
    if isinstance(obj, KuhnStrategy):
        return obj
    return UserStrategy(spec, obj)


class StrategyRuntimeError(StrategyError):
    """A user's strategy raised inside ``act`` during play (one-line message for the CLI)."""


class UserStrategy:
    """A user's strategy loaded from ``module:attribute``: it plays exactly as the wrapped
    object does (same ``name``, same actions, any other attribute passed through), but
    an exception from its ``act`` becomes a :class:`StrategyRuntimeError` that names the
    strategy and the exception, instead of a traceback out of the middle of a game."""

    def __init__(self, spec: str, strategy: Strategy) -> None:
        self.spec = spec
        self.strategy = strategy

    @property
    def name(self) -> str:
        return self.strategy.name

    def act(self, view: View, rng: random.Random) -> Action:
        try:
            return self.strategy.act(view, rng)
        except Exception as exc:  # user code may fail any way it likes
            raise StrategyRuntimeError(
                f"strategy {self.spec!r} raised in act() at round {view.round + 1} "
                f"of {view.game}: {_describe(exc)}"
            ) from exc

    def __eq__(self, other: object) -> bool:
        # Equal to what it wraps, so a pool strategy re-exported by a user's module is
        # still found in its pool (``sepo play`` looks its pool up with ``in``).
        inner = other.strategy if isinstance(other, UserStrategy) else other
        return bool(self.strategy == inner)

    def __hash__(self) -> int:
        return hash(self.strategy)

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes UserStrategy lacks; dunders and our own fields are
        # never forwarded (copy and pickle probe them before __init__ has run).
        if attr.startswith("__") or attr in ("spec", "strategy"):
            raise AttributeError(attr)
        return getattr(self.strategy, attr)

    def __repr__(self) -> str:
        return f"UserStrategy({self.spec!r}, {self.strategy!r})"


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (one line, for the CLI)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextlib.contextmanager
def _cwd_on_path() -> Iterator[None]:
    """Search the current working directory first while importing a user's module."""
    cwd = os.getcwd()
    if any(isinstance(p, str) and os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(cwd)

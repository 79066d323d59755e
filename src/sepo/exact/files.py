"""Reading the strategy files of the exact core (Kuhn strategies, IPD tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_STRATEGY_BYTES = 256 * 2**20
"""Largest strategy file read (an 8-round IPD table is about 0.6 MB; 12 rounds, the
most a table may have, about 180 MB)."""


def read_strategy_json(path: Path, error: type[Exception]) -> Any:
    """The parsed JSON of the strategy file ``path``; an unreadable file or invalid JSON
    raises ``error`` with a one-line message."""
    try:
        size = path.stat().st_size
        if size > MAX_STRATEGY_BYTES:
            raise error(
                f"strategy file {path} is {size:,} bytes; a strategy file is at most "
                f"{MAX_STRATEGY_BYTES:,}"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(f"cannot read strategy file {path}: {reason}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"strategy file {path} is nested too deeply to be a strategy") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"strategy file {path} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None

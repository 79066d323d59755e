"""Writing the files of a run folder so that a kill, a full disk or a link never leaves a
half-written file or writes outside the folder.

Every file is written to a temporary file in the same folder and renamed over its target
(``os.replace``, atomic on POSIX): a reader, or a resumed run, sees the old file or the
new one, never a truncated one. The rename replaces a symbolic link at the target instead
of writing where it points. On failure the temporary file is removed and the target is
left as it was; the error names the file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from sepo.core.errors import SepoError


class RunFileError(SepoError, OSError):
    """A file of a run folder could not be written (names the file; one line)."""


@contextlib.contextmanager
def atomic_writer(path: str | Path, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text file handle whose content replaces ``path`` only once the ``with`` block
    ends without an error (module docstring)."""
    target = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise RunFileError(f"could not write {target}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunFileError(f"could not write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_writer(path) as fh:
        fh.write(text)


def write_json_atomic(
    path: str | Path, data: Any, *, indent: int | None = 2, allow_nan: bool = True
) -> None:
    """Write ``data`` as JSON (``default=str``, for paths) to ``path`` atomically."""
    text = json.dumps(data, indent=indent, allow_nan=allow_nan, default=str)
    write_text_atomic(path, text + "\n")


def write_lines_atomic(path: str | Path, lines: Iterable[str]) -> None:
    """Write one line per item of ``lines`` (each without its newline) atomically."""
    with atomic_writer(path) as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")


def read_json_cache(path: str | Path) -> Any | None:
    """A cached result or marker file's JSON, or None when it is missing or does not parse
    (what a write cut short by an earlier version left): the caller recomputes it
    instead of failing on every resume."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


SAFETENSORS_HEADER_LIMIT = 100_000_000
"""The largest safetensors header read (bytes); the format's own limit."""


def safetensors_whole(path: str | Path) -> bool:
    """Whether ``path`` is a whole safetensors file: its header parses and the file is as
    long as the header's tensors say (a save cut short leaves a shorter file). Reads the
    header only."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return False
            size = int.from_bytes(head, "little")
            if not 0 < size <= SAFETENSORS_HEADER_LIMIT:
                return False
            header = json.loads(fh.read(size))
        if not isinstance(header, dict):
            return False
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return p.stat().st_size >= 8 + size + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")


def weights_whole(folder: str | Path) -> bool:
    """Whether a model or adapter folder holds whole weights (:func:`safetensors_whole`);
    a sharded model counts when its index and every shard are whole."""
    f = Path(folder)
    if any(safetensors_whole(f / name) for name in WEIGHT_FILES):
        return True
    try:
        index = json.loads((f / "model.safetensors.index.json").read_text())
        shards = set(index["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(shards) and all(safetensors_whole(f / str(s)) for s in shards)


def finished_folder(folder: str | Path, marker: str) -> bool:
    """Whether a model or checkpoint folder was written to the end: ``marker``, a JSON
    file written after the weights, parses, and the weights are whole."""
    f = Path(folder)
    return isinstance(read_json_cache(f / marker), dict) and weights_whole(f)

"""A run folder survives a kill, a full disk and a planted link: every file is written
whole or not at all (``sepo.core.files``), and what a write cut short left is passed over
(a checkpoint without its trainer state, truncated weights, a half-built base model, a
truncated cache) instead of being taken as done."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sepo.core.files import (
    RunFileError,
    atomic_writer,
    read_json_cache,
    safetensors_whole,
    weights_whole,
    write_json_atomic,
    write_text_atomic,
)


def _safetensors(path: Path, n: int = 4) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    raw = header.encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * (4 * n))
    return path


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), atomic_writer(target) as fh:
        fh.write("half of the new")
        raise Boom
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_planted_link_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not sepo's")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").symlink_to(outside)
    (run / "dangling.json").symlink_to(tmp_path / "nowhere" / "x.json")
    write_text_atomic(run / "metrics.json", "{}\n")
    write_text_atomic(run / "dangling.json", "{}\n")
    assert outside.read_text() == "not sepo's"
    assert not (tmp_path / "nowhere").exists()
    assert not (run / "metrics.json").is_symlink()
    assert (run / "metrics.json").read_text() == "{}\n"


def test_an_unwritable_folder_is_one_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="missing"):
        write_text_atomic(tmp_path / "missing" / "summary.json", "{}")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunFileError, match=r"summary\.json"):
            write_text_atomic(locked / "summary.json", "{}")


def test_whole_and_cut_safetensors(tmp_path: Path) -> None:
    whole = _safetensors(tmp_path / "model.safetensors")
    assert safetensors_whole(whole)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-3])
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    huge_header = tmp_path / "huge.safetensors"
    huge_header.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    for bad in (cut, empty, garbage, huge_header, tmp_path / "absent.safetensors"):
        assert not safetensors_whole(bad), bad.name
    assert weights_whole(tmp_path)
    whole.unlink()
    assert not weights_whole(tmp_path)


def test_resume_takes_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    from sepo.train.grpo import checkpoints, latest_checkpoint, run_finished

    def checkpoint(step: int, *, state: bool = True, weights: str = "whole") -> None:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if weights != "none":
            w = _safetensors(folder / "model.safetensors")
            if weights == "cut":
                w.write_bytes(w.read_bytes()[:20])

    assert latest_checkpoint(tmp_path) is None
    checkpoint(2)
    checkpoint(4, state=False)  # killed while saving: no trainer state yet
    checkpoint(6, weights="cut")  # killed while writing the weights
    checkpoint(8, weights="none")
    (tmp_path / "checkpoint-10").mkdir()  # killed right after mkdir
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')
    _safetensors(tmp_path / "checkpoint-12" / "model.safetensors")
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    checkpoint(14)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-14"
    # A final folder with a config but no weights is not a finished run.
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    assert not run_finished(tmp_path)
    _safetensors(tmp_path / "final" / "model.safetensors")
    assert run_finished(tmp_path)


def test_a_half_built_base_model_is_not_taken_as_built(tmp_path: Path) -> None:
    from sepo.policies.corpus import game_corpus
    from sepo.policies.tiny import METADATA_FILE, build_tiny_model, tiny_model_complete

    folder = build_tiny_model(tmp_path / "base", game_corpus(seed=0, episodes_per_game=2), seed=0)
    assert tiny_model_complete(folder)
    for name in ("tokenizer.json", METADATA_FILE, "model.safetensors"):
        broken = tmp_path / f"without-{name}"
        shutil.copytree(folder, broken)
        (broken / name).unlink()
        assert not tiny_model_complete(broken), name
    cut = tmp_path / "cut"
    shutil.copytree(folder, cut)
    w = cut / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    assert not tiny_model_complete(cut)


def test_a_truncated_cache_is_recomputed_not_a_traceback(tmp_path: Path) -> None:
    cache = tmp_path / "summary_entry.json"
    assert read_json_cache(cache) is None
    cache.write_text('{"pay": 0.5, "safe')
    assert read_json_cache(cache) is None
    cache.write_text('{"pay": 0.5}')
    assert read_json_cache(cache) == {"pay": 0.5}

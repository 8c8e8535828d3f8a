"""Atomic writes leave either the old or the new file, never half of one, and no temp files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from aestudy.atomic import FILE_MODE, atomic_write, atomic_write_json


def test_json_round_trips_with_shared_permissions(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "sub" / "a.json", {"x": [1, 2.5, "y"]})
    assert json.loads(path.read_text()) == {"x": [1, 2.5, "y"]}
    assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failing_writer_keeps_the_old_content_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    atomic_write(path, lambda handle: handle.write(b"old"))

    def broken(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_unserialisable_json_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "c.json", {"x": float("nan")}, allow_nan=False)
    assert list(tmp_path.iterdir()) == []

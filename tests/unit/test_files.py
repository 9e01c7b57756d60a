"""The one atomic writer and lock helper."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cnirun.files import locked, write_atomic


def test_write_atomic_sets_the_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        target = tmp_path / "sub" / "f"
        write_atomic(str(target), b"data", 0o644, dir_mode=0o700)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(target.parent)) == ["f"]  # no temporary file left


def test_write_atomic_replaces_and_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    write_atomic(str(target), b"new", 0o600)
    assert target.read_bytes() == b"new"
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "missing" / "f"), b"x", 0o600)  # no dir_mode: not created
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_write_atomic_does_not_follow_a_planted_temp_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    target = tmp_path / "f"
    (tmp_path / f".f.{os.getpid()}.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        write_atomic(str(target), b"evil", 0o644)
    assert victim.read_bytes() == b"keep"


def test_locked_creates_the_lock_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "x.lock"
    with locked(str(path)) as fd:
        assert fd >= 0 and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

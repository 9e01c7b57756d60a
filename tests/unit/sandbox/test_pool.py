"""The infra pool's markers (cnirun.sandbox.pool): what a state dir's pool/ holds is read as
untrusted input, and a claim removes a marker only through a directory that is no symlink."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cnirun.files import UnsafePathError
from cnirun.sandbox import pool

ID = "0123456789abcdef0123456789abcdef"


def marker(state: Path, name: str = ID, content: bytes | None = None) -> Path:
    directory = state / "pool"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    data = {"engine": "unix:///var/run/docker.sock", "image": "cnirun/pause:1", "pid": 1,
            "start": "x"}  # fmt: skip
    path.write_bytes(json.dumps(data).encode() if content is None else content)
    return path


def test_members_are_the_markers_named_as_sandbox_ids(tmp_path: Path) -> None:
    marker(tmp_path)
    marker(tmp_path, "not-an-id")
    marker(tmp_path, ".0123456789abcdef0123456789abcdef.123.tmp")
    assert pool.members(str(tmp_path)) == [ID]
    assert pool.members(str(tmp_path / "nowhere")) == []


def test_a_marker_is_read_back(tmp_path: Path) -> None:
    marker(tmp_path)
    read = pool.read_marker(str(tmp_path), ID)
    assert read == pool.Marker("unix:///var/run/docker.sock", "cnirun/pause:1", 1, "x")
    assert read is not None and not read.filler_alive()  # pid 1 did not start at "x"


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"engine": "e"}', b'{"engine":"e","image":"i","pid":"x","start":"s"}',
     b" " * 5000],
)  # fmt: skip
def test_a_bad_marker_is_not_one(tmp_path: Path, content: bytes) -> None:
    marker(tmp_path, content=content)
    assert pool.read_marker(str(tmp_path), ID) is None


def test_a_symlinked_marker_is_not_followed(tmp_path: Path) -> None:
    real = marker(tmp_path, "elsewhere")
    os.symlink(real, tmp_path / "pool" / ID)
    assert pool.read_marker(str(tmp_path), ID) is None


def test_forget_removes_once_and_says_so(tmp_path: Path) -> None:
    marker(tmp_path)
    assert pool.forget(str(tmp_path), ID) is True
    assert pool.forget(str(tmp_path), ID) is False  # a second claimer loses


def test_forget_never_goes_through_a_symlinked_pool_dir(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    (target / ID).write_text("{}")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.symlink(target, state / "pool")
    with pytest.raises(UnsafePathError):
        pool.forget(str(state), ID)
    assert (target / ID).exists()

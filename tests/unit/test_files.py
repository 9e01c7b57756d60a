"""The one atomic writer and lock helper."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cnirun.files import (
    FileTooLargeError,
    UnsafePathError,
    check_written,
    drop_partial_writes,
    ensure_dir,
    locked,
    open_lock,
    read_limited,
    write_atomic,
)


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


def test_directories_are_created_private_whatever_the_umask(tmp_path: Path) -> None:
    # Issue 13 item 3: under root's umask 000 the state dir (and its parents) came out 0777.
    old = os.umask(0)
    try:
        write_atomic(str(tmp_path / "a" / "b" / "f"), b"x", 0o600, dir_mode=0o700)
        ensure_dir(str(tmp_path / "c" / "d"))
        with locked(str(tmp_path / "e" / "x.lock")):
            pass
    finally:
        os.umask(old)
    for name in ("a", "a/b", "c", "c/d", "e"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o700, name


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_directory_others_can_write_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "state"
    shared.mkdir()
    shared.chmod(mode)
    for attempt in (
        lambda: write_atomic(str(shared / "f"), b"x", 0o600),
        lambda: ensure_dir(str(shared)),
        lambda: open_lock(str(shared / "x.lock")),
    ):
        with pytest.raises(UnsafePathError) as caught:
            attempt()
        assert caught.value.strerror == (
            f"{shared} is writable by group or others (mode {mode:04o}): `chmod go-w {shared}`"
        )
    assert os.listdir(shared) == []


def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # as if another user had made it
    with pytest.raises(UnsafePathError, match=f"is owned by uid {owner}, not {owner + 1}"):
        write_atomic(str(tmp_path / "f"), b"x", 0o600)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(UnsafePathError, match="is owned by uid"):
        read_limited(str(tmp_path / "f"), 10, trusted=True)
    with pytest.raises(UnsafePathError, match="is owned by uid"):
        ensure_dir(str(tmp_path))


def test_a_lock_file_symlink_is_never_followed(tmp_path: Path) -> None:
    # Issue 13 item 2: lock-file symlinks made root create files anywhere.
    victim = tmp_path / "elsewhere" / "created-by-root"
    victim.parent.mkdir()
    (tmp_path / "x.lock").symlink_to(victim)
    with pytest.raises(OSError):
        open_lock(str(tmp_path / "x.lock"))
    assert not victim.exists()


def test_a_directory_symlink_is_refused_when_asked(tmp_path: Path) -> None:
    # Issue 13 item 2: `<id>.etc` planted as a symlink to /etc made root overwrite /etc/hosts.
    target = tmp_path / "etc"
    target.mkdir()
    (target / "hosts").write_text("keep")
    link = tmp_path / "x.etc"
    link.symlink_to(target)
    with pytest.raises(UnsafePathError, match="x.etc is a symbolic link"):
        write_atomic(str(link / "hosts"), b"evil", 0o644, dir_mode=0o755, follow_dir=False)
    with pytest.raises(UnsafePathError, match="x.etc is a symbolic link"):
        write_atomic(str(link / "hosts"), b"evil", 0o644, follow_dir=False)
    assert (target / "hosts").read_text() == "keep"
    write_atomic(str(link / "hosts"), b"fine", 0o644)  # a followed dir is the default
    assert (target / "hosts").read_text() == "fine"


def test_check_written_refuses_anything_but_a_private_regular_file(tmp_path: Path) -> None:
    good = tmp_path / "hosts"
    write_atomic(str(good), b"x", 0o644)
    check_written(str(good))
    (tmp_path / "link").symlink_to(good)
    with pytest.raises(UnsafePathError, match="is not a regular file"):
        check_written(str(tmp_path / "link"))
    good.chmod(0o666)
    with pytest.raises(UnsafePathError, match="writable by group or others"):
        check_written(str(good))


def test_read_limited_reads_only_regular_files_up_to_the_limit(tmp_path: Path) -> None:
    # Issue 13 item 7: a FIFO named x.conflist hung cnirun; a link to /dev/zero ran it out of
    # memory.
    fifo = tmp_path / "x.conflist"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_limited(str(fifo), 100)
    zero = tmp_path / "zero.conflist"
    zero.symlink_to("/dev/zero")
    with pytest.raises(OSError, match="not a regular file"):
        read_limited(str(zero), 100)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(FileTooLargeError, match="larger than 100 bytes"):
        read_limited(str(big), 100)
    assert read_limited(str(big), 101) == b"x" * 101
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        read_limited(str(tmp_path / "zero.conflist"), 100, trusted=True)


def test_a_too_long_name_is_reported_as_itself(tmp_path: Path) -> None:
    # Issue 13 item 9: "File name too long" named the temporary file.
    target = tmp_path / ("n" * 250)
    with pytest.raises(OSError) as caught:
        write_atomic(str(target), b"x", 0o600)
    assert caught.value.filename == str(target)


def test_drop_partial_writes_removes_this_and_dead_writers_temporaries(tmp_path: Path) -> None:
    """What a signal landing inside write_atomic can leave: only the named file's, and only
    those of this process or of a writer that has ended."""
    target = tmp_path / "abc.json"
    mine = tmp_path / f".abc.json.{os.getpid()}.tmp"
    dead = tmp_path / ".abc.json.999999.tmp"
    alive = tmp_path / ".abc.json.1.tmp"
    other = tmp_path / f".abd.json.{os.getpid()}.tmp"
    odd = tmp_path / ".abc.json.x1.tmp"
    for path in (target, mine, dead, alive, other, odd):
        path.write_text("{")
    drop_partial_writes(str(target), lambda pid: pid == 999999)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, alive.name, other.name, odd.name]
    )

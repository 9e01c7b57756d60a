"""The one way cnirun writes a file and takes a lock file. Stdlib only, a leaf like `errors`,
so every layer (the CNI core's result cache included) uses the same rules.

Writes are atomic: a temporary file in the same directory, written, fsynced and given its mode
explicitly, then renamed over the target, so a reader (or a crash) sees the old file or the
new one, never half of either. Temporary names start with `.` and end with `.tmp`, which no
config loader, record lister or cache reader picks up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


def write_atomic(
    path: str, data: bytes, mode: int, dir_mode: int | None = None, sync: bool = True
) -> None:
    """Replace `path` with `data`, file mode `mode`; create the parent (`dir_mode`) if asked.

    `sync=False` skips the fsync: the file then survives the writer's death (the page cache
    keeps it) but not the host's, which is enough for a note superseded a moment later.

    Raises:
        OSError: the directory or the file cannot be written (nothing is left behind).
    """
    directory = os.path.dirname(path) or "."
    if dir_mode is not None:
        os.makedirs(directory, mode=dir_mode, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_lock(path: str, dir_mode: int = 0o700) -> int:
    """Open (creating if needed) the lock file `path` and return its descriptor, unlocked.

    Raises:
        OSError: the directory or the file cannot be created.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=dir_mode, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


@contextlib.contextmanager
def locked(path: str, dir_mode: int = 0o700) -> Iterator[int]:
    """Hold an exclusive flock on `path` for the block; yields the descriptor.

    Raises:
        OSError: the lock file cannot be created.
    """
    fd = open_lock(path, dir_mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the flock


def unlink_quietly(path: str) -> None:
    """Remove a file; one that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

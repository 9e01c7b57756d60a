"""The one way cnirun writes a file, takes a lock file, makes its directories and reads a file
it did not just write. Stdlib only, a leaf like `errors`, so every layer (the CNI core's result
cache included) uses the same rules.

cnirun runs as root, so nothing it writes may be redirected and nothing it reads may steer it:

- Its directories are created with their mode set explicitly, whatever the umask, and a
  directory it writes into must be owned by the effective user and not group/world-writable
  (else `UnsafePathError`, one line naming the path and the fix).
- Files are opened relative to a descriptor of their directory, opened once, with O_NOFOLLOW:
  a planted symlink is refused, never followed.
- Writes are atomic: a temporary file in the same directory, written, fsynced and given its
  mode explicitly, then renamed over the target, so a reader (or a crash) sees the old file or
  the new one, never half of either. Temporary names start with `.` and end with `.tmp`, which
  no config loader, record lister or cache reader picks up.
- Reads (`read_limited`) take regular files only (a FIFO cannot hang cnirun, a link to
  /dev/zero cannot exhaust its memory) and at most a given size.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator


class UnsafePathError(PermissionError):
    """A path cnirun would trust is not safe to trust (an OSError, so callers that report
    OSErrors by `strerror` say this one too)."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        super().__init__(errno.EPERM, f"{path} {problem}: {fix}", path)


def check_owned(st: os.stat_result, path: str, *, or_root: bool = False) -> None:
    """Refuse a file or directory not owned by the effective user (`or_root`: or by root),
    or writable by group or others.

    Raises:
        UnsafePathError: naming the path and how to fix it.
    """
    euid = os.geteuid()
    if st.st_uid != euid and not (or_root and st.st_uid == 0):
        raise UnsafePathError(
            path,
            f"is owned by uid {st.st_uid}, not {euid}",
            f"remove it, or `chown {euid} {path}` if its contents are trusted",
        )
    if st.st_mode & 0o022:
        raise UnsafePathError(
            path,
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"`chmod go-w {path}`",
        )


def ensure_dir(path: str, mode: int = 0o700) -> None:
    """Create `path` and any missing parent, each with `mode` whatever the umask; then check
    that the directory is the effective user's and not writable by others.

    Raises:
        OSError: it cannot be created; UnsafePathError: it exists but is not safe.
    """
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: checked below like any existing one
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    check_owned(st, path)


@contextlib.contextmanager
def open_dir(path: str, create_mode: int | None = None, *, follow: bool = True) -> Iterator[int]:
    """A descriptor of the trusted directory `path` (created with `create_mode` if given and
    missing) for the block. With `follow=False` the directory itself must not be a symlink.

    Raises:
        OSError, UnsafePathError.
    """
    if create_mode is not None:
        if not follow and os.path.islink(path):
            raise _symlink_error(path)
        ensure_dir(path, create_mode)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise _symlink_error(path) from None
        raise
    try:
        check_owned(os.fstat(fd), path)
        yield fd
    finally:
        os.close(fd)


def _symlink_error(path: str) -> UnsafePathError:
    return UnsafePathError(path, "is a symbolic link", "remove it (cnirun never follows one)")


def write_atomic(
    path: str,
    data: bytes,
    mode: int,
    dir_mode: int | None = None,
    *,
    follow_dir: bool = True,
    sync: bool = True,
) -> None:
    """Replace `path` with `data`, file mode `mode`; create the parent (`dir_mode`) if asked.
    The parent must be trusted (see open_dir; `follow_dir=False`: not a symlink either).

    `sync=False` skips the fsync: the file then survives the writer's death (the page cache
    keeps it) but not the host's, which is enough for a note superseded a moment later.

    Raises:
        OSError: the directory or the file cannot be written (nothing is left behind).
    """
    directory = os.path.dirname(path) or "."
    name = os.path.basename(path)
    with open_dir(directory, dir_mode, follow=follow_dir) as dir_fd:
        tmp = f".{name}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
        except OSError as e:  # name the file asked for, not the temporary one
            raise OSError(e.errno, e.strerror, path) from None
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
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


def drop_partial_writes(path: str, gone: Callable[[int], bool]) -> None:
    """Remove what `write_atomic(path, ...)` calls left half done: their temporary files
    (`.NAME.PID.tmp` beside `path`) of this process, or of a writer `gone(pid)` says has
    ended. A signal whose handler raises can land between the temporary file's creation and
    the cleanup that would remove it; this is the net under that race."""
    directory = os.path.dirname(path) or "."
    prefix = f".{os.path.basename(path)}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) : -len(".tmp")]
        if name.startswith(prefix) and name.endswith(".tmp") and pid.isdigit():
            if int(pid) == os.getpid() or gone(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))


def check_written(path: str) -> None:
    """Check that `path` is still a regular file of the effective user that only it can
    write (what `write_atomic` leaves), not a symlink or anything else put in its place.

    Raises:
        OSError, UnsafePathError.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(path, "is not a regular file", "remove it")
    check_owned(st, path)


def open_lock(
    path: str, dir_mode: int = 0o700, mode: int = 0o600, *, follow_dir: bool = True
) -> int:
    """Open (creating if needed, with `mode`) the lock file `path`; return its descriptor,
    unlocked.
    Its directory must be trusted (`follow_dir=False`: and not a symlink); the lock must be
    a regular file of the effective user.

    Raises:
        OSError: the directory or the file cannot be created, or is not safe.
    """
    flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    with open_dir(os.path.dirname(path) or ".", dir_mode, follow=follow_dir) as dir_fd:
        try:
            name = os.path.basename(path)
            fd = os.open(name, flags | os.O_RDWR | os.O_CREAT, mode, dir_fd=dir_fd)
        except OSError as e:
            if e.errno != errno.EROFS:
                raise
            # A file system made read-only: an existing lock still locks when opened so
            # (flock needs no write access), and a teardown must not stop for want of it.
            fd = os.open(name, flags | os.O_RDONLY, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(path, "is not a regular file", "remove it")
        check_owned(st, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


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


class FileTooLargeError(OSError):
    """A file is larger than cnirun reads."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(errno.EFBIG, f"larger than {limit} bytes", path)


def read_limited(path: str, limit: int, *, trusted: bool = False) -> bytes:
    """The contents of the regular file `path`, at most `limit` bytes. With `trusted`, the
    file must also be the effective user's, writable by no one else, and not a symlink.

    Raises:
        OSError: it cannot be read, is not a regular file, or is larger (FileTooLargeError);
        UnsafePathError: `trusted` and it is not.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if trusted else 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if trusted and e.errno == errno.ELOOP:
            raise _symlink_error(path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if trusted:
            check_owned(st, path)
        if st.st_size > limit:
            raise FileTooLargeError(path, limit)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileTooLargeError(path, limit)
        return b"".join(chunks)
    finally:
        os.close(fd)


def unlink_quietly(path: str) -> None:
    """Remove a file; one that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

"""Named network namespaces under /run/netns: hold, create, enter, inspect and release them.

Mounts and namespace switches go through ctypes on libc, so the hot path (hold/release) stays
cheap (no pyroute2). Imports nothing of cnirun but its errors.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import logging
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from cnirun.errors import NetnsError
from cnirun.files import ensure_dir

log = logging.getLogger(__name__)

NETNS_DIR = "/run/netns"

# From <linux/sched.h>, <sys/mount.h>, <linux/nsfs.h> and <linux/sockios.h>.
_CLONE_NEWNET = 0x40000000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SHARED = 1 << 20
_MNT_DETACH = 0x2
_NS_GET_NSTYPE = 0xB703
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_T = TypeVar("_T")


@functools.cache
def _libc() -> ctypes.CDLL:
    # dlopen(NULL) finds libc's symbols without find_library, which would spawn ldconfig.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _os_error(call: str, target: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{call} {target}: {os.strerror(code)}")


def _mount(source: str, target: str, flags: int) -> None:
    if _libc().mount(source.encode(), target.encode(), b"none", flags, None) != 0:
        raise _os_error("mount", target)


def _umount_detach(target: str) -> None:
    if _libc().umount2(target.encode(), _MNT_DETACH) != 0:
        raise _os_error("umount", target)


def _setns(fd: int, target: str) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        raise _os_error("setns", target)


def _unshare_net() -> None:
    if _libc().unshare(_CLONE_NEWNET) != 0:
        raise _os_error("unshare", "netns")


def _in_thread(fn: Callable[[], _T]) -> _T:
    """Run `fn` in a short-lived thread and return its result (or raise its exception).

    A netns belongs to a thread, not to the process: a thread can setns/unshare, fork a child
    that inherits its netns, and exit, leaving the caller's namespace untouched. This avoids
    both fork() and subprocess's preexec_fn, neither of which is safe next to other threads.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as e:  # handed to the caller below
            failure.append(e)

    thread = threading.Thread(target=target, name="cnirun-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _is_netns_fd(fd: int) -> bool:
    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == _CLONE_NEWNET
    except OSError:  # ENOTTY: not an nsfs file at all
        return False


def _open_netns(path: str) -> int:
    """Open an existing netns file read-only; never creates anything."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetnsError(f"cannot open netns {path}: {e.strerror}") from e
    if not _is_netns_fd(fd):
        os.close(fd)
        raise NetnsError(f"{path} is not a network namespace")
    return fd


def _share_netns_dir() -> None:
    """Make NETNS_DIR a shared mount point, as `ip netns add` does.

    Shared propagation lets a later unmount reach copies of the mount in other mount
    namespaces (e.g. ones created while a netns was held), so the namespace can really die.
    """
    ensure_dir(NETNS_DIR, 0o755)
    dir_fd = os.open(NETNS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Serialize with concurrent cnirun runs so the directory is bound onto itself only once.
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            _mount("", NETNS_DIR, _MS_SHARED | _MS_REC)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: not a mount point yet
                raise
            _mount(NETNS_DIR, NETNS_DIR, _MS_BIND | _MS_REC)
            _mount("", NETNS_DIR, _MS_SHARED | _MS_REC)
    except OSError as e:
        raise NetnsError(f"cannot make {NETNS_DIR} a shared mount point: {e}") from e
    finally:
        os.close(dir_fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def netns_path(name: str) -> str:
    """Return the path of the named netns, `/run/netns/<name>`.

    Raises:
        NetnsError: `name` is empty, `.`/`..`, or contains `/` or NUL.
    """
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise NetnsError(f"invalid netns name {name!r}")
    return os.path.join(NETNS_DIR, name)


def netns_exists(path: str) -> bool:
    """Return True if `path` exists and is a network namespace (not e.g. an unmounted stub)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _is_netns_fd(fd)
    finally:
        os.close(fd)


def same_netns(a: str, b: str) -> bool:
    """Whether two netns files (`/proc/<pid>/ns/net`, a holder) are one namespace; False
    when either is missing."""
    try:
        return _same_file(os.stat(a), os.stat(b))
    except OSError:
        return False


def processes_in(path: str) -> list[int]:
    """The processes whose network namespace is the one held at `path` (none if it is not
    held): a namespace still in use must not have its attachments DELeted."""
    try:
        held = os.stat(path)
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if _same_file(os.stat(f"/proc/{entry}/ns/net"), held):
                found.append(int(entry))
        except OSError:  # gone meanwhile, or a kernel thread
            continue
    return found


def list_held(prefix: str) -> list[str]:
    """Return the sorted names in NETNS_DIR that start with `prefix`."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def _check_existing(path: str, want: os.stat_result) -> None:
    """Explain why `path` is already taken, unless it already holds the namespace `want`."""
    if netns_exists(path):
        if _same_file(os.stat(path), want):
            return
        raise NetnsError(f"{path} already holds a different network namespace")
    raise NetnsError(f"{path} exists but holds no network namespace (stale? release it first)")


def hold_netns(source: str, name: str) -> str:
    """Bind-mount the netns file `source` onto `/run/netns/<name>` and return that path.

    The namespace then outlives its processes, and teardown never depends on `/proc/<pid>`.

    Args:
        source: an existing netns file, such as `/proc/<pid>/ns/net`.
        name: the name to hold it under.

    Raises:
        NetnsError: `source` is missing or not a netns, the name is held for another
            namespace, or the mount fails. Nothing is left behind on failure.
    """
    path = netns_path(name)
    src_fd = _open_netns(source)
    try:
        src_stat = os.fstat(src_fd)
        if os.path.lexists(path):
            _check_existing(path, src_stat)
            return path
        _share_netns_dir()
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
        except FileExistsError:  # lost a race with another holder of the same name
            _check_existing(path, src_stat)
            return path
        try:
            # Mount through our fd, not `source`: a pid recycled since the open cannot redirect it.
            _mount(f"/proc/self/fd/{src_fd}", path, _MS_BIND)
        except OSError as e:
            os.unlink(path)
            raise NetnsError(f"cannot hold netns {source} at {path}: {e}") from e
    finally:
        os.close(src_fd)
    log.debug("held netns %s at %s", source, path)
    return path


def _bring_lo_up() -> None:
    # SIOCSIFFLAGS on a socket made in the current thread's netns; struct ifreq is 40 bytes.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def create_netns(name: str) -> str:
    """Create a fresh netns held at `/run/netns/<name>`, with `lo` up, and return its path.

    Raises:
        NetnsError: the name is already taken, or the namespace cannot be created or mounted.
    """
    path = netns_path(name)
    _share_netns_dir()
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    except FileExistsError:
        raise NetnsError(f"cannot create netns {path}: it already exists") from None
    except OSError as e:
        raise NetnsError(f"cannot create netns {path}: {e.strerror}") from e

    def build() -> None:
        _unshare_net()
        _bring_lo_up()
        # /proc/self would name the main thread's netns; the new one belongs to this thread.
        _mount("/proc/thread-self/ns/net", path, _MS_BIND)

    try:
        _in_thread(build)
    except OSError as e:
        os.unlink(path)
        raise NetnsError(f"cannot create netns {path}: {e}") from e
    log.debug("created netns %s", path)
    return path


def release_netns(name: str) -> None:
    """Lazily unmount and remove `/run/netns/<name>`; a name that is not held is fine.

    Raises:
        NetnsError: the unmount or unlink fails for a reason other than "not there".
    """
    path = netns_path(name)
    # Loop in case the name was mounted over more than once; EINVAL means no mount is left.
    while True:
        try:
            _umount_detach(path)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                break
            raise NetnsError(f"cannot release netns {path}: {e}") from e
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise NetnsError(f"cannot release netns {path}: {e.strerror}") from e
    log.debug("released netns %s", path)


def run_in_netns(path: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start `argv` inside the netns at `path`, sharing the caller's stdio.

    Raises:
        NetnsError: `path` is missing or not a netns (nothing is created), or the netns
            cannot be entered. A command that cannot be executed raises OSError as Popen does.
    """
    fd = _open_netns(path)

    def spawn() -> subprocess.Popen[bytes]:
        try:
            _setns(fd, path)
        except OSError as e:
            raise NetnsError(f"cannot enter netns {path}: {e}") from e
        # The child forks from this thread and so starts inside the netns.
        return subprocess.Popen(list(argv))

    try:
        return _in_thread(spawn)
    finally:
        os.close(fd)

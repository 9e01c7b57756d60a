"""Finding plugin binaries and executing them with the CNI exec protocol.

Owns the `CNI_*` environment, the per-call timeout (the plugin runs in its own process group,
which is killed whole), the "text file busy" retries, and decoding a failed plugin's output
into a CNIError the way libcni does.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from cnirun.cni import gojson, types
from cnirun.cni.types import go_quote as go_quote  # re-exported: part of this module's API
from cnirun.errors import CNIError, PluginNotFoundError, PluginTimeoutError
from cnirun.files import check_owned

log = logging.getLogger(__name__)

# What cnirun keeps of a plugin's stdout and of its stderr; past that the plugin is killed.
MAX_OUTPUT_BYTES = 16 << 20
_CHUNK = 1 << 16
# How much of a failed plugin's output an error message quotes.
QUOTE_LIMIT = 300

CNI_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_ARGS", "CNI_IFNAME", "CNI_PATH")


def find_in_path(plugin: str, paths: Sequence[str]) -> str:
    """Find a plugin binary in `paths`, first hit wins; never falls back to `$PATH`.

    A candidate counts if it is a regular file (symlinks followed); the exec bit is not
    checked here, so a non-executable plugin fails when run, with the exec error. The one
    found must be safe to run as root (check_plugin_file).

    Raises:
        PluginNotFoundError: with libcni's messages, or the plugin is refused.
    """
    if plugin == "":
        raise PluginNotFoundError(types.ERR_UNKNOWN, "no plugin name provided")
    if "/" in plugin:
        raise PluginNotFoundError(types.ERR_UNKNOWN, f"invalid plugin name: {plugin}")
    if not paths:
        raise PluginNotFoundError(types.ERR_UNKNOWN, "no paths provided")
    for directory in paths:
        if not directory:  # an empty entry would mean the current directory
            continue
        candidate = os.path.join(directory, plugin)
        try:
            if os.path.isfile(candidate):
                check_plugin_file(directory, candidate)
                return candidate
        except OSError:
            continue
    listed = " ".join(paths)
    raise PluginNotFoundError(
        types.ERR_UNKNOWN, f"failed to find plugin {go_quote(plugin)} in path [{listed}]"
    )


def check_plugin_file(directory: str, path: str) -> None:
    """Refuse a plugin (binary, symlinks followed, or its directory) that anyone but root or
    this user owns or that group or others can write: it would run with our rights.

    Raises:
        PluginNotFoundError: `refusing plugin <path>: ...`, with the fix.
    """
    try:
        for checked in (directory, os.path.realpath(path)):
            check_owned(os.stat(checked), checked, or_root=True)
    except OSError as e:
        raise PluginNotFoundError(
            types.ERR_UNKNOWN, f"refusing plugin {path}: {e.strerror or e}"
        ) from None


class Args(NamedTuple):
    """The six CNI_* variables of one call."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    cni_args: tuple[tuple[str, str], ...] = ()
    path: tuple[str, ...] = ()

    def environ(self) -> dict[str, str]:
        """The CNI_* variables; all six are always set, possibly to ""."""
        return {
            "CNI_COMMAND": self.command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in self.cni_args),
            "CNI_IFNAME": self.ifname,
            "CNI_PATH": ":".join(self.path),
        }


class Exec(Protocol):
    """The seam between the CNI operations and real processes (tests may fake it)."""

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str: ...

    def exec_plugin(
        self, path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None
    ) -> bytes: ...


_UINT64_MAX = 2**64 - 1


def _error_field(obj: dict[str, Any], name: str) -> Any:
    """A field of an error object, matched like Go's decoder: exact key, else any casing."""
    if name in obj:
        return obj[name]
    value = None
    for key, item in obj.items():
        if key.lower() == name:
            value = item
    return value


def decode_failure(stdout: bytes, stderr: bytes, reason: str) -> CNIError:
    """Turn a failed plugin's output into a CNIError (libcni's `pluginErr`).

    The error JSON on stdout wins; stderr is used only when stdout is empty.
    """
    if not stdout:
        if not stderr:
            return CNIError(types.ERR_UNKNOWN, f"netplugin failed with no error message: {reason}")
        return CNIError(types.ERR_UNKNOWN, f"netplugin failed: {_excerpt(stderr)}: {reason}")
    try:
        code, msg, details = _decode_error_object(stdout)
    except ValueError as e:
        return CNIError(
            types.ERR_UNKNOWN,
            f"netplugin failed but error parsing its diagnostic message {_excerpt(stdout)}: {e}",
        )
    return CNIError(code, msg, details)


def _excerpt(data: bytes) -> str:
    """A plugin's output, Go-quoted, cut to QUOTE_LIMIT characters (the size said after)."""
    text = data.decode(errors="surrogateescape")
    if len(text) <= QUOTE_LIMIT:
        return go_quote(text)
    return f"{go_quote(text[:QUOTE_LIMIT])}... ({len(data)} bytes)"


def _decode_error_object(stdout: bytes) -> tuple[int, str, str]:
    """Decode `{code, msg, details}` with the rules of Go's typed decode (unknown keys ignored)."""
    try:
        obj = gojson.loads(stdout)
    except ValueError as e:
        raise ValueError(types.go_json_error(stdout, e)) from None
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise ValueError(
            f"json: cannot unmarshal {types.go_json_kind(obj)} into Go value of type types.Error"
        )
    code = _error_field(obj, "code")
    if code is None:
        code = 0
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= _UINT64_MAX:
        raise ValueError(
            f"json: cannot unmarshal {types.go_json_kind(code)} "
            "into Go struct field Error.code of type uint"
        )
    texts = []
    for name in ("msg", "details"):
        value = _error_field(obj, name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(
                f"json: cannot unmarshal {types.go_json_kind(value)} "
                f"into Go struct field Error.{name} of type string"
            )
        texts.append(value)
    return code, texts[0], texts[1]


class RawExec:
    """Runs plugin binaries as child processes."""

    # libcni retries "text file busy" up to 6 times, one second apart.
    busy_tries = 6
    busy_delay = 1.0

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        return find_in_path(plugin, paths)

    def exec_plugin(
        self, path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None
    ) -> bytes:
        """Run one plugin; return its stdout on exit 0, else raise the decoded CNIError."""
        cni_env = {k: env.get(k, "") for k in CNI_VARS}
        proc = self._start(path, env, cni_env)
        started = time.monotonic()
        GUARDIAN.watch(proc.pid)
        try:
            stdout, stderr = _communicate(proc, stdin, timeout)
        except OutputTooLarge as e:
            _kill_group(proc)
            log.debug("plugin %s %s: %s", path, cni_env, e)
            raise CNIError(
                types.ERR_UNKNOWN,
                f"netplugin {os.path.basename(path)} wrote more than {MAX_OUTPUT_BYTES >> 20} MiB "
                f"to {e} and was killed",
            ) from None
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log.debug("plugin %s %s timed out after %ss", path, cni_env, timeout)
            raise PluginTimeoutError(
                types.ERR_UNKNOWN,
                f"netplugin {os.path.basename(path)} timed out after {timeout:g}s and was killed",
            ) from None
        except BaseException:
            _kill_group(proc)  # an interrupted runtime must not leave a plugin running
            raise
        finally:
            GUARDIAN.unwatch(proc.pid)
        status = proc.returncode
        log.debug(
            "plugin %s %s exited %s in %.3fs%s",
            path,
            " ".join(f"{k}={v}" for k, v in cni_env.items()),
            status,
            time.monotonic() - started,
            f"; stderr: {stderr.decode(errors='replace').strip()}" if stderr else "",
        )
        if status == 0:
            if stderr:
                _forward_stderr(stderr)
            return stdout
        reason = f"signal: {_signal_name(-status)}" if status < 0 else f"exit status {status}"
        raise decode_failure(stdout, stderr, reason)

    def _start(
        self, path: str, env: Mapping[str, str], cni_env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        for attempt in range(1, self.busy_tries + 1):
            try:
                return subprocess.Popen(
                    [path],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(env),
                    start_new_session=True,  # its own process group, killed whole on timeout
                    close_fds=True,  # the lock and every other descriptor of ours stay here
                )
            except OSError as e:
                if e.errno == errno.ETXTBSY and attempt < self.busy_tries:
                    time.sleep(self.busy_delay)
                    continue
                log.debug("plugin %s %s could not start: %s", path, dict(cni_env), e)
                # Go prints errno texts in lower case ("permission denied").
                text = os.strerror(e.errno) if e.errno else str(e)
                reason = f"fork/exec {path}: {text[:1].lower()}{text[1:]}"
                if e.errno == errno.ETXTBSY:
                    reason += f" (still busy after {self.busy_tries} tries)"
                raise decode_failure(b"", b"", reason) from None
        raise AssertionError("unreachable")


# The guardian: a shell that ends the process groups of the plugins still running when
# cnirun dies. It reads `+ <pgid>` (a plugin started, leading its own group) and `- <pgid>`
# (it was reaped) from a pipe whose only write end is ours; EOF means we are gone, even by
# kill -9. It then gives what is left 10 s to finish, and kills it: a plugin cut off in the
# middle of its work leaves what its own DEL cannot undo (bridge's masquerade rule without
# its chain, so every later DEL fails), while one that hangs is still gone in bounded time,
# and the lock (never passed to plugins) is free the moment cnirun dies.
#
# Why not PR_SET_PDEATHSIG in the child: it needs preexec_fn, which turns off subprocess's
# vfork path and cost 2-4 ms per plugin here (the guardian costs two small pipe writes);
# it fires when the forking *thread* exits, not the process; and it reaches only the plugin,
# not the helpers of its group (bridge's iptables), which killing the group does.
# What is left: within those 10 s a new cnirun on the same network (a gc, say) can take the
# lock while the old plugin finishes; its DEL then races the plugin's last steps.
_GUARDIAN_SCRIPT = """
groups=' '
while read -r op pg; do
  case $op in
    +) case $groups in *" $pg "*) ;; *) groups="$groups$pg " ;; esac ;;
    -) case $groups in *" $pg "*) groups="${groups%% $pg *} ${groups#* $pg }" ;; esac ;;
  esac
done
i=0
while [ $i -lt 100 ]; do
  alive=
  for pg in $groups; do kill -0 "-$pg" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && exit 0
  sleep 0.1
  i=$((i+1))
done
for pg in $groups; do kill -9 "-$pg" 2>/dev/null; done
"""


class _Guardian:
    """This process's guardian, started at the first plugin (again if it died, or after a
    fork); one per process, shared by every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._owner = 0  # the pid that started it
        self._groups: set[int] = set()
        self._failed = False

    def watch(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            self._send(f"+ {pgid}\n")

    def unwatch(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)
            self._send(f"- {pgid}\n")

    def _send(self, line: str) -> None:
        for _ in range(2):
            fd = self._ensure()
            if fd is None:
                return
            try:
                os.write(fd, line.encode())  # one small write: atomic, never mixed
                return
            except OSError as e:  # it died: start another one, told every running group
                log.debug("plugin guardian: %s; starting another", e)
                self._stop()

    def _ensure(self) -> int | None:
        if self._owner != os.getpid():
            self._proc, self._fd = None, None  # a forked child: that guardian is not ours
        if self._proc is not None and self._proc.poll() is not None:
            self._stop()
        if self._fd is not None:
            return self._fd
        read, write = os.pipe()
        try:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _GUARDIAN_SCRIPT],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C, meant for us, must not end it
                close_fds=True,
            )
        except OSError as e:
            os.close(write)
            if not self._failed:
                log.warning("cannot start the plugin guardian (/bin/sh): %s; a plugin may "
                            "outlive a cnirun that is killed", e)
                self._failed = True
            return None
        finally:
            os.close(read)
        self._fd, self._owner = write, os.getpid()
        for pgid in self._groups:
            os.write(write, f"+ {pgid}\n".encode())
        return write

    def _stop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        if self._proc is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._proc.wait(1)
        self._proc, self._fd = None, None


GUARDIAN = _Guardian()


class OutputTooLarge(Exception):
    """A plugin wrote more than MAX_OUTPUT_BYTES to one stream (the exception says which)."""


def _communicate(
    proc: subprocess.Popen[bytes], stdin: bytes, timeout: float | None
) -> tuple[bytes, bytes]:
    """`proc.communicate(stdin, timeout)`, keeping at most MAX_OUTPUT_BYTES of each stream.

    Raises:
        subprocess.TimeoutExpired: the timeout passed first.
        OutputTooLarge: a stream went past the cap (the caller kills the plugin).
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    output = {fd: bytearray() for fd in names}
    pending = memoryview(stdin)
    with selectors.DefaultSelector() as selector:
        for fd in names:
            selector.register(fd, selectors.EVENT_READ)
        writer = proc.stdin.fileno()
        if pending:
            os.set_blocking(writer, False)
            selector.register(writer, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while selector.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout or 0)
            for key, _ in selector.select(left):
                fd = key.fd
                if fd == writer:
                    try:
                        pending = pending[os.write(fd, pending[:_CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]  # it will not read more: fine, as communicate
                    if not pending:
                        selector.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    selector.unregister(fd)
                    continue
                output[fd] += chunk
                if len(output[fd]) > MAX_OUTPUT_BYTES:
                    raise OutputTooLarge(names[fd])
    left = None if deadline is None else max(deadline - time.monotonic(), 0)
    proc.wait(left)
    stdout, stderr = bytes(output[proc.stdout.fileno()]), bytes(output[proc.stderr.fileno()])
    proc.stdout.close()
    proc.stderr.close()
    return stdout, stderr


def _forward_stderr(data: bytes) -> None:
    """Copy a successful plugin's stderr to ours (libcni does the same); never fail on it."""
    try:
        buffer = getattr(sys.stderr, "buffer", None)
        if buffer is not None:
            sys.stderr.flush()
            buffer.write(data)
            buffer.flush()
        else:
            sys.stderr.write(data.decode(errors="replace"))
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # Do not wait for the pipes: a grandchild that escaped the group could hold them open.
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    proc.wait()


def _signal_name(number: int) -> str:
    names = {
        signal.SIGKILL: "killed",
        signal.SIGTERM: "terminated",
        signal.SIGSEGV: "segmentation fault",
        signal.SIGABRT: "aborted",
        signal.SIGINT: "interrupt",
    }
    try:
        return names.get(signal.Signals(number), signal.Signals(number).name)
    except ValueError:
        return str(number)

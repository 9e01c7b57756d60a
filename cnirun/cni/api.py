"""The CNI operations on a network list: ADD, DEL, CHECK, GC, STATUS and VERSION.

Semantics follow the spec and libcni: ADD chains prevResult through the plugins and caches
the final result; DEL walks the chain backwards with the cached result; an ADD that fails
after running any plugin is followed by a full DEL (the spec requires it). Knows nothing of
Docker or netns handling.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from cnirun.cni import invoke, validate
from cnirun.cni.cache import ResultCache
from cnirun.cni.config import NetworkConfigList, PluginConfig
from cnirun.cni.types import (
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_NETWORK_CONFIG,
    Result,
    ResultError,
    RuntimeConf,
    VersionInfo,
    go_quote,
)
from cnirun.cni.version import CURRENT, VersionError, parse_version
from cnirun.errors import CacheError, CNIError, CnirunError, MultiError
from cnirun.files import open_lock

log = logging.getLogger(__name__)

Attachment = tuple[str, str]  # (container ID, interface name)


class CNIConfig:
    """A CNI runtime bound to plugin directories, a result cache and per-network locks.

    Args:
        plugin_dirs: where plugin binaries are searched, in order (passed as CNI_PATH).
        cache_dir: the result cache root (libcni's default is /var/lib/cni).
        timeout: seconds each plugin call may take; None waits forever.
        exec: the process seam; tests may pass a fake.
        lock_dir: where the per-network locks live; defaults to `<cache_dir>/locks`.
        del_timeout: seconds a DEL call may take; None: as `timeout`.
        lock_wait: seconds a wait for a network's lock may take; None: the longest plugin
            timeout plus LOCK_MARGIN_SECONDS (forever if plugins may take forever).
    """

    def __init__(
        self,
        plugin_dirs: Sequence[str],
        cache_dir: str,
        timeout: float | None = None,
        exec: invoke.Exec | None = None,
        lock_dir: str | None = None,
        del_timeout: float | None = None,
        lock_wait: float | None = None,
    ) -> None:
        self.plugin_dirs = tuple(d for d in plugin_dirs if d)  # "" would mean the cwd
        self.cache = ResultCache(cache_dir)
        self.timeout = timeout
        self.del_timeout = timeout if del_timeout is None else del_timeout
        self.exec = exec or invoke.RawExec()
        self.lock_dir = lock_dir or os.path.join(cache_dir, "locks")
        if lock_wait is None and timeout is not None:
            lock_wait = max(timeout, self.del_timeout or 0.0) + LOCK_MARGIN_SECONDS
        self.lock_wait = lock_wait
        # A counter of stop signals (the caller's); a wait for a lock ends when it changes.
        self.interrupted: Callable[[], int] | None = None
        # flock serializes processes; each network's RLock serializes the threads sharing
        # this object (and guards the depth counter that makes the lock re-entrant).
        self._held: dict[str, _Held] = {}
        self._held_guard = threading.Lock()

    # -- operations -------------------------------------------------------------------------

    def add_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> Result:
        """ADD the attachment through every plugin and cache the result.

        Once any plugin has been executed, a failure is followed by a DEL of the whole chain
        (in reverse order, carrying on past DEL errors) before the error is raised. A
        failure before that (plugin lookup, invalid IDs or CNI_ARGS) runs nothing at all.

        Raises:
            CNIError: `plugin type="x" failed (add): ...`, or a cache error after the plugins ran.
        """
        with self.lock(net.name, "ADD"):
            ran: list[str] = []
            partial: list[Result] = []
            completed = False
            try:
                result = self._add(net, rt, ran, partial)
                completed = True
                try:
                    self.cache.write(net.name, net.bytes, rt, result)
                except CnirunError as e:
                    raise CNIError(
                        0, f"failed to set network {go_quote(net.name)} cached result: {e}"
                    ) from None
                return result
            except CnirunError:
                if ran:
                    added = len(ran) if completed else len(ran) - 1
                    self._rollback(net, rt, added, partial[-1] if partial else None)
                raise

    def del_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """DEL the attachment, plugins in reverse order, then drop its cache entry.

        Idempotent: an attachment that is already gone is not an error.
        """
        with self.lock(net.name, "DEL"):
            self._del(net, rt)

    def check_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        """CHECK the attachment against its cached result (needs cniVersion 0.4.0 or later)."""
        version = self._list_version(net)
        if version < (0, 4, 0):
            raise CNIError(
                ERR_INCOMPATIBLE_VERSION,
                f"configuration version {go_quote(net.cni_version)} "
                "does not support the CHECK command",
            )
        if net.disable_check:
            return
        with self.lock(net.name, "CHECK"):
            try:
                prev = self.cache.read_result(net.name, rt, net.cni_version)
            except (ResultError, CacheError) as e:
                raise CNIError(
                    0, f"failed to get network {go_quote(net.name)} cached result: {e}"
                ) from None
            for plugin in net.plugins:
                self.call_plugin(net, plugin, "CHECK", prev, rt)

    def gc_network_list(self, net: NetworkConfigList, valid: Sequence[Attachment]) -> None:
        """Garbage-collect the network: DEL every cached attachment not in `valid`.

        `valid` must be the complete set of attachments still in use; an empty one means
        "none", so every attachment of the network is deleted. At 1.1.0 the plugins'
        own GC runs afterwards. Errors are collected and raised together at the end
        (a single error as itself, several as a MultiError).
        """
        if net.disable_gc:
            return
        keep = set(valid)
        errors: list[Exception] = []
        with self.lock(net.name, "GC"):
            try:
                entries = self.cache.attachments()
            except CacheError as e:
                entries = []
                errors.append(e)
            for entry in entries:
                if entry.network_name != net.name or (entry.container_id, entry.ifname) in keep:
                    continue
                try:
                    self._del(net, entry.runtime_conf())
                except CnirunError as e:
                    stale = f"{entry.container_id} {entry.ifname}"
                    prefix = f"failed to delete stale attachment {stale}: "
                    errors.append(
                        e.wrap(prefix) if isinstance(e, CNIError) else CnirunError(f"{prefix}{e}")
                    )
            try:
                supports_gc = self._list_version(net) >= (1, 1, 0)
            except CNIError:
                supports_gc = False  # as libcni: the stale DELs above already reported it
            if supports_gc:
                attachments = [{"containerID": cid, "ifname": ifname} for cid, ifname in valid]
                extra = {
                    "cni.dev/valid-attachments": attachments,
                    "cni.dev/attachments": attachments,
                }
                for plugin in net.plugins:
                    try:
                        path = self.exec.find_in_path(plugin.type, self.plugin_dirs)
                        stdin = self._request(net, plugin, None, None, extra)
                        self._run(path, stdin, invoke.Args("GC", path=self.plugin_dirs), net.name)
                    except CNIError as e:
                        errors.append(e.wrap(f"failed to GC plugin {plugin.type}: "))
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise MultiError(errors)

    def status_network_list(self, net: NetworkConfigList) -> None:
        """Ask each plugin whether it is ready (1.1.0 lists; older ones succeed silently).

        Raises:
            CNIError: the first plugin's error, unwrapped, so code 50/51 is kept.
        """
        if self._list_version(net) < (1, 1, 0):
            return
        for plugin in net.plugins:
            path = self.exec.find_in_path(plugin.type, self.plugin_dirs)
            stdin = self._request(net, plugin, None, None)
            self._run(path, stdin, invoke.Args("STATUS", path=self.plugin_dirs))

    def version_info(self, plugin_type: str) -> VersionInfo:
        """The CNI versions a plugin supports (VERSION)."""
        path = self.exec.find_in_path(plugin_type, self.plugin_dirs)
        stdin = json.dumps({"cniVersion": CURRENT}, separators=(",", ":")).encode()
        env = dict(os.environ)
        env.update(invoke.Args("VERSION").environ())
        env.update(CNI_NETNS="dummy", CNI_IFNAME="dummy", CNI_PATH="dummy")
        try:
            stdout = self.exec.exec_plugin(path, stdin, env, self.timeout)
        except CNIError as e:
            if str(e) == "unknown CNI_COMMAND: VERSION":  # plugins older than 0.2.0
                return VersionInfo.supports("0.1.0")
            raise
        return VersionInfo.decode(stdout)

    def find_plugins(self, net: NetworkConfigList) -> list[str]:
        """The binary of every plugin in the chain; raises the first lookup error."""
        return [self.exec.find_in_path(p.type, self.plugin_dirs) for p in net.plugins]

    # -- internals --------------------------------------------------------------------------

    def _add(
        self, net: NetworkConfigList, rt: RuntimeConf, ran: list[str], partial: list[Result]
    ) -> Result:
        """Run the ADD chain; `ran` receives each plugin's path just before it is executed,
        `partial` each successful result (what a rollback DEL is told was set up)."""
        prev: Result | None = None
        for plugin in net.plugins:
            try:
                path = self.exec.find_in_path(plugin.type, self.plugin_dirs)
                validate.container_id(rt.container_id)
                validate.network_name(net.name)
                validate.interface_name(rt.ifname)
                validate.check_cni_args(rt.cni_args)
                stdin = self._request(net, plugin, prev, rt)
                ran.append(path)
                stdout = self._run(path, stdin, self._args("ADD", rt), net.name)
                result = Result.from_plugin_output(stdout, net.cni_version)
            except CNIError as e:
                raise e.wrap(f"plugin {plugin.describe()} failed (add): ") from None
            # Hand every plugin its prevResult in the list's version; keep the original if
            # a lossy conversion is impossible (libcni never converts on ADD).
            with contextlib.suppress(ResultError):
                result = result.convert(net.cni_version)
            prev = result
            partial.append(result)
            if len(partial) < len(net.plugins):
                self._note_progress(net, rt, result)
        assert prev is not None  # a list always has at least one plugin
        return prev

    def _note_progress(self, net: NetworkConfigList, rt: RuntimeConf, result: Result) -> None:
        """Cache the chain's result so far before the next plugin runs. If cnirun is killed
        mid-chain, a later DEL then still tells every plugin what was set up (firewall can
        only remove rules for addresses it is told); the final write replaces this one, and
        a rollback's DEL removes it. libcni writes only at the end."""
        try:
            self.cache.write(net.name, net.bytes, rt, result, sync=False)
        except CnirunError as e:
            log.debug("cannot note the progress of %s's ADD: %s", net.name, e)

    def _del(
        self,
        net: NetworkConfigList,
        rt: RuntimeConf,
        best_effort: bool = False,
        quiet_from: int | None = None,
        prev_result: Result | None = None,
    ) -> None:
        """DEL in reverse order with the cached prevResult, then drop the cache entry.

        Normally the first failure stops the walk and keeps the cache (libcni's DEL). With
        `best_effort` (cleanup after a failed ADD) every plugin is tried and the failures
        are raised together at the end; those of plugins from index `quiet_from` on (whose
        ADD never succeeded, so failing again is expected) are only logged.
        """
        try:
            version = self._list_version(net)
        except CNIError:
            if not best_effort:
                raise
            version = (0, 0, 0)  # unparsable: no prevResult, but still try every plugin
        prev: Result | None = prev_result if version >= (0, 4, 0) else None
        if version >= (0, 4, 0) and prev is None:
            try:
                prev = self.cache.read_result(net.name, rt, net.cni_version)
            except (ResultError, CacheError) as e:
                log.debug(
                    "ignoring unreadable cached result for %s/%s: %s", net.name, rt.container_id, e
                )
                with contextlib.suppress(CnirunError, OSError):
                    self.cache.delete(net.name, rt.container_id, rt.ifname)
        failures: list[Exception] = []
        for index, plugin in reversed(list(enumerate(net.plugins))):
            try:
                self.call_plugin(net, plugin, "DEL", prev, rt)
            except CNIError as e:
                error = e.wrap(f"plugin {plugin.describe()} failed (delete): ")
                if not best_effort:
                    raise error from None
                if quiet_from is not None and index >= quiet_from:
                    log.debug("cleanup: %s", error)
                    continue
                failures.append(error)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise MultiError(failures)
        try:
            self.cache.delete(net.name, rt.container_id, rt.ifname)
        except CnirunError:  # a name no cache file can have: there is none to remove
            pass
        except OSError as e:  # libcni ignores this too: the network is undone all the same
            log.warning(
                "cannot remove the cached result %s: %s (a later `cnirun gc` does)",
                e.filename or self.cache.path(net.name, rt.container_id, rt.ifname),
                e.strerror or e,
            )

    def _rollback(
        self, net: NetworkConfigList, rt: RuntimeConf, added: int, prev: Result | None
    ) -> None:
        """DEL the whole chain after a failed ADD; `added` plugins had succeeded.

        From 0.4.0 the DEL gets the last successful result as prevResult (libcni gives
        none): plugins such as firewall can only remove rules for addresses they are told.
        """
        try:
            self._del(net, rt, best_effort=True, quiet_from=added, prev_result=prev)
        except CnirunError as e:
            log.warning("cleanup after the failed ADD of %s also failed: %s", net.name, e)

    def _list_version(self, net: NetworkConfigList) -> tuple[int, int, int]:
        try:
            return parse_version(net.cni_version)
        except VersionError as e:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, str(e)) from None

    def call_plugin(
        self,
        net: NetworkConfigList,
        plugin: PluginConfig,
        command: str,
        prev: Result | None,
        rt: RuntimeConf,
    ) -> bytes:
        """One plugin of `net` run with `command` (ADD, CHECK or DEL) and its stdout: the
        config libcni would send it (runtimeConfig, prevResult `prev`), the CNI_* of `rt`.
        The chain walks use it, and `cnirun update` for the plugins it re-applies alone."""
        path = self.exec.find_in_path(plugin.type, self.plugin_dirs)
        stdin = self._request(net, plugin, prev, rt)
        return self._run(path, stdin, self._args(command, rt), net.name)

    def _args(self, command: str, rt: RuntimeConf) -> invoke.Args:
        return invoke.Args(
            command=command,
            container_id=rt.container_id,
            netns=rt.netns,
            ifname=rt.ifname,
            cni_args=rt.cni_args,
            path=self.plugin_dirs,
        )

    def _request(
        self,
        net: NetworkConfigList,
        plugin: PluginConfig,
        prev: Result | None,
        rt: RuntimeConf | None,
        extra: dict[str, Any] | None = None,
    ) -> bytes:
        """The stdin of one call: the plugin's config with name, version, prevResult and
        runtimeConfig injected, and `capabilities` removed (the spec forbids it there)."""
        conf = dict(plugin.raw)
        conf.pop("capabilities", None)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if rt is not None:
            conf.pop("prevResult", None)  # a static one must never reach the first plugin
            if prev is not None:
                conf["prevResult"] = prev.to_json()
            supplied = rt.caps()
            runtime_config = {
                cap: supplied[cap]
                for cap, enabled in plugin.capabilities.items()
                if enabled and cap in supplied
            }
            if runtime_config:
                conf["runtimeConfig"] = runtime_config
        if extra:
            conf.update(extra)
        return json.dumps(conf, sort_keys=True, separators=(",", ":")).encode()

    def _run(self, path: str, stdin: bytes, args: invoke.Args, network: str = "") -> bytes:
        env = dict(os.environ)
        env.update(args.environ())
        if network:
            self._note_plugin(network, path, args.command)
        timeout = self.del_timeout if args.command == "DEL" else self.timeout
        return self.exec.exec_plugin(path, stdin, env, timeout)

    @contextlib.contextmanager
    def lock(self, network: str, command: str = "") -> Iterator[None]:
        """Hold the CNI lock of `network` (re-entrant within one thread of this object).

        One lock file per network (`lock_path`): operations on unrelated networks never wait
        for each other; those on one network (its cache entries, its plugins' state) run one
        at a time, across processes and across threads sharing this object. `command` is
        what the holder does, noted in the file for a waiter to report.

        The wait is polled, so a signal handler that raises ends it; it also ends (with a
        CnirunError) when `interrupted()` changes or after `lock_wait` seconds.
        """
        key = _lock_name(network)
        with self._held_guard:
            held = self._held.setdefault(key, _Held())
        with held.rlock:
            if held.depth == 0:
                path = self.lock_path(network)
                try:
                    fd: int | None = open_lock(path, follow_dir=False)
                except OSError as e:
                    if e.errno != errno.EROFS or command != "DEL":
                        raise CacheError(f"cannot open lock {path}: {e.strerror}") from None
                    # A read-only cache dir must not stop a teardown; no other cnirun can
                    # create this lock either, so each holds only its in-process lock.
                    log.warning("cannot create lock %s: %s; deleting without it", path, e.strerror)
                    fd = None
                if fd is not None:
                    try:
                        _take_lock(fd, network, self.lock_wait, self.interrupted)
                        held.fd, held.command, held.owner = fd, command, threading.get_ident()
                        with contextlib.suppress(OSError):  # only a waiter's message needs it
                            _note_holder(fd, command, "")
                    except BaseException:
                        os.close(fd)
                        raise
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
                if held.depth == 0 and held.fd is not None:
                    os.close(held.fd)  # closing releases the flock
                    held.fd, held.owner = None, None

    def lock_path(self, network: str) -> str:
        """The lock file of `network`: `<lock_dir>/<network>.lock` (one path element: a
        name that is not a valid network name is replaced by a digest of it)."""
        return os.path.join(self.lock_dir, f"{_lock_name(network)}.lock")

    def _note_plugin(self, network: str, path: str, command: str) -> None:
        """Say in `network`'s lock file which plugin runs now, if this thread holds it."""
        held = self._held.get(_lock_name(network))
        if held is not None and held.fd is not None and held.owner == threading.get_ident():
            with contextlib.suppress(OSError):  # only a waiter's message depends on it
                _note_holder(held.fd, command or held.command, os.path.basename(path))


class _Held:
    """This object's hold on one network's lock: the thread lock, depth and descriptor."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None
        self.command = ""
        self.owner: int | None = None  # the thread holding it


# How long a wait for the lock stays silent before cnirun says what it is waiting for.
LOCK_NOTICE_SECONDS = 1.0
# Added to the longest plugin timeout to bound a wait for the lock: a holder whose plugin
# runs into its timeout is done (its plugin killed) well within this margin.
LOCK_MARGIN_SECONDS = 15.0
# Polling interval of a wait, growing from the first to the second value.
_LOCK_POLL = (0.005, 0.05)


def _lock_name(network: str) -> str:
    """`network` as a lock file name: itself if it is a valid network name (so one path
    element, never `.` or `..`), else `=` and a digest (no valid name starts with `=`)."""
    try:
        validate.network_name(network)
    except CNIError:
        return "=" + hashlib.sha256(network.encode(errors="surrogateescape")).hexdigest()[:32]
    return network


def _note_holder(fd: int, command: str, plugin: str) -> None:
    """Leave who holds the lock in its file: our pid, the command and the running plugin."""
    note = json.dumps({"pid": os.getpid(), "command": command, "plugin": plugin})
    data = f"{note}\n".encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def holder(fd: int) -> str:
    """Who holds the lock of `fd`, as its file says: `pid P (plugin X, DEL)`."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    try:
        note = json.loads(text)
        pid, command, plugin = note["pid"], str(note["command"]), str(note["plugin"])
    except (ValueError, KeyError, TypeError):
        return f"pid {text}" if text.isdigit() else "an unknown process"  # an older cnirun's
    doing = ", ".join(part for part in (f"plugin {plugin}" if plugin else "", command) if part)
    return f"pid {pid} ({doing})" if doing else f"pid {pid}"


def _take_lock(
    fd: int, network: str, limit: float | None, interrupted: Callable[[], int] | None
) -> None:
    """flock `fd`, polling: say who holds it once the wait passes LOCK_NOTICE_SECONDS; give
    up after `limit` seconds, or when `interrupted()` changes. A signal handler that raises
    (KeyboardInterrupt, SignalGuard's Interrupted) ends the wait too: it runs during sleep."""
    started = time.monotonic()
    signals = interrupted() if interrupted is not None else 0
    delay, noticed = _LOCK_POLL[0], False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if not noticed and waited >= LOCK_NOTICE_SECONDS:
            log.info("waiting for the CNI lock of network %s, held by %s", network, holder(fd))
            noticed = True
        if interrupted is not None and interrupted() != signals:
            raise CnirunError(
                f"interrupted while waiting for the CNI lock of network {network}, "
                f"held by {holder(fd)}"
            )
        if limit is not None and waited >= limit:
            raise CnirunError(
                f"gave up after {waited:.0f}s waiting for the CNI lock of network {network}, "
                f"held by {holder(fd)}: if that process is stuck, kill it, else retry later"
            )
        time.sleep(delay)
        delay = min(delay * 2, _LOCK_POLL[1])

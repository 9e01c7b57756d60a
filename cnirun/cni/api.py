"""The CNI operations on a network list: ADD, DEL, CHECK, GC, STATUS and VERSION.

Semantics follow the spec and libcni: ADD chains prevResult through the plugins and caches
the final result; DEL walks the chain backwards with the cached result; an ADD that fails
after running any plugin is followed by a full DEL (the spec requires it). Knows nothing of
Docker or netns handling.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
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
    """A CNI runtime bound to plugin directories, a result cache and a lock.

    Args:
        plugin_dirs: where plugin binaries are searched, in order (passed as CNI_PATH).
        cache_dir: the result cache root (libcni's default is /var/lib/cni).
        timeout: seconds each plugin call may take; None waits forever.
        exec: the process seam; tests may pass a fake.
        lock_path: the lock serializing ADD, DEL and GC; defaults to `<cache_dir>/cnirun.lock`.
    """

    def __init__(
        self,
        plugin_dirs: Sequence[str],
        cache_dir: str,
        timeout: float | None = None,
        exec: invoke.Exec | None = None,
        lock_path: str | None = None,
    ) -> None:
        self.plugin_dirs = tuple(d for d in plugin_dirs if d)  # "" would mean the cwd
        self.cache = ResultCache(cache_dir)
        self.timeout = timeout
        self.exec = exec or invoke.RawExec()
        self.lock_path = lock_path or os.path.join(cache_dir, "cnirun.lock")
        # flock serializes processes; the RLock serializes threads sharing this object
        # (and guards the depth counter that makes the lock re-entrant).
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None

    # -- operations -------------------------------------------------------------------------

    def add_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> Result:
        """ADD the attachment through every plugin and cache the result.

        Once any plugin has been executed, a failure is followed by a DEL of the whole chain
        (in reverse order, carrying on past DEL errors) before the error is raised. A
        failure before that (plugin lookup, invalid IDs or CNI_ARGS) runs nothing at all.

        Raises:
            CNIError: `plugin type="x" failed (add): ...`, or a cache error after the plugins ran.
        """
        with self.lock():
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
        with self.lock():
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
        try:
            prev = self.cache.read_result(net.name, rt, net.cni_version)
        except (ResultError, CacheError) as e:
            raise CNIError(
                0, f"failed to get network {go_quote(net.name)} cached result: {e}"
            ) from None
        for plugin in net.plugins:
            path = self.exec.find_in_path(plugin.type, self.plugin_dirs)
            stdin = self._request(net, plugin, prev, rt)
            self._run(path, stdin, self._args("CHECK", rt))

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
        with self.lock():
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
                        self._run(path, stdin, invoke.Args("GC", path=self.plugin_dirs))
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
                stdout = self._run(path, stdin, self._args("ADD", rt))
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
                path = self.exec.find_in_path(plugin.type, self.plugin_dirs)
                stdin = self._request(net, plugin, prev, rt)
                self._run(path, stdin, self._args("DEL", rt))
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
        with contextlib.suppress(CnirunError, OSError):
            self.cache.delete(net.name, rt.container_id, rt.ifname)

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

    def _run(self, path: str, stdin: bytes, args: invoke.Args) -> bytes:
        env = dict(os.environ)
        env.update(args.environ())
        return self.exec.exec_plugin(path, stdin, env, self.timeout)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the host-wide CNI lock (re-entrant within one thread of this object)."""
        with self._thread_lock:
            if self._lock_depth == 0:
                try:
                    fd = open_lock(self.lock_path)
                except OSError as e:
                    raise CacheError(
                        f"cannot open lock {self.lock_path}: {e.strerror or e}"
                    ) from None
                try:
                    _take_lock(fd, self.lock_path)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
                if isinstance(self.exec, invoke.RawExec):
                    self.exec.keep_fds = (fd,)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    if isinstance(self.exec, invoke.RawExec):
                        self.exec.keep_fds = ()
                    os.close(self._lock_fd)  # closing releases the flock
                    self._lock_fd = None


# How long a wait for the lock stays silent before cnirun says what it is waiting for.
LOCK_NOTICE_SECONDS = 1.0


def _take_lock(fd: int, path: str) -> None:
    """flock `fd`, saying who holds it if that takes more than a moment; then leave our pid in
    the file for the next waiter. A signal handler that raises interrupts the wait."""
    deadline = time.monotonic() + LOCK_NOTICE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                log.info("waiting for the CNI lock %s, held by pid %s", path, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
                break
            time.sleep(0.01)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

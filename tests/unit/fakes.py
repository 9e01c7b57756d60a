"""An in-process stand-in for the executable fake plugin, at the `cnirun.cni.invoke.Exec` seam.

`FakePluginExec` does what `tests/fake_plugins/fake` does when RawExec runs it, without
starting a process: the behaviour comes from the "fake" key of the config on stdin (or the
sidecar `<plugin>.fake.json`), the call is appended to $FAKE_LOG as the same JSON line
(so `CniEnv.calls()` and `trace()` read real and in-process calls alike), and a failure is
decoded by `invoke.decode_failure`, exactly as RawExec decodes a failed process.

What cannot happen without a process is simulated or refused:
  - "sleep" at least as long as the call's timeout raises the PluginTimeoutError RawExec
    raises after killing the plugin (a shorter sleep really sleeps);
  - a plugin file that cannot be executed fails with the fork/exec error RawExec gives;
  - "spawn_sleeper" and plugin files that are not the fake (shell scripts, spies) raise
    FakeExecUnsupported: such tests must use `cni_env.cni(real_exec=True)`.
The "pid" of a log entry is null (there is no plugin process).

Lookup is the real `invoke.find_in_path`: the plugin files still exist on disk.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnirun.cni import invoke
from cnirun.cni.types import ERR_UNKNOWN
from cnirun.errors import PluginTimeoutError

FAKE = Path(__file__).resolve().parent.parent / "fake_plugins" / "fake"
LOGGED_VARS = (*invoke.CNI_VARS, "FOO")
ALL_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

_fake_source: bytes | None = None


class FakeExecUnsupported(AssertionError):
    """The test asked for something only a real process can do."""


def _is_the_fake(path: str) -> bool:
    """True for the fake plugin itself, a symlink to it or a private copy of it."""
    global _fake_source
    if os.path.realpath(path) == str(FAKE):
        return True
    if _fake_source is None:
        _fake_source = FAKE.read_bytes()
    try:
        with open(path, "rb") as handle:
            return handle.read() == _fake_source
    except OSError:
        return False


class FakePluginExec:
    """Implements `invoke.Exec` with the fake plugin's behaviour, in this process.

    `calls` keeps every log entry in memory as well (also when $FAKE_LOG is unset).
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        return invoke.find_in_path(plugin, paths)

    def exec_plugin(
        self, path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None
    ) -> bytes:
        self._start(path)
        try:
            status, stdout, stderr = self._run(path, stdin, env, timeout)
        except (PluginTimeoutError, FakeExecUnsupported):
            raise
        except Exception:  # the real plugin would die with a traceback and status 1
            status, stdout, stderr = 1, b"", traceback.format_exc().encode()
        status &= 0xFF  # what the parent sees of sys.exit(n)
        if status == 0:
            if stderr:
                invoke._forward_stderr(stderr)  # what RawExec does with a success's stderr
            return stdout
        raise invoke.decode_failure(stdout, stderr, f"exit status {status}")

    # -- the plugin ---------------------------------------------------------------------

    def _start(self, path: str) -> None:
        """Fail like RawExec when the file cannot be executed; refuse anything but the fake."""
        problem = 0
        if not os.path.exists(path):
            problem = errno.ENOENT
        elif os.path.isdir(path) or not os.access(path, os.X_OK):
            problem = errno.EACCES
        if problem:
            text = os.strerror(problem)
            raise invoke.decode_failure(
                b"", b"", f"fork/exec {path}: {text[:1].lower()}{text[1:]}"
            )
        if not _is_the_fake(path):
            raise FakeExecUnsupported(
                f"{path} is not the fake plugin; run it with cni_env.cni(real_exec=True)"
            )

    def _run(
        self, path: str, raw: bytes, env: Mapping[str, str], timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        """tests/fake_plugins/fake's main(): (exit status, stdout, stderr)."""
        conf: Any
        try:
            conf = json.loads(raw) if raw.strip() else None
        except ValueError:
            conf = raw.decode(errors="replace")
        command = env.get("CNI_COMMAND", "")
        fake = conf.get("fake") if isinstance(conf, dict) else None
        sidecar = path + ".fake.json"
        if fake is None and os.path.exists(sidecar):
            with open(sidecar) as handle:
                fake = json.load(handle)
        behaviour = (fake or {}).get(command) or {}

        entry = {
            "argv0": os.path.basename(path),
            "pid": None,
            "time": time.time(),
            "env": {name: env.get(name) for name in LOGGED_VARS},
            "stdin": conf,
        }
        if behaviour.get("spawn_sleeper"):
            raise FakeExecUnsupported("spawn_sleeper needs a real process: real_exec=True")
        self._log(entry, env)

        while "sleep_while" in behaviour and os.path.exists(behaviour["sleep_while"]):
            time.sleep(0.05)  # no timeout applies: only tests that end the hang use it
        if behaviour.get("sleep"):
            seconds = float(behaviour["sleep"])
            if timeout is not None and seconds >= timeout:
                # RawExec would kill the plugin's process group and raise this.
                raise PluginTimeoutError(
                    ERR_UNKNOWN,
                    f"netplugin {os.path.basename(path)} timed out after {timeout:g}s "
                    "and was killed",
                )
            time.sleep(seconds)
        stderr = b""
        if "stderr" in behaviour:
            stderr = behaviour["stderr"].encode("utf-8", "backslashreplace")  # sys.stderr's
        code = int(behaviour.get("exit", 0))
        if "stdout" in behaviour:
            return code, behaviour["stdout"].encode(), stderr
        if code != 0:
            return code, b"", stderr

        result = behaviour.get("result")
        if command == "ADD":
            result = _add_result(conf if isinstance(conf, dict) else {}, behaviour, env)
        elif command == "VERSION" and result is None:
            result = {"cniVersion": "1.1.0", "supportedVersions": ALL_VERSIONS}
        stdout = json.dumps(result).encode() if result is not None else b""
        return 0, stdout, stderr

    def _log(self, entry: dict[str, Any], env: Mapping[str, str]) -> None:
        with self._lock:
            self.calls.append(entry)
        path = env.get("FAKE_LOG")
        if not path:
            return
        line = (json.dumps(entry) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one O_APPEND write, as the real fake: lines never mix
        finally:
            os.close(fd)


def _add_result(conf: dict[str, Any], behaviour: dict[str, Any], env: Mapping[str, str]) -> Any:
    mode = behaviour.get("result", "passthrough")
    if isinstance(mode, dict):
        return mode
    result = conf.get("prevResult") or {"cniVersion": conf.get("cniVersion", "")}
    if mode == "echo-cid":  # tells attachments apart in concurrency tests
        result = dict(result)
        result["dns"] = {"domain": env.get("CNI_CONTAINERID", "")}
    if mode == "inject-dns":
        result = dict(result)
        result["dns"] = {"nameservers": behaviour.get("dns", ["1.2.3.4"])}
    return result

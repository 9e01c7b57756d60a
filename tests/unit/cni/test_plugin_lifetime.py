"""A plugin never outlives the runtime that started it, and never holds its lock: a runtime
killed mid-ADD (kill -9) takes its plugin's process group with it, so another runtime (or
`cnirun gc`) gets the network's lock at once and cannot interleave with the old plugin."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

from cnirun.cni.api import CNIConfig
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf
from cnirun.sandbox.records import process_runs
from tests.unit.conftest import CniEnv
from tests.unit.waiting import eventually

REPO = Path(__file__).resolve().parents[3]

PLUGIN = """#!/bin/sh
cat >/dev/null
for fd in /proc/$$/fd/*; do readlink "$fd"; done > "{log}"
echo '{{"cniVersion":"1.0.0"}}'
"""

RUNTIME = """
import sys
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf
plugins, cache, conf = sys.argv[1:]
cni = CNIConfig([plugins], cache, timeout=60)
cni.add_network_list(list_from_bytes(conf.encode()), RuntimeConf("c1", "/tmp/ns", "eth0"))
"""


def test_plugins_do_not_inherit_the_lock(tmp_path: Path) -> None:
    log = tmp_path / "fds"
    plugin = tmp_path / "bin" / "fdspy"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN.format(log=log))
    plugin.chmod(0o755)
    net = list_from_bytes(
        json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fdspy"}]}).encode()
    )
    cni = CNIConfig([str(plugin.parent)], str(tmp_path / "cache"))
    cni.add_network_list(net, RuntimeConf("c1", "/tmp/ns", "eth0"))
    fds = log.read_text().split()
    assert os.path.exists(cni.lock_path("n"))  # it was taken...
    assert cni.lock_path("n") not in fds  # ...but not handed to the plugin


def test_a_plugin_dies_with_its_runtime_and_the_lock_is_free_at_once(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"sleep": 60, "spawn_sleeper": True}}}])
    runtime = subprocess.Popen(
        [sys.executable, "-c", RUNTIME, str(cni_env.bin_a), str(cni_env.cache), net.bytes.decode()],
        cwd=REPO,
    )
    try:
        assert eventually(lambda: len(cni_env.calls()) == 1), "the plugin never ran"
        [call] = cni_env.calls()
        runtime.kill()  # kill -9: no handler, no cleanup of its own
        runtime.wait(30)
        # Its plugin and what the plugin spawned are gone, not sleeping on for a minute.
        assert eventually(lambda: not process_runs(call["pid"]))
        assert eventually(lambda: not process_runs(call["sleeper_pid"]))
    finally:
        if runtime.poll() is None:
            runtime.kill()
            runtime.wait()
    # The lock went with the runtime (no plugin kept a copy of it).
    fd = os.open(cni_env.cni().lock_path("net"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_plugin_busy_when_its_runtime_dies_may_finish_its_work(cni_env: CniEnv) -> None:
    """Killed mid-work, a plugin leaves what its own DEL cannot undo (bridge's masquerade
    rule without its chain): the guardian lets a plugin that ends soon end by itself."""
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"sleep": 1, "log_end": True}}}])
    runtime = subprocess.Popen(
        [sys.executable, "-c", RUNTIME, str(cni_env.bin_a), str(cni_env.cache), net.bytes.decode()],
        cwd=REPO,
    )
    try:
        assert eventually(lambda: len(cni_env.calls()) == 1), "the plugin never ran"
        runtime.kill()  # kill -9 while the plugin is still at work
        runtime.wait(30)
        assert eventually(lambda: any(c.get("end") == "ADD" for c in cni_env.calls()))
    finally:
        if runtime.poll() is None:
            runtime.kill()
            runtime.wait()

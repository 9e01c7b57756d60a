"""A plugin holds the runtime's lock while it runs, so a runtime killed mid-ADD (kill -9)
does not let another runtime (or `cnirun gc`) act on the attachment until the plugin is done."""

from __future__ import annotations

import json
from pathlib import Path

from cnirun.cni.api import CNIConfig
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf

PLUGIN = """#!/bin/sh
cat >/dev/null
for fd in /proc/$$/fd/*; do readlink "$fd"; done > "{log}"
echo '{{"cniVersion":"1.0.0"}}'
"""


def test_plugins_inherit_the_lock(tmp_path: Path) -> None:
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
    assert cni.lock_path in log.read_text().split()
    # Outside an operation nothing extra is passed on.
    assert cni.exec.keep_fds == ()  # type: ignore[attr-defined]

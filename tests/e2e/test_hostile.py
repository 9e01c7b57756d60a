"""End-to-end: a real unprivileged user, created by the test, who can write where cnirun should
never trust, cannot make root do anything (issue 13). Its files are put in place by root and
handed to the user (`chown`): what cnirun judges is who owns them, and the test's own dirs are
not reachable by the user anyway."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PLUGIN_DIR, Harness, one_error_line

pytestmark = pytest.mark.e2e


@pytest.fixture
def user(rig: Harness) -> Iterator[int]:
    """A fresh system user (no home, no shell); its uid. Removed after the test."""
    name = f"cnirun-e2e-{rig.tag}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


def give(uid: int, *paths: Path) -> None:
    for path in paths:
        os.chown(path, uid, -1, follow_symlinks=False)


def test_a_state_dir_another_user_owns_steers_nothing(rig: Harness, user: int) -> None:
    # Items 1 and 3: a planted `detached, owner dead` record made `cnirun ps` run the
    # planter's program as root through its plugin_dirs.
    net = rig.network()
    marker = rig.tmp / "ran-as-root"
    plugins = rig.tmp / "planted-plugins"
    plugins.mkdir()
    for plugin in ("bridge", "host-local"):
        (plugins / plugin).write_text(f"#!/bin/sh\ntouch {marker}\necho '{{}}'\n")
        (plugins / plugin).chmod(0o755)
    sandbox_id = "ee" * 16
    config = json.dumps({"cniVersion": "1.0.0", "name": net.name, "plugins": [{"type": "bridge"}]})
    record = {
        "id": sandbox_id,
        "infra_name": f"cnirun-infra-{sandbox_id}",
        "netns_name": f"cnirun-{sandbox_id}",
        "netns_path": f"/run/netns/cnirun-{sandbox_id}",
        "cache_dir": str(rig.cache_dir),
        "plugin_dirs": [str(plugins)],
        "cni_timeout": 10,
        "detach": True,
        "owner_pid": 2**22 + 1,
        "owner_start": "1",
        "attachments": [
            {
                "network": net.name,
                "ifname": "eth0",
                "config_b64": base64.b64encode(config.encode()).decode(),
                "source": str(net.path),
                "cni_args": [],
                "capability_args": {},
            }
        ],
    }
    sandboxes = rig.state_dir / "sandboxes"
    sandboxes.mkdir(parents=True)
    planted = sandboxes / f"{sandbox_id}.json"
    planted.write_text(json.dumps(record))
    give(user, rig.state_dir, sandboxes, planted, plugins, *plugins.iterdir())

    for argv in (["ps"], ["gc"], ["--rm", *rig.label, "busybox", "true"]):
        res = rig.run(*argv)
        assert res.returncode == 125, res.explain()
        line = one_error_line(res.stderr)
        assert f"{rig.state_dir} is owned by uid {user}, not 0" in line, line
        assert f"chown 0 {rig.state_dir}" in line
    assert not marker.exists()

    # Root takes the state dir back: the record, still the user's, is refused, never run...
    give(0, rig.state_dir, sandboxes)
    res = rig.run("ps", "-a")
    assert res.returncode == 0, res.explain()
    assert f"{planted}" in res.stderr and "is owned by uid" in res.stderr
    assert not marker.exists()
    # ...and gc removes it.
    res = rig.run("gc")
    assert res.returncode == 0, res.explain()
    assert f"reclaimed: sandbox {sandbox_id}: invalid record removed" in res.stdout
    assert not marker.exists()
    assert list(sandboxes.iterdir()) == []
    shutil.rmtree(plugins)
    rig.assert_clean()


def test_plugins_another_user_could_replace_are_refused(rig: Harness, user: int) -> None:
    # Items 2 and 4: plugin dirs others own (a relative --cni-path once pointed into one).
    net = rig.network()
    theirs = rig.tmp / "their-plugins"
    theirs.mkdir()
    for plugin in ("bridge", "host-local"):
        shutil.copy(Path(PLUGIN_DIR) / plugin, theirs / plugin)
    give(user, theirs, *theirs.iterdir())
    res = rig.run(
        "--rm", *rig.label, "--cni-path", str(theirs), "--network", net.name, "busybox", "true"
    )
    assert res.returncode == 125, res.explain()
    line = one_error_line(res.stderr)
    assert f"refusing plugin {theirs}/bridge: {theirs} is owned by uid {user}, not 0" in line
    give(0, theirs, *theirs.iterdir())
    os.chmod(theirs / "bridge", 0o777)  # root's, but anyone may rewrite it
    res = rig.run(
        "--rm", *rig.label, "--cni-path", str(theirs), "--network", net.name, "busybox", "true"
    )
    assert res.returncode == 125, res.explain()
    line = one_error_line(res.stderr)
    assert f"{theirs}/bridge is writable by group or others (mode 0777)" in line
    rig.assert_clean()

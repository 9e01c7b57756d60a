"""Shared pytest fixtures: the e2e host check every `e2e` test depends on.

Tests under tests/e2e are marked `e2e` automatically, and every `e2e` test requests the
session fixture `e2e_host`, which fails (never skips) when the host is not prepared. Their
private world (dirs, names, subnets, cleanup) is the `rig` fixture of tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).parent / "e2e"
PLUGIN_DIR = Path("/usr/lib/cni")
E2E_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "firewall", "tuning", "macvlan")
E2E_TOOLS = ("docker", "ip", "iptables", "iptables-save")
E2E_IMAGE = "busybox:latest"
SETUP_HINT = "run `sudo make setup` (scripts/setup-host.sh) first"


@dataclass(frozen=True)
class E2EHost:
    """What the e2e tests may rely on once `e2e_host` has passed."""

    plugin_dir: Path
    image: str
    docker_server_version: str


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def _host_problems() -> tuple[list[str], str]:
    """Return (every missing prerequisite, docker server version or "")."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("e2e tests must run as root (sudo)")
    missing = [p for p in E2E_PLUGINS if not os.access(PLUGIN_DIR / p, os.X_OK)]
    if missing:
        problems.append(f"CNI plugins missing from {PLUGIN_DIR}: {', '.join(missing)}")
    tools = [t for t in E2E_TOOLS if shutil.which(t) is None]
    if tools:
        problems.append(f"commands not on PATH: {', '.join(tools)}")
    if "docker" in tools:
        return problems, ""
    info = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    version = info.stdout.strip()
    if info.returncode != 0 or not version:
        detail = info.stderr.strip().splitlines()[-1:] or ["no answer"]
        problems.append(f"`docker info` failed: {detail[0]}")
        return problems, ""
    if _run(["docker", "image", "inspect", E2E_IMAGE]).returncode != 0:
        problems.append(f"Docker image {E2E_IMAGE} is missing")
    return problems, version


@pytest.fixture(scope="session")
def e2e_host() -> E2EHost:
    """Fail every e2e test, with one clear message, when the host is not prepared."""
    problems, version = _host_problems()
    if problems:
        pytest.fail(
            "e2e host not ready: " + "; ".join(problems) + f" -- {SETUP_HINT}", pytrace=False
        )
    return E2EHost(plugin_dir=PLUGIN_DIR, image=E2E_IMAGE, docker_server_version=version)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under tests/e2e as `e2e`, and make every `e2e` test depend on `e2e_host`."""
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
        # The usefixtures marker is read at collection, too early here; extend the closure.
        fixturenames = getattr(item, "fixturenames", None)
        if (
            item.get_closest_marker("e2e") is not None
            and isinstance(fixturenames, list)
            and "e2e_host" not in fixturenames
        ):
            fixturenames.insert(0, "e2e_host")

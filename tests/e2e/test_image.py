"""cnirun's container image: built offline from a local base, run against the host's Docker.

The base comes from scripts/make-base-image.sh (debootstrap, about a minute) and is kept: its
name is a hash of its inputs, so the next run reuses it. The cnirun image built on top of it
is removed at the end, like every container, netns and IP reservation the run made.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnirun import __version__
from tests.e2e.common import seed_bridge
from tests.leakcheck import assert_no_leaks

REPO = Path(__file__).resolve().parents[2]
MAKE_BASE = REPO / "scripts" / "make-base-image.sh"
DEBUG_PREFIX = "cnirun: DEBUG: "
INFRA_RE = re.compile(r"cnirun-infra-([0-9a-f]{32})")
IFCONFIG_INET_RE = re.compile(r"^eth0\s.*?\n\s+inet addr:(\S+)", re.MULTILINE)
# README's alternative to --privileged, for hosts that cannot grant every capability.
NARROW_PRIVILEGES = (
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
    "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
)  # fmt: skip


def sh(
    args: list[str], check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def image_exists(ref: str) -> bool:
    return sh(["docker", "image", "inspect", ref], check=False).returncode == 0


@pytest.fixture(scope="module")
def base_image() -> str:
    """The base image (made once, then reused across runs: it is never removed here)."""
    made = sh(["bash", str(MAKE_BASE)], timeout=900)
    name = made.stdout.strip().splitlines()[-1]
    assert image_exists(name), made.stderr
    return name


@pytest.fixture(scope="module")
def cnirun_image(base_image: str) -> Iterator[str]:
    """This checkout's image, built with `docker build --build-arg BASE=...` and removed after."""
    name = f"cnirun-test-image:{uuid.uuid4().hex[:12]}"
    build = subprocess.run(
        ["docker", "build", "--build-arg", f"BASE={base_image}", "-t", name, str(REPO)],
        # The legacy builder builds offline with or without buildx installed.
        env=dict(os.environ, DOCKER_BUILDKIT="0"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-2000:]
        yield name
    finally:
        sh(["docker", "rmi", "-f", name], check=False)
        assert not image_exists(name), f"image {name} is still there"


def privileges() -> list[str]:
    """`--privileged` where this host can grant it, else README's narrower capability set."""
    probe = f"cnirun-priv-probe-{uuid.uuid4().hex[:8]}"
    tried = sh(
        ["docker", "run", "--rm", "--name", probe, "--privileged", "--network=none",
         "busybox", "true"],
        check=False,
    )  # fmt: skip
    sh(["docker", "rm", "-f", probe], check=False)
    return ["--privileged"] if tried.returncode == 0 else list(NARROW_PRIVILEGES)


def test_image_reports_the_checkout_version(cnirun_image: str) -> None:
    done = sh(["docker", "run", "--rm", "--network=none", cnirun_image, "--version"])
    assert __version__ in done.stdout


def test_cnirun_runs_a_workload_from_its_container_image(cnirun_image: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    network, bridge = f"img{tag}", f"im{tag}"
    subnet = ipaddress.IPv4Network(f"10.235.{int(tag[:2], 16)}.0/24")
    netconf, state, cache = tmp_path / "net.d", tmp_path / "state", tmp_path / "cache"
    for directory in (netconf, state, cache):
        directory.mkdir()
    # The CNI README's example network, on a bridge and subnet of this test's own.
    (netconf / f"10-{network}.conf").write_text(
        json.dumps(seed_bridge(network, bridge, str(subnet)))
    )
    container = f"cnirun-image-test-{tag}"
    # State and cache at the same paths inside and out, so a host-side gc could reclaim them.
    argv = [
        "docker", "run", "--rm", "--name", container, *privileges(),
        "--pid=host", "--network=host",
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{netconf}:/etc/cni/net.d:ro",
        "-v", "/usr/lib/cni:/usr/lib/cni:ro",
        "-v", "/var/lib/cni:/var/lib/cni",
        "-v", f"{state}:{state}", "-e", f"CNIRUN_STATE_DIR={state}",
        "-v", f"{cache}:{cache}", "-e", f"CNIRUN_CACHE_DIR={cache}",
        "-v", "/run/netns:/run/netns:rshared",
        cnirun_image,
        "--debug", "--rm", "--label", f"io.cnirun.test={tag}", "busybox", "ifconfig",
    ]  # fmt: skip
    sandbox_ids: list[str] = []
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
        sandbox_ids = list(dict.fromkeys(INFRA_RE.findall(done.stderr)))
        user_stderr = "".join(
            line
            for line in done.stderr.splitlines(keepends=True)
            if not line.startswith(DEBUG_PREFIX)
        )
        assert done.returncode == 0, done.stderr
        assert user_stderr == "", user_stderr
        assert len(sandbox_ids) == 1, done.stderr
        match = IFCONFIG_INET_RE.search(done.stdout)
        assert match is not None, done.stdout
        assert ipaddress.IPv4Address(match.group(1)) in subnet, done.stdout

        assert sh(["docker", "ps", "-aq", "--filter", f"name={container}"]).stdout == ""
        # Nothing under the state dir: no record, lock, or the workload's hosts/resolv.conf.
        assert list(state.rglob("*")) in ([], [state / "sandboxes"]), list(state.rglob("*"))
        assert not (cache / "results").exists() or list((cache / "results").iterdir()) == []
        ipam = Path("/var/lib/cni/networks") / network
        taken = [p.name for p in ipam.iterdir() if p.name[0].isdigit()] if ipam.exists() else []
        assert taken == [], f"IP reservations left: {taken}"
        assert_no_leaks(
            [tag, *sandbox_ids],
            bridges=[bridge],
            netns_names=[f"cnirun-{i}" for i in sandbox_ids],
            cache_dir=str(cache),
        )
    finally:
        # Whatever a failed run left: the cnirun container, then its sandbox, then the bridge.
        sh(["docker", "rm", "-f", container], check=False)
        subprocess.run(
            [sys.executable, "-m", "cnirun", "gc"],
            env=dict(
                os.environ,
                NETCONFPATH=str(netconf),
                CNIRUN_STATE_DIR=str(state),
                CNIRUN_CACHE_DIR=str(cache),
            ),
            capture_output=True,
            check=False,
        )
        sh(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(Path("/var/lib/cni/networks") / network, ignore_errors=True)

"""cnirun's container image, built and run exactly as README's "Running cnirun from a container"
says: the commands are read from README.md, so the docs and this test cannot drift apart.

The base comes from scripts/make-base-image.sh (debootstrap, about a minute) and is kept: its
name is a hash of its inputs, so the next run reuses it. The cnirun image built on top of it
is removed at the end, like every container, netns and IP reservation the run made.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnirun import __version__
from tests.e2e.harness import REPO, Harness, seed_bridge, sh
from tests.leakcheck import DEFAULT_IPAM_DIR, assert_no_leaks

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
MAKE_BASE = REPO / "scripts" / "make-base-image.sh"
SECTION = "## Running cnirun from a container"
INFRA_RE = re.compile(r"held netns \S+ at /run/netns/cnirun-([0-9a-f]{32})")
POOLED_RE = re.compile(r"pooled infra cnirun-infra-([0-9a-f]{32})")
IFCONFIG_INET_RE = re.compile(r"^eth0\s.*?\n\s+inet addr:(\S+)", re.MULTILINE)
# README's alternative to --privileged, for hosts that cannot grant every capability.
NARROW_PRIVILEGES = (
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
    "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
)  # fmt: skip
# The legacy builder builds offline with or without buildx installed.
BUILD_ENV = dict(os.environ, DOCKER_BUILDKIT="0")


def readme_commands() -> dict[str, str]:
    """The commands of the section's first ```sh block (continuations joined, comments and
    `sudo` dropped: the tests run as root, where sudo may not even be installed), by kind."""
    text = README.read_text()
    section = text[text.index(SECTION) :]
    block = section[section.index("```sh\n") + 6 :]
    block = block[: block.index("```")]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            commands.append(re.sub(r"(^|\$\()sudo ", r"\1", line))
    kinds = {"docker build": "build", "sh -ec": "prepare", "docker run": "run"}
    found = {kinds[k]: c for c in commands for k in kinds if c.startswith(k)}
    assert sorted(found) == sorted(kinds.values()) and len(commands) == 3, commands
    return found


def mounts_at(path: str) -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(line.split()[4] == path for line in f)


@pytest.fixture(scope="module")
def base_image() -> str:
    """The base image (made once, then reused across runs: it is never removed here)."""
    made = sh("bash", str(MAKE_BASE), timeout=900)
    name = made.stdout.strip().splitlines()[-1]
    assert sh("docker", "image", "inspect", name, check=False).returncode == 0, made.stderr
    return name


@pytest.fixture(scope="module")
def cnirun_image(base_image: str) -> Iterator[str]:
    """This checkout's image, built by README's `docker build` line (tagged for this test
    instead of `cnirun`) and removed after."""
    name = f"cnirun-test-image:{uuid.uuid4().hex[:12]}"
    build = readme_commands()["build"]
    assert " -t cnirun ." in build, build
    build = build.replace(" -t cnirun .", f" -t {name} .")
    done = subprocess.run(
        ["bash", "-c", build],
        cwd=REPO,
        env=BUILD_ENV,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        yield name
    finally:
        sh("docker", "rmi", "-f", name, check=False)
        assert sh("docker", "image", "inspect", name, check=False).returncode != 0, name


def privileges() -> list[str]:
    """`--privileged` where this host can grant it, else README's narrower capability set."""
    probe = f"cnirun-priv-probe-{uuid.uuid4().hex[:8]}"
    tried = sh(
        "docker", "run", "--rm", "--name", probe, "--privileged", "--network=none",
        "busybox", "true",
        check=False, timeout=120,
    )  # fmt: skip
    sh("docker", "rm", "-f", probe, check=False)
    return ["--privileged"] if tried.returncode == 0 else list(NARROW_PRIVILEGES)


def replace_once(argv: list[str], old: list[str], new: list[str]) -> list[str]:
    """`argv` with the one run of `old` in it replaced by `new` (README must have it once)."""
    hits = [i for i in range(len(argv)) if argv[i : i + len(old)] == old]
    assert len(hits) == 1, f"README's docker run line should have {old} once: {argv}"
    i = hits[0]
    return argv[:i] + new + argv[i + len(old) :]


def test_readme_prepares_run_netns_from_scratch() -> None:
    """On a fresh host /run/netns is missing: the README line makes it a shared mount point,
    once, however often it runs. Tried in a private mount namespace where this host's own
    /run/netns mounts (if any) are gone and /run is an empty tmpfs."""
    prepare = readme_commands()["prepare"]
    script = (
        "while grep -q ' /run/netns ' /proc/self/mountinfo; do umount -l /run/netns; done; "
        "mount -t tmpfs tmpfs /run; test ! -e /run/netns; "
        f"{prepare}; {prepare}; findmnt -no PROPAGATION /run/netns; "
        "grep -c ' /run/netns ' /proc/self/mountinfo"
    )
    done = sh("unshare", "--mount", "--propagation", "private", "sh", "-ec", script)
    assert done.stdout.split() == ["shared", "1"], done.stdout + done.stderr


def test_image_reports_the_checkout_version(cnirun_image: str) -> None:
    done = sh("docker", "run", "--rm", "--network=none", cnirun_image, "--version", timeout=120)
    assert __version__ in done.stdout


def test_cnirun_runs_a_workload_from_its_container_image(cnirun_image: str, rig: Harness) -> None:
    commands = readme_commands()
    # README's preparation, on the real host: idempotent, and /run/netns is shared after it.
    sh("sh", "-c", commands["prepare"])
    mounted = mounts_at("/run/netns")
    assert mounted >= 1
    sh("sh", "-c", commands["prepare"])
    assert mounts_at("/run/netns") == mounted, "the preparation mounted /run/netns again"
    propagation = sh("findmnt", "-no", "PROPAGATION", "/run/netns").stdout.split()
    assert propagation == ["shared"], propagation

    # The CNI README's example network, on a bridge and subnet of this test's own.
    network, bridge, subnet = rig.netname(), rig.bridge(), rig.subnet()
    rig.write(f"10-{network}.conf", seed_bridge(network, bridge, str(subnet)))
    netconf, state, cache = rig.netconf_dir, rig.state_dir, rig.cache_dir
    state.mkdir()
    container = rig.name()
    # README's `docker run` line, with this test's config, state and cache dirs (state and
    # cache at the same paths inside and out, so a host-side gc could reclaim them) and its
    # own image, name, label and --debug; everything else as README has it.
    argv = shlex.split(commands["run"])
    argv = replace_once(argv, ["docker", "run"], ["docker", "run", "--name", container])
    argv = replace_once(argv, ["--privileged"], privileges())
    argv = replace_once(
        argv, ["-v", "/etc/cni/net.d:/etc/cni/net.d:ro"], ["-v", f"{netconf}:/etc/cni/net.d:ro"]
    )
    argv = replace_once(
        argv,
        ["-v", "/var/lib/cnirun:/var/lib/cnirun"],
        ["-v", f"{state}:{state}", "-e", f"CNIRUN_STATE_DIR={state}"],
    )
    argv = replace_once(
        argv,
        ["-v", "/var/lib/cni:/var/lib/cni"],
        ["-v", "/var/lib/cni:/var/lib/cni", "-v", f"{cache}:{cache}"]
        + ["-e", f"CNIRUN_CACHE_DIR={cache}"],
    )
    argv = replace_once(argv, ["cnirun", "--rm"], [cnirun_image, "--debug", *rig.label, "--rm"])
    assert argv[-2:] == ["busybox", "ifconfig"], argv
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    sandbox_ids = list(dict.fromkeys(INFRA_RE.findall(done.stderr)))
    rig.sandbox_ids.update(sandbox_ids)
    user_stderr = "".join(
        line
        for line in done.stderr.splitlines(keepends=True)
        if not line.startswith("cnirun: DEBUG: ")
    )
    assert done.returncode == 0, done.stderr
    assert user_stderr == "", user_stderr
    assert len(sandbox_ids) == 1, done.stderr
    match = IFCONFIG_INET_RE.search(done.stdout)
    assert match is not None, done.stdout
    assert ipaddress.IPv4Address(match.group(1)) in subnet, done.stdout

    assert sh("docker", "ps", "-aq", "--filter", f"name={container}").stdout == ""
    # The infra pool's one ready member is what a run leaves on purpose (README, "The infra
    # pool"): its marker, and its container, which `gc --all` removes (here, from the host).
    pooled = POOLED_RE.findall(done.stderr)
    assert len(pooled) == 1, done.stderr
    assert sorted(p.name for p in (state / "pool").iterdir()) == pooled
    cleared = rig.run("gc", "--all")
    assert cleared.returncode == 0 and "infra pool member" in cleared.stdout, cleared.explain()
    # Nothing else under the state dir: no record, lock, or the workload's hosts/resolv.conf.
    left = sorted(state.rglob("*"))
    assert left in ([], [state / "pool"], [state / "pool", state / "sandboxes"]), left
    assert not (cache / "results").exists() or list((cache / "results").iterdir()) == []
    ipam = Path(DEFAULT_IPAM_DIR) / network
    taken = [p.name for p in ipam.iterdir() if p.name[0].isdigit()] if ipam.exists() else []
    assert taken == [], f"IP reservations left: {taken}"
    assert_no_leaks(
        [rig.tag, *sandbox_ids],
        bridges=[bridge],
        netns_names=[f"cnirun-{i}" for i in sandbox_ids],
        cache_dir=str(cache),
    )
    rig.assert_clean(sandbox_ids)

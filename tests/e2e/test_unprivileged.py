"""cnirun run by a user who is not root (issue 14, item 3): every command that needs root
says so in one line and exits 125, never with a traceback; `--help`, `--version`,
`network ls` of a readable dir and `doctor` work as far as they can.

The user is `nobody` (setpriv), running Debian's python3 with a copy of cnirun's
dependencies in a world-readable temporary dir (this test's own interpreter and its
packages may live where nobody cannot read)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Harness, Result

pytestmark = pytest.mark.e2e

NEEDS_ROOT = "cnirun: error: cnirun needs root: run it with sudo"
SYSTEM_PYTHON = "/usr/bin/python3"


def copy_dependencies(dest: Path) -> None:
    """Every distribution cnirun requires (transitively), copied into `dest`."""
    seen: set[str] = set()
    todo = ["cnirun"]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                match = re.match(r"[A-Za-z0-9._-]+", requirement)
                assert match is not None
                todo.append(match.group(0))
        if name == "cnirun":
            continue  # this checkout is on PYTHONPATH instead
        for file in dist.files or []:
            top = file.parts[0]
            metadata_dir = top.endswith((".dist-info", ".egg-info"))
            if top == ".." or metadata_dir or "__pycache__" in file.parts:
                continue
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                (dest / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, dest / file)


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """A world-readable dir: `site` (the dependencies) and `net.d` (one network config)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK) or shutil.which("setpriv") is None:
        pytest.fail(f"{SYSTEM_PYTHON} and setpriv are needed: run `make setup`")
    root = Path(tempfile.mkdtemp(prefix="cnirun-unprivileged-"))
    try:
        copy_dependencies(root / "site")
        (root / "net.d").mkdir()
        conf = {"cniVersion": "1.0.0", "name": "readable", "plugins": [{"type": "bridge"}]}
        (root / "net.d" / "10-readable.conflist").write_text(json.dumps(conf))
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(rig: Harness, world: Path, *args: str) -> Result:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(world),
        "PYTHONPATH": f"{REPO}:{world / 'site'}",
        "NETCONFPATH": str(world / "net.d"),
        "CNI_PATH": "/usr/lib/cni",
    }
    argv = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
            SYSTEM_PYTHON, "-m", "cnirun", *args]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=world, timeout=60, check=False
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def test_the_readable_commands_work(rig: Harness, world: Path) -> None:
    assert sys.version_info[:2] >= (3, 11)
    for args in (["--help"], ["run", "--help"], ["--rm", "--help", "busybox"]):
        run = as_nobody(rig, world, *args)
        assert run.returncode == 0 and run.stdout.startswith("Usage: cnirun"), run.explain()
    version = as_nobody(rig, world, "--version")
    assert version.returncode == 0 and version.stdout.startswith("cnirun version")
    listed = as_nobody(rig, world, "network", "ls")
    assert listed.returncode == 0, listed.explain()
    assert "readable" in listed.stdout and "Traceback" not in listed.raw_stderr
    doctor = as_nobody(rig, world, "doctor")
    assert "Traceback" not in doctor.raw_stderr, doctor.explain()
    assert re.search(r"^warn +user: not root", doctor.stdout, re.M), doctor.stdout
    assert re.search(r"^ok +plugin bridge:", doctor.stdout, re.M), doctor.stdout
    rig.assert_clean()


@pytest.mark.parametrize(
    "args",
    [
        ["--rm", "busybox", "true"],
        ["busybox", "true"],
        ["run", "--rm", "-p", "8080:80", "busybox", "true"],
        ["ps"],
        ["inspect", "web"],
        ["logs", "web"],
        ["stop", "web"],
        ["start", "web"],
        ["restart", "-t", "1", "web"],
        ["rm", "-f", "web"],
        ["gc"],
        ["priv-net-run", "true"],
        ["net", "add", "readable", "/run/netns/none"],
        ["net", "del", "readable", "/run/netns/none"],
        ["network", "create", "x", "--netconf-dir", "/etc/cni/net.d"],
        ["network", "rm", "readable", "--netconf-dir", "/etc/cni/net.d"],
    ],
    ids=" ".join,
)
def test_commands_that_need_root_say_so(rig: Harness, world: Path, args: list[str]) -> None:
    run = as_nobody(rig, world, *args)
    assert run.returncode == 125, run.explain()
    assert "Traceback" not in run.raw_stderr, run.explain()
    [line] = run.raw_stderr.splitlines()
    assert line.startswith(NEEDS_ROOT), run.explain()
    rig.assert_clean()

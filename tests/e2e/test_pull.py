"""Image pulls through cnirun, against a private registry on 127.0.0.1 (Debian's docker-registry).

The registry is started by this module with its own config and storage in a temp dir. Every
image it serves is built here with a random blob (so its layer is new to the engine), pushed,
and removed locally, so that cnirun or docker really has to pull it. Each test ends by removing
every image it created or pulled and by checking that its sandboxes left nothing behind.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.harness import BLOB_SIZE, Harness, Registry, image_id, sh

BAR_RE = re.compile(r"\[=*>\s*\] [\d.]+[kMG]?B/[\d.]+[kMG]?B")
CURSOR_UP_RE = re.compile(r"\x1b\[\d+A")
PULL_TIMEOUT = 180


@pytest.fixture
def rig(rig: Harness) -> Harness:
    """The harness with one bridge network, and --debug on every run (for the sandbox IDs)."""
    rig.debug = True
    rig.timeout = PULL_TIMEOUT
    rig.network()
    return rig


# -- the tests --------------------------------------------------------------------------------


def test_missing_infra_image_is_pulled_with_live_progress_on_a_terminal(
    registry: Registry, rig: Harness
) -> None:
    ref = registry.publish(f"cnirun-test/pause-{rig.tag}", "1", infra=True)
    status, screen = rig.run_on_pty(*rig.label, "--rm", "--infra-image", ref, "busybox", "true")
    assert status == 0, screen
    assert f"Unable to find infra image '{ref}' locally" in screen
    assert "Pulling fs layer" in screen and "Pull complete" in screen, screen
    assert CURSOR_UP_RE.search(screen), f"no in-place redraw: {screen!r}"
    assert BAR_RE.search(screen), f"no progress bar: {screen!r}"
    assert f"Status: Downloaded newer image for {ref}" in screen
    assert image_id(ref) is not None

    # Present now: `missing` does not pull again, and the run prints nothing of its own.
    again = rig.run(*rig.label, "--rm", "--infra-image", ref, "busybox", "true")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    registry.remove(ref)
    rig.assert_clean()


def test_pull_without_a_terminal_prints_status_lines_only(registry: Registry, rig: Harness) -> None:
    ref = registry.publish(f"cnirun-test/pause-{rig.tag}", "1", infra=True)
    run = rig.run(*rig.label, "--rm", "--infra-image", ref, "busybox", "true")
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == f"Unable to find infra image '{ref}' locally"
    assert lines[1] == "1: Pulling from " + f"cnirun-test/pause-{rig.tag}"
    assert any(line.endswith(": Pull complete") for line in lines), run.stderr
    assert lines[-1] == f"Status: Downloaded newer image for {ref}"
    assert "\x1b" not in run.stderr and not BAR_RE.search(run.stderr)
    assert not any("Downloading" in line or "Extracting" in line for line in lines)
    registry.remove(ref)
    rig.assert_clean()


def test_quiet_pull_shows_nothing(registry: Registry, rig: Harness) -> None:
    ref = registry.publish(f"cnirun-test/pause-{rig.tag}", "1", infra=True)
    status, screen = rig.run_on_pty(
        *rig.label, "--rm", "-q", "--infra-image", ref, "busybox", "true"
    )
    assert status == 0, screen
    assert screen == "", repr(screen)
    assert image_id(ref) is not None, "-q must still pull"
    registry.remove(ref)
    rig.assert_clean()


def test_missing_workload_image_is_pulled_by_docker_through_cnirun(
    registry: Registry, rig: Harness
) -> None:
    ref = registry.publish(f"cnirun-test/box-{rig.tag}", "1", infra=False)
    run = rig.run(*rig.label, "--rm", ref, "sh", "-c", "wc -c < /blob")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(BLOB_SIZE)]
    assert f"Unable to find image '{ref}' locally" in run.stderr
    assert "Pull complete" in run.stderr
    assert f"Status: Downloaded newer image for {ref}" in run.stderr
    assert len(run.sandbox_ids) == 1

    # With -q, docker pulls without a word.
    registry.remove(ref)
    quiet = rig.run(*rig.label, "--rm", "-q", ref, "true")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert image_id(ref) is not None
    registry.remove(ref)
    rig.assert_clean()


def test_pull_never_with_a_missing_infra_image_creates_nothing(
    registry: Registry, rig: Harness
) -> None:
    ref = registry.publish(f"cnirun-test/pause-{rig.tag}", "1", infra=True)
    run = rig.run(
        *rig.label,
        "--rm", "--pull", "never", "--infra-image", ref,
        "-v", f"{rig.tmp}:/out", "busybox", "touch", "/out/ran",
    )  # fmt: skip
    assert run.returncode == 125
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("cnirun: error: ") and ref in lines[0] and "--pull=never" in lines[0]
    assert run.sandbox_ids == []
    assert not (rig.tmp / "ran").exists(), "the workload ran"
    assert image_id(ref) is None, "--pull never pulled"
    assert not rig.state_dir.exists() or not list(rig.state_dir.rglob("*.json"))
    rig.assert_clean()


def test_pull_failure_is_reported_in_one_error_line(registry: Registry, rig: Harness) -> None:
    ref = f"{registry.host}/cnirun-test/absent-{rig.tag}:1"
    registry.refs.add(ref)
    run = rig.run(*rig.label, "--rm", "--infra-image", ref, "busybox", "true")
    assert run.returncode == 125
    lines = run.stderr.strip().splitlines()
    assert lines[0] == f"Unable to find infra image '{ref}' locally"
    assert len(lines) == 2, run.stderr
    assert lines[1].startswith(f"cnirun: error: cannot pull infra image {ref}: ")
    assert "not found" in lines[1] or "unknown" in lines[1], lines[1]
    assert run.sandbox_ids == []
    rig.assert_clean()


def test_pull_always_pulls_a_newer_infra_image(registry: Registry, rig: Harness) -> None:
    repo, box_repo = f"cnirun-test/pause-{rig.tag}", f"cnirun-test/box-{rig.tag}"
    ref = f"{registry.host}/{repo}:1"
    box = registry.publish(box_repo, "1", infra=False)
    old = registry.build(repo, "1", infra=True)
    registry.push(repo, "1")
    new = registry.build(repo, "1", infra=True)
    registry.push(repo, "1")
    # The registry has the new image; the engine keeps the old one under the same name.
    sh("docker", "tag", old, ref)
    sh("docker", "rmi", new)
    assert image_id(ref) == old

    # `--pull always` reaches docker too, so the workload comes from the registry as well.
    run = rig.run(*rig.label, "--rm", "--pull", "always", "--infra-image", ref, box, "true")
    assert run.returncode == 0, run.stderr
    assert f"1: Pulling from {repo}" in run.stderr
    assert f"Status: Downloaded newer image for {ref}" in run.stderr
    assert image_id(ref) == new

    again = rig.run(*rig.label, "--rm", "--pull", "always", "--infra-image", ref, box, "true")
    assert again.returncode == 0, again.stderr
    assert f"Status: Image is up to date for {ref}" in again.stderr
    assert len(rig.sandbox_ids) == 2
    registry.remove(ref, box)
    sh("docker", "rmi", old, check=False)
    assert image_id(old) is None
    rig.assert_clean()


def test_builtin_pause_image_is_never_pulled(rig: Harness) -> None:
    run = rig.run(*rig.label, "--rm", "--pull", "never", "busybox", "true")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "docker: GET /images/cnirun%2Fpause%3A1/json" in run.debug  # the name escaped
    assert "docker: pull" not in run.debug
    rig.assert_clean()

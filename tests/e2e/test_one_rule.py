"""One implementation of each rule, seen from outside: the Docker endpoint (DOCKER_CONTEXT and
`docker context use`) is the same for the infra and the workload, and `doctor` lists exactly
what `gc` reclaims."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.e2e.harness import Harness, engine_socket, one_error_line


def docker_context(config: Path, name: str, host: str, use: bool = False) -> None:
    base = ["docker", "--config", str(config), "context"]
    subprocess.run([*base, "create", name, "--docker", f"host={host}"], check=True,
                   capture_output=True)  # fmt: skip
    if use:
        subprocess.run([*base, "use", name], check=True, capture_output=True)


def test_the_current_docker_context_is_followed_by_every_docker_call(rig: Harness) -> None:
    rig.network()
    config = rig.tmp / "docker-config"
    alias = rig.tmp / "alias.sock"
    alias.symlink_to(engine_socket())
    docker_context(config, "alias", f"unix://{alias}", use=True)
    env = rig.env(DOCKER_CONFIG=str(config), DOCKER_HOST=None)  # DOCKER_HOST beats a context

    run = rig.run("--rm", *rig.label, "busybox", "true", env=env)
    assert run.returncode == 0, run.explain()
    ps = rig.run("ps", env=env)  # refused a context before
    assert ps.returncode == 0, ps.explain()
    doctor = rig.run("doctor", env=env)
    assert f"at unix://{alias} (context alias)" in doctor.stdout, doctor.explain()
    rig.assert_clean()


def test_a_dead_context_fails_at_first_contact_and_creates_nothing(rig: Harness) -> None:
    """Before, the infra went to the default socket while the workload's CLI followed the
    context (and failed); and DOCKER_CONTEXT was refused outright."""
    rig.network()
    config = rig.tmp / "docker-config"
    dead = rig.tmp / "dead.sock"
    docker_context(config, "dead", f"unix://{dead}", use=True)
    by_use = rig.env(DOCKER_CONFIG=str(config), DOCKER_HOST=None)  # DOCKER_HOST beats a context
    by_variable = rig.env(DOCKER_CONFIG=str(config), DOCKER_CONTEXT="dead", DOCKER_HOST=None)
    for env in (by_use, by_variable):
        run = rig.run("--rm", *rig.label, "busybox", "true", env=env)
        assert run.returncode == 125, run.explain()
        assert f"unix://{dead}" in one_error_line(run.stderr), run.explain()
        rig.assert_nothing_created(run)
    rig.assert_clean()


def test_doctor_lists_exactly_what_gc_reclaims(rig: Harness) -> None:
    rig.network()
    env = rig.env(CNIRUN_TEST_KILL_AT="add")
    killed = rig.run("--rm", *rig.label, "busybox", "true", env=env)
    assert killed.returncode == -9, killed.explain()

    dry = rig.run("gc", "--dry-run")
    assert dry.returncode == 0, dry.explain()
    would = [line.removeprefix("would reclaim: ") for line in dry.stdout.splitlines()]
    assert would and all(not line.startswith("nothing") for line in would), dry.explain()
    doctor = rig.run("doctor")
    stale = next(line for line in doctor.stdout.splitlines() if "stale state" in line)
    assert f"gc would reclaim {len(would)}: " in stale, doctor.explain()
    assert all(item in stale for item in would[:5])

    gc = rig.run("gc")
    assert gc.returncode == 0, gc.explain()
    assert [line.removeprefix("reclaimed: ") for line in gc.stdout.splitlines()] == would
    after = rig.run("doctor")
    assert "stale state: none" in after.stdout, after.explain()
    rig.assert_clean()

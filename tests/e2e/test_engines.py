"""Sandboxes and the engines they live on: a cnirun pointed at another engine leaves them
alone, and after their own engine restarts, the next cnirun command repairs their network.

Marked `own_engine`: these restart the engine under test, or use the host's engine as a
second one, so only `make test-engines` runs them (DOCKER_HOST is then one of
scripts/engines.sh's engines and CNIRUN_TEST_ENGINE its suite).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.harness import IMAGE, REPO, Harness, Net, sh, wait_for
from tests.e2e.test_lifecycle import detached, eth0_address, ps_row, recorded_address, remove

pytestmark = [pytest.mark.e2e, pytest.mark.own_engine]

HOST_ENGINE = "unix:///var/run/docker.sock"


def suite() -> str:
    found = os.environ.get("CNIRUN_TEST_ENGINE", "")
    assert found and os.environ.get("DOCKER_HOST"), "run by `make test-engines` only"
    return found


def restart_engine() -> None:
    """Stop and start the engine under test, its containers kept: as an engine upgrade."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "engines.sh"), "restart", suite()],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def state(name: str) -> str:
    return sh("docker", "inspect", "-f", "{{.State.Status}}", name).stdout.strip()


@pytest.fixture
def net(rig: Harness) -> Net:
    """bridge + host-local taking the `ips` capability, as cnirun's own networks do."""
    suite()
    net = rig.network()
    conf = json.loads(net.path.read_text())
    conf["plugins"][0]["capabilities"] = {"ips": True}
    net.path.write_text(json.dumps(conf))
    return net


def test_a_cnirun_on_another_engine_leaves_the_sandbox_alone(rig: Harness, net: Net) -> None:
    name = detached(rig, IMAGE, "sleep", "600")
    address = recorded_address(rig, name)
    [sandbox] = rig.records()
    elsewhere = rig.env(DOCKER_HOST=HOST_ENGINE)
    listed = rig.run("ps", "-a", "--format", "json", env=elsewhere)
    assert listed.returncode == 0, listed.explain()
    [row] = json.loads(listed.stdout)
    assert (row["sandbox"], row["state"]) == (sandbox, "elsewhere"), row
    gc = rig.run("gc", env=elsewhere)
    assert gc.returncode == 0 and sandbox not in gc.stdout, gc.explain()
    other = rig.run("--rm", *rig.label, IMAGE, "true", env=elsewhere)  # reconciles too
    assert other.returncode == 0, other.explain()
    refused = rig.run("rm", "-f", name, env=elsewhere)
    assert refused.returncode == 125 and "on another Docker engine" in refused.stderr
    # On its own engine it is untouched.
    assert eth0_address(name) == address
    own = ps_row(rig, name)
    assert own is not None and own["State"] == "running", own
    remove(rig, name)
    rig.assert_clean([sandbox])


def test_after_an_engine_restart_a_restarted_workload_gets_its_network_back(
    rig: Harness, net: Net
) -> None:
    name = detached(rig, "--restart", "always", IMAGE, "sleep", "600")
    address = recorded_address(rig, name)
    [infra] = rig.infra_containers()
    restart_engine()
    wait_for(lambda: state(infra) == "running", 60, "Docker to restart the infra")
    # Docker restarts the workload too (Docker 28 may fail to, if it tried before the infra
    # was up: then cnirun starts it). Either way it is in a new netns with only lo.
    repaired = rig.run("ps")
    assert repaired.returncode == 0, repaired.explain()
    assert "attaching its networks again" in repaired.stderr, repaired.explain()
    wait_for(lambda: state(name) == "running", 60, "the workload to run again")
    assert eth0_address(name) == address  # asked for through the `ips` capability
    remove(rig, name)
    rig.assert_clean()


def test_after_an_engine_restart_cnirun_start_brings_a_stopped_sandbox_back(
    rig: Harness, net: Net
) -> None:
    name = detached(rig, IMAGE, "sleep", "600")
    address = recorded_address(rig, name)
    restart_engine()
    assert state(name) == "exited"
    started = rig.run("start", name)
    assert started.returncode == 0 and started.stdout == f"{name}\n", started.explain()
    assert state(name) == "running" and eth0_address(name) == address
    remove(rig, name)
    rig.assert_clean()

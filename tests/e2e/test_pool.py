"""The infra pool (cnirun.sandbox.pool): a run claims a started infra an earlier run left, and
starts the next one while its workload runs. Real Docker and real plugins.

The rig turns the pool off for every other test; here it is on (CNIRUN_INFRA_POOL=1, the
default). What a run may leave is exactly what the pool documents: at most one started
infra container with its marker, which `gc` keeps and `gc --all` removes.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.harness import IMAGE, Harness, Net, Result, sh

pytestmark = pytest.mark.e2e


@pytest.fixture
def net(rig: Harness) -> Net:
    rig.debug = True  # the runs' own words say which infra they used
    return rig.network(portmap=True)


def pooled(rig: Harness) -> dict[str, str]:
    return rig.env(CNIRUN_INFRA_POOL="1")


def markers(rig: Harness) -> list[str]:
    directory = Path(rig.state_dir) / "pool"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def member(rig: Harness) -> tuple[str, str]:
    """The one pool member: (its sandbox ID, its container's short ID); it is running, and
    its marker is the only one."""
    [sandbox_id] = markers(rig)
    shown = sh(
        "docker", "inspect", "-f", "{{.Id}} {{.State.Status}}", f"cnirun-infra-{sandbox_id}"
    ).stdout.split()  # fmt: skip
    assert shown[1] == "running", shown
    return sandbox_id, shown[0][:12]


def hostname_run(rig: Harness, *flags: str) -> Result:
    return rig.run("--rm", *flags, *rig.label, IMAGE, "hostname", env=pooled(rig))


def empty_pool_then_clean(rig: Harness) -> None:
    """`gc` keeps a ready member; `gc --all` removes it, and then nothing is left."""
    kept = rig.run("gc", env=pooled(rig))
    assert kept.returncode == 0 and "nothing to reclaim" in kept.stdout, kept.explain()
    assert len(markers(rig)) <= 1
    cleared = rig.run("gc", "--all", env=pooled(rig))
    assert cleared.returncode == 0, cleared.explain()
    assert markers(rig) == []
    rig.assert_clean()


def test_a_run_claims_the_infra_the_previous_run_started(rig: Harness, net: Net) -> None:
    first = hostname_run(rig)
    assert first.returncode == 0, first.explain()
    assert "claimed pooled infra" not in first.debug  # the pool was empty
    sandbox_id, container = member(rig)  # ... and the first run filled it

    second = hostname_run(rig)
    assert second.returncode == 0, second.explain()
    assert f"claimed pooled infra cnirun-infra-{sandbox_id}" in second.debug, second.explain()
    # The workload ran in the claimed infra: its hostname is that container's, as for any
    # infra made without -h; and its sandbox took the member's ID.
    assert second.stdout.strip() == container
    assert sandbox_id in second.sandbox_ids
    assert "CNI_COMMAND=ADD" in second.debug and "CNI_COMMAND=DEL" in second.debug
    # The claimed member is gone with its run; the run left the next one.
    assert markers(rig) != [sandbox_id] and len(markers(rig)) == 1
    member(rig)
    empty_pool_then_clean(rig)


def test_hostname_and_domainname_runs_make_their_own_infra(rig: Harness, net: Net) -> None:
    assert hostname_run(rig).returncode == 0
    before = member(rig)
    named = hostname_run(rig, "-h", "box1", "--domainname", "example.test")
    assert named.returncode == 0, named.explain()
    assert named.stdout.strip() == "box1"
    assert "claimed pooled infra" not in named.debug
    assert member(rig) == before  # untouched
    empty_pool_then_clean(rig)


def test_a_stopped_member_is_never_used_and_gc_removes_it(rig: Harness, net: Net) -> None:
    assert hostname_run(rig).returncode == 0
    sandbox_id, _ = member(rig)
    sh("docker", "stop", "-t", "0", f"cnirun-infra-{sandbox_id}")
    listed = rig.run("gc", "--dry-run", env=pooled(rig))
    assert "infra pool member" in listed.stdout, listed.explain()  # not ready: reclaimable

    run = hostname_run(rig)
    assert run.returncode == 0, run.explain()
    assert "claimed pooled infra" not in run.debug  # it was stopped: the run made its own
    assert sandbox_id not in markers(rig)
    gone = subprocess.run(
        ["docker", "inspect", f"cnirun-infra-{sandbox_id}"], capture_output=True, check=False
    )
    assert gone.returncode != 0  # the run removed the stopped member
    empty_pool_then_clean(rig)


def test_ps_does_not_list_pool_members(rig: Harness, net: Net) -> None:
    assert hostname_run(rig).returncode == 0
    member(rig)
    listed = rig.run("ps", "-a", "--format", "json", env=pooled(rig))
    assert listed.returncode == 0, listed.explain()
    assert json.loads(listed.stdout or "[]") == [], listed.stdout
    empty_pool_then_clean(rig)


@pytest.mark.parametrize("point", ["pool-marked", "pool-claimed"])
def test_kill_9_in_the_pool_then_gc_leaves_nothing(rig: Harness, net: Net, point: str) -> None:
    if point == "pool-claimed":  # something to claim first
        assert hostname_run(rig).returncode == 0
        member(rig)
    killed = rig.run(
        "-d", "--name", rig.name(), *rig.label, IMAGE, "sleep", "30",
        env=rig.env(CNIRUN_INFRA_POOL="1", CNIRUN_TEST_KILL_AT=point),
    )  # fmt: skip
    assert killed.returncode == -9, killed.explain()
    for container in rig.containers():  # a workload a -d run had started goes first
        sh("docker", "rm", "-f", container)
    reclaimed = rig.run("gc", env=pooled(rig))
    assert reclaimed.returncode == 0, reclaimed.explain()
    empty_pool_then_clean(rig)


def test_concurrent_runs_never_share_an_infra(rig: Harness, net: Net) -> None:
    assert hostname_run(rig).returncode == 0
    member(rig)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: hostname_run(rig), range(4)))
    assert all(r.returncode == 0 for r in runs), [r.explain() for r in runs]
    hostnames = [r.stdout.strip() for r in runs]
    assert len(set(hostnames)) == 4, hostnames
    claimed = [r for r in runs if "claimed pooled infra" in r.debug]
    assert len({r.sandbox_ids[0] for r in claimed}) == len(claimed)
    assert len(markers(rig)) <= 1
    empty_pool_then_clean(rig)


def test_the_pool_setting(rig: Harness, net: Net) -> None:
    off = rig.run("--rm", *rig.label, IMAGE, "true", env=rig.env(CNIRUN_INFRA_POOL="0"))
    assert off.returncode == 0, off.explain()
    assert markers(rig) == []
    bad = rig.run("--rm", *rig.label, IMAGE, "true", env=rig.env(CNIRUN_INFRA_POOL="many"))
    assert bad.returncode == 125
    assert bad.stderr.count("\n") == 1 and "CNIRUN_INFRA_POOL" in bad.stderr, bad.explain()
    rig.assert_nothing_created(bad)

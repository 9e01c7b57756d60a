"""Faults that used to leak: a DEL that fails once, a netns holder removed from outside.

A DEL needs its network namespace: without it the bridge plugin releases the address but skips
its masquerade rules. So the holder stays until every DEL of the sandbox has succeeded, and a
holder removed from outside is taken again from the infra container before any DEL."""

from __future__ import annotations

import os
import subprocess

from tests.e2e.harness import Harness, iptables_lines


def test_a_failed_del_keeps_the_netns_so_the_retry_removes_everything(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    flag = rig.tmp / "del-fails"
    flag.touch()
    rig.network(extra=[{"type": "fake", "fake": {"DEL": {"fail_while": str(flag)}}}])
    env = rig.env(CNI_PATH=cni_path)

    run = rig.run("--rm", *rig.label, "busybox", "true", env=env, debug=True)
    # The workload's part went fine; cnirun's did not: exit 125, saying what to do.
    assert run.returncode == 125, run.explain()
    assert "run `cnirun gc` to retry" in run.stderr, run.explain()
    [sandbox] = run.sandbox_ids
    assert os.path.exists(f"/run/netns/cnirun-{sandbox}"), "the holder must wait for the retry"
    assert iptables_lines(f"cnirun-{sandbox}"), "bridge's masquerade rules are still there"

    flag.unlink()  # the fault goes away
    gc = rig.run("gc", env=env)
    assert gc.returncode == 0, gc.explain()
    assert f"reclaimed: sandbox {sandbox}: orphaned, tearing down" in gc.stdout
    rig.assert_clean([sandbox])  # masquerade rules included


def test_rm_of_a_failing_sandbox_prints_nothing_and_fails(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    flag = rig.tmp / "del-fails"
    flag.touch()
    rig.network(extra=[{"type": "fake", "fake": {"DEL": {"fail_while": str(flag)}}}])
    env = rig.env(CNI_PATH=cni_path)
    name = rig.name()
    started = rig.run("-d", "--name", name, *rig.label, "busybox", "sleep", "300", env=env)
    assert started.returncode == 0, started.explain()

    removed = rig.run("rm", "-f", name, env=env)
    assert removed.returncode == 125, removed.explain()
    assert removed.stdout == ""  # as docker: only what was really removed is printed
    flag.unlink()
    assert rig.run("gc", env=env).returncode == 0
    rig.assert_clean(rig.records())


def test_a_holder_deleted_from_outside_is_taken_again_from_the_infra(rig: Harness) -> None:
    rig.network()
    name = rig.name()
    started = rig.run("-d", "--name", name, *rig.label, "busybox", "sleep", "300")
    assert started.returncode == 0, started.explain()
    [sandbox] = rig.records()
    holder = f"cnirun-{sandbox}"
    subprocess.run(["ip", "netns", "delete", holder], check=True, capture_output=True)
    assert not os.path.exists(f"/run/netns/{holder}")

    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    assert removed.stdout == f"{name}\n"
    rig.assert_clean([sandbox])  # the bridge's masquerade rules went with its DEL

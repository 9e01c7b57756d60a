"""Faults that used to leak: a DEL that fails once, a netns holder removed from outside.

A DEL needs its network namespace: without it the bridge plugin releases the address but skips
its masquerade rules. So the holder stays until every DEL of the sandbox has succeeded, and a
holder removed from outside is taken again from the infra container before any DEL."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Harness, iptables_lines, wait_for


def failing_del(rig: Harness) -> tuple[dict[str, str], Path]:
    """A network whose DEL fails while the returned file exists; and the env to use it."""
    cni_path = rig.fake_plugin()
    flag = rig.tmp / "del-fails"
    flag.touch()
    rig.network(extra=[{"type": "fake", "fake": {"DEL": {"fail_while": str(flag)}}}])
    return rig.env(CNI_PATH=cni_path), flag


def test_a_failed_del_keeps_the_netns_so_the_retry_removes_everything(rig: Harness) -> None:
    env, flag = failing_del(rig)

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
    env, flag = failing_del(rig)
    name = rig.name()
    started = rig.run("-d", "--name", name, *rig.label, "busybox", "sleep", "300", env=env)
    assert started.returncode == 0, started.explain()
    assert rig.run("stop", "-t", "0", name, env=env).returncode == 0  # no DEL: it keeps its net

    removed = rig.run("rm", name, env=env)
    assert removed.returncode == 125, removed.explain()
    assert removed.stdout == ""  # as docker: only what really went is printed
    [sandbox] = rig.records()  # kept for the retry
    flag.unlink()
    gc = rig.run("gc", env=env)
    assert gc.returncode == 0, gc.explain()
    rig.assert_clean([sandbox])


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


def test_net_add_twice_leaves_the_first_attachment_alone(rig: Harness) -> None:
    net = rig.network()
    netns = rig.netns()
    first = rig.add(net.name, netns)
    again = rig.net("add", net.name, netns)
    assert again.returncode == 125, again.explain()
    assert "already attached" in again.stderr and "cnirun net del" in again.stderr
    # The first attachment is whole: its interface, address and cache entry.
    shown = subprocess.run(
        ["ip", "-n", netns, "-o", "-4", "addr", "show", "eth0"], capture_output=True, text=True
    )
    assert first["ips"][0]["address"] in shown.stdout, shown.stdout + shown.stderr
    rig.quiet("del", net.name, netns)
    rig.assert_clean()


def test_net_del_after_ip_netns_del_finds_the_same_attachment(rig: Harness) -> None:
    # No ipMasq: the bridge plugin needs the namespace to find which masquerade rules are its
    # own, and with the namespace deleted by hand no runtime can give it back.
    name, bridge = rig.netname(), rig.bridge()
    rig.write(f"10-{name}.conflist", rig.simple_bridge(name, bridge, ipmasq=False))
    netns = rig.netns()
    rig.add(name, netns)  # a bare name: /run/netns/NAME
    subprocess.run(["ip", "netns", "del", netns], check=True, capture_output=True)
    # The name no longer exists, and still means /run/netns/NAME: the same container ID, so
    # the cache entry and the address go (it was `$PWD/NAME`, and both leaked).
    rig.quiet("del", name, netns)
    rig.assert_clean()


def test_a_state_dir_made_read_only_mid_run_still_tears_down(rig: Harness) -> None:
    """It used to tear nothing down at all, with a traceback from the early-teardown thread."""
    rig.network()
    state = rig.state_dir
    state.mkdir(exist_ok=True)
    options = "size=4m,mode=0700"  # a private dir, as cnirun requires of its state dir
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(state)], check=True)
    try:
        proc = rig.start("--rm", *rig.label, "busybox", "sleep", "3")
        wait_for(lambda: rig.containers(running=True), 30, "the workload to run")
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        run = rig.finish(proc, timeout=90)
        assert run.returncode == 125, run.explain()  # the record could not be removed
        assert "Traceback" not in run.raw_stderr, run.explain()
        assert "cnirun gc" in run.stderr, run.explain()
        [sandbox] = rig.records()
        assert not os.path.exists(f"/run/netns/cnirun-{sandbox}")  # all else went
        assert rig.infra_containers() == []
        subprocess.run(["mount", "-o", "remount,rw", str(state)], check=True)
        gc = rig.run("gc")
        assert gc.returncode == 0, gc.explain()
        rig.assert_clean([sandbox])
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_gc_of_another_state_dir_leaves_a_sandbox_in_teardown_alone(rig: Harness) -> None:
    """Its infra already removed and a DEL still running, the sandbox has no container left to
    show that it is alive: gc of another state dir released its netns and DELed it."""
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake", "fake": {"DEL": {"sleep": 4, "log_end": True}}}])
    env = rig.env(CNI_PATH=cni_path)
    proc = rig.start("--rm", *rig.label, "busybox", "true", env=env)
    wait_for(lambda: any(c["cmd"] == "DEL" for c in rig.fake_calls()), 60, "the DEL")
    wait_for(lambda: rig.infra_containers() == [], 30, "the infra to go")
    [sandbox] = rig.records()

    other = rig.env(CNI_PATH=cni_path, CNIRUN_STATE_DIR=str(rig.tmp / "other-state"))
    gc = rig.run("gc", env=other)
    assert gc.returncode == 0, gc.explain()
    assert sandbox not in gc.stdout, gc.explain()

    run = rig.finish(proc, timeout=60)
    assert run.returncode == 0, run.explain()
    rig.assert_clean([sandbox])  # the masquerade rules went with the owner's own DEL


def test_rm_f_removes_a_sandbox_whose_del_keeps_failing_and_gc_finishes_it(rig: Harness) -> None:
    """A DEL that keeps failing used to make `rm` and `rm -f` fail for ever."""
    env, flag = failing_del(rig)
    name = rig.name()
    started = rig.run("-d", "--name", name, *rig.label, "busybox", "sleep", "300", env=env)
    assert started.returncode == 0, started.explain()
    [sandbox] = rig.records()
    for _ in range(2):  # gc keeps trying, and keeps saying why
        assert rig.run("gc", env=env).returncode == 0  # live: nothing to reclaim yet

    removed = rig.run("rm", "-f", name, env=env)
    assert removed.returncode == 0, removed.explain()
    assert removed.stdout == f"{name}\n"
    assert "may keep what its plugins set up" in removed.stderr, removed.explain()
    assert "cnirun gc" in removed.stderr and "cnirun net del" in removed.stderr
    assert rig.records() == [] and rig.containers() == []  # the sandbox and its name are free
    # The holder it keeps for the retry is still its state dir's: another one's gc spares it.
    assert os.path.exists(f"/run/cnirun/owners/{sandbox}.json"), removed.explain()
    other = rig.run("gc", env={**env, "CNIRUN_STATE_DIR": str(rig.tmp / "other-state")})
    assert other.returncode == 0 and sandbox not in other.stdout, other.explain()
    assert os.path.exists(f"/run/netns/cnirun-{sandbox}")

    failing = rig.run("gc", env=env)
    assert failing.returncode == 125 and "kept: a DEL in it failed" in failing.stderr
    flag.unlink()  # the fault goes away: gc finishes it, namespace and all
    gc = rig.run("gc", env=env)
    assert gc.returncode == 0, gc.explain()
    rig.assert_clean([sandbox])


@pytest.mark.parametrize("killed_after", [1, 2, 3, 4])
def test_kill_9_between_plugins_leaves_what_gc_can_undo(rig: Harness, killed_after: int) -> None:
    """kill -9 after each plugin of bridge, portmap, firewall, tuning: the DEL gc runs must
    still tell every plugin what was set up (the firewall plugin's rules leaked: nothing of
    the chain was cached before its end)."""
    cni_path = rig.fake_plugin()
    net = rig.network()  # bridge + host-local, on the test's own subnet
    chain = [
        net_plugin(net.path),
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
        {"type": "tuning"},
    ]
    chain.insert(killed_after, {"type": "fake", "fake": {"ADD": {"kill_parent": True}}})
    conf = json.loads(net.path.read_text())
    net.path.write_text(json.dumps({**conf, "plugins": chain}))
    env = rig.env(CNI_PATH=cni_path)
    run = rig.run("--rm", *rig.label, "-p", "127.0.0.1::80", "busybox", "true", env=env)
    assert run.returncode == -9, run.explain()
    [sandbox] = rig.records()
    gc = rig.run("gc", env=env)
    assert gc.returncode == 0, gc.explain()
    assert f"reclaimed: sandbox {sandbox}" in gc.stdout, gc.explain()
    rig.assert_clean([sandbox])  # the firewall's and portmap's rules (found by the subnet too)


def net_plugin(path: Path) -> dict[str, object]:
    plugin: dict[str, object] = json.loads(path.read_text())["plugins"][0]
    return plugin


def test_a_record_removed_mid_run_does_not_stop_the_teardown(rig: Harness) -> None:
    """The run's teardown found no record and did nothing at all: everything leaked."""
    rig.network()
    proc = rig.start("--rm", *rig.label, "busybox", "sleep", "2")
    wait_for(lambda: rig.containers(running=True), 30, "the workload to run")
    [sandbox] = rig.records()
    (rig.state_dir / "sandboxes" / f"{sandbox}.json").unlink()
    run = rig.finish(proc, timeout=60)
    assert run.returncode == 0, run.explain()
    assert "removed from outside: tearing down from memory" in run.stderr, run.explain()
    rig.assert_clean([sandbox])


@pytest.mark.parametrize("when", ["from the start", "mid-run"])
def test_a_read_only_cache_dir_still_tears_everything_down(rig: Harness, when: str) -> None:
    """The CNI cache cannot be written (or, mid-run, its entries not removed): the run says
    so in one line, and nothing of it is left once the dir is writable again and gc ran.
    Mid-run, the network's lock (already there) is opened read-only, so the DEL still runs."""
    rig.network()
    cache = rig.cache_dir
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(cache)],
                   check=True)  # fmt: skip
    try:
        if when == "from the start":
            subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
            run = rig.run("--rm", *rig.label, "busybox", "true")
        else:
            proc = rig.start("--rm", *rig.label, "busybox", "sleep", "3")
            wait_for(lambda: rig.containers(running=True), 30, "the workload to run")
            subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
            run = rig.finish(proc, timeout=90)
        assert "Traceback" not in run.raw_stderr, run.explain()
        said = run.stderr.splitlines()
        if when == "from the start":  # nothing could be set up, and nothing is left
            assert run.returncode == 125, run.explain()
            errors = [line for line in said if line.startswith("cnirun: error")]
            assert len(errors) == 1 and str(cache) in errors[0], run.explain()
            assert "not fully removed" not in run.stderr, run.explain()
            assert rig.records() == [] and rig.infra_containers() == []
        else:  # torn down all the same; only the cached result stays, for gc
            assert run.returncode == 0, run.explain()
            assert len(said) == 1 and said[0].startswith("cnirun: warning"), run.explain()
            assert str(cache) in said[0] and "cnirun gc" in said[0], run.explain()
        subprocess.run(["mount", "-o", "remount,rw", str(cache)], check=True)
        gc = rig.run("gc")
        assert gc.returncode == 0, gc.explain()
        rig.assert_clean()
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)

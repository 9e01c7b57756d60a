"""Sandboxes that outlive a command: -d, ps, inspect, stop, rm, gc, crash safety, concurrency.

Real Docker and real plugins. Each test has a private state dir, cache dir and bridge network
(tests/e2e/harness.py), and ends by asserting that nothing of its own is left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.harness import (
    PLUGIN_DIR,
    Harness,
    Net,
    Result,
    assert_gone,
    free_port,
    read_line,
    sh,
    wait_for,
)
from tests.leakcheck import DEFAULT_IPAM_DIR, assert_no_leaks

pytestmark = pytest.mark.e2e


@pytest.fixture
def net(rig: Harness) -> Net:
    """The test's network: bridge + host-local, and portmap."""
    return rig.network(portmap=True)


def dports(port: int, table: str) -> bool:
    """A portmap rule for host port `port` exists in `table`."""
    text = sh("iptables-save", "-t", table).stdout
    return re.search(rf"--dports? {port}\b", text) is not None


@pytest.mark.engines
def test_detached_sandbox_lifecycle(rig: Harness, net: Net) -> None:
    name = f"d-{net.bridge}"
    started = rig.run("-d", "--rm", "--name", name, *rig.label, "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    workload_id = started.stdout.strip()
    assert len(workload_id) == 64
    [sandbox_id] = rig.records()

    # The network is up by the time -d returns.
    ps = rig.run("ps", "--format", "json")
    rows = json.loads(ps.stdout)
    assert [r["name"] for r in rows] == [name]
    assert rows[0]["state"] == "running"
    assert rows[0]["networks"] == [net.name]
    address = rows[0]["addresses"][0]
    assert address.startswith(str(net.subnet).rsplit(".", 2)[0])
    table = rig.run("ps")
    assert name in table.stdout and " Up " in table.stdout  # docker's STATUS

    details = json.loads(rig.run("inspect", workload_id[:10]).stdout)[0]
    assert details["workloadId"] == workload_id
    assert details["netns"] == f"/run/netns/cnirun-{sandbox_id}"
    assert net.name in details["results"]
    assert details["cnirunVersion"]
    assert os.path.exists(details["netns"])
    # A sidecar on the sandbox's network can mount the workload's hosts and resolv.conf.
    files = details["etcFiles"]
    sidecar = subprocess.run(
        ["docker", "run", "--rm", "--network", f"container:{details['infraId']}",
         "--mount", f"type=bind,source={files['hosts']},target=/etc/hosts,readonly",
         "--mount", f"type=bind,source={files['resolv.conf']},target=/etc/resolv.conf,readonly",
         "busybox", "sh", "-c", "grep -c nameserver /etc/resolv.conf; cat /etc/hosts"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert sidecar.returncode == 0, sidecar.stderr
    assert sidecar.stdout.split("\n", 1)[0] != "0"
    ip = address.split("/")[0]
    own = f"{ip}\t{details['hostname']} {name}"  # its hostname, then its container name
    assert own in sidecar.stdout.splitlines(), sidecar.stdout

    refused = rig.run("rm", name)
    assert refused.returncode == 125
    assert "rm -f" in refused.stderr
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.stderr
    assert rig.run("ps", "-a", "--format", "json").stdout.strip() == "[]"
    rig.assert_clean([sandbox_id])


def test_stop_keeps_the_sandbox_until_rm(rig: Harness, net: Net) -> None:
    name = f"s-{net.bridge}"
    started = rig.run("-d", "--name", name, *rig.label, "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = rig.records()
    stopped = rig.run("stop", name, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    # Without --rm the stopped workload stays, as with Docker, and keeps its sandbox.
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", name], capture_output=True, text=True
    )
    assert state.stdout.strip() == "exited"
    assert rig.records() == [sandbox_id]
    removed = rig.run("rm", name)
    assert removed.returncode == 0, removed.explain()
    rig.assert_clean([sandbox_id])


def test_exited_detached_workload_is_reclaimed_lazily(rig: Harness, net: Net) -> None:
    started = rig.run("-d", "--rm", *rig.label, "busybox", "sleep", "1")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = rig.records()
    deadline = time.monotonic() + 30
    while rig.containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    # The next cnirun command notices the workload is gone and tears the sandbox down.
    rig.run("ps")
    rig.assert_clean([sandbox_id])


def test_exited_detached_workload_is_reclaimed_by_gc(rig: Harness, net: Net) -> None:
    started = rig.run("-d", "--rm", *rig.label, "busybox", "true")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = rig.records()
    deadline = time.monotonic() + 30
    while rig.containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    dry = rig.run("gc", "--dry-run")
    assert "would reclaim" in dry.stdout and sandbox_id in dry.stdout
    assert rig.records() == [sandbox_id]  # a dry run changes nothing
    done = rig.run("gc")
    assert done.returncode == 0, done.stderr
    assert sandbox_id in done.stdout
    rig.assert_clean([sandbox_id])


@pytest.mark.parametrize("point", ["record", "infra", "add", "teardown"])
def test_kill_9_during_a_run_then_gc_reclaims_everything(
    rig: Harness, net: Net, point: str
) -> None:
    run = rig.run("--rm", *rig.label, "busybox", "true", env=rig.env(CNIRUN_TEST_KILL_AT=point))
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr)
    ids = rig.records()
    assert len(ids) == 1
    gc = rig.run("gc")
    assert gc.returncode == 0, gc.stderr
    rig.assert_clean(ids)


def test_kill_9_while_the_workload_runs_then_gc(rig: Harness, net: Net) -> None:
    proc = rig.start("--rm", *rig.label, "busybox", "sleep", "60")
    deadline = time.monotonic() + 30
    while not rig.containers(running=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rig.containers(), "the workload never started"
    ids = rig.records()
    proc.kill()
    proc.wait()  # not communicate(): the orphaned docker CLI keeps its pipes open
    # The docker CLI child outlives cnirun; gc must stop the orphaned workload too.
    gc = rig.run("gc")
    assert gc.returncode == 0, gc.stderr
    deadline = time.monotonic() + 30
    while rig.containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    rig.assert_clean(ids)


def test_hanging_plugin_times_out_and_rolls_back(rig: Harness, net: Net) -> None:
    plugins = rig.plugin_dir
    plugins.mkdir()
    for name in os.listdir(PLUGIN_DIR):
        (plugins / name).symlink_to(os.path.join(PLUGIN_DIR, name))
    # Its sleep has a name of this test's own, to prove the timeout killed it.
    os.symlink("/bin/sleep", plugins / f"snooze{rig.tag}")
    (plugins / "hang").write_text(
        f'#!/bin/sh\n[ "$CNI_COMMAND" = ADD ] && "$(dirname "$0")/snooze{rig.tag}" 60\nexit 0\n'
    )
    (plugins / "hang").chmod(0o755)
    conf = json.loads(net.path.read_text())
    conf["plugins"].append({"type": "hang"})
    net.path.write_text(json.dumps(conf))
    marker = rig.tmp / "ran"
    run = rig.run(
        "--rm", "--cni-timeout", "2", "--cni-path", str(plugins),
        "-v", f"{rig.tmp}:/out", *rig.label, "busybox", "touch", "/out/ran",
    )  # fmt: skip
    assert run.returncode == 125
    assert "timed out" in run.stderr and "hang" in run.stderr
    assert_gone(f"snooze{rig.tag}")  # the plugin's process group was killed at the timeout
    assert not marker.exists(), "the workload ran although ADD failed"
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    rig.assert_clean([])


def test_infra_killed_from_outside_mid_run(rig: Harness, net: Net) -> None:
    proc = rig.start("--rm", *rig.label, "busybox", "sh", "-c", "sleep 3; exit 4")
    deadline = time.monotonic() + 30
    while not rig.containers(running=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    [sandbox_id] = rig.records()
    subprocess.run(
        ["docker", "rm", "-f", f"cnirun-infra-{sandbox_id}"], check=True, capture_output=True
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    rig.assert_clean([sandbox_id])


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_conflist_changed_between_add_and_del(rig: Harness, net: Net, change: str) -> None:
    port = free_port()
    started = rig.run("-d", "--rm", *rig.label, "-p", f"{port}:80", "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = rig.records()
    assert dports(port, "nat")
    path = net.path
    if change == "edit":
        conf = json.loads(path.read_text())
        conf["plugins"] = conf["plugins"][:1]  # portmap gone: only the cache knows about it
        path.write_text(json.dumps(conf))
    else:
        path.unlink()
    removed = rig.run("rm", "-f", started.stdout.strip())
    assert removed.returncode == 0, removed.stderr
    assert not dports(port, "nat")
    rig.assert_clean([sandbox_id])


def test_docker_unreachable_is_one_clear_line(rig: Harness, net: Net) -> None:
    run = rig.run("--rm", "busybox", "true", env=rig.env(DOCKER_HOST="unix:///nonexistent/x.sock"))
    assert run.returncode == 125
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Docker daemon" in lines[0] and "Traceback" not in run.raw_stderr
    rig.assert_clean(rig.records())


def test_twenty_parallel_runs_and_gc_racing(rig: Harness, net: Net) -> None:
    def one(_: int) -> Result:
        return rig.run(
            "--rm", *rig.label, "busybox", "sh", "-c", "ip -o -4 addr show eth0", timeout=180
        )

    gc_runs: list[Result] = []
    with ThreadPoolExecutor(max_workers=21) as pool:
        futures = [pool.submit(one, i) for i in range(20)]
        while not all(f.done() for f in futures):
            gc_runs.append(rig.run("gc", timeout=120))
        results = [f.result() for f in futures]
    failures = [r.stderr for r in results if r.returncode != 0]
    assert not failures, failures
    addresses = [r.stdout.split()[3] for r in results]
    assert len(set(addresses)) == 20, addresses
    assert all(g.returncode == 0 for g in gc_runs), [g.stderr for g in gc_runs]
    assert gc_runs, "gc never ran alongside the runs"
    rig.assert_clean([])


def test_default_network_on_an_empty_config_dir(rig: Harness, net: Net) -> None:
    from cnirun.netconf.builtin import DEFAULT_FILE

    # Same private dirs, but the network and bridge are the built-in default's (named ours).
    default = rig.default_network_env()
    name, bridge = default["CNIRUN_DEFAULT_NETWORK"], default["CNIRUN_DEFAULT_BRIDGE"]
    subnet = default["CNIRUN_DEFAULT_SUBNET"]
    gateway = str(ipaddress.ip_network(subnet).network_address + 1)
    net.path.unlink()
    assert list(rig.netconf_dir.iterdir()) == []
    script = f"ip -o -4 addr show eth0; ping -c1 -W2 {gateway}"
    notice = f'using the built-in default network "{name}"'
    saved = rig.netconf_dir / DEFAULT_FILE
    ids: list[str] = []
    try:
        runs = []
        for _ in range(2):
            run = rig.run(
                "--debug", "--rm", *rig.label, "busybox", "sh", "-c", script,
                env=rig.env(**default),
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            ids += sorted(set(re.findall(r"cnirun-infra-([0-9a-f]{32})", run.raw_stderr)))
            address = run.stdout.split()[3]
            assert ipaddress.ip_interface(address) in ipaddress.ip_network(subnet), run.stdout
            assert "1 packets received" in run.stdout, run.stdout
            runs.append(run)
        first, second = runs
        assert notice in first.stderr, first.stderr
        [line] = [x for x in first.stderr.splitlines() if notice in x]
        for part in (bridge, subnet, str(saved), "--network", str(rig.netconf_dir)):
            assert part in line, line
        assert notice not in second.stderr, second.stderr
        assert len(ids) == 2, ids  # one sandbox per run, seen in the debug log

        assert [p.name for p in rig.netconf_dir.iterdir() if not p.name.startswith(".")] == [
            DEFAULT_FILE
        ]
        conf = json.loads(saved.read_text())
        assert conf["name"] == name
        assert conf["cnirun"]["default"] is True
        main = conf["plugins"][0]
        assert main["type"] == "bridge" and main["bridge"] == bridge
        assert main["ipam"]["ranges"] == [[{"subnet": subnet, "gateway": gateway}]]
        rig.assert_clean(ids)
    finally:
        rig.cleanup()  # the bridge and host-local dir of the default network go too
    assert_no_leaks(ids, links=[bridge])
    assert not (Path(DEFAULT_IPAM_DIR) / name).exists()


def test_parallel_rm_of_the_same_sandbox_is_safe(rig: Harness, net: Net) -> None:
    for attempt in range(3):
        name = f"p{attempt}-{net.bridge}"
        started = rig.run("-d", "--rm", "--name", name, *rig.label, "busybox", "sleep", "60")
        assert started.returncode == 0, started.stderr
        [sandbox_id] = rig.records()
        removers = [rig.start("rm", "-f", name) for _ in range(2)]
        outcomes = [(p, *p.communicate(timeout=90)) for p in removers]
        for proc, out, err in outcomes:
            assert "Traceback" not in err, err
            if proc.returncode == 0:
                assert out.strip() == name, (out, err)
            else:
                assert proc.returncode == 125, (attempt, proc.returncode, err)
                # The other one's teardown may still be under way: its record is listed.
                line = f"cnirun: error: no such sandbox: {name} ("
                assert err.strip().startswith(line), (attempt, err)
        assert any(p.returncode == 0 for p, _, _ in outcomes), [e for _, _, e in outcomes]
        rig.assert_clean([sandbox_id])


def test_gc_of_another_state_dir_spares_a_sandbox_in_teardown(rig: Harness) -> None:
    """Another installation's gc cannot see this sandbox's record: while its teardown runs
    (infra already removed, a slow DEL in progress) that gc must leave its netns holder and
    cached attachments alone, or the bridge's DEL finds no veth and leaves its rules."""
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake", "fake": {"DEL": {"sleep": 3}}}])
    env = rig.env(CNI_PATH=cni_path, CNIRUN_STOP_TIMEOUT="1")
    proc = rig.start("--debug", "--rm", "busybox", "sh", "-c", "echo ready; exec sleep 30", env=env)
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: len(rig.fake_calls()) == 2, 15, "the slow DEL to start")
    # Same cache dir (as /var/lib/cni is, by default), another state dir.
    gc = rig.run("gc", env=rig.env(CNIRUN_STATE_DIR=str(rig.tmp / "other-state")))
    run = rig.finish(proc)
    [sandbox_id] = run.sandbox_ids
    assert gc.returncode == 0, gc.explain()
    assert sandbox_id not in gc.stdout, gc.stdout  # (it may reclaim others' leftovers)
    assert run.returncode in (137, 143), run.explain()
    assert "cnirun: warning" not in run.stderr, run.explain()
    rig.assert_clean(run.sandbox_ids)


def test_gc_of_another_state_dir_spares_a_sandbox_whose_infra_died(rig: Harness, net: Net) -> None:
    """The infra is gone but the workload still runs: to a gc that has no record of the
    sandbox, the workload container says it is someone's, so its netns holder stays."""
    proc = rig.start("--debug", "--rm", *rig.label, "busybox", "sh", "-c", "sleep 3; exit 4")
    wait_for(lambda: rig.containers(running=True), 30, "the workload to start")
    [sandbox_id] = rig.records()
    sh("docker", "rm", "-f", f"cnirun-infra-{sandbox_id}")
    gc = rig.run("gc", env=rig.env(CNIRUN_STATE_DIR=str(rig.tmp / "other-state")))
    assert gc.returncode == 0, gc.explain()
    assert sandbox_id not in gc.stdout, gc.stdout  # (it may reclaim others' leftovers)
    run = rig.finish(proc, timeout=60)
    assert run.returncode == 4, run.explain()
    rig.assert_clean([sandbox_id])

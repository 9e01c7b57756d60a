"""Sandboxes that outlive a command: -d, ps, inspect, stop, rm, gc, crash safety, concurrency.

Real Docker and real plugins. Each test has a private state dir, cache dir and bridge, and
ends by asserting that nothing of its own is left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.leakcheck import assert_no_leaks

PLUGINS = "/usr/lib/cni"


@dataclass
class Env:
    """A private cnirun installation: config dir, state dir, cache dir and one bridge network."""

    root: Path
    network: str
    bridge: str
    subnet: str

    @property
    def confdir(self) -> Path:
        return self.root / "net.d"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def environ(self, **extra: str) -> dict[str, str]:
        return dict(
            os.environ,
            NETCONFPATH=str(self.confdir),
            CNI_PATH=PLUGINS,
            CNIRUN_STATE_DIR=str(self.state_dir),
            CNIRUN_CACHE_DIR=str(self.cache_dir),
            **extra,
        )

    def cnirun(
        self, *args: str, timeout: float = 60, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cnirun", *args],
            env=self.environ(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cnirun", *args],
            env=self.environ(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def sandbox_ids(self) -> list[str]:
        directory = self.state_dir / "sandboxes"
        if not directory.exists():
            return []
        return [p.stem for p in directory.glob("*.json")]

    def labelled_containers(self, running: bool = False) -> list[str]:
        query = [
            "docker",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            f"label=io.cnirun.test={self.bridge}",
        ]
        query += ["--filter", "status=running"] if running else ["--all"]
        return subprocess.run(query, capture_output=True, text=True, check=True).stdout.split()

    def reservations(self) -> list[str]:
        directory = Path("/var/lib/cni/networks") / self.network
        if not directory.exists():
            return []
        return [p.name for p in directory.iterdir() if p.name[0].isdigit()]

    def assert_clean(self, ids: list[str]) -> None:
        leftovers = self.sandbox_ids()
        assert leftovers == [], f"sandbox records left: {leftovers}"
        assert self.reservations() == [], f"IP reservations left: {self.reservations()}"
        assert self.labelled_containers() == [], "workload containers left"
        assert_no_leaks(
            ids,
            bridges=[self.bridge],
            netns_names=[f"cnirun-{i}" for i in ids],
            cache_dir=str(self.cache_dir),
        )


def write_network(env: Env, version: str = "1.0.0") -> None:
    env.confdir.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": version,
        "name": env.network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": env.bridge,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": env.subnet}]]},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (env.confdir / f"10-{env.network}.conflist").write_text(json.dumps(conf))


_SUBNET = iter(range(10, 250))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:6]
    environment = Env(
        root=tmp_path,
        network=f"sbx{suffix}",
        bridge=f"sbx{suffix}",
        subnet=f"10.240.{next(_SUBNET)}.0/24",
    )
    write_network(environment)
    yield environment
    # Whatever a failed test left: its workloads first (gc leaves a detached sandbox alone while
    # its workload runs), then gc reclaims the sandboxes; then drop the bridge.
    for container in environment.labelled_containers():
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    environment.cnirun("gc")
    subprocess.run(["ip", "link", "del", environment.bridge], capture_output=True, check=False)
    # host-local keeps a per-network dir (lock, last reserved IP) that no DEL removes.
    shutil.rmtree(Path("/var/lib/cni/networks") / environment.network, ignore_errors=True)


def run_label(env: Env) -> list[str]:
    return ["--label", f"io.cnirun.test={env.bridge}"]


def test_detached_sandbox_lifecycle(env: Env) -> None:
    name = f"d-{env.bridge}"
    started = env.cnirun("-d", "--rm", "--name", name, *run_label(env), "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    workload_id = started.stdout.strip()
    assert len(workload_id) == 64
    [sandbox_id] = env.sandbox_ids()

    # The network is up by the time -d returns.
    ps = env.cnirun("ps", "--format", "json")
    rows = json.loads(ps.stdout)
    assert [r["name"] for r in rows] == [name]
    assert rows[0]["state"] == "running"
    assert rows[0]["networks"] == [env.network]
    address = rows[0]["addresses"][0]
    assert address.startswith(env.subnet.rsplit(".", 2)[0])
    table = env.cnirun("ps")
    assert name in table.stdout and "running" in table.stdout

    details = json.loads(env.cnirun("inspect", workload_id[:10]).stdout)[0]
    assert details["workloadId"] == workload_id
    assert details["netns"] == f"/run/netns/cnirun-{sandbox_id}"
    assert env.network in details["results"]
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
    assert f"{ip}\t{details['hostname']}" in sidecar.stdout.splitlines(), sidecar.stdout

    refused = env.cnirun("rm", name)
    assert refused.returncode == 125
    assert "rm -f" in refused.stderr
    removed = env.cnirun("rm", "-f", name)
    assert removed.returncode == 0, removed.stderr
    assert env.cnirun("ps", "-a", "--format", "json").stdout.strip() == "[]"
    env.assert_clean([sandbox_id])


def test_stop_tears_down(env: Env) -> None:
    name = f"s-{env.bridge}"
    started = env.cnirun("-d", "--name", name, *run_label(env), "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = env.sandbox_ids()
    stopped = env.cnirun("stop", name, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    # Without --rm the stopped workload stays, as with Docker; its network is gone.
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", name], capture_output=True, text=True
    )
    assert state.stdout.strip() == "exited"
    subprocess.run(["docker", "rm", name], capture_output=True, check=True)
    env.assert_clean([sandbox_id])


def test_exited_detached_workload_is_reclaimed_lazily(env: Env) -> None:
    started = env.cnirun("-d", "--rm", *run_label(env), "busybox", "sleep", "1")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = env.sandbox_ids()
    deadline = time.monotonic() + 30
    while env.labelled_containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    # The next cnirun command notices the workload is gone and tears the sandbox down.
    env.cnirun("ps")
    env.assert_clean([sandbox_id])


def test_exited_detached_workload_is_reclaimed_by_gc(env: Env) -> None:
    started = env.cnirun("-d", "--rm", *run_label(env), "busybox", "true")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = env.sandbox_ids()
    deadline = time.monotonic() + 30
    while env.labelled_containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    dry = env.cnirun("gc", "--dry-run")
    assert "would reclaim" in dry.stdout and sandbox_id in dry.stdout
    assert env.sandbox_ids() == [sandbox_id]  # a dry run changes nothing
    done = env.cnirun("gc")
    assert done.returncode == 0, done.stderr
    assert sandbox_id in done.stdout
    env.assert_clean([sandbox_id])


@pytest.mark.parametrize("point", ["record", "infra", "add", "teardown"])
def test_kill_9_during_a_run_then_gc_reclaims_everything(env: Env, point: str) -> None:
    run = env.cnirun("--rm", *run_label(env), "busybox", "true", CNIRUN_TEST_KILL_AT=point)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr)
    ids = env.sandbox_ids()
    assert len(ids) == 1
    gc = env.cnirun("gc")
    assert gc.returncode == 0, gc.stderr
    env.assert_clean(ids)


def test_kill_9_while_the_workload_runs_then_gc(env: Env) -> None:
    proc = env.popen("--rm", *run_label(env), "busybox", "sleep", "60")
    deadline = time.monotonic() + 30
    while not env.labelled_containers(running=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert env.labelled_containers(), "the workload never started"
    ids = env.sandbox_ids()
    proc.kill()
    proc.communicate()
    # The docker CLI child outlives cnirun; gc must stop the orphaned workload too.
    gc = env.cnirun("gc")
    assert gc.returncode == 0, gc.stderr
    deadline = time.monotonic() + 30
    while env.labelled_containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    env.assert_clean(ids)


def test_hanging_plugin_times_out_and_rolls_back(env: Env, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in os.listdir(PLUGINS):
        (plugins / name).symlink_to(os.path.join(PLUGINS, name))
    (plugins / "hang").write_text('#!/bin/sh\n[ "$CNI_COMMAND" = ADD ] && sleep 60\nexit 0\n')
    (plugins / "hang").chmod(0o755)
    conf = json.loads((env.confdir / f"10-{env.network}.conflist").read_text())
    conf["plugins"].append({"type": "hang"})
    (env.confdir / f"10-{env.network}.conflist").write_text(json.dumps(conf))
    marker = tmp_path / "ran"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "cnirun", "--rm", "--cni-timeout", "2", "--cni-path", str(plugins),
         "-v", f"{tmp_path}:/out", *run_label(env), "busybox", "touch", "/out/ran"],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 125
    assert "timed out" in run.stderr and "hang" in run.stderr
    assert time.monotonic() - started < 20
    assert not marker.exists(), "the workload ran although ADD failed"
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    env.assert_clean([])


def test_infra_killed_from_outside_mid_run(env: Env) -> None:
    proc = env.popen("--rm", *run_label(env), "busybox", "sh", "-c", "sleep 3; exit 4")
    deadline = time.monotonic() + 30
    while not env.labelled_containers(running=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    [sandbox_id] = env.sandbox_ids()
    subprocess.run(
        ["docker", "rm", "-f", f"cnirun-infra-{sandbox_id}"], check=True, capture_output=True
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    env.assert_clean([sandbox_id])


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_conflist_changed_between_add_and_del(env: Env, change: str) -> None:
    started = env.cnirun("-d", "--rm", *run_label(env), "-p", "18931:80", "busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    [sandbox_id] = env.sandbox_ids()
    assert (
        "18931"
        in subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    )
    path = env.confdir / f"10-{env.network}.conflist"
    if change == "edit":
        conf = json.loads(path.read_text())
        conf["plugins"] = conf["plugins"][:1]  # portmap gone: only the cache knows about it
        path.write_text(json.dumps(conf))
    else:
        path.unlink()
    removed = env.cnirun("rm", "-f", started.stdout.strip())
    assert removed.returncode == 0, removed.stderr
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert "18931" not in nat
    env.assert_clean([sandbox_id])


def test_docker_unreachable_is_one_clear_line(env: Env) -> None:
    run = env.cnirun("--rm", "busybox", "true", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert run.returncode == 125
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Docker daemon" in lines[0] and "Traceback" not in run.stderr
    env.assert_clean(env.sandbox_ids())


def test_twenty_parallel_runs_and_gc_racing(env: Env) -> None:
    def one(_: int) -> subprocess.CompletedProcess[str]:
        return env.cnirun(
            "--rm", *run_label(env), "busybox", "sh", "-c", "ip -o -4 addr show eth0", timeout=180
        )

    gc_runs: list[subprocess.CompletedProcess[str]] = []
    with ThreadPoolExecutor(max_workers=21) as pool:
        futures = [pool.submit(one, i) for i in range(20)]
        while not all(f.done() for f in futures):
            gc_runs.append(env.cnirun("gc", timeout=120))
        results = [f.result() for f in futures]
    failures = [r.stderr for r in results if r.returncode != 0]
    assert not failures, failures
    addresses = [r.stdout.split()[3] for r in results]
    assert len(set(addresses)) == 20, addresses
    assert all(g.returncode == 0 for g in gc_runs), [g.stderr for g in gc_runs]
    assert gc_runs, "gc never ran alongside the runs"
    env.assert_clean([])


def _free_test_subnet() -> str:
    """A random 10.241.N.0/24 that no host route covers (other runs may hold some)."""
    routes = subprocess.run(
        ["ip", "-o", "-4", "route", "show"], capture_output=True, text=True, check=True
    ).stdout
    taken = {line.split()[0] for line in routes.splitlines() if line.startswith("10.241.")}
    free = [f"10.241.{n}.0/24" for n in range(256) if f"10.241.{n}.0/24" not in taken]
    return free[int(uuid.uuid4().hex[:4], 16) % len(free)]


def test_default_network_on_an_empty_config_dir(env: Env) -> None:
    from cnirun.netconf.builtin import DEFAULT_FILE

    suffix = uuid.uuid4().hex[:6]
    subnet = _free_test_subnet()
    gateway = subnet.replace(".0/24", ".1")
    # Same private dirs as the fixture, but the network and bridge are the built-in default's.
    default = replace(env, network=f"dn{suffix}", bridge=f"dn{suffix}", subnet=subnet)
    (env.confdir / f"10-{env.network}.conflist").unlink()
    assert list(env.confdir.iterdir()) == []
    script = f"ip -o -4 addr show eth0; ping -c1 -W2 {gateway}"
    notice = f'using the built-in default network "{default.network}"'
    saved = env.confdir / DEFAULT_FILE
    ids: list[str] = []
    try:
        runs = []
        for _ in range(2):
            run = default.cnirun(
                "--debug", "--rm", *run_label(default), "busybox", "sh", "-c", script,
                CNIRUN_DEFAULT_NETWORK=default.network,
                CNIRUN_DEFAULT_BRIDGE=default.bridge,
                CNIRUN_DEFAULT_SUBNET=subnet,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            ids += sorted(set(re.findall(r"cnirun-infra-([0-9a-f]{32})", run.stderr)))
            address = run.stdout.split()[3]
            assert ipaddress.ip_interface(address) in ipaddress.ip_network(subnet), run.stdout
            assert "1 packets received" in run.stdout, run.stdout
            runs.append(run)
        first, second = runs
        assert notice in first.stderr, first.stderr
        [line] = [x for x in first.stderr.splitlines() if notice in x]
        for part in (default.bridge, subnet, str(saved), "--network", str(env.confdir)):
            assert part in line, line
        assert notice not in second.stderr, second.stderr
        assert len(ids) == 2, ids  # one sandbox per run, seen in the debug log

        assert [p.name for p in env.confdir.iterdir() if not p.name.startswith(".")] == [
            DEFAULT_FILE
        ]
        conf = json.loads(saved.read_text())
        assert conf["name"] == default.network
        assert conf["cnirun"]["default"] is True
        main = conf["plugins"][0]
        assert main["type"] == "bridge" and main["bridge"] == default.bridge
        assert main["ipam"]["ranges"] == [[{"subnet": subnet, "gateway": gateway}]]
        default.assert_clean(ids)
    finally:
        subprocess.run(["ip", "link", "del", default.bridge], capture_output=True, check=False)
        shutil.rmtree(Path("/var/lib/cni/networks") / default.network, ignore_errors=True)
    assert_no_leaks(ids, links=[default.bridge])
    assert not (Path("/var/lib/cni/networks") / default.network).exists()


def test_parallel_rm_of_the_same_sandbox_is_safe(env: Env) -> None:
    for attempt in range(3):
        name = f"p{attempt}-{env.bridge}"
        started = env.cnirun(
            "-d", "--rm", "--name", name, *run_label(env), "busybox", "sleep", "60"
        )
        assert started.returncode == 0, started.stderr
        [sandbox_id] = env.sandbox_ids()
        removers = [env.popen("rm", "-f", name) for _ in range(2)]
        outcomes = [(p, *p.communicate(timeout=90)) for p in removers]
        for proc, out, err in outcomes:
            assert "Traceback" not in err, err
            if proc.returncode == 0:
                assert out.strip() == name, (out, err)
            else:
                assert proc.returncode == 125, (attempt, proc.returncode, err)
                assert err.strip() == f"cnirun: error: no such sandbox: {name}", (attempt, err)
        assert any(p.returncode == 0 for p, _, _ in outcomes), [e for _, _, e in outcomes]
        env.assert_clean([sandbox_id])

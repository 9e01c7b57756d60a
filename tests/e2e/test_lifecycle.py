"""Sandboxes treated like Docker containers: pause, restart policies, stop/start, exited
workloads, detach keys, --sig-proxy=false. Real Docker and real plugins.

Marked `engines`: `make test-engines` runs these against Docker 26 and 28 too.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

from tests.e2e.harness import IMAGE, Harness, Net, sh, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

INET = re.compile(r"inet (\d+\.\d+\.\d+\.\d+)/")


def eth0_address(name: str) -> str:
    """The IPv4 address on the workload's eth0, seen from inside it ("" when it has none)."""
    shown = subprocess.run(
        ["docker", "exec", name, "ip", "-4", "addr", "show", "eth0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    found = INET.search(shown.stdout)
    return found.group(1) if found else ""


def state(name: str) -> str:
    return sh("docker", "inspect", "-f", "{{.State.Status}}", name).stdout.strip()


def ps_row(rig: Harness, name: str, *flags: str) -> dict[str, str] | None:
    """The `cnirun ps` row of the workload `name` (None when ps does not list it)."""
    listed = rig.run("ps", *flags, "--format", "{{json .}}")
    assert listed.returncode == 0, listed.explain()
    for line in listed.stdout.splitlines():
        row = json.loads(line)
        if row["Names"] == name:
            return dict(row)
    return None


def recorded_address(rig: Harness, name: str) -> str:
    details = json.loads(rig.run("inspect", name).stdout)[0]
    return str(details["addresses"][0].split("/")[0])


def detached(rig: Harness, *args: str) -> str:
    """Start `cnirun -d ARGS` with the test's label; return the workload's name."""
    name = rig.name()
    started = rig.run("-d", "--name", name, *rig.label, *args)
    assert started.returncode == 0, started.explain()
    return name


def remove(rig: Harness, name: str) -> None:
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()


@pytest.fixture
def net(rig: Harness) -> Net:
    return rig.network()


def test_a_paused_workload_keeps_its_network(rig: Harness, net: Net) -> None:
    name = detached(rig, IMAGE, "sleep", "300")
    address = recorded_address(rig, name)
    sh("docker", "pause", name)
    # Any cnirun command reconciles the sandboxes; a paused one is alive.
    other = rig.run("--rm", *rig.label, IMAGE, "true")
    assert other.returncode == 0, other.explain()
    row = ps_row(rig, name)
    assert row is not None and row["State"] == "paused" and "Paused" in row["Status"], row
    sh("docker", "unpause", name)
    assert eth0_address(name) == address
    remove(rig, name)
    rig.assert_clean()


def test_a_restart_policy_keeps_the_network_and_the_address(rig: Harness, net: Net) -> None:
    script = "ip -4 -o addr show eth0; sleep 1; exit 1"
    name = detached(rig, "--restart", "always", IMAGE, "sh", "-c", script)
    address = recorded_address(rig, name)
    seen: set[str] = set()

    def restarted_twice() -> bool:
        # cnirun commands while Docker restarts it: none may take the sandbox down.
        row = ps_row(rig, name, "-a")
        assert row is not None, "the restarting sandbox vanished"
        seen.add(row["State"])
        logs = sh("docker", "logs", name).stdout
        return len(INET.findall(logs)) >= 3

    wait_for(restarted_twice, 60, "three runs of the workload")
    addresses = INET.findall(sh("docker", "logs", name).stdout)
    assert set(addresses) == {address}, addresses
    assert int(sh("docker", "inspect", "-f", "{{.RestartCount}}", name).stdout) >= 2
    remove(rig, name)
    rig.assert_clean()


def test_docker_stop_then_docker_start_keeps_the_network(rig: Harness, net: Net) -> None:
    name = detached(rig, IMAGE, "sleep", "300")
    address = recorded_address(rig, name)
    sh("docker", "stop", "-t", "0", name)
    row = ps_row(rig, name, "-a")  # reconciles: an exited workload still has its sandbox
    assert row is not None and row["Status"].startswith("Exited (137)"), row
    assert ps_row(rig, name) is None  # as `docker ps`: only what is up
    sh("docker", "start", name)
    assert eth0_address(name) == address
    remove(rig, name)
    rig.assert_clean()


def test_cnirun_stop_start_restart_then_rm(rig: Harness, net: Net) -> None:
    name = detached(rig, IMAGE, "sleep", "300")
    address = recorded_address(rig, name)
    [sandbox] = rig.records()
    stopped = rig.run("stop", "-t", "0", name)
    assert stopped.returncode == 0 and stopped.stdout == f"{name}\n", stopped.explain()
    assert state(name) == "exited"
    assert rig.records() == [sandbox]
    started = rig.run("start", name)
    assert started.returncode == 0 and started.stdout == f"{name}\n", started.explain()
    assert state(name) == "running" and eth0_address(name) == address
    began = sh("docker", "inspect", "-f", "{{.State.StartedAt}}", name).stdout
    restarted = rig.run("restart", "-t", "0", name)
    assert restarted.returncode == 0 and restarted.stdout == f"{name}\n", restarted.explain()
    assert sh("docker", "inspect", "-f", "{{.State.StartedAt}}", name).stdout != began
    assert state(name) == "running" and eth0_address(name) == address
    assert rig.run("stop", "-t", "0", name).returncode == 0
    removed = rig.run("rm", name)  # a stopped sandbox needs no -f
    assert removed.returncode == 0, removed.explain()
    rig.assert_clean([sandbox])
    # The name is free again.
    again = rig.run("-d", "--rm", "--name", name, *rig.label, IMAGE, "sleep", "300")
    assert again.returncode == 0, again.explain()
    remove(rig, name)
    rig.assert_clean()


def test_an_exited_detached_workload_is_listed_until_removed(rig: Harness, net: Net) -> None:
    name = detached(rig, IMAGE, "sh", "-c", "exit 3")
    wait_for(lambda: state(name) == "exited", 30, "the workload to exit")
    row = ps_row(rig, name, "-a")
    assert row is not None and row["Status"].startswith("Exited (3)"), row
    assert row["State"] == "exited"
    refused = rig.run("-d", "--name", name, *rig.label, IMAGE, "true")
    assert refused.returncode == 125 and "is already in use" in refused.stderr
    removed = rig.run("rm", name)
    assert removed.returncode == 0, removed.explain()
    assert ps_row(rig, name, "-a") is None
    rig.assert_clean()


def test_rm_f_kills_at_once_and_stop_gives_the_grace_time(rig: Harness, net: Net) -> None:
    """`rm -f` is `docker rm -f` (SIGKILL, no SIGTERM first); `stop -t 0` sends the stop
    signal first. Docker's events tell which signals went."""
    since = sh("date", "+%s.%N").stdout.strip()
    first = detached(rig, IMAGE, "sleep", "300")
    second = detached(rig, IMAGE, "sleep", "300")
    remove(rig, first)
    assert rig.run("stop", "-t", "0", second).returncode == 0
    until = sh("date", "+%s.%N").stdout.strip()
    shown = "{{.Actor.Attributes.name}} {{.Actor.Attributes.signal}}"
    events = sh(
        "docker", "events", "--since", since, "--until", until,
        "--filter", "event=kill", "--format", shown,
    ).stdout.split("\n")  # fmt: skip
    assert f"{first} 9" in events and f"{first} 15" not in events, events
    assert f"{second} 15" in events, events
    remove(rig, second)
    rig.assert_clean()


def test_detach_keys_leave_the_sandbox_running(rig: Harness, net: Net) -> None:
    name = rig.name()
    term = rig.terminal("-it", "--name", name, *rig.label, IMAGE, "sh", TERM="xterm")
    try:
        term.expect(b"# ", 30)
        term.send(b"\x10\x11")  # Ctrl-P Ctrl-Q: docker's default detach keys
        assert term.exit_code() == 0, bytes(term.seen)
    finally:
        term.close()
    assert state(name) == "running"
    address = recorded_address(rig, name)
    assert address and eth0_address(name) == address
    row = ps_row(rig, name)
    assert row is not None and row["State"] == "running", row
    remove(rig, name)
    rig.assert_clean()


def test_sigterm_under_sig_proxy_false_leaves_the_workload_running(
    rig: Harness, net: Net
) -> None:
    """As with docker: the docker CLI ignores the signal, and the workload runs to its end.
    (cnirun used to kill it after its grace time, here 0.1 s.)"""
    name = rig.name()
    script = "echo ready; sleep 3; echo survived"
    env = rig.env(CNIRUN_STOP_TIMEOUT="0.1")
    argv = ("--sig-proxy=false", "--name", name, *rig.label, IMAGE, "sh", "-c", script)
    proc = rig.start(*argv, env=env)
    wait_for(lambda: "ready" in sh("docker", "logs", name, check=False).stdout, 30, "ready")
    proc.send_signal(signal.SIGTERM)
    ended = rig.finish(proc, timeout=60)
    assert ended.returncode == 0 and ended.stdout == "ready\nsurvived\n", ended.explain()
    sh("docker", "rm", name)
    rig.assert_clean()


def test_a_foreground_run_with_a_restart_policy_lives_on(rig: Harness, net: Net) -> None:
    name = rig.name()
    script = "ip -4 -o addr show eth0; sleep 1; exit 1"
    run = rig.run("--restart", "always", "--name", name, *rig.label, IMAGE, "sh", "-c", script)
    assert run.returncode == 1, run.explain()
    address = recorded_address(rig, name)
    wait_for(
        lambda: len(INET.findall(sh("docker", "logs", name).stdout)) >= 2, 60, "a restart"
    )
    assert set(INET.findall(sh("docker", "logs", name).stdout)) == {address}
    remove(rig, name)
    rig.assert_clean()


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.005, 0.01, 0.02, 0.05])
def test_sigterm_while_the_infra_is_created_leaves_no_container(
    rig: Harness, net: Net, delay: float
) -> None:
    """The signal is held until the engine has answered the create and the ID is recorded:
    a remove by name could come before the engine knows the name, and leave it "Created"."""
    proc = rig.start("--rm", *rig.label, IMAGE, "true", debug=True)
    assert proc.stderr is not None
    read = ""
    while "POST /containers/create" not in (line := proc.stderr.readline()):
        assert line, "cnirun ended before creating its infra"
        read += line
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc, read=read + line)
    assert run.returncode == 128 + signal.SIGTERM, run.explain()
    assert rig.infra_containers() == [], run.explain()
    rig.assert_clean()


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_a_damaged_record_never_costs_a_live_sandbox_its_network(
    rig: Harness, net: Net, how: str
) -> None:
    name = detached(rig, IMAGE, "sleep", "600")
    address = recorded_address(rig, name)
    [sandbox] = rig.records()
    record = rig.state_dir / "sandboxes" / f"{sandbox}.json"
    if how == "truncated":
        record.write_text(record.read_text()[:40])
    else:
        record.unlink()
    gc = rig.run("gc")
    assert eth0_address(name) == address, gc.explain()  # gc spared what is still in use
    # Its labels still tell of it: `ps -a` lists it, and `rm -f` takes it by name.
    row = ps_row(rig, name, "-a")
    assert row is not None and row["State"] == "damaged", row
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    assert state_gone(name)
    cleaned = rig.run("gc")
    assert cleaned.returncode == 0, cleaned.explain()
    rig.assert_clean([sandbox])


def state_gone(name: str) -> bool:
    return sh("docker", "inspect", name, check=False).returncode != 0

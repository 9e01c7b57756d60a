"""End-to-end tests of the main job, `cnirun [docker run flags] IMAGE [COMMAND...]`.

Every test runs the real CLI as a subprocess against the real Docker engine and the Debian
CNI plugins, with a private netconf, cache and state dir (tests/e2e/harness.py), and proves
afterwards that its sandboxes left nothing behind (containers, veths, reservations, cache,
netns, iptables).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.harness import (
    IMAGE,
    LABEL_SANDBOX,
    NETNS_DIR,
    PAUSE_IMAGE,
    Harness,
    Result,
    bridge_ports,
    docker_inspect,
    free_port,
    http_get,
    ipv4_of,
    one_error_line,
    read_line,
    sh,
    wait_for,
)
from tests.leakcheck import DEFAULT_IPAM_DIR

pytestmark = pytest.mark.e2e

# cnirun's own message when the stop timeout ($CNIRUN_STOP_TIMEOUT, 2 s here) runs out.
KILLED_AFTER_GRACE = re.compile(r"workload did not stop in 2(\.0)?s; killing it")


@pytest.fixture
def rig(rig: Harness) -> Harness:
    """The harness, with --debug on every run: the sandbox IDs come from the debug log."""
    rig.debug = True
    return rig


# The seed README's example, byte for byte (tabs included).
SEED_MYNET = """{
\t"cniVersion": "0.2.0",
\t"name": "mynet",
\t"type": "bridge",
\t"bridge": "cni0",
\t"isGateway": true,
\t"ipMasq": true,
\t"ipam": {
\t\t"type": "host-local",
\t\t"subnet": "10.22.0.0/16",
\t\t"routes": [
\t\t\t{ "dst": "0.0.0.0/0" }
\t\t]
\t}
}
"""
SEED_LOOPBACK = """{
\t"cniVersion": "0.2.0",
\t"type": "loopback"
}
"""


def only_sandbox(run: Result) -> str:
    ids = run.sandbox_ids
    assert len(ids) == 1, run.explain()
    return ids[0]


def assert_quiet(run: Result) -> None:
    """Success paths print no error or warning of cnirun's own."""
    assert "cnirun: error" not in run.stderr and "cnirun: warning" not in run.stderr, run.explain()


# -- the seed README example --------------------------------------------------------------


@pytest.mark.engines
def test_seed_readme_example(rig: Harness) -> None:
    """`cnirun --rm busybox ifconfig` with the seed's 10-mynet.conf and 99-loopback.conf."""
    rig.borrow_seed_bridge()
    (rig.netconf_dir / "10-mynet.conf").write_text(SEED_MYNET)
    (rig.netconf_dir / "99-loopback.conf").write_text(SEED_LOOPBACK)
    before = bridge_ports("cni0")
    run = rig.run("--rm", "busybox", "ifconfig")
    assert run.returncode == 0, run.explain()
    assert_quiet(run)
    sid = only_sandbox(run)
    blocks = {b.split()[0]: b for b in run.stdout.split("\n\n") if b.strip()}
    assert set(blocks) == {"eth0", "lo"}, run.stdout
    match = re.search(r"inet addr:(\S+)", blocks["eth0"])
    assert match, blocks["eth0"]
    assert ipaddress.IPv4Address(match[1]) in ipaddress.IPv4Network("10.22.0.0/16")
    assert "127.0.0.1" in blocks["lo"]
    # cni0 and the mynet IPAM dir are shared with other tests: check only what this run made.
    rig.assert_clean([sid], bridges=[])
    assert not (Path(DEFAULT_IPAM_DIR) / "mynet" / match[1]).exists()
    wait_for(lambda: bridge_ports("cni0") <= before, 5, "the run's veth to leave cni0")


# -- exit codes, I/O and arguments ----------------------------------------------------------


def test_exit_code_passthrough(rig: Harness) -> None:
    rig.network()
    run = rig.run("--rm", IMAGE, "sh", "-c", "exit 7")
    assert run.returncode == 7, run.explain()
    assert_quiet(run)
    missing = rig.run("--rm", IMAGE, f"no-such-command-{rig.tag}")
    assert missing.returncode == 127, missing.explain()
    assert "no-such-command" in missing.stderr
    rig.assert_clean([only_sandbox(run), only_sandbox(missing)])


def test_stdin_passes_through(rig: Harness) -> None:
    rig.network()
    run = rig.run("--rm", "-i", IMAGE, "cat", input="hi\n")
    assert run.returncode == 0, run.explain()
    assert run.stdout == "hi\n"
    rig.assert_clean([only_sandbox(run)])


def test_arguments_reach_the_workload_verbatim(rig: Harness) -> None:
    rig.network()
    words = ["a b", '"double"', "'single'", "*", "$HOME", "", "x\\ty", "--rm", "-it", "a;b|c"]
    run = rig.run("--rm", IMAGE, "printf", "[%s]\\n", *words)
    assert run.returncode == 0, run.explain()
    assert run.stdout.splitlines() == [f"[{w}]" for w in words]
    rig.assert_clean([only_sandbox(run)])


# -- re-homed docker flags -----------------------------------------------------------------


def test_hostname_dns_and_add_host(rig: Harness) -> None:
    net = rig.network()
    host = f"h{rig.tag}"
    dns = str(net.subnet.network_address + 53)
    extra_ip = str(net.subnet.network_address + 250)
    script = (
        "hostname; cat /etc/hostname; echo ---; cat /etc/resolv.conf; echo ---; "
        "cat /etc/hosts; echo ---; ip -4 -o addr show dev eth0"
    )
    run = rig.run(
        "--rm", "-h", host, "--dns", dns, "--dns-search", "one.test", "--dns-search",
        "two.test", "--dns-option", "ndots:3", "--add-host", f"db{rig.tag}:{extra_ip}",
        IMAGE, "sh", "-c", script,
    )  # fmt: skip
    assert run.returncode == 0, run.explain()
    assert_quiet(run)
    names, resolv, hosts, addr = run.stdout.split("---\n")
    assert names.split() == [host, host]
    assert f"nameserver {dns}" in resolv.splitlines()
    assert "search one.test two.test" in resolv.splitlines()
    assert "options ndots:3" in resolv.splitlines()
    assert f"{extra_ip}\tdb{rig.tag}" in hosts.splitlines()
    (ip,) = ipv4_of(addr, "eth0")
    assert ip.ip in net.subnet
    host_lines = [line.split() for line in hosts.splitlines()]
    assert [str(ip.ip), host] in host_lines, hosts
    rig.assert_clean([only_sandbox(run)])


def test_resolv_conf_takes_the_dns_of_the_cni_result(rig: Harness) -> None:
    """Without --dns, the DNS a plugin returns (bridge copies its config's `dns`) is used."""
    net = rig.network()
    path = net.path
    conf = json.loads(path.read_text())
    server = str(net.subnet.network_address + 1)
    conf["plugins"][0]["dns"] = {"nameservers": [server], "search": [f"cni{rig.tag}.test"]}
    path.write_text(json.dumps(conf))
    run = rig.run("--rm", IMAGE, "cat", "/etc/resolv.conf")
    assert run.returncode == 0, run.explain()
    lines = run.stdout.splitlines()
    assert f"nameserver {server}" in lines
    assert f"search cni{rig.tag}.test" in lines
    # An explicit --dns wins over the result's servers, and only over them.
    run = rig.run("--rm", "--dns", "10.9.9.9", IMAGE, "cat", "/etc/resolv.conf")
    assert run.returncode == 0, run.explain()
    assert run.stdout.splitlines() == ["nameserver 10.9.9.9", f"search cni{rig.tag}.test"]
    # And --dns-search only over its search domains.
    run = rig.run("--rm", "--dns-search", "user.test", IMAGE, "cat", "/etc/resolv.conf")
    assert run.returncode == 0, run.explain()
    assert run.stdout.splitlines() == [f"nameserver {server}", "search user.test"]
    rig.assert_clean(sorted(rig.sandbox_ids))


def host_nameservers() -> list[str]:
    """The host's usable resolvers (as Docker would copy them): no loopback addresses."""
    text = Path("/etc/resolv.conf").read_text()
    servers = [line.split()[1] for line in text.splitlines() if line.startswith("nameserver ")]
    return [s for s in servers if not ipaddress.ip_address(s.split("%")[0]).is_loopback]


def test_resolv_conf_and_hosts_by_default(rig: Harness) -> None:
    """With no flags and no DNS from CNI: the host's resolvers, Docker's /etc/hosts lines,
    the CNI address under the hostname, and `lo` up in the fresh namespace."""
    net = rig.network()
    script = "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; hostname; ip -o link"
    run = rig.run("--rm", IMAGE, "sh", "-c", script)
    assert run.returncode == 0, run.explain()
    resolv, hosts, rest = run.stdout.split("---\n")
    servers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")]
    assert servers == (host_nameservers() or ["8.8.8.8", "8.8.4.4"])
    lines = hosts.splitlines()
    assert lines[:2] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    hostname, links = rest.split("\n", 1)
    (address,) = [line.split("\t") for line in lines if line.endswith(f"\t{hostname}")]
    assert ipaddress.ip_address(address[0]) in net.subnet
    (lo,) = [line for line in links.splitlines() if ": lo:" in line]
    assert "UP" in lo.split("<")[1].split(">")[0].split(","), lo
    rig.assert_clean(sorted(rig.sandbox_ids))


def test_add_host_gateway_is_the_host_on_the_cni_network(rig: Harness) -> None:
    net = rig.network()
    run = rig.run("--rm", "--add-host", "gw:host-gateway", IMAGE, "grep", "gw$", "/etc/hosts")
    assert run.returncode == 0, run.explain()
    assert run.stdout == f"{net.gateway}\tgw\n"
    rig.assert_clean(sorted(rig.sandbox_ids))


def test_users_own_etc_mounts_win_and_read_only_applies(rig: Harness) -> None:
    """A user's -v over /etc/hosts replaces cnirun's file (as it does Docker's), and under
    --read-only cnirun's files are read-only too (as Docker's are)."""
    rig.network()
    mine = rig.tmp / "my-hosts"
    mine.write_text("10.1.2.3\tmine\n")
    script = "cat /etc/hosts; echo ---; echo x >> /etc/resolv.conf && echo writable"
    run = rig.run("--rm", "-v", f"{mine}:/etc/hosts:ro", IMAGE, "sh", "-c", script)
    assert run.returncode == 0, run.explain()
    assert run.stdout == "10.1.2.3\tmine\n---\nwritable\n"
    run = rig.run("--rm", "--read-only", IMAGE, "sh", "-c", "echo x >> /etc/hosts")
    assert run.returncode == 1, run.explain()
    assert "Read-only file system" in run.stderr
    # A state dir whose path -v cannot carry (a colon) is mounted with --mount instead.
    odd = rig.tmp / "state:a,b"
    run = rig.run("--rm", "-h", "odd", IMAGE, "grep", "odd$", "/etc/hosts",
                  env=rig.env(CNIRUN_STATE_DIR=str(odd)))  # fmt: skip
    assert run.returncode == 0 and run.stdout.endswith("\todd\n"), run.explain()
    assert list((odd / "sandboxes").iterdir()) == []
    rig.assert_clean(sorted(rig.sandbox_ids))


@pytest.mark.engines
def test_publish_with_portmap(rig: Harness) -> None:
    """`-p HOST:80` answers on 127.0.0.1 and the bridge gateway; SIGTERM ends it cleanly."""
    net = rig.network(portmap=True)
    port = free_port()
    proc = rig.start(
        "--rm", "-p", f"{port}:80", "--name", rig.name(), IMAGE,
        "sh", "-c", "echo hello > /tmp/index.html; httpd -f -p 80 -h /tmp",
        env=rig.env(CNIRUN_STOP_TIMEOUT="2"),
    )  # fmt: skip

    def answers(host: str) -> bool:
        with contextlib.suppress(OSError):
            return http_get(host, port) == "hello\n"
        return False

    wait_for(lambda: answers("127.0.0.1") or proc.poll() is not None, 20, "127.0.0.1 to answer")
    assert proc.poll() is None, rig.finish(proc).explain()
    assert answers(net.gateway)
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc)
    # httpd is PID 1 and ignores SIGTERM: cnirun kills it after CNIRUN_STOP_TIMEOUT.
    assert run.returncode in (137, 143), run.explain()
    if run.returncode == 137:
        assert KILLED_AFTER_GRACE.search(run.debug), run.explain()
    assert not answers("127.0.0.1")
    rig.assert_clean([only_sandbox(run)])


def test_publish_without_portmap_is_refused(rig: Harness) -> None:
    rig.network()
    run = rig.run("--rm", "-p", f"{free_port()}:80", IMAGE, "true")
    assert run.returncode == 125, run.explain()
    assert "portMappings" in run.stderr and "cnirun: error:" in run.stderr
    rig.assert_nothing_created(run)


# -- networks ------------------------------------------------------------------------------


def test_two_networks(rig: Harness) -> None:
    a, b = rig.network(), rig.network()
    script = "ip -4 -o addr; echo ---; hostname; echo ---; cat /etc/hosts"
    run = rig.run("--rm", "--network", a.name, "--net", b.name, IMAGE, "sh", "-c", script)
    assert run.returncode == 0, run.explain()
    assert_quiet(run)
    addrs, hostname, hosts = run.stdout.split("---\n")
    (eth0,) = ipv4_of(addrs, "eth0")
    (eth1,) = ipv4_of(addrs, "eth1")
    assert eth0.ip in a.subnet and eth1.ip in b.subnet
    # Docker's default hostname (the infra's short ID) maps to both CNI addresses.
    entries = [line.split() for line in hosts.splitlines()]
    assert [str(eth0.ip), hostname.strip()] in entries, hosts
    assert [str(eth1.ip), hostname.strip()] in entries, hosts
    # ADD in the order given, DEL in reverse.
    calls = re.findall(r"CNI_COMMAND=(ADD|DEL) .*?CNI_IFNAME=(eth\d)", run.debug)
    assert calls == [("ADD", "eth0"), ("ADD", "eth1"), ("DEL", "eth1"), ("DEL", "eth0")]
    rig.assert_clean([only_sandbox(run)])


def test_network_host_and_none_bypass_cni(rig: Harness) -> None:
    # No config at all in NETCONFPATH: plain Docker networking needs none.
    none = rig.run("--rm", "--network", "none", IMAGE, "ip", "-o", "link")
    assert none.returncode == 0, none.explain()
    assert [line.split()[1] for line in none.stdout.splitlines()] == ["lo:"]
    host = rig.run("--rm", "--network", "host", IMAGE, "hostname")
    assert host.returncode == 0, host.explain()
    assert host.stdout.strip() == socket.gethostname()
    for run in (none, host):
        assert run.sandbox_ids == [] and "CNI_COMMAND" not in run.debug, run.explain()
    rig.assert_clean([])


def test_unreachable_docker_creates_nothing(rig: Harness) -> None:
    rig.network()
    env = rig.env(DOCKER_HOST=f"unix://{rig.tmp}/no-docker.sock")
    run = rig.run("--rm", IMAGE, "true", env=env)
    assert run.returncode == 125, run.explain()
    assert one_error_line(run.stderr) == (
        f"cnirun: error: Cannot connect to the Docker daemon at unix://{rig.tmp}/no-docker.sock."
        " Is the docker daemon running?"
    ), run.explain()
    rig.assert_nothing_created(run)


# -- the infra container and the held netns ------------------------------------------------


def test_infra_is_paused_on_net_none_and_netns_is_held(rig: Harness) -> None:
    net = rig.network()
    name = rig.name()
    proc = rig.start("--rm", "--name", name, IMAGE, "sh", "-c", "echo ready; sleep 30")
    assert read_line(proc) == "ready"
    sid = rig.workload_sandbox(name)
    infra = docker_inspect(f"cnirun-infra-{sid}")
    assert infra["HostConfig"]["NetworkMode"] == "none"
    # No Docker network sandbox (the fast path): runc made its netns, so Docker wrote no files.
    assert infra["Config"]["NetworkDisabled"] is True
    assert infra["HostsPath"] == infra["ResolvConfPath"] == ""
    assert infra["Config"]["Image"] == PAUSE_IMAGE
    assert infra["Config"]["Labels"][LABEL_SANDBOX] == sid
    assert infra["State"]["Running"]
    workload = docker_inspect(name)
    assert workload["HostConfig"]["NetworkMode"] == f"container:{infra['Id']}"
    holder = Path(NETNS_DIR) / f"cnirun-{sid}"
    pid = infra["State"]["Pid"]
    assert os.stat(holder).st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino
    assert os.stat(holder).st_ino != os.stat("/proc/self/ns/net").st_ino
    # The workload's hosts and resolv.conf are cnirun's, bind-mounted from the sandbox's dir.
    files = rig.state_dir / "sandboxes" / f"{sid}.etc"
    mounts = {m["Destination"]: m for m in workload["Mounts"]}
    for file in ("hosts", "resolv.conf"):
        mount = mounts[f"/etc/{file}"]
        assert (mount["Type"], mount["Source"], mount["RW"]) == ("bind", str(files / file), True)
    (ip,) = ipv4_of(sh("ip", "-n", holder.name, "-4", "-o", "addr").stdout, "eth0")
    assert ip.ip in net.subnet
    assert (rig.state_dir / "sandboxes" / f"{sid}.json").is_file()
    # Scenario 43(c): the infra dies under the workload; the held netns keeps DEL working.
    sh("docker", "rm", "-f", infra["Id"])
    sh("docker", "kill", name)
    run = rig.finish(proc)
    assert run.returncode == 137, run.explain()
    assert "cnirun: warning" not in run.stderr, run.explain()
    rig.assert_clean([sid])


# -- ADD failure rollback ------------------------------------------------------------------


def test_missing_plugin_is_caught_before_anything_is_created(rig: Harness) -> None:
    a = rig.network()
    broken = {"cniVersion": "1.0.0", "name": rig.netname(), "type": f"nope{rig.tag}"}
    (rig.netconf_dir / "20-broken.conf").write_text(json.dumps(broken))
    run = rig.run("--rm", "--network", a.name, "--network", broken["name"], IMAGE, "true")
    assert run.returncode == 125, run.explain()
    assert f'failed to find plugin "nope{rig.tag}"' in run.stderr
    rig.assert_nothing_created(run)


def marker_args(rig: Harness) -> tuple[Path, list[str]]:
    """Workload args that would leave a marker file in a bind-mounted dir if they ever ran."""
    mark = rig.tmp / "mark"
    mark.mkdir()
    return mark / "ran", ["-v", f"{mark}:/mark", IMAGE, "touch", "/mark/ran"]


def test_add_failure_mid_chain_rolls_back(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake", "fake": {"ADD": {"fail": f"fake says no {rig.tag}"}}}])
    marker, args = marker_args(rig)
    run = rig.run("--rm", *args, env=rig.env(CNI_PATH=cni_path))
    assert run.returncode == 125, run.explain()
    assert f"fake says no {rig.tag}" in run.stderr
    assert not marker.exists(), "the workload ran although ADD failed"
    sid = only_sandbox(run)
    calls = [(c["cmd"], c["cid"]) for c in rig.fake_calls()]
    assert calls[0] == ("ADD", f"cnirun-{sid}") and ("DEL", f"cnirun-{sid}") in calls
    # The bridge ADD succeeded first, so its DEL must have run too.
    assert "CNI_COMMAND=DEL" in run.debug and "/bridge" in run.debug
    rig.assert_clean([sid])


def test_add_failure_on_second_network_rolls_back_the_first(rig: Harness) -> None:
    a = rig.network()
    b = rig.network()
    only = str(b.subnet.network_address + 10)
    b_conf = b.path
    conf = json.loads(b_conf.read_text())
    conf["plugins"][0]["ipam"].update(rangeStart=only, rangeEnd=only)
    b_conf.write_text(json.dumps(conf))
    # Exhaust b's one-address range with a reservation held by someone else.
    ipam = Path(DEFAULT_IPAM_DIR) / b.name
    ipam.mkdir(parents=True, exist_ok=True)
    taken = ipam / only
    taken.write_text(f"someone-else-{rig.tag}\r\neth0")
    rig.planted.append(taken)
    marker, args = marker_args(rig)
    run = rig.run("--rm", "--network", a.name, "--network", b.name, *args)
    assert run.returncode == 125, run.explain()
    assert "no IP addresses available" in run.stderr, run.explain()
    assert b.name in run.stderr
    assert not marker.exists(), "the workload ran although ADD failed"
    assert taken.read_bytes() == f"someone-else-{rig.tag}\r\neth0".encode()  # not ours: untouched
    rig.assert_clean([only_sandbox(run)])


# -- signals -------------------------------------------------------------------------------

TRAPPING = (
    'trap "exit 143" TERM; trap "exit 130" INT; trap "exit 129" HUP; echo ready; sleep 30 & wait'
)


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_mid_run_stops_workload_and_tears_down(rig: Harness, signum: int, code: int) -> None:
    rig.network()
    proc = rig.start("--rm", "--name", rig.name(), IMAGE, "sh", "-c", TRAPPING)
    assert read_line(proc) == "ready"
    proc.send_signal(signum)
    run = rig.finish(proc)
    assert run.returncode == code, run.explain()
    assert "cnirun: warning" not in run.stderr, run.explain()
    rig.assert_clean([only_sandbox(run)])


def test_sigterm_to_a_workload_ignoring_it_escalates_to_kill(rig: Harness) -> None:
    rig.network()
    env = rig.env(CNIRUN_STOP_TIMEOUT="2")
    proc = rig.start(
        "--rm", "--name", rig.name(), IMAGE, "sh", "-c", "echo ready; exec sleep 30", env=env
    )
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc)
    assert run.returncode in (137, 143), run.explain()
    if run.returncode == 137:  # killed: by cnirun once CNIRUN_STOP_TIMEOUT (2 s) ran out
        assert KILLED_AFTER_GRACE.search(run.debug), "the stop timeout was not honoured"
    rig.assert_clean([only_sandbox(run)])


@pytest.mark.parametrize("signals", [1, 2])
def test_signal_during_setup_rolls_back(rig: Harness, signals: int) -> None:
    """A signal during ADD: the first lets the ADD finish, a second aborts it; both roll back."""
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake", "fake": {"ADD": {"sleep": 3, "log_end": True}}}])
    marker, args = marker_args(rig)
    proc = rig.start("--rm", *args, env=rig.env(CNI_PATH=cni_path))
    wait_for(lambda: rig.fake_calls() or proc.poll() is not None, 20, "the slow ADD to start")
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    run = rig.finish(proc)
    assert run.returncode == 143, run.explain()
    # The fake logs the end of its 3 s ADD: only a plugin that was not killed gets there.
    ended = [e["end"] for e in rig.fake_log_entries() if "end" in e]
    assert ended == ([] if signals == 2 else ["ADD"]), (ended, run.explain())
    assert not marker.exists(), "the workload ran although setup was interrupted"
    sid = only_sandbox(run)
    assert [c["cmd"] for c in rig.fake_calls()] == ["ADD", "DEL"]
    rig.assert_clean([sid])


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2])
def test_sigterm_while_the_workload_starts(rig: Harness, delay: float) -> None:
    """A SIGTERM just as the docker CLI starts: whatever it had created is gone afterwards."""
    rig.network()
    name = rig.name()
    env = rig.env(CNIRUN_STOP_TIMEOUT="2")  # the trap may not be set yet: then a kill ends it
    proc = rig.start("--rm", "--name", name, IMAGE, "sh", "-c", TRAPPING, env=env)
    assert proc.stderr is not None
    read = ""
    while "CNI_COMMAND=ADD" not in (line := proc.stderr.readline()):
        assert line, "cnirun ended before its ADD"
        read += line
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc, read=read + line)
    assert run.returncode in (143, 137), run.explain()
    assert "cnirun: warning" not in run.stderr, run.explain()
    rig.assert_clean([only_sandbox(run)])


def test_signals_during_teardown_do_not_abort_it(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake", "fake": {"DEL": {"sleep": 1.5}}}])
    proc = rig.start("--rm", IMAGE, "sh", "-c", TRAPPING, env=rig.env(CNI_PATH=cni_path))
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: len(rig.fake_calls()) == 2, 15, "the slow DEL to start")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc.send_signal(signum)
        time.sleep(0.1)
    run = rig.finish(proc)
    assert run.returncode == 143, run.explain()
    assert "finishing teardown first" in run.stderr, run.explain()
    assert "cnirun: warning" not in run.stderr, run.explain()
    assert [c["cmd"] for c in rig.fake_calls()] == ["ADD", "DEL"]
    calls = re.findall(r"plugin \S+/([\w-]+) CNI_COMMAND=(\w+)", run.debug)
    assert calls == [("bridge", "ADD"), ("fake", "ADD"), ("fake", "DEL"), ("bridge", "DEL")]
    rig.assert_clean([only_sandbox(run)])


def test_teardown_starts_when_the_workload_dies(rig: Harness) -> None:
    """DEL starts at the workload container's `die` event, not when its docker CLI exits (which
    waits for --rm's removal): here behind a docker CLI that lingers 3 s after its container."""
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake"}])
    shim = rig.tmp / "bin"
    shim.mkdir()
    real = shutil.which("docker")
    # The shim notes in the fake plugin's log when its `docker run` is about to exit.
    (shim / "docker").write_text(
        f'#!/bin/sh\n"{real}" "$@"\nrc=$?\n'
        '[ "$1" = run ] && sleep 3 && echo \'{"shim": "docker run exits"}\' >> "$FAKE_LOG"\n'
        "exit $rc\n"
    )
    (shim / "docker").chmod(0o755)
    env = rig.env(CNI_PATH=cni_path, PATH=f"{shim}:{os.environ['PATH']}")
    run = rig.run("--rm", IMAGE, "sh", "-c", "exit 3", env=env)
    assert run.returncode == 3, run.explain()
    assert "the workload died: tearing down" in run.debug, run.explain()
    log = rig.fake_log_entries()
    (delete,) = [i for i, e in enumerate(log) if e.get("env", {}).get("CNI_COMMAND") == "DEL"]
    (cli_exit,) = [i for i, e in enumerate(log) if e.get("shim") == "docker run exits"]
    assert delete < cli_exit, log  # DEL ran while the docker CLI still lingered
    rig.assert_clean(sorted(rig.sandbox_ids))
    # A docker CLI that fails before any container runs: the teardown after it does it all.
    # (A flag value only docker checks: a missing image under --pull=never is now refused
    # before anything is created.)
    run = rig.run("--rm", "--memory", "bogus", IMAGE, "true", env=env)
    assert run.returncode == 125, run.explain()
    assert "the workload died" not in run.debug, run.explain()
    assert [c["cmd"] for c in rig.fake_calls()] == ["ADD", "DEL", "ADD", "DEL"]
    rig.assert_clean(sorted(rig.sandbox_ids))


def test_sigterm_with_plain_docker_networking(rig: Harness) -> None:
    """`--network none` is plain `docker run`: a SIGTERM still reaches the workload."""
    name = rig.name()
    proc = rig.start("--rm", "--network", "none", "--name", name, IMAGE, "sh", "-c", TRAPPING)
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc)
    assert run.returncode == 143, run.explain()
    wait_for(lambda: not rig.leaks(), 5, "the workload container to be removed")


# -- an interactive session ----------------------------------------------------------------


def test_interactive_tty_session(rig: Harness) -> None:
    rig.network()
    name = rig.name()
    term = rig.terminal("--rm", "-it", "--name", name, IMAGE, "sh", TERM="xterm")
    try:
        term.expect(b"# ", 30)
        sid = rig.workload_sandbox(name)
        term.send(b"echo $((6*7))\r")
        term.expect(b"42\r\n")
        term.send(b"exit 3\r")
        assert term.exit_code() == 3, bytes(term.seen)
    finally:
        term.close()
    rig.assert_clean([sid])


def test_ctrl_c_in_a_terminal_without_tty(rig: Harness) -> None:
    """Ctrl-C reaches cnirun and the docker CLI together; the workload gets one SIGINT."""
    rig.network()
    name = rig.name()
    script = 'n=0; trap "n=$((n+1))" INT; echo ready; sleep 2 & wait; echo "ints=$n"; exit 5'
    term = rig.terminal("--rm", "--name", name, IMAGE, "sh", "-c", script, TERM="xterm")
    try:
        term.expect(b"ready", 30)
        sid = rig.workload_sandbox(name)
        term.send(b"\x03")
        code = term.exit_code()
    finally:
        term.close()
    assert code == 5 and b"ints=1" in term.seen, bytes(term.seen)
    rig.assert_clean([sid])

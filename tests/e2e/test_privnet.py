"""End-to-end tests of `cnirun priv-net-run` with the real plugins (root, no Docker needed).

Each test gets a private config dir and cache dir, bridges named `cnrt<tag>N` and random
10.252.x.0/24 subnets no host route overlaps. The `plab` fixture proves, after every test, that
no netns, lock, cache entry, reservation, iptables rule or bridge port of the test is left,
then deletes the bridges (the bridge plugin never does) and checks that they are gone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnirun import privnet
from tests.leakcheck import DEFAULT_IPAM_DIR, NETNS_DIR, assert_no_leaks

pytestmark = pytest.mark.e2e

PLUGIN_DIR = "/usr/lib/cni"
PRIVNET_RE = re.compile(r"cnirun-privnet-[0-9a-f]{16}")


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host routes or holds an address in."""
    nets = []
    for argv in (["ip", "-4", "-o", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
        for word in sh(*argv).stdout.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit() and "." in word:
                    nets.append(ipaddress.IPv4Network(word, strict=False))
    return nets


def privnet_entries() -> set[str]:
    """priv-net-run's netns holders and session locks that exist right now."""
    names = {n for n in os.listdir(NETNS_DIR) if n.startswith(privnet.NETNS_PREFIX)}
    with contextlib.suppress(FileNotFoundError):
        names |= {f"lock:{n}" for n in os.listdir(privnet.LOCK_DIR)}
    return names


class PrivLab:
    """Private dirs, unique names, the `cnirun` command, and everything to clean afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = secrets.token_hex(3)
        self.netconf = tmp / "net.d"
        self.cache = tmp / "cache"
        self.netconf.mkdir()
        self.cache.mkdir()
        self.env = dict(os.environ)
        self.env.update(
            NETCONFPATH=str(self.netconf), CNIRUN_CACHE_DIR=str(self.cache), CNI_PATH=PLUGIN_DIR
        )
        for var in ("CNIRUN_DEFAULT_NETWORK", "CNIRUN_DEFAULT_BRIDGE", "CNIRUN_DEFAULT_SUBNET"):
            self.env.pop(var, None)
        self.bridges: list[str] = []
        self.links: list[str] = []
        self.netnames: list[str] = []
        self.subnets: list[ipaddress.IPv4Network] = []
        self.ids: set[str] = set()
        self.peer_netns: list[str] = []
        self.before = privnet_entries()

    # -- names ----------------------------------------------------------------------------

    def bridge(self) -> str:
        self.bridges.append(f"cnrt{self.tag}{len(self.bridges)}")
        return self.bridges[-1]

    def netname(self) -> str:
        self.netnames.append(f"pnr-{self.tag}-{len(self.netnames)}")
        return self.netnames[-1]

    def subnet(self) -> ipaddress.IPv4Network:
        taken = host_networks() + self.subnets
        for _ in range(200):
            net = ipaddress.IPv4Network(f"10.252.{secrets.randbelow(254) + 1}.0/24")
            if not any(net.overlaps(t) for t in taken):
                self.subnets.append(net)
                return net
        raise AssertionError("no free 10.252.x.0/24 subnet on this host")

    def veth_pair(self) -> tuple[str, str]:
        a, b = f"cnrv{self.tag}{len(self.links)}a", f"cnrv{self.tag}{len(self.links)}b"
        self.links += [a, b]
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "up")
        return a, b

    def peer_namespace(self) -> str:
        name = f"cnirun-test-{self.tag}-peer{len(self.peer_netns)}"
        sh("ip", "netns", "add", name)
        self.peer_netns.append(name)
        return name

    # -- configs and commands ---------------------------------------------------------------

    def bridge_net(self, **ipam: Any) -> tuple[str, ipaddress.IPv4Network]:
        """A bridge network (with masquerade and firewall) in the config dir."""
        name, subnet = self.netname(), self.subnet()
        ipam = ipam or {"subnet": str(subnet)}
        conf = {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge(),
                    "isGateway": True,
                    "ipMasq": True,
                    "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], **ipam},
                },
                {"type": "firewall"},
            ],
        }
        (self.netconf / f"{name}.conflist").write_text(json.dumps(conf))
        return name, subnet

    def cnirun(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "cnirun", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if "priv-net-run" in args:  # its own netns names (doctor lists others' too)
            self.ids.update(PRIVNET_RE.findall(res.stdout + res.stderr))
        return res

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cnirun", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # -- leaks and cleanup ------------------------------------------------------------------

    def own_leaks(self) -> list[str]:
        """What cnirun should have released (checked before the test's own cleanup)."""
        leaks = [f"{e} is still there" for e in sorted(privnet_entries() - self.before)]
        results = self.cache / "results"
        if results.is_dir():
            leaks += [f"cache file {n}" for n in sorted(os.listdir(results))]
        for name in self.netnames:
            state = Path(DEFAULT_IPAM_DIR) / name
            if state.is_dir():
                held = [n for n in os.listdir(state) if n[0].isdigit() or ":" in n]
                leaks += [f"reservation {state / n}" for n in held]
        # The firewall plugin's rules name only addresses, never the container ID.
        prefixes = [str(net.network_address).rsplit(".", 1)[0] + "." for net in self.subnets]
        for table in ("filter", "nat"):
            for line in sh("iptables-save", "-t", table).stdout.splitlines():
                if any(p in line for p in prefixes):
                    leaks.append(f"iptables -t {table}: {line}")
        return leaks

    def cleanup(self) -> None:
        for name in self.peer_netns:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        for link in self.links + self.bridges:
            if os.path.exists(f"/sys/class/net/{link}"):
                subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for name in self.netnames:
            shutil.rmtree(Path(DEFAULT_IPAM_DIR) / name, ignore_errors=True)


def plab_session(tmp_path: Path) -> Iterator[PrivLab]:
    """A PrivLab; afterwards: nothing of the test left, before and after its own cleanup."""
    lab = PrivLab(tmp_path)
    try:
        yield lab
        leaks = lab.own_leaks()
        assert not leaks, "cnirun left behind:\n  " + "\n  ".join(leaks)
        assert_no_leaks(
            sorted(lab.ids) + lab.netnames,
            bridges=lab.bridges,
            netns_names=sorted(lab.ids),
            cache_dir=lab.cache,
        )
    finally:
        lab.cleanup()
    assert_no_leaks(
        sorted(lab.ids),
        netns_names=lab.peer_netns,
        cache_dir=lab.cache,
        links=lab.bridges + lab.links,
    )


@pytest.fixture
def plab(tmp_path: Path) -> Iterator[PrivLab]:
    yield from plab_session(tmp_path)


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnirun: error: "), stderr
    return lines[0]


# -- the default network --------------------------------------------------------------------


def test_default_network_on_an_empty_config_dir(plab: PrivLab) -> None:
    name, bridge, subnet = plab.netname(), plab.bridge(), plab.subnet()
    plab.env.update(
        CNIRUN_DEFAULT_NETWORK=name, CNIRUN_DEFAULT_BRIDGE=bridge, CNIRUN_DEFAULT_SUBNET=str(subnet)
    )
    gateway = str(subnet.network_address + 1)
    script = f"ip netns identify; busybox ping -c1 -W3 {gateway}"
    res = plab.cnirun("priv-net-run", "--", "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    assert "1 packets received" in res.stdout
    assert res.stderr == (
        f'cnirun: using the built-in default network "{name}" (bridge {bridge}, subnet {subnet}), '
        f"saved as {plab.netconf}/zz-cnirun-default.conflist; choose another with --network "
        f"NAME or by adding a network config to {plab.netconf}\n"
    )
    saved = json.loads((plab.netconf / "zz-cnirun-default.conflist").read_text())
    assert saved["cnirun"]["default"] is True
    assert [p["type"] for p in saved["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    assert saved["cniVersion"] == "1.0.0"  # the newest Debian's plugins all support

    # The second run reuses it quietly; inspect shows it, and it is removable.
    res = plab.cnirun("priv-net-run", "busybox", "ping", "-c1", "-W3", gateway)
    assert (res.returncode, res.stderr) == (0, "")
    res = plab.cnirun("network", "inspect", name)
    assert res.returncode == 0, res.stderr
    [info] = json.loads(res.stdout)
    assert info["builtinDefault"] and info["default"] and info["attachments"] == []
    assert all("error" not in p for p in info["plugins"])
    res = plab.cnirun("network", "rm", name)
    assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.stderr
    assert os.listdir(plab.netconf) == [".cnirun.lock"]
    assert not os.path.exists(f"/sys/class/net/{bridge}")  # idle, so removed with it


# -- addresses and exit codes ---------------------------------------------------------------


def test_priv_net_run_shows_the_cni_addresses_of_each_network(plab: PrivLab) -> None:
    first, net1 = plab.bridge_net()
    second, net2 = plab.bridge_net()
    script = "ip netns identify; ip -4 -o addr show; ip route"
    res = plab.cnirun("priv-net-run", "--network", first, "--network", second, "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert PRIVNET_RE.fullmatch(lines[0])
    addrs = {f[1]: ipaddress.ip_interface(f[3]) for f in (ln.split() for ln in lines if ": " in ln)}
    assert addrs["eth0"] in net1 and addrs["eth0"].network == net1
    assert addrs["eth1"] in net2 and addrs["eth1"].network == net2
    assert str(addrs["lo"]) == "127.0.0.1/8"
    assert f"default via {net1.network_address + 1} dev eth0" in res.stdout


@pytest.mark.parametrize(
    ("argv", "code", "stderr"),
    [
        (["sh", "-c", "exit 7"], 7, ""),
        (["sh", "-c", "echo oops >&2; exit 0"], 0, "oops\n"),
        (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM, ""),
        (["/nonexistent/cmd"], 127, "cnirun: /nonexistent/cmd: command not found\n"),
        (["{tmp}/noexec"], 126, "cnirun: {tmp}/noexec: permission denied\n"),
        (["{tmp}/garbage"], 126, "cnirun: {tmp}/garbage: Exec format error\n"),
    ],
)
def test_the_command_status_is_passed_through(
    plab: PrivLab, argv: list[str], code: int, stderr: str
) -> None:
    (plab.tmp / "noexec").write_text("#!/bin/sh\n")
    (plab.tmp / "garbage").write_bytes(b"\x00\x01 not a program")
    (plab.tmp / "garbage").chmod(0o755)
    name, _ = plab.bridge_net()
    argv = [a.format(tmp=plab.tmp) for a in argv]
    res = plab.cnirun("priv-net-run", "--network", name, "--", *argv)
    assert (res.returncode, res.stderr) == (code, stderr.format(tmp=plab.tmp))


def test_stdin_is_the_callers(plab: PrivLab) -> None:
    name, _ = plab.bridge_net()
    res = subprocess.run(
        [sys.executable, "-m", "cnirun", "priv-net-run", "--network", name, "cat"],
        env=plab.env,
        input="hello from stdin\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (res.returncode, res.stdout) == (0, "hello from stdin\n"), res.stderr


# -- teardown on signals and failures -------------------------------------------------------


def read_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """The first line of output (call once: later lines may already sit in the buffer)."""
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from {proc.args!r} within {timeout}s"
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_is_forwarded_and_everything_torn_down(plab: PrivLab, signum: int) -> None:
    name, _ = plab.bridge_net()
    script = 'echo "ready $(ip netns identify)"; exec sleep 30'
    proc = plab.popen("priv-net-run", "--network", name, "sh", "-c", script)
    try:
        ready, netns = read_line(proc).split()
        plab.ids.add(netns)
        assert ready == "ready"
        assert privnet.is_live(netns)
        assert os.path.exists(f"{NETNS_DIR}/{netns}")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert err == ""
    assert not os.path.exists(f"{NETNS_DIR}/{netns}")
    assert not privnet.is_live(netns)


def test_more_signals_during_teardown_do_not_abort_it(plab: PrivLab) -> None:
    name, _ = plab.bridge_net()
    other, _ = plab.bridge_net()
    script = "echo ready; exec sleep 30"
    proc = plab.popen("priv-net-run", "--network", name, "--network", other, "sh", "-c", script)
    try:
        assert read_line(proc) == "ready"
        proc.send_signal(signal.SIGTERM)
        for _ in range(15):  # an impatient user hammering Ctrl-C while it cleans up
            time.sleep(0.02)
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert all("finishing teardown first" in line for line in err.splitlines()), err


def slow_plugin(plab: PrivLab, delay: float) -> tuple[Path, Path]:
    """A chained plugin whose ADD signals it started, sleeps, then passes prevResult on."""
    bindir = plab.tmp / "bin"
    bindir.mkdir(exist_ok=True)
    marker = plab.tmp / "add-started"
    slow = bindir / "slow"
    slow.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "conf = json.load(sys.stdin)\n"
        "if os.environ['CNI_COMMAND'] == 'ADD':\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        f"    time.sleep({delay})\n"
        "    print(json.dumps(conf['prevResult']))\n"
    )
    slow.chmod(0o755)
    return bindir, marker


def start_during_slow_add(plab: PrivLab, plugins: list[str], delay: float) -> subprocess.Popen[str]:
    """Start priv-net-run on bridge + `plugins` and return once the slow ADD is running."""
    bindir, marker = slow_plugin(plab, delay)
    name, _ = plab.bridge_net()
    conf_path = plab.netconf / f"{name}.conflist"
    conf = json.loads(conf_path.read_text())
    conf["plugins"] = [conf["plugins"][0]] + [{"type": p} for p in plugins]
    conf_path.write_text(json.dumps(conf))
    proc = plab.popen(
        "--debug", "priv-net-run", "--cni-path", f"{bindir}:{PLUGIN_DIR}", "--network", name, "true"
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"the slow ADD never started: {proc.communicate()}")
        time.sleep(0.02)
    return proc


def finish(plab: PrivLab, proc: subprocess.Popen[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    plab.ids.update(PRIVNET_RE.findall(err))
    assert plab.ids, "the netns name is in the debug log"
    return proc.returncode, err, time.monotonic() - started


def test_a_signal_during_setup_lets_the_add_finish_then_tears_down(plab: PrivLab) -> None:
    # firewall before the slow plugin: its rules can only be deleted with a cached result.
    proc = start_during_slow_add(plab, ["firewall", "slow"], delay=2)
    proc.send_signal(signal.SIGTERM)
    code, err, _ = finish(plab, proc)
    assert code == 128 + signal.SIGTERM
    assert "cnirun: SIGTERM received: stopping after the current ADD (again: at once)" in err
    assert "finishing teardown first" not in err


def test_a_second_signal_during_setup_aborts_the_add_at_once(plab: PrivLab) -> None:
    proc = start_during_slow_add(plab, ["slow"], delay=30)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    code, err, took = finish(plab, proc)
    assert code == 128 + signal.SIGINT
    assert took < 15, f"the hanging plugin was not killed ({took:.1f}s)"


def test_a_failed_add_tears_down_the_networks_before_it(plab: PrivLab) -> None:
    good, _ = plab.bridge_net()
    exhausted = plab.subnet()
    only = str(exhausted.network_address + 1)  # the gateway is never handed out
    full, _ = plab.bridge_net(
        ranges=[[{"subnet": str(exhausted), "rangeStart": only, "rangeEnd": only}]]
    )
    res = plab.cnirun("priv-net-run", "--network", good, "--network", full, "true")
    assert res.returncode == 125
    assert one_error_line(res.stderr) == (
        f'cnirun: error: network {full}: plugin type="bridge" failed (add): failed to allocate '
        f"for range 0: no IP addresses available in range set: {only}-{only}"
    )
    assert res.stdout == ""


def test_a_missing_plugin_is_refused_before_anything_is_created(plab: PrivLab) -> None:
    name = plab.netname()
    conf = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "no-such-plugin"}]}
    (plab.netconf / f"{name}.conflist").write_text(json.dumps(conf))
    res = plab.cnirun("priv-net-run", "--network", name, "true")
    assert res.returncode == 125
    line = one_error_line(res.stderr)
    assert f"network {name} ({plab.netconf}/{name}.conflist)" in line
    assert 'failed to find plugin "no-such-plugin"' in line


def test_usage_errors_exit_125_with_one_line(plab: PrivLab) -> None:
    res = plab.cnirun("priv-net-run", "--network", "nope", "true")
    assert res.returncode == 125 and "nope" in one_error_line(res.stderr)
    res = plab.cnirun("priv-net-run", "--cni-timeout", "0", "true")
    assert res.returncode == 125 and "--cni-timeout" in one_error_line(res.stderr)
    res = plab.cnirun("priv-net-run")
    assert res.returncode == 125 and "Missing argument" in res.stderr

"""End-to-end tests of the main job, `cnirun [docker run flags] IMAGE [COMMAND...]`.

Every test runs the real CLI as a subprocess against the real Docker engine and the Debian
CNI plugins, with a private netconf, cache and state dir, and proves afterwards that its
sandboxes left nothing behind (containers, veths, reservations, cache, netns, iptables).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import pty
import random
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.common import clean_environ, split_stderr
from tests.leakcheck import DEFAULT_IPAM_DIR, find_leaks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = "/usr/lib/cni"
NETNS_DIR = "/run/netns"
IMAGE = "busybox:latest"
PAUSE_IMAGE = "cnirun/pause:1"
LABEL_SANDBOX = "io.cnirun.sandbox"
CLI_TIMEOUT = 60
SANDBOX_RE = re.compile(r"(?:cnirun-(?:infra-)?|io\.cnirun\.sandbox=)([0-9a-f]{32})\b")

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

# A stand-in CNI plugin. It logs each call to $FAKE_LOG (inherited from cnirun's environment)
# and does what the "fake" key of its config says: sleep, fail, or pass prevResult through.
FAKE_PLUGIN = """\
import json, os, sys, time
conf = json.loads(sys.stdin.read() or "{}")
cmd = os.environ.get("CNI_COMMAND", "")
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"cmd": cmd, "cid": os.environ.get("CNI_CONTAINERID", ""),
                          "ifname": os.environ.get("CNI_IFNAME", ""),
                          "time": time.time()}) + "\\n")
if cmd == "VERSION":
    print(json.dumps({"cniVersion": "1.0.0",
                      "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}))
    sys.exit(0)
how = conf.get("fake", {}).get(cmd, {})
time.sleep(how.get("sleep", 0))
if how.get("fail"):
    print(json.dumps({"cniVersion": conf.get("cniVersion", "1.0.0"), "code": 11,
                      "msg": how["fail"]}))
    sys.exit(1)
if cmd == "ADD":
    print(json.dumps(conf.get("prevResult") or {"cniVersion": conf.get("cniVersion")}))
"""


def sh(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host tool; with `check`, fail the test with its stderr when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host already routes or holds an address in."""
    nets = []
    for argv in (["ip", "-4", "-o", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
        for word in sh(argv).stdout.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit() and "." in word:
                    nets.append(ipaddress.IPv4Network(word, strict=False))
    return nets


def free_port() -> int:
    """A TCP port nothing on the host listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(host: str, port: int, timeout: float = 2.0) -> str:
    """The body of `GET /index.html` from host:port (raw socket: no proxy settings apply)."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(b"GET /index.html HTTP/1.0\r\nHost: test\r\n\r\n")
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data.decode(errors="replace").partition("\r\n\r\n")[2]


def bridge_ports(bridge: str) -> set[str]:
    if not os.path.exists(f"/sys/class/net/{bridge}/brif"):
        return set()
    return set(os.listdir(f"/sys/class/net/{bridge}/brif"))


def inspect(container: str) -> dict[str, Any]:
    data = json.loads(sh(["docker", "inspect", container]).stdout)
    assert isinstance(data, list) and len(data) == 1
    info = data[0]
    assert isinstance(info, dict)
    return info


def ipv4_of(text: str, ifname: str) -> list[ipaddress.IPv4Interface]:
    """Addresses of `ifname` in `ip -4 -o addr` output."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) > 3 and words[1] == ifname and words[2] == "inet":
            found.append(ipaddress.IPv4Interface(words[3]))
    return found


@dataclass
class Run:
    """A finished cnirun: its status, stdout, stderr without debug lines, and the debug log."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    debug: str

    @property
    def sandbox_ids(self) -> list[str]:
        return list(dict.fromkeys(SANDBOX_RE.findall(self.debug)))

    def explain(self) -> str:
        return f"{shlex.join(self.argv)} -> {self.returncode}\n{self.stderr}{self.debug}"


@dataclass(frozen=True)
class Net:
    name: str
    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)


class Rig:
    """One test's private world: netconf, cache, state and plugin dirs, networks and cleanup.

    Names carry a random tag. `assert_clean` proves the sandboxes of a test left nothing;
    `cleanup` removes whatever is left (after a failed test) plus the bridges and IPAM dirs
    the plugins create and never delete.
    """

    def __init__(self, tmp: Path, netconf_dir: Path, cache_dir: Path) -> None:
        self.tmp = tmp
        self.netconf_dir = netconf_dir
        self.cache_dir = cache_dir
        self.state_dir = tmp / "state"
        self.plugin_dir = tmp / "plugins"
        self.fake_log = tmp / "fake.log"
        self.tag = secrets.token_hex(4)
        self.nets: list[Net] = []
        self.sandbox_ids: set[str] = set()
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.planted: list[Path] = []  # files a test put in place itself: no leak

    # -- resources ------------------------------------------------------------------------

    def name(self) -> str:
        """A unique container name for a workload."""
        name = f"cnirun-test-{self.tag}-{len(self.names)}"
        self.names.append(name)
        return name

    def subnet(self) -> ipaddress.IPv4Network:
        taken = host_networks() + [n.subnet for n in self.nets]
        for _ in range(200):
            net = ipaddress.IPv4Network(f"10.230.{random.randint(1, 254)}.0/24")
            if not any(net.overlaps(t) for t in taken):
                return net
        raise AssertionError("no free 10.230.x.0/24 subnet on this host")

    def network(
        self,
        *,
        portmap: bool = False,
        extra: Sequence[dict[str, Any]] = (),
    ) -> Net:
        """Write a bridge+host-local conflist (plus portmap and `extra` plugins)."""
        index = len(self.nets)
        net = Net(f"crn{self.tag}n{index}", f"crb{self.tag}{index}", self.subnet())
        self.nets.append(net)
        plugins: list[dict[str, Any]] = [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "subnet": str(net.subnet),
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        plugins += extra
        conf = {"cniVersion": "1.0.0", "name": net.name, "plugins": plugins}
        path = self.netconf_dir / f"10-{net.name}.conflist"
        path.write_text(json.dumps(conf, indent=2))
        return net

    def fake_plugin(self, name: str = "fake") -> str:
        """Install the stand-in plugin as `name` in the private plugin dir; return CNI_PATH."""
        self.plugin_dir.mkdir(exist_ok=True)
        path = self.plugin_dir / name
        path.write_text(f"#!{sys.executable}\n{FAKE_PLUGIN}")
        path.chmod(0o755)
        return f"{self.plugin_dir}:{PLUGIN_DIR}"

    def fake_calls(self) -> list[dict[str, str]]:
        if not self.fake_log.exists():
            return []
        return [json.loads(line) for line in self.fake_log.read_text().splitlines()]

    # -- running cnirun -------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_environ()
        env.update(
            NETCONFPATH=str(self.netconf_dir),
            CNI_PATH=PLUGIN_DIR,
            CNIRUN_CACHE_DIR=str(self.cache_dir),
            CNIRUN_STATE_DIR=str(self.state_dir),
            FAKE_LOG=str(self.fake_log),
        )
        env.update(extra)
        return env

    @staticmethod
    def argv(args: Sequence[str], debug: bool) -> list[str]:
        return [sys.executable, "-m", "cnirun", *(["--debug"] if debug else []), *args]

    def run(
        self,
        *args: str,
        input: str | None = None,
        debug: bool = True,
        timeout: float = CLI_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> Run:
        argv = self.argv(args, debug)
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env or self.env(),
            timeout=timeout,
            check=False,
        )
        user, log = split_stderr(proc.stderr)
        run = Run(argv, proc.returncode, proc.stdout, user, log)
        self.sandbox_ids.update(run.sandbox_ids)
        return run

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start cnirun --debug in the background, stdout and stderr piped."""
        proc = subprocess.Popen(
            self.argv(args, True),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env or self.env(),
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 30, read: str = "") -> Run:
        """Wait for a started cnirun; `read` is stderr the test already consumed."""
        out, err = proc.communicate(timeout=timeout)
        err = read + err
        user, log = split_stderr(err)
        argv = proc.args
        assert isinstance(argv, list)
        run = Run([str(a) for a in argv], proc.returncode, out, user, log)
        self.sandbox_ids.update(run.sandbox_ids)
        return run

    def workload_sandbox(self, name: str, timeout: float = 15) -> str:
        """The sandbox ID of the running workload container `name` (from its label)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = sh(
                [
                    "docker",
                    "ps",
                    "-a",
                    "--filter",
                    f"name=^{name}$",
                    "--format",
                    f'{{{{.Label "{LABEL_SANDBOX}"}}}}',
                ]
            ).stdout.split()
            if out:
                self.sandbox_ids.add(out[0])
                return out[0]
            time.sleep(0.05)
        raise AssertionError(f"no workload container {name} within {timeout}s")

    # -- checks ---------------------------------------------------------------------------

    def leaks(self, ids: Sequence[str], bridges: Sequence[str] | None = None) -> list[str]:
        leaks = find_leaks(
            ids,
            bridges=[n.bridge for n in self.nets] if bridges is None else bridges,
            netns_names=[f"cnirun-{i}" for i in ids],
            cache_dir=self.cache_dir,
        )
        for sub in ("sandboxes", "results"):
            for base in (self.state_dir, self.cache_dir):
                if (base / sub).is_dir():
                    leaks += [f"file {p} left behind" for p in sorted((base / sub).iterdir())]
        if self.names:
            fmt = "{{.Names}}"
            listed = sh(
                ["docker", "ps", "-a", "--filter", f"label={LABEL_SANDBOX}", "--format", fmt]
            )
            leaks += [f"workload {n} left behind" for n in listed.stdout.split() if n in self.names]
        for net in self.nets:
            ipam = Path(DEFAULT_IPAM_DIR) / net.name
            if ipam.is_dir():
                held = [p.name for p in ipam.iterdir() if p not in self.planted]
                held = [n for n in held if n != "lock" and not n.startswith("last_reserved_ip")]
                leaks += [f"host-local reservation {ipam / n}" for n in held]
        rules = sh(["iptables-save"]).stdout.splitlines()
        leaks += [r for r in rules if any(n.name in r for n in self.nets)]
        return leaks

    def assert_clean(self, ids: Sequence[str], bridges: Sequence[str] | None = None) -> None:
        """No resource of these sandboxes (or of this rig's networks) is left."""
        ids = list(ids)
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
        leaks = self.leaks(ids, bridges)
        assert not leaks, "resources left behind:\n  " + "\n  ".join(leaks)

    def assert_nothing_created(self, run: Run) -> None:
        """A run refused before its first side effect: no infra, netns or plugin call."""
        assert run.sandbox_ids == [], run.explain()
        assert "held netns" not in run.debug and "CNI_COMMAND=ADD" not in run.debug, run.explain()
        assert self.fake_calls() == []
        self.assert_clean([])

    # -- cleanup --------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Best effort: remove what a failed test left, then our bridges and IPAM dirs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for name in self.names:
            sid = sh(
                [
                    "docker",
                    "inspect",
                    "-f",
                    f'{{{{index .Config.Labels "{LABEL_SANDBOX}"}}}}',
                    name,
                ],
                check=False,
            ).stdout.strip()
            if sid:
                self.sandbox_ids.add(sid)
        for sid in self.sandbox_ids:
            ids = sh(["docker", "ps", "-aq", "--filter", f"label={LABEL_SANDBOX}={sid}"]).stdout
            if ids.split():
                sh(["docker", "rm", "-f", *ids.split()], check=False)
            holder = Path(NETNS_DIR) / f"cnirun-{sid}"
            if holder.exists():
                sh(["umount", "-l", str(holder)], check=False)
                holder.unlink(missing_ok=True)
        for name in self.names:
            sh(["docker", "rm", "-f", name], check=False)
        for proc in self.procs:  # their docker CLI children end with their containers
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
        for table in ("nat", "filter"):
            for line in sh(["iptables-save", "-t", table]).stdout.splitlines():
                needles = list(self.sandbox_ids) + [n.name for n in self.nets]
                if line.startswith("-A ") and any(x in line for x in needles):
                    sh(["iptables", "-t", table, "-D", *shlex.split(line)[1:]], check=False)
        for net in self.nets:
            if os.path.exists(f"/sys/class/net/{net.bridge}"):
                sh(["ip", "link", "del", net.bridge], check=False)
            shutil.rmtree(Path(DEFAULT_IPAM_DIR) / net.name, ignore_errors=True)


@pytest.fixture
def rig(tmp_path: Path, netconf_dir: Path, cache_dir: Path) -> Iterator[Rig]:
    world = Rig(tmp_path, netconf_dir, cache_dir)
    try:
        yield world
    finally:
        world.cleanup()
    gone = [n.bridge for n in world.nets if os.path.exists(f"/sys/class/net/{n.bridge}")]
    assert not gone, f"bridges not removed: {gone}"


def read_line(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from cnirun within {timeout}s"
    return proc.stdout.readline().strip()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def only_sandbox(run: Run) -> str:
    ids = run.sandbox_ids
    assert len(ids) == 1, run.explain()
    return ids[0]


def assert_quiet(run: Run) -> None:
    """Success paths print no error or warning of cnirun's own."""
    assert "cnirun: error" not in run.stderr and "cnirun: warning" not in run.stderr, run.explain()


# -- the seed README example --------------------------------------------------------------


def test_seed_readme_example(rig: Rig) -> None:
    """`cnirun --rm busybox ifconfig` with the seed's 10-mynet.conf and 99-loopback.conf."""
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


def test_exit_code_passthrough(rig: Rig) -> None:
    rig.network()
    run = rig.run("--rm", IMAGE, "sh", "-c", "exit 7")
    assert run.returncode == 7, run.explain()
    assert_quiet(run)
    missing = rig.run("--rm", IMAGE, f"no-such-command-{rig.tag}")
    assert missing.returncode == 127, missing.explain()
    assert "no-such-command" in missing.stderr
    rig.assert_clean([only_sandbox(run), only_sandbox(missing)])


def test_stdin_passes_through(rig: Rig) -> None:
    rig.network()
    run = rig.run("--rm", "-i", IMAGE, "cat", input="hi\n")
    assert run.returncode == 0, run.explain()
    assert run.stdout == "hi\n"
    rig.assert_clean([only_sandbox(run)])


def test_arguments_reach_the_workload_verbatim(rig: Rig) -> None:
    rig.network()
    words = ["a b", '"double"', "'single'", "*", "$HOME", "", "x\\ty", "--rm", "-it", "a;b|c"]
    run = rig.run("--rm", IMAGE, "printf", "[%s]\\n", *words)
    assert run.returncode == 0, run.explain()
    assert run.stdout.splitlines() == [f"[{w}]" for w in words]
    rig.assert_clean([only_sandbox(run)])


# -- re-homed docker flags -----------------------------------------------------------------


def test_hostname_dns_and_add_host(rig: Rig) -> None:
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


def test_resolv_conf_takes_the_dns_of_the_cni_result(rig: Rig) -> None:
    """Without --dns, the DNS a plugin returns (bridge copies its config's `dns`) is used."""
    net = rig.network()
    path = rig.netconf_dir / f"10-{net.name}.conflist"
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


def test_resolv_conf_and_hosts_by_default(rig: Rig) -> None:
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


def test_add_host_gateway_is_the_host_on_the_cni_network(rig: Rig) -> None:
    net = rig.network()
    run = rig.run("--rm", "--add-host", "gw:host-gateway", IMAGE, "grep", "gw$", "/etc/hosts")
    assert run.returncode == 0, run.explain()
    assert run.stdout == f"{net.gateway}\tgw\n"
    rig.assert_clean(sorted(rig.sandbox_ids))


def test_users_own_etc_mounts_win_and_read_only_applies(rig: Rig) -> None:
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


def test_publish_with_portmap(rig: Rig) -> None:
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
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc)
    # httpd is PID 1 and ignores SIGTERM: cnirun kills it after CNIRUN_STOP_TIMEOUT.
    assert run.returncode in (137, 143), run.explain()
    assert time.monotonic() - started < 10
    assert not answers("127.0.0.1")
    rig.assert_clean([only_sandbox(run)])


def test_publish_without_portmap_is_refused(rig: Rig) -> None:
    rig.network()
    run = rig.run("--rm", "-p", f"{free_port()}:80", IMAGE, "true")
    assert run.returncode == 125, run.explain()
    assert "portMappings" in run.stderr and "cnirun: error:" in run.stderr
    rig.assert_nothing_created(run)


# -- networks ------------------------------------------------------------------------------


def test_two_networks(rig: Rig) -> None:
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


def test_network_host_and_none_bypass_cni(rig: Rig) -> None:
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


def test_unreachable_docker_creates_nothing(rig: Rig) -> None:
    rig.network()
    env = rig.env(DOCKER_HOST=f"unix://{rig.tmp}/no-docker.sock")
    run = rig.run("--rm", IMAGE, "true", env=env)
    assert run.returncode == 125, run.explain()
    assert "cannot connect to the Docker daemon" in run.stderr, run.explain()
    rig.assert_nothing_created(run)


# -- the infra container and the held netns ------------------------------------------------


def test_infra_is_paused_on_net_none_and_netns_is_held(rig: Rig) -> None:
    net = rig.network()
    name = rig.name()
    proc = rig.start("--rm", "--name", name, IMAGE, "sh", "-c", "echo ready; sleep 30")
    assert read_line(proc) == "ready"
    sid = rig.workload_sandbox(name)
    infra = inspect(f"cnirun-infra-{sid}")
    assert infra["HostConfig"]["NetworkMode"] == "none"
    # No Docker network sandbox (the fast path): runc made its netns, so Docker wrote no files.
    assert infra["Config"]["NetworkDisabled"] is True
    assert infra["HostsPath"] == infra["ResolvConfPath"] == ""
    assert infra["Config"]["Image"] == PAUSE_IMAGE
    assert infra["Config"]["Labels"][LABEL_SANDBOX] == sid
    assert infra["State"]["Running"]
    workload = inspect(name)
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
    (ip,) = ipv4_of(sh(["ip", "-n", holder.name, "-4", "-o", "addr"]).stdout, "eth0")
    assert ip.ip in net.subnet
    assert (rig.state_dir / "sandboxes" / f"{sid}.json").is_file()
    # Scenario 43(c): the infra dies under the workload; the held netns keeps DEL working.
    sh(["docker", "rm", "-f", infra["Id"]])
    sh(["docker", "kill", name])
    run = rig.finish(proc)
    assert run.returncode == 137, run.explain()
    assert "cnirun: warning" not in run.stderr, run.explain()
    rig.assert_clean([sid])


# -- ADD failure rollback ------------------------------------------------------------------


def test_missing_plugin_is_caught_before_anything_is_created(rig: Rig) -> None:
    a = rig.network()
    broken = {"cniVersion": "1.0.0", "name": f"crn{rig.tag}x", "type": f"nope{rig.tag}"}
    (rig.netconf_dir / "20-broken.conf").write_text(json.dumps(broken))
    run = rig.run("--rm", "--network", a.name, "--network", broken["name"], IMAGE, "true")
    assert run.returncode == 125, run.explain()
    assert f'failed to find plugin "nope{rig.tag}"' in run.stderr
    rig.assert_nothing_created(run)


def marker_args(rig: Rig) -> tuple[Path, list[str]]:
    """Workload args that would leave a marker file in a bind-mounted dir if they ever ran."""
    mark = rig.tmp / "mark"
    mark.mkdir()
    return mark / "ran", ["-v", f"{mark}:/mark", IMAGE, "touch", "/mark/ran"]


def test_add_failure_mid_chain_rolls_back(rig: Rig) -> None:
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


def test_add_failure_on_second_network_rolls_back_the_first(rig: Rig) -> None:
    a = rig.network()
    b = rig.network()
    only = str(b.subnet.network_address + 10)
    b_conf = rig.netconf_dir / f"10-{b.name}.conflist"
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
def test_signal_mid_run_stops_workload_and_tears_down(rig: Rig, signum: int, code: int) -> None:
    rig.network()
    proc = rig.start("--rm", "--name", rig.name(), IMAGE, "sh", "-c", TRAPPING)
    assert read_line(proc) == "ready"
    proc.send_signal(signum)
    run = rig.finish(proc)
    assert run.returncode == code, run.explain()
    assert "cnirun: warning" not in run.stderr, run.explain()
    rig.assert_clean([only_sandbox(run)])


def test_sigterm_to_a_workload_ignoring_it_escalates_to_kill(rig: Rig) -> None:
    rig.network()
    env = rig.env(CNIRUN_STOP_TIMEOUT="2")
    proc = rig.start(
        "--rm", "--name", rig.name(), IMAGE, "sh", "-c", "echo ready; exec sleep 30", env=env
    )
    assert read_line(proc) == "ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc)
    assert time.monotonic() - started < 10, "the stop timeout was not honoured"
    assert run.returncode in (137, 143), run.explain()
    rig.assert_clean([only_sandbox(run)])


@pytest.mark.parametrize("signals", [1, 2])
def test_signal_during_setup_rolls_back(rig: Rig, signals: int) -> None:
    """A signal during ADD: the first lets the ADD finish, a second aborts it; both roll back."""
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake", "fake": {"ADD": {"sleep": 3}}}])
    marker, args = marker_args(rig)
    proc = rig.start("--rm", *args, env=rig.env(CNI_PATH=cni_path))
    wait_for(lambda: rig.fake_calls() or proc.poll() is not None, 20, "the slow ADD to start")
    started = time.monotonic()
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    run = rig.finish(proc)
    elapsed = time.monotonic() - started
    assert run.returncode == 143, run.explain()
    assert elapsed < (2.5 if signals == 2 else 10), elapsed
    assert not marker.exists(), "the workload ran although setup was interrupted"
    sid = only_sandbox(run)
    assert [c["cmd"] for c in rig.fake_calls()] == ["ADD", "DEL"]
    rig.assert_clean([sid])


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2])
def test_sigterm_while_the_workload_starts(rig: Rig, delay: float) -> None:
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


def test_signals_during_teardown_do_not_abort_it(rig: Rig) -> None:
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


def test_teardown_starts_when_the_workload_dies(rig: Rig) -> None:
    """DEL starts at the workload container's `die` event, not when its docker CLI exits (which
    waits for --rm's removal): here behind a docker CLI that lingers 3 s after its container."""
    cni_path = rig.fake_plugin()
    rig.network(extra=[{"type": "fake"}])
    shim = rig.tmp / "bin"
    shim.mkdir()
    real = shutil.which("docker")
    (shim / "docker").write_text(
        f'#!/bin/sh\n"{real}" "$@"\nrc=$?\n[ "$1" = run ] && sleep 3\nexit $rc\n'
    )
    (shim / "docker").chmod(0o755)
    env = rig.env(CNI_PATH=cni_path, PATH=f"{shim}:{os.environ['PATH']}")
    run = rig.run("--rm", IMAGE, "sh", "-c", "exit 3", env=env)
    ended = time.time()
    assert run.returncode == 3, run.explain()
    assert "the workload died: tearing down" in run.debug, run.explain()
    (delete,) = [c for c in rig.fake_calls() if c["cmd"] == "DEL"]
    assert ended - float(delete["time"]) > 2.5, run.explain()
    rig.assert_clean(sorted(rig.sandbox_ids))
    # A docker CLI that fails before any container runs: the teardown after it does it all.
    run = rig.run("--rm", "--pull", "never", f"cnirun-test/none-{rig.tag}", "true", env=env)
    assert run.returncode == 125, run.explain()
    assert "the workload died" not in run.debug, run.explain()
    assert [c["cmd"] for c in rig.fake_calls()] == ["ADD", "DEL", "ADD", "DEL"]
    rig.assert_clean(sorted(rig.sandbox_ids))


def test_sigterm_with_plain_docker_networking(rig: Rig) -> None:
    """`--network none` is plain `docker run`: a SIGTERM still reaches the workload."""
    name = rig.name()
    proc = rig.start("--rm", "--network", "none", "--name", name, IMAGE, "sh", "-c", TRAPPING)
    assert read_line(proc) == "ready"
    proc.send_signal(signal.SIGTERM)
    run = rig.finish(proc)
    assert run.returncode == 143, run.explain()
    wait_for(lambda: not rig.leaks([]), 5, "the workload container to be removed")


# -- an interactive session ----------------------------------------------------------------


class Terminal:
    """cnirun running on a pseudo-terminal, as from an interactive shell."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec cnirun with the pty as its controlling terminal
            try:
                os.chdir(REPO)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.seen = bytearray()

    def _read(self, timeout: float) -> bytes | None:
        """The next output, b"" at EOF, None when nothing came within `timeout`."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        try:
            chunk = os.read(self.fd, 4096)
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: the other side is closed
                raise
            chunk = b""
        self.seen += chunk
        return chunk

    def expect(self, needle: bytes, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            chunk = self._read(deadline - time.monotonic())
            assert chunk, f"{needle!r} not seen within {timeout}s; got {bytes(self.seen)!r}"

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self, timeout: float = 30) -> int:
        """Drain the output until the pty closes, then reap cnirun."""
        deadline = time.monotonic() + timeout
        while chunk := self._read(deadline - time.monotonic()):
            pass
        assert chunk is not None, f"cnirun did not exit; got {bytes(self.seen)!r}"
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        os.close(self.fd)
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def test_interactive_tty_session(rig: Rig) -> None:
    rig.network()
    name = rig.name()
    argv = rig.argv(["--rm", "-it", "--name", name, IMAGE, "sh"], debug=False)
    term = Terminal(argv, rig.env(TERM="xterm"))
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


def test_ctrl_c_in_a_terminal_without_tty(rig: Rig) -> None:
    """Ctrl-C reaches cnirun and the docker CLI together; the workload gets one SIGINT."""
    rig.network()
    name = rig.name()
    script = 'n=0; trap "n=$((n+1))" INT; echo ready; sleep 2 & wait; echo "ints=$n"; exit 5'
    argv = rig.argv(["--rm", "--name", name, IMAGE, "sh", "-c", script], debug=False)
    term = Terminal(argv, rig.env(TERM="xterm"))
    try:
        term.expect(b"ready", 30)
        sid = rig.workload_sandbox(name)
        term.send(b"\x03")
        code = term.exit_code()
    finally:
        term.close()
    assert code == 5 and b"ints=1" in term.seen, bytes(term.seen)
    rig.assert_clean([sid])

"""The one e2e harness: a test's private world, cnirun as a subprocess, leak checks, cleanup.

Every e2e test gets a `Harness` through the `rig` fixture (tests/e2e/conftest.py):

- unique names: a tag claimed host-wide, and from it network, bridge, veth, netns and container
  names; subnets from a pool (10.224.0.0/12) claimed host-wide too, so neither can collide with
  another test, even one running at the same time in another pytest process;
- private dirs: network configs, CNI result cache, cnirun state and plugin dirs under the
  test's tmp_path, so nothing depends on /etc/cni/net.d, /var/lib/cnirun or what an earlier
  test left;
- `run`/`start`/`finish`/`net`: cnirun (`python -m cnirun`, this checkout) with a clean
  environment, returning a `Result` with `.returncode`, `.stdout`, `.stderr` (what a user sees),
  `.debug` (the --debug log) and `.explain()`;
- `assert_clean`: no container, veth, IP reservation, cache file, netns holder, sandbox record or
  iptables rule of the test's own is left (tests/leakcheck.py does the looking);
- `cleanup`: removes whatever the test left, also when it failed, then the bridges, links,
  netns and host-local dirs the plugins or the test made; the fixture then checks that nothing
  is left at all.

Claims ("this tag / this subnet is mine") are abstract Unix sockets bound for the test's
lifetime: exclusive host-wide, released by the kernel when the process dies, no files.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import io
import ipaddress
import json
import os
import pty
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests import leakcheck
from tests.leakcheck import DEFAULT_CACHE_DIR, DEFAULT_IPAM_DIR

REPO = Path(__file__).resolve().parents[2]
NETNS_DIR = leakcheck.NETNS_DIR
PLUGIN_DIR = "/usr/lib/cni"
FAKE_PLUGIN = REPO / "tests" / "fake_plugins" / "fake"
IMAGE = "busybox:latest"
PAUSE_IMAGE = "cnirun/pause:1"
LABEL_SANDBOX = "io.cnirun.sandbox"
LABEL_STATE_DIR = "io.cnirun.state-dir"
LABEL_TEST = "test.cnirun.tag"  # not io.cnirun.*: those are reserved for cnirun
CLI_TIMEOUT = 60
SANDBOX_RE = re.compile(r"(?:cnirun-(?:infra-)?|io\.cnirun\.sandbox=)([0-9a-f]{32})\b")
PRIVNET_RE = re.compile(r"cnirun-privnet-[0-9a-f]{16}")
PRIVNET_PREFIX = "cnirun-privnet-"
PRIVNET_LOCK_DIR = "/run/cnirun/privnet"
OWNERS_DIR = "/run/cnirun/owners"
# Every subnet a test uses comes from here: clear of the built-in default network's /16s
# (10.70-10.77), `network create`'s pool (10.78.0.0/15), Docker's and podman's.
SUBNET_POOL = ipaddress.IPv4Network("10.224.0.0/12")

# Variables of the caller's environment that must not reach a test's cnirun.
SCRUBBED_ENV = (
    "NETCONFPATH",
    "CNI_PATH",
    "CNI_ARGS",
    "CAP_ARGS",
    "CNI_IFNAME",
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNIRUN_CACHE_DIR",
    "CNIRUN_STATE_DIR",
    "CNIRUN_DEBUG",
    "CNIRUN_STOP_TIMEOUT", "CNIRUN_INFRA_POOL",
    "CNIRUN_DEFAULT_NETWORK",
    "CNIRUN_DEFAULT_BRIDGE",
    "CNIRUN_DEFAULT_SUBNET",
    "CNIRUN_TEST_KILL_AT",
    "FAKE_LOG",
)
DEBUG_PREFIX = "cnirun: DEBUG: "
TRACEBACK_PREFIX = "cnirun: ERROR: traceback"
JSONDict = dict[str, Any]


# -- helpers for any test ----------------------------------------------------------------------


def clean_environ() -> dict[str, str]:
    """This process's environment without anything that would steer cnirun."""
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}


def split_stderr(stderr: str) -> tuple[str, str]:
    """(what a user sees, the DEBUG lines and the traceback --debug adds to an error)."""
    user, debug = [], []
    in_traceback = False
    for line in stderr.splitlines(keepends=True):
        if line.startswith((DEBUG_PREFIX, TRACEBACK_PREFIX)):
            in_traceback = line.startswith(TRACEBACK_PREFIX)
            debug.append(line)
        elif in_traceback and not line.startswith("cnirun: "):
            debug.append(line)
        else:
            in_traceback = False
            user.append(line)
    return "".join(user), "".join(debug)


def sh(
    *argv: str, check: bool = True, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a host tool; with `check`, fail the test with its stderr when it fails."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr[-3000:]}"
        )
    return proc


def quiet(*argv: str) -> None:
    """Run a host tool for cleanup: its failure (already gone) is fine."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(list(argv), capture_output=True, timeout=60, check=False)


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host already routes or holds an address in."""
    nets = []
    for argv in (["ip", "-4", "-o", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
        for word in sh(*argv).stdout.split():
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


def read_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """The next line of a started process's stdout (call once per line it prints)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from {proc.args!r} within {timeout}s"
    return proc.stdout.readline().strip()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll until `predicate()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_gone(marker: str, within: float = 3.0) -> None:
    """No live (non-zombie) process has `marker` in its command line, once SIGKILL landed."""
    deadline = time.monotonic() + within
    while True:
        ps = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True)
        alive = [ln for ln in ps.stdout.splitlines() if marker in ln and not ln.startswith("Z")]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert alive == [], f"plugin processes survived: {alive}"


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def bridge_ports(bridge: str) -> set[str]:
    if not os.path.exists(f"/sys/class/net/{bridge}/brif"):
        return set()
    return set(os.listdir(f"/sys/class/net/{bridge}/brif"))


def iptables_lines(needle: str) -> list[str]:
    """Rules in the nat and filter tables whose text contains `needle`."""
    lines = []
    for table in ("nat", "filter"):
        out = sh("iptables-save", "-t", table).stdout
        lines += [f"{table}: {ln}" for ln in out.splitlines() if needle in ln]
    return lines


def cnitool_id(netns_path: str) -> str:
    """cnitool's default container ID, computed independently of cnirun."""
    import hashlib

    return "cnitool-" + hashlib.sha512(netns_path.encode()).hexdigest()[:20]


def ns_has_link(netns: str, ifname: str) -> bool:
    return sh("ip", "-n", netns, "link", "show", "dev", ifname, check=False).returncode == 0


def docker_inspect(container: str) -> JSONDict:
    data = json.loads(sh("docker", "inspect", container).stdout)
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


def one_error_line(stderr: str) -> str:
    """The single `cnirun: error: ` line stderr must consist of."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnirun: error: "), stderr
    return lines[0]


def seed_bridge(network: str, bridge: str, subnet: str, version: str = "0.2.0") -> JSONDict:
    """The CNI README's `10-mynet.conf`, with this test's network name, bridge and subnet."""
    return {
        "cniVersion": version,
        "name": network,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}]},
    }


def engine_socket() -> str:
    """The unix socket of the engine the tests talk to: DOCKER_HOST's (`make test-engines`
    sets it), else Docker's default."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    assert host.startswith("unix://"), f"the e2e tests need a unix:// DOCKER_HOST, not {host}"
    return host.removeprefix("unix://")


def image_id(ref: str) -> str | None:
    found = sh("docker", "image", "inspect", "-f", "{{.Id}}", ref, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


class PrivnetWatch(threading.Thread):
    """Learns the netns names of one `priv-net-run` process while it runs.

    A session holds an flock on /run/cnirun/privnet/<netns name>.lock from before its netns
    exists until its teardown ends; /proc/locks names the process holding it. So a test knows
    its sessions' names even when nothing prints them, and never mistakes another test's."""

    def __init__(self, proc: subprocess.Popen[str], found: set[str]) -> None:
        super().__init__(name="privnet-watch", daemon=True)
        self.proc = proc
        self.found = found

    def run(self) -> None:
        settled: set[str] = set()  # lock files known to be ours or another process's
        while True:
            finished = self.proc.poll() is not None
            try:
                pending = {
                    e.name: e.inode()
                    for e in os.scandir(PRIVNET_LOCK_DIR)
                    if e.name.endswith(".lock") and e.name not in settled
                }
            except FileNotFoundError:
                pending = {}
            if pending:
                holders = _flock_holders()
                for name, inode in pending.items():
                    if inode in holders:  # else not locked yet: look again next round
                        settled.add(name)
                        if holders[inode] == self.proc.pid:
                            self.found.add(name.removesuffix(".lock"))
            if finished:
                return
            time.sleep(0.003)


def _flock_holders() -> dict[int, int]:
    """inode -> pid of every flock in /proc/locks."""
    holders = {}
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "FLOCK":
                with contextlib.suppress(ValueError, IndexError):
                    holders[int(fields[5].rsplit(":", 1)[1])] = int(fields[4])
    return holders


def privnet_leaks(names: Iterable[str]) -> list[str]:
    """Netns holders and session locks of these priv-net-run sessions that still exist."""
    leaks = []
    for name in sorted(names):
        for path in (f"{NETNS_DIR}/{name}", f"{PRIVNET_LOCK_DIR}/{name}.lock"):
            if os.path.lexists(path):
                leaks.append(f"{path} is still there")
    return leaks


# -- host-wide claims --------------------------------------------------------------------------


def claim(key: str) -> socket.socket | None:
    """Claim `key` host-wide for as long as the returned socket is open; None if taken."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0cnirun-e2e:{key}")
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            return None
        raise
    return sock


def claim_waiting(key: str, timeout: float = 300) -> socket.socket:
    """Claim `key`, waiting while another test holds it (for resources tests must share)."""
    deadline = time.monotonic() + timeout
    while (held := claim(key)) is None:
        assert time.monotonic() < deadline, f"{key} stayed claimed by another test"
        time.sleep(0.1)
    return held


# -- results -----------------------------------------------------------------------------------


class Result:
    """A finished cnirun: status, stdout, stderr without debug lines, and the debug log."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = [str(a) for a in argv]
        self.returncode = returncode
        self.stdout = stdout
        self.raw_stderr = stderr
        self.stderr, self.debug = split_stderr(stderr)

    @property
    def sandbox_ids(self) -> list[str]:
        return list(dict.fromkeys(SANDBOX_RE.findall(self.debug)))

    def explain(self) -> str:
        return (
            f"{shlex.join(self.argv)} -> {self.returncode}\n"
            f"stdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}{self.debug[-6000:]}"
        )


class Net(NamedTuple):
    """A network config the harness wrote: name, bridge, subnet and file."""

    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    path: Path

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)


# -- a terminal --------------------------------------------------------------------------------


class Terminal:
    """A program running on a pseudo-terminal, as from an interactive shell."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec with the pty as its controlling terminal
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
        """Drain the output until the pty closes, then reap the program."""
        deadline = time.monotonic() + timeout
        while chunk := self._read(deadline - time.monotonic()):
            pass
        assert chunk is not None, f"the program did not exit; got {bytes(self.seen)!r}"
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        os.close(self.fd)
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


# -- the harness -------------------------------------------------------------------------------


class Harness:
    """One test's private world: dirs, unique names and subnets, cnirun, checks and cleanup."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._claims: list[socket.socket] = []
        while True:
            tag = secrets.token_hex(4)
            held = claim(f"tag:{tag}")
            if held is not None:
                self._claims.append(held)
                break
        self.tag = tag
        self.netconf_dir = tmp / "net.d"
        self.cache_dir = tmp / "cni-cache"
        self.state_dir = tmp / "state"
        self.plugin_dir = tmp / "plugins"
        self.fake_log = tmp / "fake.log"
        self.netconf_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(exist_ok=True)
        self.debug = False  # pass --debug to cnirun (run, start) unless told otherwise
        self.timeout: float = CLI_TIMEOUT  # for `run`, unless told otherwise
        self.overrides: dict[str, str] = {}  # extra environment for every cnirun of this test
        self.nets: list[Net] = []
        self.netnames: list[str] = []  # every network name (host-local dirs are named so)
        self.bridges: list[str] = []
        self.links: list[str] = []  # host links the test made or learned of: gone at the end
        self.netns_names: list[str] = []  # made with `ip netns add`
        self.held_names: list[str] = []  # names handed out for cnirun.netns to hold
        self.subnets: list[ipaddress.IPv4Network] = []
        self.names: list[str] = []  # container names
        self.sandbox_ids: set[str] = set()
        self.container_ids: list[str] = []  # CNI container IDs of `net` attachments
        self.privnet_ids: set[str] = set()
        self.state_dirs: set[Path] = {self.state_dir}
        self.procs: list[subprocess.Popen[str]] = []
        self.planted: list[Path] = []  # files a test put in place itself: no leak
        self.debris: list[Callable[[], None]] = []  # undo steps of the test's own
        self.watches: list[PrivnetWatch] = []

    # -- names and resources ----------------------------------------------------------------

    @property
    def label(self) -> list[str]:
        """`docker run` flags that mark a workload as this test's."""
        return ["--label", f"{LABEL_TEST}={self.tag}"]

    def name(self) -> str:
        """A unique container name for a workload."""
        name = f"cnirun-test-{self.tag}-{len(self.names)}"
        self.names.append(name)
        return name

    def netname(self) -> str:
        """A unique network name (its host-local dir is removed at cleanup)."""
        name = f"e2e{self.tag}n{len(self.netnames)}"
        self.netnames.append(name)
        return name

    def bridge(self) -> str:
        """A unique bridge name (deleted at cleanup: the bridge plugin never does)."""
        name = f"e2b{self.tag}{len(self.bridges)}"
        self.bridges.append(name)
        return name

    def veth_pair(self) -> tuple[str, str]:
        """A host veth pair, both ends up (a macvlan or ipvlan parent)."""
        a, b = f"e2v{self.tag}{len(self.links)}a", f"e2v{self.tag}{len(self.links)}b"
        self.links += [a, b]
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "up")
        sh("ip", "link", "set", b, "up")
        return a, b

    def netns(self) -> str:
        """Create a fresh netns with `ip netns add`; return its name."""
        name = f"e2e-{self.tag}-{len(self.netns_names)}"
        sh("ip", "netns", "add", name)
        self.netns_names.append(name)
        return name

    def netns_name(self) -> str:
        """A unique netns name, not created (for cnirun.netns to hold); released at cleanup."""
        name = f"e2e-{self.tag}-h{len(self.held_names)}"
        self.held_names.append(name)
        return name

    def subnet(self) -> ipaddress.IPv4Network:
        """A /24 of the pool that no host route, address, iptables rule or other test uses."""
        taken = host_networks() + self.subnets
        rules = sh("iptables-save").stdout
        count = SUBNET_POOL.num_addresses // 256
        start = secrets.randbelow(count)
        base = int(SUBNET_POOL.network_address)
        for k in range(count):
            net = ipaddress.IPv4Network((base + ((start + k) % count) * 256, 24))
            if any(net.overlaps(t) for t in taken):
                continue
            if str(net.network_address).rsplit(".", 1)[0] + "." in rules:
                continue  # a leftover rule names its addresses
            held = claim(f"subnet:{net}")
            if held is None:
                continue
            self._claims.append(held)
            self.subnets.append(net)
            return net
        raise AssertionError(f"no free /24 in {SUBNET_POOL} on this host")

    def default_network_env(self) -> dict[str, str]:
        """CNIRUN_DEFAULT_* for a built-in default network of this test's own."""
        return {
            "CNIRUN_DEFAULT_NETWORK": self.netname(),
            "CNIRUN_DEFAULT_BRIDGE": self.bridge(),
            "CNIRUN_DEFAULT_SUBNET": str(self.subnet()),
        }

    def borrow_seed_bridge(self) -> None:
        """Use the CNI README's literal `mynet` (bridge cni0, 10.22.0.0/16) exclusively; drop
        cni0 and mynet's host-local dir afterwards unless they were there before us."""
        self._claims.append(claim_waiting("seed-mynet"))
        ipam = Path(DEFAULT_IPAM_DIR) / "mynet"
        if not ipam.exists():
            self.debris.append(lambda: shutil.rmtree(ipam, ignore_errors=True))
        if not link_exists("cni0"):
            self.debris.append(lambda: _drop_if_unused("cni0"))

    def write(self, filename: str, conf: JSONDict | str) -> Path:
        path = self.netconf_dir / filename
        path.write_text(conf if isinstance(conf, str) else json.dumps(conf, indent=2))
        return path

    def network(
        self,
        *,
        portmap: bool = False,
        firewall: bool = False,
        extra: Sequence[JSONDict] = (),
        version: str = "1.0.0",
        ipam: JSONDict | None = None,
    ) -> Net:
        """Write `10-<name>.conflist`: bridge + host-local (routes to 0.0.0.0/0, on the
        subnet unless `ipam` says otherwise), then portmap, firewall and `extra` plugins."""
        net_name, bridge, subnet = self.netname(), self.bridge(), self.subnet()
        plugins: list[JSONDict] = [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    **(ipam if ipam is not None else {"subnet": str(subnet)}),
                },
            }
        ]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        if firewall:
            plugins.append({"type": "firewall"})
        plugins += extra
        conf = {"cniVersion": version, "name": net_name, "plugins": plugins}
        net = Net(net_name, bridge, subnet, self.write(f"10-{net_name}.conflist", conf))
        self.nets.append(net)
        return net

    def simple_bridge(
        self, network: str, bridge: str, version: str = "1.0.0", ipmasq: bool = True
    ) -> JSONDict:
        """bridge (+host-local on a fresh subnet) and portmap, as a conflist dict (not written)."""
        return {
            "cniVersion": version,
            "name": network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": ipmasq,
                    "ipam": {"type": "host-local", "subnet": str(self.subnet())},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def cache_file(
        self, network: str, cid: str, ifname: str = "eth0", cache: Path | None = None
    ) -> Path:
        return (cache or self.cache_dir) / "results" / f"{network}-{cid}-{ifname}"

    def fake_plugin(self, name: str = "fake") -> str:
        """Install tests/fake_plugins/fake as `name` in the private plugin dir; return the
        CNI_PATH that finds it first, then the real plugins. It logs to `fake_log`."""
        self.plugin_dir.mkdir(exist_ok=True)
        path = self.plugin_dir / name
        shutil.copy(FAKE_PLUGIN, path)
        path.chmod(0o755)
        return f"{self.plugin_dir}:{PLUGIN_DIR}"

    def fake_log_entries(self) -> list[JSONDict]:
        """Every line of the fake plugin's log (and of anything else the test logs there)."""
        if not self.fake_log.exists():
            return []
        return [json.loads(line) for line in self.fake_log.read_text().splitlines()]

    def fake_calls(self) -> list[JSONDict]:
        """The fake plugin's calls in order: cmd, cid, ifname, time, pid (no end markers)."""
        return [
            {
                "cmd": e["env"]["CNI_COMMAND"] or "",
                "cid": e["env"]["CNI_CONTAINERID"] or "",
                "ifname": e["env"]["CNI_IFNAME"] or "",
                "time": e["time"],
                "pid": e["pid"],
            }
            for e in self.fake_log_entries()
            if "env" in e and "end" not in e
        ]

    # -- running cnirun ---------------------------------------------------------------------

    def env(self, **extra: str | None) -> dict[str, str]:
        """A clean environment aimed at this test's dirs; `extra` adds or (None) removes."""
        env = clean_environ()
        env.update(
            NETCONFPATH=str(self.netconf_dir),
            CNI_PATH=PLUGIN_DIR,
            CNIRUN_CACHE_DIR=str(self.cache_dir),
            CNIRUN_STATE_DIR=str(self.state_dir),
            # No infra pool unless a test asks (tests/e2e/test_pool.py): each run's own
            # containers are then all it leaves, and the leak checks can say so exactly.
            CNIRUN_INFRA_POOL="0",
            FAKE_LOG=str(self.fake_log),
        )
        env.update(self.overrides)
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def argv(self, args: Sequence[str], debug: bool | None = None) -> list[str]:
        debug = self.debug if debug is None else debug
        return [sys.executable, "-m", "cnirun", *(["--debug"] if debug else []), *args]

    def _note(self, env: dict[str, str], result: Result | None = None) -> None:
        if env.get("CNIRUN_STATE_DIR"):
            self.state_dirs.add(Path(env["CNIRUN_STATE_DIR"]))
        if result is not None:
            self.sandbox_ids.update(result.sandbox_ids)
            if "priv-net-run" in result.argv:  # its own netns names (doctor lists others' too)
                self.privnet_ids.update(PRIVNET_RE.findall(result.stdout + result.raw_stderr))

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        debug: bool | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run cnirun ARGS to the end (stdin: `input`, else /dev/null)."""
        env = env if env is not None else self.env()
        proc = self._popen(args, env, debug, stdin=subprocess.PIPE if input else None)
        try:
            out, err = proc.communicate(input or None, timeout=timeout or self.timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return self._result(proc, out, err)

    def _popen(
        self, args: Sequence[str], env: dict[str, str], debug: bool | None, stdin: Any = None
    ) -> subprocess.Popen[str]:
        self._note(env)
        proc = subprocess.Popen(
            self.argv(args, debug),
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        if "priv-net-run" in args:
            watch = PrivnetWatch(proc, self.privnet_ids)
            watch.start()
            self.watches.append(watch)
        return proc

    def _result(self, proc: subprocess.Popen[str], out: str, err: str) -> Result:
        for watch in self.watches:
            if watch.proc is proc:
                watch.join(timeout=10)
        argv = proc.args
        assert isinstance(argv, list)
        result = Result(argv, proc.returncode, out, err)
        self._note({}, result)
        return result

    def start(
        self, *args: str, env: dict[str, str] | None = None, debug: bool | None = None
    ) -> subprocess.Popen[str]:
        """Start cnirun ARGS in the background, stdout and stderr piped."""
        proc = self._popen(args, env if env is not None else self.env(), debug)
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 30, read: str = "") -> Result:
        """Wait for a started cnirun; `read` is stderr the test already consumed."""
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return self._result(proc, out, read + err)

    def net(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        cache: bool = True,
        timeout: float | None = None,
        debug: bool = False,
    ) -> Result:
        """`cnirun net ARGV`, with `--cache-dir <ours>` unless `cache` is False (then the
        default cache dir /var/lib/cni, or whatever ARGV says)."""
        env = dict(env if env is not None else self.env())
        args = ["net", *argv]
        if cache:
            args += ["--cache-dir", str(self.cache_dir)]
        else:
            env.pop("CNIRUN_CACHE_DIR", None)
        return self.run(*args, env=env, timeout=timeout, debug=debug)

    def ok(self, *argv: str, **kw: Any) -> str:
        """Run `cnirun net` and require success with a silent stderr; return stdout."""
        run = self.net(*argv, **kw)
        assert run.returncode == 0, f"cnirun net {shlex.join(argv)}: {run.explain()}"
        assert run.raw_stderr == "", run.raw_stderr
        return run.stdout

    def add(self, *argv: str, **kw: Any) -> JSONDict:
        """`net add`, requiring exit 0 and a result JSON object on stdout."""
        result = json.loads(self.ok("add", *argv, **kw))
        assert isinstance(result, dict)
        return result

    def quiet(self, *argv: str, **kw: Any) -> None:
        """A `net` command (del/check/gc/status) that must succeed and print nothing at all."""
        out = self.ok(*argv, **kw)
        assert out == "", f"cnirun net {shlex.join(argv)} printed {out!r}"

    def listen(self, netns: str, port: int, token: str) -> subprocess.Popen[str]:
        """A one-shot TCP server inside `netns` that sends `token` to whoever connects."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _SERVER, str(port), token],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert read_line(proc, 10) == "ready"
        return proc

    def terminal(self, *args: str, **env: str) -> Terminal:
        """cnirun ARGS (no --debug) on a pseudo-terminal."""
        return Terminal(self.argv(args, debug=False), self.env(**env))

    def run_on_pty(self, *args: str, columns: int = 160, timeout: float = 180) -> tuple[int, str]:
        """cnirun with stderr on a terminal `columns` wide; return (status, terminal output)."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        output = io.BytesIO()

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    return
                if not chunk:
                    return
                output.write(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        env = self.env()
        self._note(env)
        try:
            proc = subprocess.Popen(
                self.argv(args, debug=False),
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=slave,
            )
        finally:
            os.close(slave)
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=30)
            os.close(master)
        return proc.returncode, output.getvalue().decode(errors="replace")

    # -- what the test's cnirun left --------------------------------------------------------

    def records(self) -> list[str]:
        """Sandbox IDs with a record in this test's state dir (noted for cleanup)."""
        directory = self.state_dir / "sandboxes"
        if not directory.exists():
            return []
        ids = sorted(p.stem for p in directory.glob("*.json"))
        self.sandbox_ids.update(ids)
        return ids

    def containers(self, running: bool = False) -> list[str]:
        """IDs of the containers labelled as this test's (`self.label`)."""
        query = ["docker", "ps", "-q", "--no-trunc", "--filter", f"label={LABEL_TEST}={self.tag}"]
        query += ["--filter", "status=running"] if running else ["--all"]
        return sh(*query).stdout.split()

    def infra_containers(self) -> list[str]:
        """Infra containers of this test's state dir(s)."""
        found: list[str] = []
        for state in sorted(self.state_dirs):
            listed = sh("docker", "ps", "-aq", "--filter", f"label={LABEL_STATE_DIR}={state}")
            found += listed.stdout.split()
        return found

    def workload_sandbox(self, name: str, timeout: float = 15) -> str:
        """The sandbox ID of the workload container `name` (from its label)."""
        fmt = f'{{{{.Label "{LABEL_SANDBOX}"}}}}'
        found: list[str] = []

        def labelled() -> bool:
            found[:] = sh(
                "docker", "ps", "-a", "--filter", f"name=^{name}$", "--format", fmt
            ).stdout.split()
            return bool(found)

        wait_for(labelled, timeout, f"the workload container {name}")
        self.sandbox_ids.add(found[0])
        return found[0]

    def _ids(self, ids: Iterable[str] = ()) -> list[str]:
        return sorted({*ids, *self.sandbox_ids, *self.container_ids, *self.privnet_ids} - {""})

    def _prefixes(self) -> list[str]:
        """ "10.x.y." of each subnet: the firewall plugin's rules name only addresses."""
        return [str(n.network_address).rsplit(".", 1)[0] + "." for n in self.subnets]

    def leaks(self, ids: Iterable[str] = (), bridges: Sequence[str] | None = None) -> list[str]:
        """Everything of this test's cnirun runs that should be gone by now, one line each."""
        for watch in self.watches:
            watch.join(timeout=10)
        ids = self._ids(ids)
        holders = [f"cnirun-{i}" for i in ids if re.fullmatch(r"[0-9a-f]{32}", i)]
        bridges = list(self.bridges) if bridges is None else list(bridges)
        leaks = leakcheck.docker_leaks([*ids, self.tag])
        leaks += leakcheck.cache_leaks(ids, [self.cache_dir, DEFAULT_CACHE_DIR])
        leaks += leakcheck.reservation_leaks(ids, [DEFAULT_IPAM_DIR])
        leaks += leakcheck.iptables_leaks([*ids, *self.netnames])
        leaks += leakcheck.netns_leaks(ids, holders)
        leaks += leakcheck.bridge_port_leaks(bridges)
        results = self.cache_dir / "results"
        if results.is_dir():
            leaks += [
                f"CNI cache file {p} left behind"
                for p in sorted(results.iterdir())
                if p not in self.planted
            ]
        for state in sorted(self.state_dirs):
            if (state / "sandboxes").is_dir():
                leaks += [f"file {p} left behind" for p in sorted((state / "sandboxes").iterdir())]
        leaks += [f"infra container {c[:12]} left behind" for c in self.infra_containers()]
        leaks += [
            f"owner file {OWNERS_DIR}/{i}.json left behind"
            for i in ids
            if os.path.exists(f"{OWNERS_DIR}/{i}.json")
        ]
        for name in self.netnames:
            ipam = Path(DEFAULT_IPAM_DIR) / name
            if ipam.is_dir():
                held = [p for p in sorted(ipam.iterdir()) if p not in self.planted]
                held = [p for p in held if p.name != "lock" and not p.name.startswith("last_")]
                leaks += [f"host-local reservation {p}" for p in held]
        prefixes = self._prefixes()
        if prefixes:
            for table in ("nat", "filter"):
                for line in sh("iptables-save", "-t", table).stdout.splitlines():
                    if any(p in line for p in prefixes):
                        leaks.append(f"iptables -t {table}: {line}")
        leaks += privnet_leaks(self.privnet_ids)
        leaks += leakcheck.dnsname_leaks(self.netnames, self.bridges)
        return list(dict.fromkeys(leaks))

    def assert_clean(self, ids: Iterable[str] = (), bridges: Sequence[str] | None = None) -> None:
        """No resource of this test's cnirun runs is left: containers, veths on its bridges,
        IP reservations, cache files, netns holders, records, iptables rules. `ids` are
        sandbox IDs the test learned (all the harness saw are checked anyway); `bridges`
        limits the bridges whose ports are checked (default: all of the test's)."""
        ids = list(ids)
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
        leaks = self.leaks(ids, bridges)
        assert not leaks, "resources left behind:\n  " + "\n  ".join(leaks)

    def assert_nothing_created(self, run: Result) -> None:
        """A run refused before its first side effect: no infra, netns or plugin call."""
        assert run.sandbox_ids == [], run.explain()
        assert "held netns" not in run.debug and "CNI_COMMAND=ADD" not in run.debug, run.explain()
        assert self.fake_calls() == []
        self.assert_clean([])

    # -- cleanup ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Best effort: remove whatever the test left (it may have failed anywhere), then the
        bridges, links, netns and host-local dirs it or the plugins made."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:  # reaped: a zombie would still count as its sandbox's owner
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for undo in reversed(self.debris):
            with contextlib.suppress(Exception):
                undo()
        self._remove_containers()
        if any(self._has_records(s) for s in self.state_dirs) or self._has_cache():
            for state in sorted(self.state_dirs):  # reclaims sandboxes, DELs their attachments
                subprocess.run(
                    self.argv(["gc"], debug=False),
                    env=self.env(CNIRUN_STATE_DIR=str(state)),
                    cwd=REPO,
                    capture_output=True,
                    timeout=120,
                    check=False,
                )
        for cache in (self.cache_dir, Path(DEFAULT_CACHE_DIR)):
            for entry in self._cache_entries(cache):
                self._force_del(entry, cache)
        for sid in sorted(self.sandbox_ids) + sorted(self.privnet_ids):
            name = f"cnirun-{sid}" if re.fullmatch(r"[0-9a-f]{32}", sid) else sid
            holder = Path(NETNS_DIR) / name
            if os.path.lexists(holder):
                quiet("umount", "-l", str(holder))
                with contextlib.suppress(OSError):
                    holder.unlink()
            with contextlib.suppress(OSError):
                os.unlink(f"{PRIVNET_LOCK_DIR}/{name}.lock")  # its session ended long ago
            with contextlib.suppress(OSError):
                os.unlink(f"{OWNERS_DIR}/{sid}.json")
        if self.held_names:
            from cnirun.host.netns import release_netns

            for name in self.held_names:
                with contextlib.suppress(Exception):
                    release_netns(name)
        for name in self.netns_names:
            quiet("ip", "netns", "del", name)
        for proc in self.procs:  # their docker CLI children end with their containers
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
                proc.communicate(timeout=10)
        self._purge_iptables()
        self._purge_dnsname()
        for link in self.links + self.bridges:
            if link_exists(link):
                quiet("ip", "link", "del", link)
        for name in self.netnames:
            shutil.rmtree(Path(DEFAULT_IPAM_DIR) / name, ignore_errors=True)

    def _has_records(self, state: Path) -> bool:
        return (state / "sandboxes").is_dir() and any((state / "sandboxes").iterdir())

    def _has_cache(self) -> bool:
        return (self.cache_dir / "results").is_dir() and any((self.cache_dir / "results").iterdir())

    def _remove_containers(self) -> None:
        found = set(self.containers()) | set(self.infra_containers())
        fmt = f'{{{{index .Config.Labels "{LABEL_SANDBOX}"}}}}'
        for ref in sorted(found) + self.names:
            sid = sh("docker", "inspect", "-f", fmt, ref, check=False).stdout.strip()
            if re.fullmatch(r"[0-9a-f]{32}", sid):
                self.sandbox_ids.add(sid)
        for sid in sorted(self.sandbox_ids):
            listed = sh("docker", "ps", "-aq", "--filter", f"label={LABEL_SANDBOX}={sid}")
            found |= set(listed.stdout.split())
        if found:
            quiet("docker", "rm", "-f", *sorted(found))
        for name in self.names:
            quiet("docker", "rm", "-f", name)

    def _cache_entries(self, cache: Path) -> list[JSONDict]:
        """Cached attachments of this test's: all of its own cache, ours in the default one."""
        results = cache / "results"
        if not results.is_dir():
            return []
        ids = self._ids()
        entries = []
        for path in sorted(results.iterdir()):
            if cache == self.cache_dir or any(f"-{i}-" in path.name for i in ids):
                with contextlib.suppress(ValueError, OSError):
                    entries.append(json.loads(path.read_text()))
        return entries

    def _force_del(self, entry: JSONDict, cache: Path) -> None:
        # The entry carries the network's config: DEL with it, wherever the test kept its own.
        with contextlib.suppress(Exception):
            confdir = self.tmp / f"force-del-{uuid.uuid4().hex[:8]}"
            confdir.mkdir()
            (confdir / "00-cached.conflist").write_bytes(base64.b64decode(entry["config"]))
            argv = ["net", "del", entry["networkName"], entry.get("netns") or "/nonexistent"]
            argv += ["--container-id", entry["containerId"], "--ifname", entry["ifName"]]
            argv += ["--netconf-dir", str(confdir), "--cache-dir", str(cache)]
            subprocess.run(
                self.argv(argv, debug=False),
                env=self.env(CNI_PATH=f"{self.plugin_dir}:{PLUGIN_DIR}"),
                cwd=REPO,
                capture_output=True,
                timeout=120,
                check=False,
            )

    def _purge_iptables(self) -> None:
        """Drop rules still naming this test's IDs, networks or subnets (after a failure)."""
        needles = [*self._ids(), *self.netnames, *self._prefixes()]
        needles += [f"-i {b} " for b in self.bridges]  # dnsname's port 53 rule
        if not needles:
            return
        for table in ("nat", "filter"):
            for line in sh("iptables-save", "-t", table).stdout.splitlines():
                if line.startswith("-A ") and any(n in line for n in needles):
                    quiet("iptables", "-t", table, "-D", *shlex.split(line)[1:])

    def _purge_dnsname(self) -> None:
        """Stop the dnsmasq of this test's networks and drop their dnsname state (after a
        failure: the plugin's DEL does it when the last container leaves)."""
        for pid, cmdline in leakcheck.dnsmasq_processes():
            if any(f"{leakcheck.DNSNAME_DIR}/{n}/" in cmdline for n in self.netnames):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for name in self.netnames:
            shutil.rmtree(Path(leakcheck.DNSNAME_DIR) / name, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """After cleanup: anything of this test's at all (cnirun's or the harness's own)."""
        leaks = self.leaks()
        ids = self._ids()
        leaks += leakcheck.netns_leaks(ids, [*self.netns_names, *self.held_names])
        leaks += leakcheck.link_leaks([*self.bridges, *self.links])
        leaks += [
            f"host-local dir {DEFAULT_IPAM_DIR}/{n} left behind"
            for n in self.netnames
            if os.path.exists(f"{DEFAULT_IPAM_DIR}/{n}")
        ]
        return list(dict.fromkeys(leaks))

    def release(self) -> None:
        """Give the tag and the subnets back."""
        for held in self._claims:
            held.close()
        self._claims.clear()


def _drop_if_unused(bridge: str) -> None:
    ports = sh("ip", "-o", "link", "show", "master", bridge, check=False).stdout.strip()
    if link_exists(bridge) and not ports:
        quiet("ip", "link", "del", bridge)


_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1)
print("ready", flush=True)
s.settimeout(15)
c, peer = s.accept()
c.sendall(sys.argv[2].encode())
c.close()
"""


# -- a private registry on 127.0.0.1 ---------------------------------------------------------

REGISTRY_BIN = "docker-registry"
BLOB_SIZE = 3_000_000
# The legacy builder works offline with local base images whether or not buildx is installed.
BUILD_ENV = dict(os.environ, DOCKER_BUILDKIT="0")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class Registry:
    """A running private registry (Debian's docker-registry) on 127.0.0.1, and every local
    image the tests made for or from it. Only ever reached on 127.0.0.1."""

    def __init__(self, host: str, root: Path, process: subprocess.Popen[bytes]) -> None:
        self.host = host
        self.root = root
        self.process = process
        self.refs: set[str] = set()
        self.ids: set[str] = set()

    @classmethod
    def start(cls, root: Path) -> Registry:
        binary = shutil.which(REGISTRY_BIN)
        if binary is None:
            pytest.fail(
                f"{REGISTRY_BIN} is not installed (apt-get install docker-registry, "
                "or `make setup`)",
                pytrace=False,
            )
        for _ in range(5):  # another process may grab the free port before the registry does
            port = free_port()
            config = root / "config.yml"
            storage = root / "storage"
            config.write_text(
                "version: 0.1\n"
                "log: {level: error, accesslog: {disabled: true}}\n"
                f"storage: {{filesystem: {{rootdirectory: '{storage}'}}, "
                "delete: {enabled: true}}\n"
                f"http: {{addr: '127.0.0.1:{port}'}}\n"
            )
            with open(root / "registry.log", "ab") as log:  # the child keeps its own copy
                process = subprocess.Popen(
                    [binary, "serve", str(config)], stdout=log, stderr=log, start_new_session=True
                )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and process.poll() is None:
                if _answers(f"http://127.0.0.1:{port}/v2/"):
                    return cls(f"127.0.0.1:{port}", root, process)
                time.sleep(0.1)
            cls._stop(process)
        pytest.fail(f"{REGISTRY_BIN} did not start: {(root / 'registry.log').read_text()[-500:]}")

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def stop(self) -> None:
        self._stop(self.process)

    def build(self, repo: str, tag: str, infra: bool) -> str:
        """Build `host/repo:tag` locally (an infra image blocks forever); return its image ID."""
        from cnirun.docker.pause import pause_binary

        ref = f"{self.host}/{repo}:{tag}"
        context = self.root / "build" / uuid.uuid4().hex
        context.mkdir(parents=True)
        (context / "blob").write_bytes(os.urandom(BLOB_SIZE))
        if infra:
            (context / "pause").write_bytes(pause_binary())
            (context / "pause").chmod(0o755)
            steps = 'FROM scratch\nCOPY pause /pause\nCOPY blob /blob\nENTRYPOINT ["/pause"]\n'
        else:
            steps = f"FROM {IMAGE}\nCOPY blob /blob\n"
        (context / "Dockerfile").write_text(steps)
        self.refs.add(ref)
        sh("docker", "build", "-q", "-t", ref, str(context), env=BUILD_ENV, timeout=300)
        shutil.rmtree(context)
        built = image_id(ref)
        assert built is not None
        self.ids.add(built)
        return built

    def push(self, repo: str, tag: str) -> None:
        sh("docker", "push", "-q", f"{self.host}/{repo}:{tag}", timeout=300)

    def publish(self, repo: str, tag: str, infra: bool) -> str:
        """Build, push and remove locally: the ref can only come back by a pull."""
        self.build(repo, tag, infra)
        self.push(repo, tag)
        ref = f"{self.host}/{repo}:{tag}"
        self.remove(ref)
        return ref

    def remove(self, *refs: str) -> None:
        for ref in refs:
            sh("docker", "rmi", "-f", ref, check=False)
            assert image_id(ref) is None, f"image {ref} is still there"

    def remove_everything(self) -> None:
        """Every image made or pulled here (tags first, then stale IDs they left)."""
        self.remove(*sorted(self.refs))
        for stale in sorted(self.ids):
            sh("docker", "rmi", "-f", stale, check=False)
        leftovers = sh(
            "docker", "images", "-q", "--filter", f"reference={self.host}/*/*"
        ).stdout.split()
        leftovers += [i for i in self.ids if image_id(i) is not None]
        assert not leftovers, f"images left behind: {leftovers}"

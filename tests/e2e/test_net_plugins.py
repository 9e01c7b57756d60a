"""End-to-end tests of `cnirun net` (cnitool-compatible) with the real Debian CNI plugins.

Each test attaches real `ip netns` namespaces through bridge, ptp, macvlan, portmap, firewall,
tuning and bandwidth, checks what the kernel really holds, and proves DEL leaves nothing.
Also holds the `Lab` harness that tests/e2e/test_net_cli.py reuses.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import secrets
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.common import clean_environ
from tests.leakcheck import DEFAULT_CACHE_DIR, DEFAULT_IPAM_DIR, assert_no_leaks, find_leaks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = "/usr/lib/cni"
NETNS_DIR = "/run/netns"
CLI_TIMEOUT = 60
JSONDict = dict[str, Any]


def run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host tool; with `check`, fail the test with its stderr when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def cnitool_id(netns_path: str) -> str:
    """cnitool's default container ID, computed independently of cnirun."""
    return "cnitool-" + hashlib.sha512(netns_path.encode()).hexdigest()[:20]


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def ns_ipv4(netns: str, ifname: str) -> list[str]:
    """The IPv4 addresses (CIDR) on `ifname` inside the named netns, read with `ip`."""
    out = run(["ip", "-n", netns, "-o", "-4", "addr", "show", "dev", ifname]).stdout
    addrs = []
    for line in out.splitlines():
        words = line.split()
        addrs.append(words[words.index("inet") + 1])
    return sorted(addrs)


def ns_link(netns: str, ifname: str) -> str:
    return run(["ip", "-n", netns, "-o", "link", "show", "dev", ifname]).stdout


def ns_has_link(netns: str, ifname: str) -> bool:
    return run(["ip", "-n", netns, "link", "show", "dev", ifname], check=False).returncode == 0


def result_ipv4(result: JSONDict) -> list[str]:
    """IPv4 addresses of an ADD result, whatever its version (0.2.0 `ip4` or `ips`)."""
    if "ip4" in result:
        return [result["ip4"]["ip"]]
    return sorted(
        ip["address"]
        for ip in result.get("ips", [])
        if ipaddress.ip_interface(ip["address"]).version == 4
    )


def host_interfaces(result: JSONDict, bridge: str = "") -> list[str]:
    """Host-side interfaces (no sandbox) a result names, bridge excluded."""
    return [
        i["name"]
        for i in result.get("interfaces", [])
        if not i.get("sandbox") and i["name"] != bridge
    ]


def iptables_lines(needle: str) -> list[str]:
    """Rules in the nat and filter tables whose text contains `needle`."""
    lines = []
    for table in ("nat", "filter"):
        out = run(["iptables-save", "-t", table]).stdout
        lines += [f"{table}: {ln}" for ln in out.splitlines() if needle in ln]
    return lines


def port_mapping(host_port: int, container_port: int) -> str:
    """CAP_ARGS JSON with one TCP portMappings entry."""
    mapping = {"hostPort": host_port, "containerPort": container_port, "protocol": "tcp"}
    return json.dumps({"portMappings": [mapping]})


def free_port() -> int:
    """A TCP port nothing on the host listens on right now (for portmap's hostPort)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the host already routes or holds an address in."""
    nets = []
    for argv in (["ip", "-4", "-o", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
        for word in run(argv).stdout.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit() and "." in word:
                    nets.append(ipaddress.IPv4Network(word, strict=False))
    return nets


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output from {proc.args!r} within {timeout}s")
    return proc.stdout.readline().strip()


SERVER = """
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


class Lab:
    """One test's private world: netconf dir, cache dir, netns, links and cleanup.

    Everything it creates carries a random tag; `cleanup` removes all of it (also after a
    failed test) and `leaks` lists what is still there.
    """

    def __init__(self, tmp: Path, netconf_dir: Path, cache_dir: Path) -> None:
        self.tmp = tmp
        self.netconf_dir = netconf_dir
        self.cache_dir = cache_dir
        self.tag = secrets.token_hex(4)
        self.netns_names: list[str] = []
        self.links: list[str] = []  # host links this test created (directly or via plugins)
        self.networks: list[str] = []  # host-local data dirs named after our networks
        self.container_ids: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.subnets: list[ipaddress.IPv4Network] = []
        self.debris: list[Callable[[], None]] = []

    # -- names and resources ----------------------------------------------------------------

    def netns(self) -> str:
        """Create a fresh netns with `ip netns add`; return its name."""
        name = f"cnirun-net-{self.tag}-{len(self.netns_names)}"
        run(["ip", "netns", "add", name])
        self.netns_names.append(name)
        return name

    def network(self) -> str:
        net = f"cnt{self.tag}n{len(self.networks)}"
        self.networks.append(net)
        return net

    def bridge(self) -> str:
        name = f"cnb{self.tag}{len(self.links)}"
        self.links.append(name)
        return name

    def veth_pair(self) -> tuple[str, str]:
        """A host veth pair (both ends up); used as a macvlan master."""
        a, b = f"cnv{self.tag}{len(self.links)}a", f"cnv{self.tag}{len(self.links)}b"
        self.links += [a, b]
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        run(["ip", "link", "set", a, "up"])
        run(["ip", "link", "set", b, "up"])
        return a, b

    def subnet(self) -> ipaddress.IPv4Network:
        """A /24 in 10.201.0.0-10.250.255.255 that no host route or address overlaps."""
        taken = host_networks() + self.subnets
        for _ in range(200):
            net = ipaddress.IPv4Network(
                f"10.{random.randint(201, 250)}.{random.randint(0, 255)}.0/24"
            )
            if not any(net.overlaps(t) for t in taken):
                self.subnets.append(net)
                return net
        raise AssertionError("no free 10.201-250.x.0/24 subnet on this host")

    def write(self, filename: str, conf: JSONDict | str) -> Path:
        path = self.netconf_dir / filename
        path.write_text(conf if isinstance(conf, str) else json.dumps(conf, indent=2))
        return path

    def cache_file(
        self, network: str, cid: str, ifname: str = "eth0", cache: Path | None = None
    ) -> Path:
        return (cache or self.cache_dir) / "results" / f"{network}-{cid}-{ifname}"

    # -- running cnirun ---------------------------------------------------------------------

    def env(self, **extra: str | None) -> dict[str, str]:
        """cnitool-style environment: NETCONFPATH and CNI_PATH set, other CNI inputs unset."""
        env = clean_environ()
        env["NETCONFPATH"] = str(self.netconf_dir)
        env["CNI_PATH"] = PLUGIN_DIR
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def net(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        cache: bool = True,
        timeout: float = CLI_TIMEOUT,
        debug: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m cnirun net ARGV [--cache-dir <ours>]`; return the finished process."""
        cmd = [sys.executable, "-m", "cnirun", *(["--debug"] if debug else []), "net", *argv]
        if cache:
            cmd += ["--cache-dir", str(self.cache_dir)]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env if env is not None else self.env(),
            timeout=timeout,
            check=False,
        )

    def ok(self, *argv: str, **kw: Any) -> str:
        """Run `cnirun net` and require success with a silent stderr; return stdout."""
        proc = self.net(*argv, **kw)
        assert proc.returncode == 0, f"cnirun net {shlex.join(argv)}: {proc.stderr}"
        assert proc.stderr == "", proc.stderr
        return proc.stdout

    def add(self, *argv: str, **kw: Any) -> JSONDict:
        """`net add`, requiring exit 0 and a result JSON object on stdout."""
        out = self.ok("add", *argv, **kw)
        result = json.loads(out)
        assert isinstance(result, dict)
        return result

    def quiet(self, *argv: str, **kw: Any) -> None:
        """A command (del/check/gc/status) that must succeed and print nothing at all."""
        out = self.ok(*argv, **kw)
        assert out == "", f"cnirun net {shlex.join(argv)} printed {out!r}"

    def listen(self, netns: str, port: int, token: str) -> subprocess.Popen[str]:
        """A one-shot TCP server inside `netns` that sends `token` to whoever connects."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", SERVER, str(port), token],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert _read_line(proc, 10) == "ready"
        return proc

    # -- teardown ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove everything of ours, best effort: DEL leftovers, netns, links, IPAM dirs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for undo in self.debris:
            with contextlib.suppress(Exception):
                undo()
        # A failed test may leave attachments: DEL them through their cache entries.
        for cache in (self.cache_dir, Path(DEFAULT_CACHE_DIR)):
            for entry in self._our_cache_entries(cache):
                self._force_del(entry, cache)
        for name in self.netns_names:
            run(["ip", "netns", "del", name], check=False)
        for link in self.links:
            if link_exists(link):
                run(["ip", "link", "del", link], check=False)
        for net in self.networks:
            shutil.rmtree(Path(DEFAULT_IPAM_DIR) / net, ignore_errors=True)
        self._purge_iptables()

    def _our_cache_entries(self, cache: Path) -> list[JSONDict]:
        entries = []
        results = cache / "results"
        if not results.is_dir():
            return []
        for path in results.iterdir():
            if any(f"-{cid}-" in path.name for cid in self.container_ids):
                with contextlib.suppress(ValueError, OSError):
                    entries.append(json.loads(path.read_text()))
        return entries

    def _force_del(self, entry: JSONDict, cache: Path) -> None:
        # The entry carries the network's config: DEL with it, wherever the test kept its own.
        confdir = Path(tempfile.mkdtemp(dir=self.tmp, prefix="force-del-"))
        (confdir / "00-cached.conflist").write_bytes(base64.b64decode(entry["config"]))
        argv = ["del", entry["networkName"], entry.get("netns") or "/nonexistent"]
        argv += ["--container-id", entry["containerId"], "--ifname", entry["ifName"]]
        argv += ["--netconf-dir", str(confdir)]
        if cache != self.cache_dir:
            argv += ["--cache-dir", str(cache)]
        self.net(*argv, cache=cache == self.cache_dir)

    def _purge_iptables(self) -> None:
        """Drop rules still naming our container IDs (only ever after a failed test)."""
        for table in ("nat", "filter"):
            for line in run(["iptables-save", "-t", table]).stdout.splitlines():
                if line.startswith("-A ") and any(c in line for c in self.container_ids):
                    run(["iptables", "-t", table, "-D", *shlex.split(line)[1:]], check=False)

    def leaks(self) -> list[str]:
        return find_leaks(
            self.container_ids,
            bridges=[],
            netns_names=self.netns_names,
            cache_dir=self.cache_dir,
            links=self.links,
        )


def lab_session(tmp_path: Path, netconf_dir: Path, cache_dir: Path) -> Iterator[Lab]:
    """Body of the `lab` fixtures: clean up after the test, then require no leaks at all."""
    world = Lab(tmp_path, netconf_dir, cache_dir)
    try:
        yield world
    finally:
        world.cleanup()
    leaks = world.leaks()
    assert not leaks, "left behind after cleanup:\n  " + "\n  ".join(leaks)


@pytest.fixture
def lab(tmp_path: Path, netconf_dir: Path, cache_dir: Path) -> Iterator[Lab]:
    """A Lab whose resources are removed after the test, which then must leave no leaks."""
    yield from lab_session(tmp_path, netconf_dir, cache_dir)


# -- assertions shared by the scenarios -------------------------------------------------------


def assert_attached(netns: str, ifname: str, result: JSONDict) -> str:
    """The result's IPv4 address really is on `ifname` in `netns`; return it (no prefix)."""
    want = result_ipv4(result)
    assert len(want) == 1, result
    assert ns_ipv4(netns, ifname) == want
    return str(ipaddress.ip_interface(want[0]).ip)


def assert_detached(
    lab: Lab,
    cid: str,
    network: str,
    ip: str,
    bridges: Sequence[str] = (),
    links: Sequence[str] = (),
    cache: Path | None = None,
) -> None:
    """After DEL: no cache file, reservation, veth, iptables rule or port left for `cid`."""
    cache = cache or lab.cache_dir
    assert not list((cache / "results").glob(f"*-{cid}-*"))
    assert not (Path(DEFAULT_IPAM_DIR) / network / ip).exists(), f"reservation {ip} kept"
    assert iptables_lines(cid) == []
    assert iptables_lines(f"{ip}/32") == []
    for link in links:
        assert not link_exists(link), f"host interface {link} survived DEL"
    assert_no_leaks([cid], bridges=bridges, cache_dir=cache)


def bridge_chain(lab: Lab, version: str, network: str, bridge: str) -> JSONDict:
    """bridge+host-local, portmap, firewall (>=0.4.0 only: it rejects 0.3.1), tuning, bandwidth."""
    subnet = lab.subnet()
    plugins: list[JSONDict] = [
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "subnet": str(subnet),
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]
    if version != "0.3.1":
        plugins.append({"type": "firewall"})
    plugins += [
        {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"}},
        {
            "type": "bandwidth",
            "ingressRate": 8_000_000,
            "ingressBurst": 800_000,
            "egressRate": 8_000_000,
            "egressBurst": 800_000,
        },
    ]
    return {"cniVersion": version, "name": network, "plugins": plugins}


def simple_bridge(
    lab: Lab, network: str, bridge: str, version: str = "1.0.0", ipmasq: bool = True
) -> JSONDict:
    return {
        "cniVersion": version,
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": ipmasq,
                "ipam": {"type": "host-local", "subnet": str(lab.subnet())},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


# -- the plugin matrix ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_bridge_portmap_firewall_tuning_bandwidth(lab: Lab, version: str) -> None:
    """The full chain, driven the cnitool way (NETCONFPATH, CNI_PATH, CAP_ARGS env)."""
    network, bridge, netns = lab.network(), lab.bridge(), lab.netns()
    lab.write("10-chain.conflist", bridge_chain(lab, version, network, bridge))
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    lab.container_ids.append(cid)
    port = free_port()
    caps = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}

    result = lab.add(network, path, env=lab.env(CAP_ARGS=json.dumps(caps)))

    assert result["cniVersion"] == version
    ip = assert_attached(netns, "eth0", result)
    assert lab.cache_file(network, cid).is_file(), "default container ID is not cnitool's"
    assert (Path(DEFAULT_IPAM_DIR) / network / ip).read_text().splitlines()[0] == cid
    veths = [i for i in host_interfaces(result, bridge) if i.startswith("veth")]
    ifbs = [i for i in host_interfaces(result, bridge) if i.startswith("bwp")]
    assert len(veths) == 1 and len(ifbs) == 1, result
    # tuning: the MTU and sysctl from the config are visible inside the netns
    assert " mtu 1400 " in ns_link(netns, "eth0")
    sysctl = run(["ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"])
    assert sysctl.stdout.strip() == "2"
    # bandwidth: a token bucket on the host veth (ingress) and on its ifb (egress)
    assert "tbf" in run(["tc", "qdisc", "show", "dev", veths[0]]).stdout
    assert "tbf" in run(["tc", "qdisc", "show", "dev", ifbs[0]]).stdout
    # ipMasq and portmap rules name the container; firewall admits the container's IP
    assert iptables_lines(cid), "no iptables rule names the container"
    if version != "0.3.1":
        assert any("CNI-FORWARD" in ln for ln in iptables_lines(f"{ip}/32"))
    # portmap: a server in the netns answers on 127.0.0.1:<hostPort> (snat sets route_localnet)
    token = f"hello-{lab.tag}"
    server = lab.listen(netns, 80, token)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        assert conn.recv(100).decode() == token
    server.wait(timeout=5)

    check = lab.net("check", network, path)
    if version == "0.3.1":
        assert check.returncode == 125
        assert check.stderr.splitlines() == [
            'cnirun: error: configuration version "0.3.1" does not support the CHECK command'
        ]
        assert check.stdout == ""
    else:
        assert (check.returncode, check.stdout, check.stderr) == (0, "", "")

    lab.quiet("del", network, path, env=lab.env())  # no CAP_ARGS: the cached ones are used
    assert not ns_has_link(netns, "eth0")
    assert_detached(lab, cid, network, ip, bridges=[bridge], links=veths + ifbs)


def test_ptp_env_ifname_and_cni_args(lab: Lab) -> None:
    """ptp+host-local with CNI_IFNAME and CNI_ARGS from the environment (IP= picks the address)."""
    network, netns = lab.network(), lab.netns()
    subnet = lab.subnet()
    wanted = str(subnet.network_address + 77)
    lab.write(
        "20-ptp.conflist",
        {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": False,
                    "ipam": {"type": "host-local", "subnet": str(subnet)},
                }
            ],
        },
    )
    cid = cnitool_id(f"{NETNS_DIR}/{netns}")
    lab.container_ids.append(cid)
    env = lab.env(CNI_IFNAME="ptp7", CNI_ARGS=f"IgnoreUnknown=1;IP={wanted}")

    result = lab.add(network, netns, env=env)  # a bare name means /run/netns/<name>

    assert result_ipv4(result) == [f"{wanted}/24"]
    ip = assert_attached(netns, "ptp7", result)
    host = host_interfaces(result)
    assert len(host) == 1 and link_exists(host[0])
    lab.links += host
    entry = json.loads(lab.cache_file(network, cid, "ptp7").read_text())
    assert entry["cniArgs"] == [["IgnoreUnknown", "1"], ["IP", wanted]]
    assert entry["ifName"] == "ptp7" and entry["netns"] == f"{NETNS_DIR}/{netns}"
    lab.quiet("check", network, netns, env=env)
    lab.quiet("del", network, netns, env=env)
    assert not ns_has_link(netns, "ptp7")
    assert_detached(lab, cid, network, ip, links=host)


def test_macvlan_on_a_host_veth(lab: Lab) -> None:
    """macvlan (bridge mode) whose master is one end of a veth pair made for the test."""
    master, _peer = lab.veth_pair()
    network, netns = lab.network(), lab.netns()
    lab.write(
        "30-macvlan.conflist",
        {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "macvlan",
                    "master": master,
                    "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": str(lab.subnet())},
                },
                {"type": "tuning", "mtu": 1280},
            ],
        },
    )
    path = f"{NETNS_DIR}/{netns}"
    cid = f"mv-{lab.tag}"
    lab.container_ids.append(cid)

    result = lab.add(network, path, "--container-id", cid, "--ifname", "mv0")

    ip = assert_attached(netns, "mv0", result)
    link = ns_link(netns, "mv0")
    assert " mtu 1280 " in link
    details = run(["ip", "-n", netns, "-d", "-o", "link", "show", "dev", "mv0"]).stdout
    assert "macvlan mode bridge" in details
    lab.quiet("check", network, path, "--container-id", cid, "--ifname", "mv0")
    lab.quiet("del", network, path, "--container-id", cid, "--ifname", "mv0")
    assert not ns_has_link(netns, "mv0")
    assert link_exists(master), "DEL must not touch the macvlan master"
    assert_detached(lab, cid, network, ip)


SEED_MYNET = """{
	"cniVersion": "0.2.0",
	"name": "mynet",
	"type": "bridge",
	"bridge": "cni0",
	"isGateway": true,
	"ipMasq": true,
	"ipam": {
		"type": "host-local",
		"subnet": "10.22.0.0/16",
		"routes": [
			{ "dst": "0.0.0.0/0" }
		]
	}
}
"""


def _seed_steps(lab: Lab, network: str, bridge: str, cache: Path | None) -> None:
    """ADD/CHECK/DEL of a 0.2.0 single-plugin `.conf` network; `cache=None` = default dir."""
    netns = lab.netns()
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    lab.container_ids.append(cid)
    use_ours = cache is None

    result = lab.add(network, path, cache=use_ours)

    # A 0.2.0 result: ip4 with the gateway and the route from the config.
    assert result["cniVersion"] == "0.2.0" and "ips" not in result
    assert result["ip4"]["routes"] == [{"dst": "0.0.0.0/0"}]
    ip = assert_attached(netns, "eth0", result)
    gw = result["ip4"]["gateway"]
    assert run(["ip", "-n", netns, "route", "show", "default"]).stdout.split()[:3] == [
        "default",
        "via",
        gw,
    ]
    cache_dir = cache or lab.cache_dir
    assert lab.cache_file(network, cid, cache=cache_dir).is_file()
    assert iptables_lines(cid), "ipMasq rules should name the container"
    check = lab.net("check", network, path, cache=use_ours)
    assert check.returncode == 125
    assert check.stderr.splitlines() == [
        'cnirun: error: configuration version "0.2.0" does not support the CHECK command'
    ]
    lab.quiet("del", network, path, cache=use_ours)
    assert_detached(lab, cid, network, ip, bridges=[bridge], cache=cache_dir)


def test_seed_mynet_conf_copy(lab: Lab) -> None:
    """The seed README's 10-mynet.conf, with a private bridge, subnet and network name."""
    network, bridge = lab.network(), lab.bridge()
    conf = json.loads(SEED_MYNET)
    conf.update(name=network, bridge=bridge)
    conf["ipam"]["subnet"] = str(lab.subnet())
    lab.write("10-mynet.conf", conf)
    _seed_steps(lab, network, bridge, cache=None)


def test_seed_mynet_conf_literal_with_default_cache_dir(lab: Lab) -> None:
    """The seed's text byte for byte (cni0, 10.22.0.0/16), cached in the default /var/lib/cni."""
    seed_net = ipaddress.IPv4Network("10.22.0.0/16")
    if not link_exists("cni0"):
        clash = [n for n in host_networks() if n.overlaps(seed_net)]
        assert not clash, f"the host already routes {clash}; the seed's subnet would clash"
        # cni0 is ours only if we create it; drop it afterwards unless someone joined it.
        lab.debris.append(lambda: _drop_if_unused("cni0"))
    lab.write("10-mynet.conf", SEED_MYNET)
    _seed_steps(lab, "mynet", "cni0", cache=Path(DEFAULT_CACHE_DIR))


def _drop_if_unused(bridge: str) -> None:
    ports = run(["ip", "-o", "link", "show", "master", bridge], check=False).stdout.strip()
    if link_exists(bridge) and not ports:
        run(["ip", "link", "del", bridge], check=False)


# -- inputs, multiple attachments, GC, STATUS, VERSION, idempotent DEL --------------------------


def test_flags_args_and_cap_args(lab: Lab) -> None:
    """--args/--cap-args/--netconf-dir/--cni-path/--timeout instead of the environment."""
    network, bridge, netns = lab.network(), lab.bridge(), lab.netns()
    conf = simple_bridge(lab, network, bridge)
    subnet = ipaddress.IPv4Network(conf["plugins"][0]["ipam"]["subnet"])
    wanted = str(subnet.network_address + 42)
    private = lab.tmp / "flags.d"
    private.mkdir()
    (private / "10-n.conflist").write_text(json.dumps(conf))
    path = f"{NETNS_DIR}/{netns}"
    cid = f"flags-{lab.tag}"
    lab.container_ids.append(cid)
    port = free_port()
    caps = {"portMappings": [{"hostPort": port, "containerPort": 8080, "protocol": "tcp"}]}
    # The environment points nowhere useful and sets rival values: flags must win.
    env = lab.env(
        NETCONFPATH=str(lab.tmp / "nowhere"),
        CNI_PATH=str(lab.tmp / "nobin"),
        CNI_ARGS="IgnoreUnknown=1;IP=10.0.0.1",
        CAP_ARGS='{"portMappings": []}',
    )
    flags = ["--netconf-dir", str(private), "--cni-path", PLUGIN_DIR, "--container-id", cid]
    flags += ["--timeout", "30"]

    result = lab.add(
        network,
        path,
        *flags,
        "--args",
        "IgnoreUnknown=1",
        "--args",
        f"IP={wanted}",
        "--cap-args",
        json.dumps(caps),
        env=env,
    )

    assert result_ipv4(result) == [f"{wanted}/{subnet.prefixlen}"]
    ip = assert_attached(netns, "eth0", result)
    entry = json.loads(lab.cache_file(network, cid).read_text())
    assert entry["containerId"] == cid
    assert entry["cniArgs"] == [["IgnoreUnknown", "1"], ["IP", wanted]]
    assert entry["capabilityArgs"] == caps
    dnat = [ln for ln in iptables_lines(cid) if "--dports" in ln]
    assert len(dnat) == 1 and f"--dports {port}" in dnat[0], dnat
    assert any(f"{wanted}:8080" in ln for ln in iptables_lines(f"--dport {port} "))
    # CHECK and DEL get no args: DEL must find the cached ones (portmap needs its mappings).
    plain = lab.env(NETCONFPATH=str(lab.tmp / "nowhere"), CNI_PATH=str(lab.tmp / "nobin"))
    lab.quiet("check", network, path, *flags, env=plain)
    lab.quiet("del", network, path, *flags, env=plain)
    assert_detached(lab, cid, network, ip, bridges=[bridge])


def test_two_networks_in_one_netns(lab: Lab) -> None:
    """eth0 on a bridge network and eth1 on a ptp network; DEL of one leaves the other."""
    net_a, bridge, net_b, netns = lab.network(), lab.bridge(), lab.network(), lab.netns()
    lab.write("10-a.conflist", simple_bridge(lab, net_a, bridge))
    lab.write(
        "20-b.conflist",
        {
            "cniVersion": "0.4.0",
            "name": net_b,
            "plugins": [
                {"type": "ptp", "ipam": {"type": "host-local", "subnet": str(lab.subnet())}}
            ],
        },
    )
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    lab.container_ids.append(cid)

    res_a = lab.add(net_a, path)
    res_b = lab.add(net_b, path, "--ifname", "eth1")

    ip_a = assert_attached(netns, "eth0", res_a)
    ip_b = assert_attached(netns, "eth1", res_b)
    lab.links += host_interfaces(res_b)
    assert lab.cache_file(net_a, cid, "eth0").is_file()
    assert lab.cache_file(net_b, cid, "eth1").is_file()
    lab.quiet("check", net_a, path)
    lab.quiet("check", net_b, path, "--ifname", "eth1")

    lab.quiet("del", net_a, path)
    assert not ns_has_link(netns, "eth0")
    assert ns_ipv4(netns, "eth1") == result_ipv4(res_b)
    assert lab.cache_file(net_b, cid, "eth1").is_file()
    assert (Path(DEFAULT_IPAM_DIR) / net_b / ip_b).is_file()
    lab.quiet("check", net_b, path, "--ifname", "eth1")

    lab.quiet("del", net_b, path, "--ifname", "eth1")
    assert_detached(lab, cid, net_a, ip_a, bridges=[bridge])
    assert_detached(lab, cid, net_b, ip_b, links=host_interfaces(res_b))


def test_gc_deletes_only_stale_attachments(lab: Lab) -> None:
    """Two netns on one network; `gc --valid A/eth0` tears down B for real and keeps A."""
    network, bridge = lab.network(), lab.bridge()
    lab.write("10-gc.conflist", simple_bridge(lab, network, bridge))
    ns_a, ns_b = lab.netns(), lab.netns()
    cid_a, cid_b = f"gca-{lab.tag}", f"gcb-{lab.tag}"
    lab.container_ids += [cid_a, cid_b]
    port = free_port()
    caps = port_mapping(port, 80)
    res_a = lab.add(network, ns_a, "--container-id", cid_a)
    res_b = lab.add(network, ns_b, "--container-id", cid_b, "--cap-args", caps)
    ip_a = assert_attached(ns_a, "eth0", res_a)
    ip_b = assert_attached(ns_b, "eth0", res_b)
    assert any(f"--dports {port}" in ln for ln in iptables_lines(cid_b))

    refused = lab.net("gc", network)
    assert refused.returncode == 125 and refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1 and "--valid" in refused.stderr
    malformed = lab.net("gc", network, "--valid", cid_a)
    assert malformed.returncode == 125
    assert malformed.stderr.splitlines() == [
        f'cnirun: error: invalid --valid "{cid_a}": expected CONTAINERID/IFNAME'
    ]
    assert lab.cache_file(network, cid_b).is_file(), "a refused gc must not delete anything"

    lab.quiet("gc", network, "--valid", f"{cid_a}/eth0")

    # B is gone for real: interface, reservation, cache, ipMasq and portmap rules.
    assert not ns_has_link(ns_b, "eth0")
    assert_detached(lab, cid_b, network, ip_b)
    # A is untouched and still passes CHECK.
    assert ns_ipv4(ns_a, "eth0") == result_ipv4(res_a)
    assert lab.cache_file(network, cid_a).is_file()
    assert (Path(DEFAULT_IPAM_DIR) / network / ip_a).is_file()
    lab.quiet("check", network, ns_a, "--container-id", cid_a)

    lab.quiet("del", network, ns_a, "--container-id", cid_a)
    assert_detached(lab, cid_a, network, ip_a, bridges=[bridge])


def test_status_and_version(lab: Lab) -> None:
    """STATUS on a 1.0.0 network succeeds silently; VERSION lists what each plugin answers."""
    network, bridge = lab.network(), lab.bridge()
    conf = bridge_chain(lab, "1.0.0", network, bridge)
    lab.write("10-sv.conflist", conf)
    types = [p["type"] for p in conf["plugins"]]

    lab.quiet("status", network)
    lab.quiet("status", network, "/run/netns/ignored")  # cnitool's NETNS argument is accepted

    text = lab.ok("version", network, cache=False)
    listed = json.loads(lab.ok("version", network, "--format", "json", cache=False))
    assert listed["network"] == network and listed["cniVersion"] == "1.0.0"
    assert [p["type"] for p in listed["plugins"]] == types
    lines = text.splitlines()
    assert lines[0] == f"network {network} (cniVersion 1.0.0)"
    for plugin, line in zip(listed["plugins"], lines[1:], strict=True):
        # The oracle: the plugin binary's own answer to VERSION.
        own = subprocess.run(
            [f"{PLUGIN_DIR}/{plugin['type']}"],
            input='{"cniVersion":"1.0.0"}',
            capture_output=True,
            text=True,
            env={"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "")},
            timeout=10,
            check=True,
        )
        versions = json.loads(own.stdout)["supportedVersions"]
        assert plugin["supportedVersions"] == versions
        assert line == f"{plugin['type']}: {', '.join(versions)}"
    assert "0.3.1" not in listed["plugins"][types.index("firewall")]["supportedVersions"]
    assert not link_exists(bridge), "STATUS/VERSION must not create anything"


def test_del_twice_succeeds(lab: Lab) -> None:
    network, bridge, netns = lab.network(), lab.bridge(), lab.netns()
    lab.write("10-d.conflist", simple_bridge(lab, network, bridge, version="0.4.0"))
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    lab.container_ids.append(cid)
    ip = assert_attached(netns, "eth0", lab.add(network, path))

    lab.quiet("del", network, path)
    lab.quiet("del", network, path)

    assert_detached(lab, cid, network, ip, bridges=[bridge])


def test_del_after_netns_is_gone(lab: Lab) -> None:
    """DEL of a vanished netns succeeds and frees the reservation, cache and portmap rules.

    ipMasq is off: the bridge plugin cannot find its masquerade rules without the netns.
    """
    network, bridge, netns = lab.network(), lab.bridge(), lab.netns()
    lab.write("10-g.conflist", simple_bridge(lab, network, bridge, ipmasq=False))
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    lab.container_ids.append(cid)
    port = free_port()
    caps = port_mapping(port, 80)
    result = lab.add(network, path, "--cap-args", caps)
    ip = assert_attached(netns, "eth0", result)
    veths = host_interfaces(result, bridge)
    assert iptables_lines(cid), "portmap rules should name the container"

    run(["ip", "netns", "del", netns])
    lab.quiet("del", network, path)

    deadline = time.monotonic() + 5  # the kernel destroys the netns (and its veth) lazily
    while any(link_exists(v) for v in veths) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_detached(lab, cid, network, ip, bridges=[bridge], links=veths)

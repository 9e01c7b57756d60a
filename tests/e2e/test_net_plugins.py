"""End-to-end tests of `cnirun net` (cnitool-compatible) with the real Debian CNI plugins.

Each test attaches real `ip netns` namespaces through bridge, ptp, macvlan, portmap, firewall,
tuning and bandwidth, checks what the kernel really holds, and proves DEL leaves nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    NETNS_DIR,
    PLUGIN_DIR,
    Harness,
    cnitool_id,
    free_port,
    host_networks,
    iptables_lines,
    link_exists,
    ns_has_link,
    sh,
)
from tests.leakcheck import DEFAULT_CACHE_DIR, DEFAULT_IPAM_DIR, assert_no_leaks

pytestmark = pytest.mark.e2e

JSONDict = dict[str, Any]


def ns_ipv4(netns: str, ifname: str) -> list[str]:
    """The IPv4 addresses (CIDR) on `ifname` inside the named netns, read with `ip`."""
    out = sh("ip", "-n", netns, "-o", "-4", "addr", "show", "dev", ifname).stdout
    addrs = []
    for line in out.splitlines():
        words = line.split()
        addrs.append(words[words.index("inet") + 1])
    return sorted(addrs)


def ns_link(netns: str, ifname: str) -> str:
    return sh("ip", "-n", netns, "-o", "link", "show", "dev", ifname).stdout


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


def port_mapping(host_port: int, container_port: int) -> str:
    """CAP_ARGS JSON with one TCP portMappings entry."""
    mapping = {"hostPort": host_port, "containerPort": container_port, "protocol": "tcp"}
    return json.dumps({"portMappings": [mapping]})


# -- assertions shared by the scenarios -------------------------------------------------------


def assert_attached(netns: str, ifname: str, result: JSONDict) -> str:
    """The result's IPv4 address really is on `ifname` in `netns`; return it (no prefix)."""
    want = result_ipv4(result)
    assert len(want) == 1, result
    assert ns_ipv4(netns, ifname) == want
    return str(ipaddress.ip_interface(want[0]).ip)


def assert_detached(
    rig: Harness,
    cid: str,
    network: str,
    ip: str,
    bridges: Sequence[str] = (),
    links: Sequence[str] = (),
    cache: Path | None = None,
) -> None:
    """After DEL: no cache file, reservation, veth, iptables rule or port left for `cid`."""
    cache = cache or rig.cache_dir
    assert not list((cache / "results").glob(f"*-{cid}-*"))
    assert not (Path(DEFAULT_IPAM_DIR) / network / ip).exists(), f"reservation {ip} kept"
    assert iptables_lines(cid) == []
    assert iptables_lines(f"{ip}/32") == []
    for link in links:
        assert not link_exists(link), f"host interface {link} survived DEL"
    assert_no_leaks([cid], bridges=bridges, cache_dir=cache)


def bridge_chain(rig: Harness, version: str, network: str, bridge: str) -> JSONDict:
    """bridge+host-local, portmap, firewall (>=0.4.0 only: it rejects 0.3.1), tuning, bandwidth."""
    subnet = rig.subnet()
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


# -- the plugin matrix ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_bridge_portmap_firewall_tuning_bandwidth(rig: Harness, version: str) -> None:
    """The full chain, driven the cnitool way (NETCONFPATH, CNI_PATH, CAP_ARGS env)."""
    network, bridge, netns = rig.netname(), rig.bridge(), rig.netns()
    rig.write("10-chain.conflist", bridge_chain(rig, version, network, bridge))
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)
    port = free_port()
    caps = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}

    result = rig.add(network, path, env=rig.env(CAP_ARGS=json.dumps(caps)))

    assert result["cniVersion"] == version
    ip = assert_attached(netns, "eth0", result)
    assert rig.cache_file(network, cid).is_file(), "default container ID is not cnitool's"
    assert (Path(DEFAULT_IPAM_DIR) / network / ip).read_text().splitlines()[0] == cid
    veths = [i for i in host_interfaces(result, bridge) if i.startswith("veth")]
    ifbs = [i for i in host_interfaces(result, bridge) if i.startswith("bwp")]
    assert len(veths) == 1 and len(ifbs) == 1, result
    # tuning: the MTU and sysctl from the config are visible inside the netns
    assert " mtu 1400 " in ns_link(netns, "eth0")
    sysctl = sh("ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter")
    assert sysctl.stdout.strip() == "2"
    # bandwidth: a token bucket on the host veth (ingress) and on its ifb (egress)
    assert "tbf" in sh("tc", "qdisc", "show", "dev", veths[0]).stdout
    assert "tbf" in sh("tc", "qdisc", "show", "dev", ifbs[0]).stdout
    # ipMasq and portmap rules name the container; firewall admits the container's IP
    assert iptables_lines(cid), "no iptables rule names the container"
    if version != "0.3.1":
        assert any("CNI-FORWARD" in ln for ln in iptables_lines(f"{ip}/32"))
    # portmap: a server in the netns answers on 127.0.0.1:<hostPort> (snat sets route_localnet)
    token = f"hello-{rig.tag}"
    server = rig.listen(netns, 80, token)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        assert conn.recv(100).decode() == token
    server.wait(timeout=5)

    check = rig.net("check", network, path)
    if version == "0.3.1":
        assert check.returncode == 125
        assert check.stderr.splitlines() == [
            'cnirun: error: configuration version "0.3.1" does not support the CHECK command'
        ]
        assert check.stdout == ""
    else:
        assert (check.returncode, check.stdout, check.stderr) == (0, "", "")

    rig.quiet("del", network, path, env=rig.env())  # no CAP_ARGS: the cached ones are used
    assert not ns_has_link(netns, "eth0")
    assert_detached(rig, cid, network, ip, bridges=[bridge], links=veths + ifbs)


def test_ptp_env_ifname_and_cni_args(rig: Harness) -> None:
    """ptp+host-local with CNI_IFNAME and CNI_ARGS from the environment (IP= picks the address)."""
    network, netns = rig.netname(), rig.netns()
    subnet = rig.subnet()
    wanted = str(subnet.network_address + 77)
    rig.write(
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
    rig.container_ids.append(cid)
    env = rig.env(CNI_IFNAME="ptp7", CNI_ARGS=f"IgnoreUnknown=1;IP={wanted}")

    result = rig.add(network, netns, env=env)  # a bare name means /run/netns/<name>

    assert result_ipv4(result) == [f"{wanted}/24"]
    ip = assert_attached(netns, "ptp7", result)
    host = host_interfaces(result)
    assert len(host) == 1 and link_exists(host[0])
    rig.links += host
    entry = json.loads(rig.cache_file(network, cid, "ptp7").read_text())
    assert entry["cniArgs"] == [["IgnoreUnknown", "1"], ["IP", wanted]]
    assert entry["ifName"] == "ptp7" and entry["netns"] == f"{NETNS_DIR}/{netns}"
    rig.quiet("check", network, netns, env=env)
    rig.quiet("del", network, netns, env=env)
    assert not ns_has_link(netns, "ptp7")
    assert_detached(rig, cid, network, ip, links=host)


def test_macvlan_on_a_host_veth(rig: Harness) -> None:
    """macvlan (bridge mode) whose master is one end of a veth pair made for the test."""
    master, _peer = rig.veth_pair()
    network, netns = rig.netname(), rig.netns()
    rig.write(
        "30-macvlan.conflist",
        {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "macvlan",
                    "master": master,
                    "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": str(rig.subnet())},
                },
                {"type": "tuning", "mtu": 1280},
            ],
        },
    )
    path = f"{NETNS_DIR}/{netns}"
    cid = f"mv-{rig.tag}"
    rig.container_ids.append(cid)

    result = rig.add(network, path, "--container-id", cid, "--ifname", "mv0")

    ip = assert_attached(netns, "mv0", result)
    link = ns_link(netns, "mv0")
    assert " mtu 1280 " in link
    details = sh("ip", "-n", netns, "-d", "-o", "link", "show", "dev", "mv0").stdout
    assert "macvlan mode bridge" in details
    rig.quiet("check", network, path, "--container-id", cid, "--ifname", "mv0")
    rig.quiet("del", network, path, "--container-id", cid, "--ifname", "mv0")
    assert not ns_has_link(netns, "mv0")
    assert link_exists(master), "DEL must not touch the macvlan master"
    assert_detached(rig, cid, network, ip)


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


def _seed_steps(rig: Harness, network: str, bridge: str, cache: Path | None) -> None:
    """ADD/CHECK/DEL of a 0.2.0 single-plugin `.conf` network; `cache=None` = default dir."""
    netns = rig.netns()
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)
    use_ours = cache is None

    result = rig.add(network, path, cache=use_ours)

    # A 0.2.0 result: ip4 with the gateway and the route from the config.
    assert result["cniVersion"] == "0.2.0" and "ips" not in result
    assert result["ip4"]["routes"] == [{"dst": "0.0.0.0/0"}]
    ip = assert_attached(netns, "eth0", result)
    gw = result["ip4"]["gateway"]
    assert sh("ip", "-n", netns, "route", "show", "default").stdout.split()[:3] == [
        "default",
        "via",
        gw,
    ]
    cache_dir = cache or rig.cache_dir
    assert rig.cache_file(network, cid, cache=cache_dir).is_file()
    assert iptables_lines(cid), "ipMasq rules should name the container"
    check = rig.net("check", network, path, cache=use_ours)
    assert check.returncode == 125
    assert check.stderr.splitlines() == [
        'cnirun: error: configuration version "0.2.0" does not support the CHECK command'
    ]
    rig.quiet("del", network, path, cache=use_ours)
    assert_detached(rig, cid, network, ip, bridges=[bridge], cache=cache_dir)


def test_seed_mynet_conf_copy(rig: Harness) -> None:
    """The seed README's 10-mynet.conf, with a private bridge, subnet and network name."""
    network, bridge = rig.netname(), rig.bridge()
    conf = json.loads(SEED_MYNET)
    conf.update(name=network, bridge=bridge)
    conf["ipam"]["subnet"] = str(rig.subnet())
    rig.write("10-mynet.conf", conf)
    _seed_steps(rig, network, bridge, cache=None)


def test_seed_mynet_conf_literal_with_default_cache_dir(rig: Harness) -> None:
    """The seed's text byte for byte (cni0, 10.22.0.0/16), cached in the default /var/lib/cni."""
    seed_net = ipaddress.IPv4Network("10.22.0.0/16")
    rig.borrow_seed_bridge()  # cni0 is ours only if we create it: dropped after, unless shared
    if not link_exists("cni0"):
        clash = [n for n in host_networks() if n.overlaps(seed_net)]
        assert not clash, f"the host already routes {clash}; the seed's subnet would clash"
    rig.write("10-mynet.conf", SEED_MYNET)
    _seed_steps(rig, "mynet", "cni0", cache=Path(DEFAULT_CACHE_DIR))


# -- inputs, multiple attachments, GC, STATUS, VERSION, idempotent DEL --------------------------


def test_flags_args_and_cap_args(rig: Harness) -> None:
    """--args/--cap-args/--netconf-dir/--cni-path/--timeout instead of the environment."""
    network, bridge, netns = rig.netname(), rig.bridge(), rig.netns()
    conf = rig.simple_bridge(network, bridge)
    subnet = ipaddress.IPv4Network(conf["plugins"][0]["ipam"]["subnet"])
    wanted = str(subnet.network_address + 42)
    private = rig.tmp / "flags.d"
    private.mkdir()
    (private / "10-n.conflist").write_text(json.dumps(conf))
    path = f"{NETNS_DIR}/{netns}"
    cid = f"flags-{rig.tag}"
    rig.container_ids.append(cid)
    port = free_port()
    caps = {"portMappings": [{"hostPort": port, "containerPort": 8080, "protocol": "tcp"}]}
    # The environment points nowhere useful and sets rival values: flags must win.
    env = rig.env(
        NETCONFPATH=str(rig.tmp / "nowhere"),
        CNI_PATH=str(rig.tmp / "nobin"),
        CNI_ARGS="IgnoreUnknown=1;IP=10.0.0.1",
        CAP_ARGS='{"portMappings": []}',
    )
    flags = ["--netconf-dir", str(private), "--cni-path", PLUGIN_DIR, "--container-id", cid]
    flags += ["--timeout", "30"]

    result = rig.add(
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
    entry = json.loads(rig.cache_file(network, cid).read_text())
    assert entry["containerId"] == cid
    assert entry["cniArgs"] == [["IgnoreUnknown", "1"], ["IP", wanted]]
    assert entry["capabilityArgs"] == caps
    dnat = [ln for ln in iptables_lines(cid) if "--dports" in ln]
    assert len(dnat) == 1 and f"--dports {port}" in dnat[0], dnat
    assert any(f"{wanted}:8080" in ln for ln in iptables_lines(f"--dport {port} "))
    # CHECK and DEL get no args: DEL must find the cached ones (portmap needs its mappings).
    plain = rig.env(NETCONFPATH=str(rig.tmp / "nowhere"), CNI_PATH=str(rig.tmp / "nobin"))
    rig.quiet("check", network, path, *flags, env=plain)
    rig.quiet("del", network, path, *flags, env=plain)
    assert_detached(rig, cid, network, ip, bridges=[bridge])


def test_two_networks_in_one_netns(rig: Harness) -> None:
    """eth0 on a bridge network and eth1 on a ptp network; DEL of one leaves the other."""
    net_a, bridge, net_b, netns = rig.netname(), rig.bridge(), rig.netname(), rig.netns()
    rig.write("10-a.conflist", rig.simple_bridge(net_a, bridge))
    rig.write(
        "20-b.conflist",
        {
            "cniVersion": "0.4.0",
            "name": net_b,
            "plugins": [
                {"type": "ptp", "ipam": {"type": "host-local", "subnet": str(rig.subnet())}}
            ],
        },
    )
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)

    res_a = rig.add(net_a, path)
    res_b = rig.add(net_b, path, "--ifname", "eth1")

    ip_a = assert_attached(netns, "eth0", res_a)
    ip_b = assert_attached(netns, "eth1", res_b)
    rig.links += host_interfaces(res_b)
    assert rig.cache_file(net_a, cid, "eth0").is_file()
    assert rig.cache_file(net_b, cid, "eth1").is_file()
    rig.quiet("check", net_a, path)
    rig.quiet("check", net_b, path, "--ifname", "eth1")

    rig.quiet("del", net_a, path)
    assert not ns_has_link(netns, "eth0")
    assert ns_ipv4(netns, "eth1") == result_ipv4(res_b)
    assert rig.cache_file(net_b, cid, "eth1").is_file()
    assert (Path(DEFAULT_IPAM_DIR) / net_b / ip_b).is_file()
    rig.quiet("check", net_b, path, "--ifname", "eth1")

    rig.quiet("del", net_b, path, "--ifname", "eth1")
    assert_detached(rig, cid, net_a, ip_a, bridges=[bridge])
    assert_detached(rig, cid, net_b, ip_b, links=host_interfaces(res_b))


def test_gc_deletes_only_stale_attachments(rig: Harness) -> None:
    """Two netns on one network; `gc --valid A/eth0` tears down B for real and keeps A."""
    network, bridge = rig.netname(), rig.bridge()
    rig.write("10-gc.conflist", rig.simple_bridge(network, bridge))
    ns_a, ns_b = rig.netns(), rig.netns()
    cid_a, cid_b = f"gca-{rig.tag}", f"gcb-{rig.tag}"
    rig.container_ids += [cid_a, cid_b]
    port = free_port()
    caps = port_mapping(port, 80)
    res_a = rig.add(network, ns_a, "--container-id", cid_a)
    res_b = rig.add(network, ns_b, "--container-id", cid_b, "--cap-args", caps)
    ip_a = assert_attached(ns_a, "eth0", res_a)
    ip_b = assert_attached(ns_b, "eth0", res_b)
    assert any(f"--dports {port}" in ln for ln in iptables_lines(cid_b))

    refused = rig.net("gc", network)
    assert refused.returncode == 125 and refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1 and "--valid" in refused.stderr
    malformed = rig.net("gc", network, "--valid", cid_a)
    assert malformed.returncode == 125
    assert malformed.stderr.splitlines() == [
        f'cnirun: error: invalid --valid "{cid_a}": expected CONTAINERID/IFNAME'
    ]
    assert rig.cache_file(network, cid_b).is_file(), "a refused gc must not delete anything"

    rig.quiet("gc", network, "--valid", f"{cid_a}/eth0")

    # B is gone for real: interface, reservation, cache, ipMasq and portmap rules.
    assert not ns_has_link(ns_b, "eth0")
    assert_detached(rig, cid_b, network, ip_b)
    # A is untouched and still passes CHECK.
    assert ns_ipv4(ns_a, "eth0") == result_ipv4(res_a)
    assert rig.cache_file(network, cid_a).is_file()
    assert (Path(DEFAULT_IPAM_DIR) / network / ip_a).is_file()
    rig.quiet("check", network, ns_a, "--container-id", cid_a)

    rig.quiet("del", network, ns_a, "--container-id", cid_a)
    assert_detached(rig, cid_a, network, ip_a, bridges=[bridge])


def test_status_and_version(rig: Harness) -> None:
    """STATUS on a 1.0.0 network succeeds silently; VERSION lists what each plugin answers."""
    network, bridge = rig.netname(), rig.bridge()
    conf = bridge_chain(rig, "1.0.0", network, bridge)
    rig.write("10-sv.conflist", conf)
    types = [p["type"] for p in conf["plugins"]]

    rig.quiet("status", network)
    rig.quiet("status", network, "/run/netns/ignored")  # cnitool's NETNS argument is accepted

    text = rig.ok("version", network, cache=False)
    listed = json.loads(rig.ok("version", network, "--format", "json", cache=False))
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


def test_del_twice_succeeds(rig: Harness) -> None:
    network, bridge, netns = rig.netname(), rig.bridge(), rig.netns()
    rig.write("10-d.conflist", rig.simple_bridge(network, bridge, version="0.4.0"))
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)
    ip = assert_attached(netns, "eth0", rig.add(network, path))

    rig.quiet("del", network, path)
    rig.quiet("del", network, path)

    assert_detached(rig, cid, network, ip, bridges=[bridge])


def test_del_after_netns_is_gone(rig: Harness) -> None:
    """DEL of a vanished netns succeeds and frees the reservation, cache and portmap rules.

    ipMasq is off: the bridge plugin cannot find its masquerade rules without the netns.
    """
    network, bridge, netns = rig.netname(), rig.bridge(), rig.netns()
    rig.write("10-g.conflist", rig.simple_bridge(network, bridge, ipmasq=False))
    path = f"{NETNS_DIR}/{netns}"
    cid = cnitool_id(path)
    rig.container_ids.append(cid)
    port = free_port()
    caps = port_mapping(port, 80)
    result = rig.add(network, path, "--cap-args", caps)
    ip = assert_attached(netns, "eth0", result)
    veths = host_interfaces(result, bridge)
    assert iptables_lines(cid), "portmap rules should name the container"

    sh("ip", "netns", "del", netns)
    rig.quiet("del", network, path)

    deadline = time.monotonic() + 5  # the kernel destroys the netns (and its veth) lazily
    while any(link_exists(v) for v in veths) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_detached(rig, cid, network, ip, bridges=[bridge], links=veths)

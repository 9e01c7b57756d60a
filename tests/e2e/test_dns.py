"""Real DNS on a `network create --dns` network: the dnsname plugin's dnsmasq answers the
sandboxes' names and aliases (cnirun.sandbox.dnsname), the workloads' resolv.conf points at
it, a removed sandbox's name stops resolving, and the last one to leave takes dnsmasq, its
state and (with `network rm`) its port 53 rule along.

Real Docker, the real Debian plugins (dnsname 1.3.1 with dnsmasq-base). busybox `nslookup`
asks the DNS server itself (never /etc/hosts), so every answer here is dnsmasq's.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest

from tests import leakcheck
from tests.e2e.harness import IMAGE, Harness, sh

pytestmark = pytest.mark.e2e

DOMAIN = "dns.cnirun"


def create_dns_network(rig: Harness) -> tuple[str, str, str]:
    """`network create --dns` on a subnet and bridge of the test's own: (name, bridge, gw)."""
    name, bridge, subnet = rig.netname(), rig.bridge(), rig.subnet()
    res = rig.run("network", "create", name, "--dns", "--subnet", str(subnet), "--bridge", bridge)
    assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.explain()
    return name, bridge, str(subnet.network_address + 1)


def detached(rig: Harness, network: str, *flags: str) -> str:
    name = rig.name()
    run = rig.run("-d", "--name", name, "--network", network, *flags, *rig.label,
                  IMAGE, "sleep", "600")  # fmt: skip
    assert run.returncode == 0, run.explain()
    rig.workload_sandbox(name)
    return name


def eth0_address(container: str) -> str:
    out = sh("docker", "exec", container, "ip", "-4", "-o", "addr", "show", "eth0").stdout
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    assert found, out
    return found.group(1)


def lookup(rig: Harness, network: str, script: str) -> tuple[int, str]:
    """Run `script` in a fresh busybox sandbox on `network`; (status, its output)."""
    run = rig.run("--rm", "--network", network, *rig.label, IMAGE, "sh", "-c", script)
    return run.returncode, run.stdout


def answers(output: str, name: str) -> list[str]:
    """The addresses nslookup printed for `name` (bare or in the network's domain)."""
    found: list[str] = []
    current = ""
    for line in output.splitlines():
        if line.startswith("Server:"):
            current = ""  # the next Address: line is the server's
        elif line.startswith("Name:"):
            current = line.split()[1]
        elif line.startswith("Address:") and current in (name, f"{name}.{DOMAIN}"):
            found.append(line.split()[1])
    return found


def test_dns_network_chain_and_inspect(rig: Harness) -> None:
    name, bridge, _ = create_dns_network(rig)
    conf: dict[str, Any] = json.loads((rig.netconf_dir / f"{name}.conflist").read_text())
    types = [p["type"] for p in conf["plugins"]]
    assert types == ["bridge", "portmap", "firewall", "tuning", "dnsname"], types
    assert conf["plugins"][-1] == {
        "type": "dnsname", "domainName": DOMAIN, "capabilities": {"aliases": True}
    }  # fmt: skip
    inspected = rig.run("network", "inspect", name)
    assert inspected.returncode == 0, inspected.explain()
    (shown,) = json.loads(inspected.stdout)
    assert shown["dns"] == {"plugin": "dnsname", "domain": DOMAIN}
    assert [p["type"] for p in shown["plugins"] if p["type"] == "dnsname"] == ["dnsname"]
    assert "error" not in next(p for p in shown["plugins"] if p["type"] == "dnsname")
    assert rig.run("network", "rm", name).returncode == 0
    rig.assert_clean()


def test_names_and_aliases_answered_by_the_networks_dnsmasq(rig: Harness) -> None:
    network, bridge, gateway = create_dns_network(rig)
    alias = f"alias{rig.tag}"
    srv = detached(rig, network, "--network-alias", alias)
    keeper = detached(rig, network)  # keeps dnsmasq up once srv is gone
    srv_ip, keeper_ip = eth0_address(srv), eth0_address(keeper)
    assert ipaddress.ip_address(srv_ip) != ipaddress.ip_address(gateway)

    # The workloads' resolv.conf points at the network's dnsmasq, on the bridge's address.
    resolv = sh("docker", "exec", srv, "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines()[0] == f"nameserver {gateway}", resolv
    assert f"search {DOMAIN}" in resolv.splitlines(), resolv

    # By name, asking dnsmasq itself; by alias, through resolv.conf; from a fresh client.
    status, out = lookup(rig, network, f"nslookup {srv} {gateway}; nslookup {alias}")
    assert status == 0, out
    assert answers(out, srv) == [srv_ip], out
    assert answers(out, alias) == [srv_ip], out
    # And from a sandbox that was there before (its name too: `keeper`).
    out = sh("docker", "exec", srv, "nslookup", keeper, check=False).stdout
    assert answers(out, keeper) == [keeper_ip], out

    # The plugin's hosts file: one line per sandbox, its name first, then its aliases.
    hosts_file = f"{leakcheck.DNSNAME_DIR}/{network}/addnhosts"
    # The fresh clients had no --name: they were there under their hostname, and their DEL
    # took them out again.
    with open(hosts_file) as f:
        lines = f.read().splitlines()
    assert sorted(lines) == sorted([f"{srv_ip}\t{srv}\t{alias}", f"{keeper_ip}\t{keeper}"])

    # Removed: its name and alias stop resolving (dnsmasq still runs for `keeper`).
    assert rig.run("rm", "-f", srv).returncode == 0
    with open(hosts_file) as f:
        assert srv not in f.read()
    status, out = lookup(rig, network, f"nslookup {srv} {gateway}; nslookup {alias} {gateway}")
    assert answers(out, srv) == [] and answers(out, alias) == [], out
    assert "NXDOMAIN" in out, out
    assert any(network in cmd for _, cmd in leakcheck.dnsmasq_processes())

    # The last one out stops dnsmasq and removes the plugin's state; `network rm` the rule.
    assert rig.run("rm", "-f", keeper).returncode == 0
    assert leakcheck.dnsname_leaks([network], []) == []
    assert leakcheck.dnsname_leaks([network], [bridge]) != []  # the rule stays with the bridge
    assert rig.run("network", "rm", network).returncode == 0
    rig.assert_clean()

"""End-to-end tests of `cnirun network create|ls|inspect|rm` followed by real runs (root).

Each created network is used by `priv-net-run` with the real plugins: bridge and ptp reach their
gateway, macvlan (its parent a veth made here: this kernel has no dummy links) reaches a peer
namespace on the other end. ipvlan cannot run on this kernel, so only its config is checked.
The harness (`rig`) asserts that nothing is left behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from typing import Any

import pytest

from cnirun.netconf.subnets import CREATE_POOL
from tests.e2e.harness import Harness, one_error_line, sh

pytestmark = pytest.mark.e2e


def create(rig: Harness, name: str, *args: str) -> dict[str, Any]:
    res = rig.run("network", "create", name, *args)
    assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.stderr
    conf: dict[str, Any] = json.loads((rig.netconf_dir / f"{name}.conflist").read_text())
    bridge = conf["plugins"][0].get("bridge")
    if bridge and bridge not in rig.bridges:
        rig.bridges.append(bridge)
    return conf


def ping_from_inside(rig: Harness, network: str, target: str) -> None:
    res = rig.run("priv-net-run", "--network", network, "busybox", "ping", "-c1", "-W3", target)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 packets received" in res.stdout


def test_bridge_network_with_a_chosen_subnet(rig: Harness) -> None:
    name, bridge, subnet = rig.netname(), rig.bridge(), rig.subnet()
    conf = create(rig, name, "--subnet", str(subnet), "--bridge", bridge, "--label", "k=v")
    assert conf["cnirun"]["labels"] == {"k": "v"}
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    ping_from_inside(rig, name, str(subnet.network_address + 1))
    res = rig.run("network", "rm", name)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(f"/sys/class/net/{bridge}")


def test_bridge_network_with_a_free_subnet_chosen_for_it(rig: Harness) -> None:
    name = rig.netname()
    conf = create(rig, name, "--bridge", rig.bridge())
    subnet = ipaddress.IPv4Network(conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
    assert subnet.subnet_of(ipaddress.IPv4Network(CREATE_POOL))
    assert subnet.prefixlen == 24
    ping_from_inside(rig, name, str(subnet.network_address + 1))


def test_internal_bridge_network_has_no_way_out(rig: Harness) -> None:
    name, subnet = rig.netname(), rig.subnet()
    create(rig, name, "--internal", "--subnet", str(subnet), "--bridge", rig.bridge())
    res = rig.run("priv-net-run", "--network", name, "ip", "-4", "route")
    assert res.returncode == 0, res.stderr
    assert "default" not in res.stdout
    assert f"{subnet} dev eth0" in res.stdout


def test_ptp_network(rig: Harness) -> None:
    name, subnet = rig.netname(), rig.subnet()
    conf = create(rig, name, "--driver", "ptp", "--subnet", str(subnet))
    assert [p["type"] for p in conf["plugins"]] == ["ptp", "portmap", "firewall", "tuning"]
    ping_from_inside(rig, name, str(subnet.network_address + 1))


def test_macvlan_network_on_a_veth_parent(rig: Harness) -> None:
    name, subnet = rig.netname(), rig.subnet()
    parent, far_end = rig.veth_pair()
    peer = rig.netns()
    peer_ip = subnet.network_address + 200
    sh("ip", "link", "set", far_end, "netns", peer)
    sh("ip", "-n", peer, "addr", "add", f"{peer_ip}/{subnet.prefixlen}", "dev", far_end)
    sh("ip", "-n", peer, "link", "set", far_end, "up")
    conf = create(rig, name, "-d", "macvlan", "--parent", parent, "--subnet", str(subnet))
    assert conf["plugins"][0]["master"] == parent
    ping_from_inside(rig, name, str(peer_ip))


def test_ipvlan_config_is_valid_for_the_installed_plugins(rig: Harness) -> None:
    name, subnet = rig.netname(), rig.subnet()
    parent, _ = rig.veth_pair()
    conf = create(rig, name, "-d", "ipvlan", "--parent", parent, "--subnet", str(subnet))
    assert conf["plugins"][0] | {"ipam": None} == {
        "type": "ipvlan",
        "master": parent,
        "mode": "l2",
        "capabilities": {"ips": True},
        "ipam": None,
    }
    res = rig.run("network", "inspect", name)
    assert res.returncode == 0, res.stderr
    [info] = json.loads(res.stdout)
    for plugin in info["plugins"]:
        assert info["cniVersion"] in plugin["supportedVersions"], plugin
    res = rig.run("net", "version", name)
    assert res.returncode == 0 and "ipvlan:" in res.stdout, res.stderr


def test_ls_inspect_and_rm_with_their_refusals(rig: Harness) -> None:
    mine, subnet = rig.netname(), rig.subnet()
    create(rig, mine, "--subnet", str(subnet), "--bridge", rig.bridge())
    theirs = rig.network(firewall=True).name

    res = rig.run("network", "ls", "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows[mine]["createdByCnirun"] and not rows[theirs]["createdByCnirun"]
    assert rows[mine]["subnets"] == [str(subnet)]
    table = rig.run("network", "ls").stdout.splitlines()
    assert table[0].startswith("NAME") and len(table) == 3

    # From inside a live run, the attachment shows and rm is refused.
    cnirun = f"{sys.executable} -m cnirun"
    script = f"{cnirun} network inspect {mine}; {cnirun} network rm {mine}"
    res = rig.run("priv-net-run", "--network", mine, "sh", "-c", script)
    assert res.returncode == 125
    [info] = json.loads(res.stdout)
    [attachment] = info["attachments"]
    rig.privnet_ids.add(attachment["containerId"])
    assert attachment["containerId"].startswith("cnirun-privnet-")
    assert attachment["netns"] == f"/run/netns/{attachment['containerId']}"
    assert attachment["netnsExists"] and attachment["ifname"] == "eth0"
    assert ipaddress.ip_interface(attachment["addresses"][0]) in subnet
    assert f'network "{mine}" still has 1 attachment(s) ({attachment["containerId"]})' in res.stderr
    assert (rig.netconf_dir / f"{mine}.conflist").exists()

    # A file cnirun did not write is refused, then removed with --force.
    res = rig.run("network", "rm", theirs)
    assert res.returncode == 125
    assert "was not created by cnirun; refusing to remove it (use --force)" in one_error_line(
        res.stderr
    )
    res = rig.run("network", "rm", "--force", theirs)
    assert (res.returncode, res.stdout) == (0, f"{theirs}\n")

    res = rig.run("network", "rm", mine)
    assert (res.returncode, res.stdout) == (0, f"{mine}\n"), res.stderr
    assert os.listdir(rig.netconf_dir) == [".cnirun.lock"]
    res = rig.run("network", "inspect", mine)
    assert res.returncode == 125 and f'no network named "{mine}"' in one_error_line(res.stderr)

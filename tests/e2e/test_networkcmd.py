"""End-to-end tests of `cnirun network create|ls|inspect|rm` followed by real runs (root).

Each created network is used by `priv-net-run` with the real plugins: bridge and ptp reach their
gateway, macvlan (its parent a veth made here: this kernel has no dummy links) reaches a peer
namespace on the other end. ipvlan cannot run on this kernel, so only its config is checked.
The shared `plab` machinery asserts that nothing is left behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnirun.netconf.subnets import CREATE_POOL
from tests.e2e.test_privnet import PrivLab, one_error_line, plab_session, sh

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[PrivLab]:
    yield from plab_session(tmp_path)


def create(lab: PrivLab, name: str, *args: str) -> dict[str, Any]:
    res = lab.cnirun("network", "create", name, *args)
    assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.stderr
    conf: dict[str, Any] = json.loads((lab.netconf / f"{name}.conflist").read_text())
    bridge = conf["plugins"][0].get("bridge")
    if bridge and bridge not in lab.bridges:
        lab.bridges.append(bridge)
    return conf


def ping_from_inside(lab: PrivLab, network: str, target: str) -> None:
    res = lab.cnirun("priv-net-run", "--network", network, "busybox", "ping", "-c1", "-W3", target)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 packets received" in res.stdout


def test_bridge_network_with_a_chosen_subnet(lab: PrivLab) -> None:
    name, bridge, subnet = lab.netname(), lab.bridge(), lab.subnet()
    conf = create(lab, name, "--subnet", str(subnet), "--bridge", bridge, "--label", "k=v")
    assert conf["cnirun"]["labels"] == {"k": "v"}
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    ping_from_inside(lab, name, str(subnet.network_address + 1))
    res = lab.cnirun("network", "rm", name)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(f"/sys/class/net/{bridge}")


def test_bridge_network_with_a_free_subnet_chosen_for_it(lab: PrivLab) -> None:
    name = lab.netname()
    conf = create(lab, name, "--bridge", lab.bridge())
    subnet = ipaddress.IPv4Network(conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
    assert subnet.subnet_of(ipaddress.IPv4Network(CREATE_POOL))
    assert subnet.prefixlen == 24
    ping_from_inside(lab, name, str(subnet.network_address + 1))


def test_internal_bridge_network_has_no_way_out(lab: PrivLab) -> None:
    name, subnet = lab.netname(), lab.subnet()
    create(lab, name, "--internal", "--subnet", str(subnet), "--bridge", lab.bridge())
    res = lab.cnirun("priv-net-run", "--network", name, "ip", "-4", "route")
    assert res.returncode == 0, res.stderr
    assert "default" not in res.stdout
    assert f"{subnet} dev eth0" in res.stdout


def test_ptp_network(lab: PrivLab) -> None:
    name, subnet = lab.netname(), lab.subnet()
    conf = create(lab, name, "--driver", "ptp", "--subnet", str(subnet))
    assert [p["type"] for p in conf["plugins"]] == ["ptp", "portmap", "firewall", "tuning"]
    ping_from_inside(lab, name, str(subnet.network_address + 1))


def test_macvlan_network_on_a_veth_parent(lab: PrivLab) -> None:
    name, subnet = lab.netname(), lab.subnet()
    parent, far_end = lab.veth_pair()
    peer = lab.peer_namespace()
    peer_ip = subnet.network_address + 200
    sh("ip", "link", "set", far_end, "netns", peer)
    sh("ip", "-n", peer, "addr", "add", f"{peer_ip}/{subnet.prefixlen}", "dev", far_end)
    sh("ip", "-n", peer, "link", "set", far_end, "up")
    conf = create(lab, name, "-d", "macvlan", "--parent", parent, "--subnet", str(subnet))
    assert conf["plugins"][0]["master"] == parent
    ping_from_inside(lab, name, str(peer_ip))


def test_ipvlan_config_is_valid_for_the_installed_plugins(lab: PrivLab) -> None:
    name, subnet = lab.netname(), lab.subnet()
    parent, _ = lab.veth_pair()
    conf = create(lab, name, "-d", "ipvlan", "--parent", parent, "--subnet", str(subnet))
    assert conf["plugins"][0] | {"ipam": None} == {
        "type": "ipvlan",
        "master": parent,
        "mode": "l2",
        "capabilities": {"ips": True},
        "ipam": None,
    }
    res = lab.cnirun("network", "inspect", name)
    assert res.returncode == 0, res.stderr
    [info] = json.loads(res.stdout)
    for plugin in info["plugins"]:
        assert info["cniVersion"] in plugin["supportedVersions"], plugin
    res = lab.cnirun("net", "version", name)
    assert res.returncode == 0 and "ipvlan:" in res.stdout, res.stderr


def test_ls_inspect_and_rm_with_their_refusals(lab: PrivLab) -> None:
    mine, subnet = lab.netname(), lab.subnet()
    create(lab, mine, "--subnet", str(subnet), "--bridge", lab.bridge())
    theirs, _ = lab.bridge_net()

    res = lab.cnirun("network", "ls", "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows[mine]["createdByCnirun"] and not rows[theirs]["createdByCnirun"]
    assert rows[mine]["subnets"] == [str(subnet)]
    table = lab.cnirun("network", "ls").stdout.splitlines()
    assert table[0].startswith("NAME") and len(table) == 3

    # From inside a live run, the attachment shows and rm is refused.
    cnirun = f"{sys.executable} -m cnirun"
    script = f"{cnirun} network inspect {mine}; {cnirun} network rm {mine}"
    res = lab.cnirun("priv-net-run", "--network", mine, "sh", "-c", script)
    assert res.returncode == 125
    [info] = json.loads(res.stdout)
    [attachment] = info["attachments"]
    lab.ids.add(attachment["containerId"])
    assert attachment["containerId"].startswith("cnirun-privnet-")
    assert attachment["netns"] == f"/run/netns/{attachment['containerId']}"
    assert attachment["netnsExists"] and attachment["ifname"] == "eth0"
    assert ipaddress.ip_interface(attachment["addresses"][0]) in subnet
    assert f'network "{mine}" still has 1 attachment(s) ({attachment["containerId"]})' in res.stderr
    assert (lab.netconf / f"{mine}.conflist").exists()

    # A file cnirun did not write is refused, then removed with --force.
    res = lab.cnirun("network", "rm", theirs)
    assert res.returncode == 125
    assert "was not created by cnirun; refusing to remove it (use --force)" in one_error_line(
        res.stderr
    )
    res = lab.cnirun("network", "rm", "--force", theirs)
    assert (res.returncode, res.stdout) == (0, f"{theirs}\n")

    res = lab.cnirun("network", "rm", mine)
    assert (res.returncode, res.stdout) == (0, f"{mine}\n"), res.stderr
    assert os.listdir(lab.netconf) == [".cnirun.lock"]
    res = lab.cnirun("network", "inspect", mine)
    assert res.returncode == 125 and f'no network named "{mine}"' in one_error_line(res.stderr)

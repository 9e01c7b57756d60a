"""cnirun.netconf.subnets: the host's routes, the subnets already in use, a user's --subnet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cnirun.errors import ConfigError
from cnirun.netconf import subnets
from tests.unit.conftest import CniEnv
from tests.unit.netconf.lab import Lab, lab_on, net


@pytest.fixture
def lab(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    with lab_on(cni_env, monkeypatch) as lab:
        yield lab


PROC_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""

PROC_IPV6_ROUTE = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000400 00000001 00000000 00200200       lo
"""


def test_proc_route_gives_non_default_routes_with_their_interface() -> None:
    assert subnets.parse_proc_route(PROC_ROUTE) == [
        ("docker0", net("172.17.0.0/16")),
        ("eth0", net("192.0.2.0/24")),
    ]


def test_ipv6_routes_skip_default_link_local_and_lo() -> None:
    assert subnets.parse_proc_ipv6_route(PROC_IPV6_ROUTE) == [("eth0", net("fd00::/64"))]


def test_used_subnets_collects_configs_routes_and_docker(lab: Lab) -> None:
    lab.write(
        "10-a.conflist",
        {
            "name": "a",
            "plugins": [{"type": "bridge", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}]]}}],
        },
    )
    lab.write("20-b.conf", {"name": "b", "type": "ptp", "ipam": {"subnet": "10.2.0.0/24"}})
    lab.write("30-broken.conflist", "{not json")
    used = subnets.used_subnets(
        str(lab.netconf), ["172.18.0.0/16"], routes=[("eth0", net("192.0.2.0/24"))]
    )
    assert [(str(u.net), u.where.split(" ")[0]) for u in used] == [
        ("10.1.0.0/24", "network"),
        ("10.2.0.0/24", "network"),
        ("192.0.2.0/24", "route"),
        ("172.18.0.0/16", "a"),
    ]


def test_parse_subnet_refuses_host_bits_and_tiny_subnets() -> None:
    assert subnets.parse_subnet("10.9.0.0/24") == net("10.9.0.0/24")
    with pytest.raises(ConfigError, match=r"host bits set \(did you mean 10.9.0.0/24\?\)"):
        subnets.parse_subnet("10.9.0.7/24")
    with pytest.raises(ConfigError, match="too small"):
        subnets.parse_subnet("10.9.0.0/31")
    with pytest.raises(ConfigError, match="invalid --subnet 'nope'"):
        subnets.parse_subnet("nope")

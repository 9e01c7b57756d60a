"""Subnets: what the host, Docker and the config dir already use, and a free one to take.

Read leniently: a config file that does not load still reserves the subnets it declares.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from cnirun.cni import gojson
from cnirun.cni.config import read_file
from cnirun.errors import ConfigError
from cnirun.netconf.select import config_paths

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
JSONDict = dict[str, Any]

# `network create` without --subnet takes the first free /24 of this pool.
CREATE_POOL = "10.78.0.0/15"
CREATE_PREFIXLEN = 24


class UsedSubnet(NamedTuple):
    """A subnet already taken, and by what (for messages)."""

    net: IPNetwork
    where: str


def parse_subnet(text: str, what: str = "--subnet") -> IPNetwork:
    """A CIDR given by the user; host bits must be clear (`10.1.2.3/24` is refused)."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise ConfigError(f"invalid {what} {text!r}: {e}") from None
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise ConfigError(f"invalid {what} {text!r}: host bits set (did you mean {net}?)")
    if net.num_addresses < 4:
        raise ConfigError(f"invalid {what} {text!r}: too small for containers")
    return net


def gateway(subnet: IPNetwork) -> IPAddress:
    """The conventional gateway: the first address after the network address."""
    return subnet.network_address + 1


def overlapping(net: IPNetwork, used: Iterable[UsedSubnet]) -> UsedSubnet | None:
    return next((u for u in used if u.net.version == net.version and u.net.overlaps(net)), None)


def pick_free(candidates: Iterable[IPNetwork], used: Sequence[UsedSubnet]) -> IPNetwork | None:
    return next((c for c in candidates if overlapping(c, used) is None), None)


def pool_subnets(pool: str = CREATE_POOL, prefixlen: int = CREATE_PREFIXLEN) -> Iterator[IPNetwork]:
    yield from ipaddress.ip_network(pool).subnets(new_prefix=prefixlen)


def _hex_ipv4(text: str) -> ipaddress.IPv4Address:
    # /proc/net/route prints addresses as host-order (little-endian here) hex words.
    return ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(text), "little"))


def parse_proc_route(text: str) -> list[tuple[str, IPNetwork]]:
    """(interface, destination) of every non-default route in /proc/net/route text."""
    routes: list[tuple[str, IPNetwork]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, mask = _hex_ipv4(fields[1]), _hex_ipv4(fields[7])
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if net.prefixlen:
            routes.append((fields[0], net))
    return routes


def parse_proc_ipv6_route(text: str) -> list[tuple[str, IPNetwork]]:
    """(interface, destination) of every non-default, non-link-local IPv6 route."""
    routes: list[tuple[str, IPNetwork]] = []
    link_local = ipaddress.IPv6Network("fe80::/10")
    multicast = ipaddress.IPv6Network("ff00::/8")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            dest = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            net6 = ipaddress.IPv6Network(f"{dest}/{int(fields[1], 16)}", strict=False)
        except ValueError:
            continue
        local = net6.subnet_of(link_local) or net6.subnet_of(multicast)
        if net6.prefixlen and not local and fields[9] != "lo":
            routes.append((fields[9], net6))
    return routes


def host_routes() -> list[tuple[str, IPNetwork]]:
    """The host's routes (main IPv4 table and IPv6), without default routes."""
    routes: list[tuple[str, IPNetwork]] = []
    for path, parse in (
        ("/proc/net/route", parse_proc_route),
        ("/proc/net/ipv6_route", parse_proc_ipv6_route),
    ):
        try:
            with open(path) as handle:
                routes += parse(handle.read())
        except OSError:
            continue
    return routes


def _ipam_subnets(ipam: Any) -> list[str]:
    if not isinstance(ipam, dict):
        return []
    found = []
    if isinstance(ipam.get("subnet"), str):
        found.append(ipam["subnet"])
    for rangeset in ipam.get("ranges") or []:
        for item in rangeset if isinstance(rangeset, list) else []:
            if isinstance(item, dict) and isinstance(item.get("subnet"), str):
                found.append(item["subnet"])
    return found


def subnets_of(raw: JSONDict) -> list[IPNetwork]:
    """Every host-local subnet a parsed conflist (or single conf) declares."""
    plugins = raw.get("plugins")
    objects = plugins if isinstance(plugins, list) else [raw]
    out: list[IPNetwork] = []
    for plugin in objects:
        if not isinstance(plugin, dict):
            continue
        for text in _ipam_subnets(plugin.get("ipam")):
            with contextlib.suppress(ValueError):
                out.append(ipaddress.ip_network(text, strict=False))
    return out


def conflist_subnets(netconf_dir: str, exclude: str = "") -> list[UsedSubnet]:
    """Subnets declared by the directory's config files (read leniently, broken ones too)."""
    used: list[UsedSubnet] = []
    for path in config_paths(netconf_dir):
        if exclude and os.path.basename(path) == exclude:
            continue
        try:
            raw = gojson.loads(read_file(path))
        except ValueError:  # ConfigError included
            continue
        if isinstance(raw, dict):
            label = f"network {raw.get('name', '?')} ({path})"
            used += [UsedSubnet(net, label) for net in subnets_of(raw)]
    return used


def used_subnets(
    netconf_dir: str,
    docker_subnets: Iterable[str] = (),
    routes: list[tuple[str, IPNetwork]] | None = None,
) -> list[UsedSubnet]:
    """Everything a new network must not overlap: configs, host routes, Docker networks."""
    used = conflist_subnets(netconf_dir)
    for iface, net in host_routes() if routes is None else routes:
        used.append(UsedSubnet(net, f"route {iface}"))
    for text in docker_subnets:
        with contextlib.suppress(ValueError, TypeError):
            used.append(UsedSubnet(ipaddress.ip_network(text, strict=False), "a Docker network"))
    return used

"""Host ports: the one rule for when two published host addresses overlap, and whether a
socket of this host's network namespace already holds an address and port. Stdlib only;
knows nothing of CNI, Docker or sandboxes.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import NamedTuple

from cnirun.errors import CnirunError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostPort(NamedTuple):
    """A host address, port and protocol that a `-p` (a portmap `portMappings` entry) takes."""

    host_ip: str  # "" = every address of both families, as portmap and Docker read it
    port: int
    protocol: str  # "tcp" or "udp"

    @property
    def address(self) -> str:
        """`0.0.0.0:80` or `[::1]:80`, as Docker's messages give it ("" reads 0.0.0.0)."""
        ip = self.host_ip or "0.0.0.0"
        return f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"


class PortInUseError(CnirunError):
    """Raised when a host port a `-p` asks for is held: by a socket of the host, by another
    sandbox or attachment of cnirun's, or by another `-p` of the same command line."""


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1, to the kernel as to portmap
    return ip


def overlaps(a: HostPort, b: HostPort) -> bool:
    """Whether `a` and `b` would catch the same traffic: same port and protocol, and
    addresses that meet ("" meets everything, 0.0.0.0 every IPv4 address, :: every IPv6 one;
    an IPv4-mapped IPv6 address is its IPv4 address).

    This is the only statement of the rule: duplicate `-p`s of one command line and the ports
    of other sandboxes and attachments are all judged by it.
    """
    if a.port != b.port or a.protocol != b.protocol:
        return False
    if not a.host_ip or not b.host_ip:
        return True
    x, y = _ip(a.host_ip), _ip(b.host_ip)
    if x is None or y is None:
        return a.host_ip == b.host_ip
    if x.version != y.version:
        return False
    return x.is_unspecified or y.is_unspecified or x == y


def check_unbound(port: HostPort) -> None:
    """Refuse a host port that a socket of this network namespace holds, with Docker's words.

    The kernel is asked, by binding a probe socket there and closing it, rather than
    /proc/net/{tcp,udp}{,6} read: bind applies exactly the rule a listener would meet, wildcard
    against specific addresses in both directions, IPv4-mapped addresses and the IPV6_V6ONLY
    flag of a `[::]` socket (which /proc does not show, so a `[::]` listener there could not be
    told to take IPv4 too or not). TCP probes set SO_REUSEADDR, as Docker's proxy and most
    servers do, so only listening sockets conflict, not connections lingering in TIME_WAIT;
    UDP probes do not, so every bound UDP socket conflicts. A port the probe finds free is free
    only at that moment: see the README on the race this leaves.

    Raises:
        PortInUseError: `listen tcp4 0.0.0.0:80: bind: address already in use`, as Docker says.
    """
    if port.host_ip:  # probed (and named) as given; an IPv4-mapped address as IPv4
        ip = _ip(port.host_ip)
        targets = [str(ip) if ip is not None else port.host_ip]
    else:
        targets = ["0.0.0.0", "::"]
    for target in targets:
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        if _bind_fails(family, target, port):
            version = "6" if family == socket.AF_INET6 else "4"
            shown = HostPort(target, port.port, port.protocol).address
            raise PortInUseError(
                f"Error starting userland proxy: listen {port.protocol}{version} {shown}:"
                " bind: address already in use"
            ).hinted(
                "Something on this host listens on that port: publish another host port"
                " (or stop that service)."
            )


def _bind_fails(family: socket.AddressFamily, target: str, port: HostPort) -> bool:
    kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
    try:
        probe = socket.socket(family, kind)
    except OSError as e:
        if e.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return False  # no IPv6 on this host: nothing can listen there
        raise CnirunError(f"cannot check host port {port.port}: {e.strerror or e}") from None
    with probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # [::] alone: the IPv4 side is probed on its own, and named so when it is held.
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind((target, port.port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            if e.errno == errno.EADDRNOTAVAIL:
                return False  # not an address of this host: no socket of it can hold it
            raise CnirunError(
                f"cannot check host port {HostPort(target, port.port, port.protocol).address}:"
                f" {e.strerror or e}"
            ) from None
    return False

"""cnirun.host.ports: the overlap rule of published host ports, and the bind probe that finds
a host socket holding one (real sockets on loopback, no root needed for high ports)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from cnirun.host.ports import HostPort, PortInUseError, check_unbound, overlaps


@pytest.mark.parametrize(
    ("a", "b", "meet"),
    [
        ("", "", True),
        ("", "127.0.0.1", True),
        ("", "::1", True),
        ("0.0.0.0", "127.0.0.1", True),
        ("127.0.0.1", "0.0.0.0", True),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("0.0.0.0", "::", False),
        ("0.0.0.0", "::1", False),
        ("::", "::1", True),
        ("::1", "::", True),
        ("::1", "fd00::1", False),
        ("::ffff:127.0.0.1", "127.0.0.1", True),
        ("::ffff:10.0.0.1", "0.0.0.0", True),
        ("::ffff:10.0.0.1", "::", False),
    ],
)
def test_addresses_overlap_with_wildcards_both_ways(a: str, b: str, meet: bool) -> None:
    assert overlaps(HostPort(a, 8080, "tcp"), HostPort(b, 8080, "tcp")) is meet
    assert overlaps(HostPort(b, 8080, "tcp"), HostPort(a, 8080, "tcp")) is meet


def test_other_ports_or_protocols_never_overlap() -> None:
    assert not overlaps(HostPort("", 8080, "tcp"), HostPort("", 8081, "tcp"))
    assert not overlaps(HostPort("", 8080, "tcp"), HostPort("", 8080, "udp"))


def test_addresses_are_shown_as_docker_shows_them() -> None:
    assert HostPort("", 80, "tcp").address == "0.0.0.0:80"
    assert HostPort("127.0.0.1", 80, "tcp").address == "127.0.0.1:80"
    assert HostPort("::1", 80, "udp").address == "[::1]:80"


@pytest.fixture
def listener() -> Iterator[tuple[int, socket.socket]]:
    """A TCP socket listening on 127.0.0.1, as a host service would."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1], sock


def test_a_listener_on_loopback_refuses_its_address_and_the_wildcard(
    listener: tuple[int, socket.socket],
) -> None:
    port, _ = listener
    for ip, shown in (("127.0.0.1", "127.0.0.1"), ("", "0.0.0.0"), ("0.0.0.0", "0.0.0.0")):
        with pytest.raises(PortInUseError) as info:
            check_unbound(HostPort(ip, port, "tcp"))
        assert str(info.value) == (
            f"Error starting userland proxy: listen tcp4 {shown}:{port}:"
            " bind: address already in use"
        )
        assert "another host port" in info.value.hint
    check_unbound(HostPort("127.0.0.2", port, "tcp"))  # another address: free
    check_unbound(HostPort("127.0.0.1", port, "udp"))  # another protocol: free
    check_unbound(HostPort("::1", port, "tcp"))  # the other family: free


def test_a_listener_on_the_wildcard_refuses_a_specific_address() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"listen tcp4 127\.0\.0\.1:{port}: bind:"):
            check_unbound(HostPort("127.0.0.1", port, "tcp"))
        with pytest.raises(PortInUseError, match=rf"listen tcp4 127\.0\.0\.1:{port}: bind:"):
            check_unbound(HostPort("::ffff:127.0.0.1", port, "tcp"))


def test_a_bound_udp_socket_refuses_its_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"^Error starting userland proxy: listen udp4 "
                           rf"0\.0\.0\.0:{port}: bind: address already in use$"):  # fmt: skip
            check_unbound(HostPort("", port, "udp"))
    check_unbound(HostPort("", port, "udp"))  # closed: free again


def test_a_connection_left_in_time_wait_does_not_count() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers (and Docker) do
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end lingers in TIME_WAIT
    client.close()
    server.close()
    check_unbound(HostPort("127.0.0.1", port, "tcp"))


def test_an_address_not_of_this_host_is_free() -> None:
    check_unbound(HostPort("192.0.2.1", 8080, "tcp"))  # TEST-NET-1: nothing can bind there

"""cnirun.sandbox.published: a run's `-p`s are checked against each other, against the ports
cnirun's sandbox records and cached attachments hold, and against the host's sockets."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni.cache import ResultCache
from cnirun.dockerargs import PortMapping, parse_run_args
from cnirun.host.ports import HostPort, PortInUseError
from cnirun.sandbox import published
from cnirun.sandbox.records import RecordStore, SandboxRecord
from tests.unit.conftest import CniEnv

SID = "5a" * 16
DEAD_PID = 2**22 + 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def store_with(tmp_path: Path, *ports: dict[str, Any], sandbox_id: str = SID) -> RecordStore:
    store = RecordStore(str(tmp_path / "state"))
    store.save(
        SandboxRecord(
            id=sandbox_id,
            infra_name=f"cnirun-infra-{sandbox_id}",
            netns_name=f"cnirun-{sandbox_id}",
            cache_dir="/var/lib/cni",
            plugin_dirs=[],
            cni_timeout=1.0,
            ports=list(ports),
            owner_pid=DEAD_PID,
            owner_start="",
        )  # fmt: skip
    )
    return store


def nothing_published(tmp_path: Path) -> tuple[RecordStore, ResultCache]:
    return RecordStore(str(tmp_path / "state")), ResultCache(str(tmp_path / "cache"))


def publish(argv: list[str]) -> list[PortMapping]:
    return list(parse_run_args([*argv, "busybox"]).publish)


def add_with_ports(cni_env: CniEnv, cid: str, mappings: list[dict[str, Any]]) -> None:
    """An attachment as `cnirun net add --cap-args` or priv-net-run leaves it in the cache."""
    net = cni_env.chain(1, P1={"capabilities": {"portMappings": True}})
    cni_env.cni().add_network_list(net, cni_env.rt(cid=cid, caps={"portMappings": mappings}))


def test_the_ports_of_every_record_and_cached_attachment_are_gathered(
    tmp_path: Path, cni_env: CniEnv
) -> None:
    store = store_with(
        tmp_path,
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
    )
    add_with_ports(cni_env, "c1", [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}])
    add_with_ports(cni_env, f"cnirun-{SID}", [{"hostPort": 1, "containerPort": 1}])
    found = published.published(store, ResultCache(str(cni_env.cache)))
    assert [(p.port, p.holder) for p in found] == [
        (HostPort("", 8080, "tcp"), f"sandbox {SID[:12]}"),
        (HostPort("127.0.0.1", 5353, "udp"), f"sandbox {SID[:12]}"),
        (HostPort("", 9090, "tcp"), "the CNI attachment c1 of network net"),
    ]  # the sandbox's own attachment (cnirun-<id>) is named once, by its record
    assert "cnirun rm -f 5a5a5a5a5a5a" in found[0].hint
    assert "cnirun net del net /tmp/ns --container-id c1" in found[2].hint


def test_nothing_published_is_nothing(tmp_path: Path) -> None:
    store = RecordStore(str(tmp_path / "none"))
    assert published.published(store, ResultCache(str(tmp_path / "cache"))) == []
    assert not (tmp_path / "none").exists()  # planning creates nothing


def test_a_port_another_sandbox_published_is_allocated(tmp_path: Path) -> None:
    port = free_port()
    store = store_with(tmp_path, {"hostPort": port, "containerPort": 80, "protocol": "tcp"})
    cache = ResultCache(str(tmp_path / "cache"))
    for argv, shown in (
        (["-p", f"{port}:81"], f"0.0.0.0:{port}"),
        (["-p", f"127.0.0.1:{port}:81"], f"127.0.0.1:{port}"),
    ):
        with pytest.raises(PortInUseError) as info:
            published.check_ports(publish(argv), store, cache)
        assert str(info.value) == f"Bind for {shown} failed: port is already allocated"
        assert info.value.hint.startswith(f"sandbox {SID[:12]} publishes 0.0.0.0:{port}/tcp.")
    assert published.check_ports(publish(["-p", f"{port}:81/udp"]), store, cache)


def test_a_port_of_a_cached_attachment_is_allocated(tmp_path: Path, cni_env: CniEnv) -> None:
    port = free_port()
    entry = {"hostPort": port, "containerPort": 80, "protocol": "udp", "hostIP": "::1"}
    add_with_ports(cni_env, "c9", [entry])
    store = RecordStore(str(tmp_path / "state"))
    cache = ResultCache(str(cni_env.cache))
    with pytest.raises(PortInUseError, match=rf"^Bind for \[::\]:{port} failed: port is"):
        published.check_ports(publish(["-p", f"[::]:{port}:53/udp"]), store, cache)
    published.check_ports(publish(["-p", f"127.0.0.1:{port}:53/udp"]), store, cache)


@pytest.mark.parametrize(
    "argv",
    [
        ["-p", "{p}:80", "-p", "{p}:81"],
        ["-p", "{p}:80", "-p", "127.0.0.1:{p}:81"],
        ["-p", "127.0.0.1:{p}:80", "-p", "0.0.0.0:{p}:80"],
        ["-p", "{p}:80/udp", "-p", "[::1]:{p}:80/udp"],
    ],
)
def test_overlapping_ports_of_one_command_line_are_refused(argv: list[str], tmp_path: Path) -> None:
    port = free_port()
    ports = publish([a.format(p=port) for a in argv])
    with pytest.raises(PortInUseError, match=r"^Bind for .* failed: port is already allocated$"):
        published.check_ports(ports, *nothing_published(tmp_path))


def test_ports_that_do_not_overlap_are_kept_in_order(tmp_path: Path) -> None:
    port = free_port()
    argv = ["-p", f"127.0.0.1:{port}:80", "-p", f"127.0.0.2:{port}:80", "-p", f"{port}:80/udp"]
    ports = publish(argv)
    assert published.check_ports(ports, *nothing_published(tmp_path)) == ports


def test_a_host_listener_is_refused_in_dockers_words(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"listen tcp4 0\.0\.0\.0:{port}: bind: address"):
            published.check_ports(publish(["-p", f"{port}:80"]), *nothing_published(tmp_path))


class ScriptedSocket:
    """A probe socket whose bind(port 0) is given the ports in `ports`, in turn."""

    ports: list[int] = []

    def __init__(self, *args: Any) -> None:
        pass

    def __enter__(self) -> ScriptedSocket:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def bind(self, address: Any) -> None:
        pass

    def getsockname(self) -> tuple[str, int]:
        return ("0.0.0.0", ScriptedSocket.ports.pop(0))


def test_a_chosen_port_avoids_those_cnirun_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_with(tmp_path, {"hostPort": 40001, "containerPort": 80, "protocol": "tcp"})
    monkeypatch.setattr(published.socket, "socket", ScriptedSocket)
    ScriptedSocket.ports = [40001, 40002, 40002, 40003]
    ports = publish(["-p", "80", "-p", "81"])
    chosen = published.check_ports(ports, store, ResultCache(str(tmp_path / "cache")))
    assert [(m.host_port, m.container_port) for m in chosen] == [(40002, 80), (40003, 81)]

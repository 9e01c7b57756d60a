"""The infra container's creation request, and the guard against a shared network namespace."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cnirun.docker_runtime import Docker, InfraSpec

from cnirun import docker_runtime
from cnirun.errors import DockerRuntimeError


class FakeEngine:
    """Answers create/start/inspect as Docker would, for a container whose pid is `pid`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.requests.append((method, path, kwargs.get("body")))
        if path == "/containers/create":
            return {"Id": "c" * 64}
        if path.endswith("/json"):
            config = {"Hostname": "cccccccccccc", "Domainname": ""}
            return {"State": {"Running": True, "Pid": self.pid}, "Config": config}
        return None


def docker_with(engine: FakeEngine) -> Docker:
    docker = Docker()
    docker._engine = engine  # type: ignore[assignment]
    return docker


def spec() -> InfraSpec:
    return InfraSpec(sandbox_id="a" * 32, image="cnirun/pause:1", labels={}, hostname="web")


def test_infra_has_network_mode_none_and_docker_networking_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(docker_runtime, "_same_netns", lambda pid: False)
    engine = FakeEngine(4242)
    infra = docker_with(engine).create_infra(spec())
    assert (infra.id, infra.pid, infra.hostname) == ("c" * 64, 4242, "cccccccccccc")
    _, path, body = engine.requests[0]
    assert path == "/containers/create"
    assert body["NetworkDisabled"] is True
    assert body["HostConfig"] == {"NetworkMode": "none", "RestartPolicy": {"Name": "no"}}
    assert body["Hostname"] == "web"


def test_an_infra_in_this_hosts_network_namespace_is_refused() -> None:
    """Should Docker ever start the infra in the host's namespace, CNI must not touch it."""
    assert docker_runtime._same_netns(os.getpid())
    with pytest.raises(DockerRuntimeError, match="shares this host's network namespace"):
        docker_with(FakeEngine(os.getpid())).create_infra(spec())


def test_event_stream_waits_past_whitespace_and_wakes_on_close() -> None:
    import socket
    import threading

    from cnirun.engine import EventStream

    ours, theirs = socket.socketpair()
    stream = EventStream(ours, b"\r\n")
    theirs.sendall(b"  \n")
    threading.Timer(0.2, lambda: theirs.sendall(b'{"status":"die"}\n')).start()
    assert stream.wait() == b'\r\n  \n{"status":"die"}\n'
    # A waiter is woken by close() from another thread, with nothing.
    threading.Timer(0.2, stream.close).start()
    assert stream.wait() == b""
    theirs.close()

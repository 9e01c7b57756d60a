"""cnirun.docker.runtime: the infra container's creation request, and the guard against a shared
network namespace."""

from __future__ import annotations

import os
from typing import Any

import pytest

from cnirun.docker import runtime
from cnirun.docker.endpoint import Endpoint
from cnirun.docker.runtime import Docker, InfraSpec
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
    docker = Docker(Endpoint("unix:///nonexistent/docker.sock"))
    docker.engine = engine  # type: ignore[assignment]
    return docker


def spec() -> InfraSpec:
    return InfraSpec(sandbox_id="a" * 32, image="cnirun/pause:1", labels={}, hostname="web")


def test_infra_has_network_mode_none_and_docker_networking_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "_same_netns", lambda pid: False)
    engine = FakeEngine(4242)
    infra = docker_with(engine).create_infra(spec())
    assert (infra.id, infra.pid, infra.hostname) == ("c" * 64, 4242, "cccccccccccc")
    _, path, body = engine.requests[0]
    assert path == "/containers/create"
    assert body["NetworkDisabled"] is True
    # Restarted with the engine, so a workload Docker restarts can rejoin it.
    restart = {"Name": "unless-stopped"}
    assert body["HostConfig"] == {"NetworkMode": "none", "RestartPolicy": restart}
    assert body["Hostname"] == "web"


def test_an_infra_in_this_hosts_network_namespace_is_refused() -> None:
    """Should Docker ever start the infra in the host's namespace, CNI must not touch it."""
    assert runtime._same_netns(os.getpid())
    with pytest.raises(DockerRuntimeError, match="shares this host's network namespace"):
        docker_with(FakeEngine(os.getpid())).create_infra(spec())


class Answers:
    """Answers GET paths from a table: path -> status (200 answers {"Id": ...})."""

    def __init__(self, statuses: dict[str, int]) -> None:
        self.statuses = statuses
        self.paths: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        from cnirun.docker.engine import EngineError

        self.paths.append(path)
        status = self.statuses.get(path, 404)
        if status != 200:
            raise EngineError(status, f"status {status}")
        return {"Id": "d" * 64}


def test_lookups_escape_the_name_and_treat_invalid_references_as_missing() -> None:
    answers = Answers({
        "/images/cnirun%2Fpause%3A1/json": 200, "/images/Busybox/json": 400,
        "/containers/web/json": 200,
    })  # fmt: skip
    docker = docker_with(answers)  # type: ignore[arg-type]
    assert docker.image_exists("cnirun/pause:1")
    assert not docker.image_exists("Busybox") and not docker.image_exists("nope")
    assert docker.container_id("web") == "d" * 64 and docker.container_id("db") is None
    assert answers.paths[-1] == "/containers/db/json"


def test_no_daemon_is_dockers_own_words() -> None:
    from cnirun.docker.engine import EngineError

    class Down:
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            raise EngineError(0, "Cannot connect to the Docker daemon at unix:///x.sock.")

    docker = docker_with(Down())  # type: ignore[arg-type]
    for call in (lambda: docker.image_exists("busybox"), docker.version):
        with pytest.raises(DockerRuntimeError) as info:
            call()
        assert str(info.value) == "Cannot connect to the Docker daemon at unix:///x.sock."

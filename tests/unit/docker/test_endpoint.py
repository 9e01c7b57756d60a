"""Which daemon cnirun talks to: the docker CLI's precedence, one answer for the Engine client,
the SDK and the workload's docker CLI; TLS and ssh refused in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cnirun.docker.endpoint import DEFAULT_HOST, Endpoint, resolve
from cnirun.errors import DockerRuntimeError


def make_context(config: Path, name: str, host: str, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoints = {"docker": {"Host": host, "SkipTLSVerify": False}}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": endpoints}))
    if tls:
        certs = config / "contexts" / "tls" / digest / "docker"
        certs.mkdir(parents=True)
        (certs / "ca.pem").write_text("x")


def test_default_socket_without_anything(tmp_path: Path) -> None:
    assert resolve({"HOME": str(tmp_path)}) == Endpoint(DEFAULT_HOST)


def test_docker_host_wins_over_any_context(tmp_path: Path) -> None:
    make_context(tmp_path, "other", "unix:///other.sock")
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://127.0.0.1:2375"}
    env["DOCKER_CONTEXT"] = "other"
    assert resolve(env) == Endpoint("tcp://127.0.0.1:2375")


def test_docker_context_variable_then_current_context(tmp_path: Path) -> None:
    make_context(tmp_path, "a", "unix:///a.sock")
    make_context(tmp_path, "b", "unix:///b.sock")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "b"}))
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert resolve(env) == Endpoint("unix:///b.sock", "b")
    assert resolve({**env, "DOCKER_CONTEXT": "a"}) == Endpoint("unix:///a.sock", "a")
    assert resolve({**env, "DOCKER_CONTEXT": "default"}) == Endpoint(DEFAULT_HOST)


def test_config_dir_defaults_to_home(tmp_path: Path) -> None:
    make_context(tmp_path / ".docker", "c", "unix:///c.sock")
    (tmp_path / ".docker" / "config.json").write_text('{"currentContext": "c"}')
    assert resolve({"HOME": str(tmp_path)}) == Endpoint("unix:///c.sock", "c")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DOCKER_HOST": "ssh://me@box"}, "DOCKER_HOST ssh://me@box is not supported"),
        ({"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1"}, "(TLS) is not supported"),
        ({"DOCKER_CONTEXT": "nope"}, "docker context 'nope' not found"),
        ({"DOCKER_CONTEXT": "secure"}, "docker context 'secure' uses TLS"),
        ({"DOCKER_CONTEXT": "remote"}, "docker context 'remote': host ssh://x is not supported"),
    ],
)
def test_unusable_endpoints_are_one_clear_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    make_context(tmp_path, "secure", "tcp://h:2376", tls=True)
    make_context(tmp_path, "remote", "ssh://x")
    with pytest.raises(DockerRuntimeError) as caught:
        resolve({"DOCKER_CONFIG": str(tmp_path), **env})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_broken_config_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{ nope")
    with pytest.raises(DockerRuntimeError, match="config.json is not valid JSON"):
        resolve({"DOCKER_CONFIG": str(tmp_path)})


def test_the_workload_cli_is_pointed_at_the_same_daemon() -> None:
    from_context = Endpoint("unix:///b.sock", "b").cli_environ({"DOCKER_HOST": "", "X": "1"})
    assert from_context["DOCKER_CONTEXT"] == "b" and "DOCKER_HOST" not in from_context
    from_host = Endpoint(DEFAULT_HOST).cli_environ({"DOCKER_CONTEXT": "stale", "X": "1"})
    assert from_host["DOCKER_HOST"] == DEFAULT_HOST and "DOCKER_CONTEXT" not in from_host
    assert from_host["X"] == "1"

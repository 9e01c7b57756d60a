"""cnirun.docker.engine: the event stream a run waits on; escaping, statuses and malformed
answers (issue 13 items 1 and 9)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from cnirun.docker.engine import Engine, EngineError, EventStream, api_path
from cnirun.docker.runtime import Docker
from cnirun.errors import DockerRuntimeError


def test_event_stream_waits_past_whitespace_and_wakes_on_close() -> None:
    ours, theirs = socket.socketpair()
    stream = EventStream(ours, b"\r\n")
    theirs.sendall(b"  \n")
    threading.Timer(0.2, lambda: theirs.sendall(b'{"status":"die"}\n')).start()
    assert stream.wait() == b'\r\n  \n{"status":"die"}\n'
    # A waiter is woken by close() from another thread, with nothing.
    threading.Timer(0.2, stream.close).start()
    assert stream.wait() == b""
    theirs.close()


class FakeDaemon(threading.Thread):
    """A Docker daemon on a unix socket: answers /_ping, then `answer` to everything else;
    records each request's head."""

    def __init__(self, path: str, answer: bytes) -> None:
        super().__init__(daemon=True)
        self.answer = answer
        self.requests: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen()
        self.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head = data.split(b"\r\n\r\n")[0].decode("latin-1")
                self.requests.append(head)
                if head.startswith("GET /_ping "):
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"
                    )
                else:
                    conn.sendall(self.answer)


def engine_answering(tmp_path: Path, answer: bytes) -> tuple[Engine, FakeDaemon]:
    path = str(tmp_path / "docker.sock")
    return Engine(f"unix://{path}"), FakeDaemon(path, answer)


JSON_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_path_parameters_are_escaped_whole(tmp_path: Path) -> None:
    # Issue 13 item 1: a CRLF in a recorded infra_id smuggled a `POST /containers/X/kill`.
    engine, daemon = engine_answering(tmp_path, JSON_OK)
    evil = "x HTTP/1.1\r\nHost: docker\r\n\r\nPOST /containers/victim/kill"
    engine.request("POST", api_path("/containers/{}/kill", evil))
    engine.request("GET", api_path("/images/{}/json", "../../containers/victim"))
    first_lines = [r.split("\r\n")[0] for r in daemon.requests[1:]]
    assert first_lines == [
        "POST /v1.41/containers/x%20HTTP%2F1.1%0D%0AHost%3A%20docker%0D%0A%0D%0APOST%20"
        "%2Fcontainers%2Fvictim%2Fkill/kill HTTP/1.1",
        "GET /v1.41/images/..%2F..%2Fcontainers%2Fvictim/json HTTP/1.1",
    ]
    with pytest.raises(EngineError, match="unescaped characters"):
        engine.request("POST", f"/containers/{evil}/kill")  # never sent
    assert len(daemon.requests) == 3


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_only_2xx_is_success(tmp_path: Path, answer: bytes) -> None:
    engine, _ = engine_answering(tmp_path, answer)
    with pytest.raises(EngineError) as caught:
        engine.request("POST", "/containers/x/kill")
    assert caught.value.status in (101, 301)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\nnot json",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b"[" * 100_000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_a_malformed_answer_is_an_engine_error(tmp_path: Path, answer: bytes) -> None:
    engine, _ = engine_answering(tmp_path, answer)
    with pytest.raises(EngineError, match="malformed answer|did not answer"):
        engine.request("GET", "/containers/json")


def test_a_malformed_answer_is_a_docker_runtime_error_in_runtime(tmp_path: Path) -> None:
    engine, _ = engine_answering(
        tmp_path, b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a": 1}'
    )
    docker = Docker.__new__(Docker)
    docker.engine = engine
    with pytest.raises(DockerRuntimeError, match="not a list"):
        docker.containers()
def test_no_daemon_is_said_in_dockers_words(tmp_path: Path) -> None:
    from cnirun.docker.engine import Engine, EngineError

    host = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(EngineError) as info:
        Engine(host).request("GET", "/version")
    assert info.value.message == (
        f"Cannot connect to the Docker daemon at {host}. Is the docker daemon running?"
    )

"""cnirun.docker.engine: the event stream a run waits on."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from cnirun.docker.engine import EventStream


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


def test_no_daemon_is_said_in_dockers_words(tmp_path: Path) -> None:
    from cnirun.docker.engine import Engine, EngineError

    host = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(EngineError) as info:
        Engine(host).request("GET", "/version")
    assert info.value.message == (
        f"Cannot connect to the Docker daemon at {host}. Is the docker daemon running?"
    )

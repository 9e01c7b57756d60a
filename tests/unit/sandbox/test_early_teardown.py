"""The early-teardown thread never dies of an exception (issue 13 item 9: a non-JSON answer
from the engine raised an uncaught exception there): a failed teardown is left to the
teardown after the docker CLI exits."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from cnirun.docker.engine import Engine, EventStream
from cnirun.docker.runtime import Docker
from cnirun.sandbox.early_teardown import EarlyTeardown
from cnirun.sandbox.records import RecordStore
from tests.unit.sandbox.test_records import good_record


class DyingWorkload(Docker):
    """An engine whose event stream says `die` at once, and that answers garbage after."""

    def __init__(self, path: str) -> None:
        self.engine = Engine(f"unix://{path}")

    def watch_for_exit(self, sandbox_id: str, role: str) -> EventStream:
        ours, theirs = socket.socketpair()
        theirs.sendall(b'{"status":"die"}\n')
        theirs.close()
        return EventStream(ours, b"")


def garbage_daemon(path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n<html>")

    threading.Thread(target=serve, daemon=True).start()


@pytest.mark.parametrize("unsafe_state_dir", [False, True])
def test_the_early_teardown_thread_survives_bad_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unsafe_state_dir: bool
) -> None:
    crashes: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    garbage_daemon(str(tmp_path / "docker.sock"))
    store = RecordStore(str(tmp_path / "state"))
    record = good_record(attachments=[], plugin_dirs=[])
    record.netns_name = ""  # nothing of the host to release in a unit test
    store.save(record)
    if unsafe_state_dir:
        os.chmod(store.state_dir, 0o777)
    thread = EarlyTeardown(record, store, DyingWorkload(str(tmp_path / "docker.sock")))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert crashes == []
    if not unsafe_state_dir:
        assert thread.done
        assert any("malformed answer" in f for f in thread.failures), thread.failures

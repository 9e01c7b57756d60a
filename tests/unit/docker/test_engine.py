"""cnirun.docker.engine: the event stream a run waits on."""

from __future__ import annotations

import socket
import threading

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

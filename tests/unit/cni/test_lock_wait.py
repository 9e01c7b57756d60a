"""A wait for the host-wide CNI lock says who holds it, instead of blocking in silence."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from cnirun.cni import api
from cnirun.cni.api import CNIConfig

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("held", flush=True)
sys.stdin.read()  # until the test lets go
"""


def test_a_long_wait_names_the_holder_then_takes_the_lock(tmp_path: Path) -> None:
    cni = CNIConfig([str(tmp_path)], str(tmp_path / "cache"))
    lock = Path(cni.lock_path)
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    seen: list[str] = []
    waiting = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            waiting.set()

    spy = Spy(logging.INFO)
    logger = logging.getLogger("cnirun.cni.api")
    logger.addHandler(spy)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    old_notice = api.LOCK_NOTICE_SECONDS
    api.LOCK_NOTICE_SECONDS = 0.05
    try:
        assert holder.stdin is not None

        def release_when_waiting() -> None:
            waiting.wait(timeout=60)
            holder.stdin.close()  # type: ignore[union-attr]

        releaser = threading.Thread(target=release_when_waiting)
        releaser.start()
        with cni.lock():
            assert lock.read_text() == f"{os.getpid()}\n"  # ours now
        releaser.join()
    finally:
        api.LOCK_NOTICE_SECONDS = old_notice
        logger.removeHandler(spy)
        logger.setLevel(old_level)
        holder.kill()
        holder.wait()
    assert seen == [f"waiting for the CNI lock {lock}, held by pid {holder.pid}"]

"""A wait for a network's CNI lock says who holds it, is bounded, and ends on a signal."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnirun.cni import api
from cnirun.errors import CnirunError
from tests.unit.conftest import CniEnv

REPO = Path(__file__).resolve().parents[3]

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)  # what an older cnirun leaves
print("held", flush=True)
sys.stdin.read()  # until the test lets go
"""

RUNTIME = """
import sys
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf
plugins, cache, conf = sys.argv[1:]
cni = CNIConfig([plugins], cache, timeout=120)
cni.add_network_list(list_from_bytes(conf.encode()), RuntimeConf("c1", "/tmp/ns", "eth0"))
"""

WAITER = """
import logging, sys
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf
from cnirun.host.signals import Interrupted, SignalGuard
logging.basicConfig(level=logging.INFO, format="%(message)s")
cache, conf = sys.argv[1:]
guard = SignalGuard()
guard.install()
try:
    CNIConfig([], cache, timeout=60).del_network_list(
        list_from_bytes(conf.encode()), RuntimeConf("c1", "/tmp/ns", "eth0"))
except Interrupted as e:
    print("interrupted by", e, file=sys.stderr, flush=True)
    sys.exit(3)
"""


@pytest.fixture
def notice_soon() -> Iterator[list[str]]:
    """Lower LOCK_NOTICE_SECONDS; yields the messages cnirun.cni.api logs."""
    seen: list[str] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    spy = Spy(logging.INFO)
    logger = logging.getLogger("cnirun.cni.api")
    logger.addHandler(spy)
    old_level, old_notice = logger.level, api.LOCK_NOTICE_SECONDS
    logger.setLevel(logging.INFO)
    api.LOCK_NOTICE_SECONDS = 0.05
    try:
        yield seen
    finally:
        api.LOCK_NOTICE_SECONDS = old_notice
        logger.removeHandler(spy)
        logger.setLevel(old_level)


def _wait_for(condition: object, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound  # only limits how long a failure takes
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_long_wait_names_the_holder_its_plugin_and_command(
    cni_env: CniEnv, notice_soon: list[str]
) -> None:
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"sleep": 0.5}}}])
    holder = cni_env.cni()
    thread = threading.Thread(target=holder.add_network_list, args=(net, cni_env.rt()))
    thread.start()
    _wait_for(lambda: len(cni_env.calls()) == 1)  # its plugin sleeps, the lock held
    cni_env.cni().del_network_list(net, cni_env.rt())  # waits, then DELs what was added
    thread.join()
    assert cni_env.trace() == [("fake", "ADD"), ("fake", "DEL")]
    assert notice_soon == [
        f"waiting for the CNI lock of network net, held by pid {os.getpid()} (plugin fake, ADD)"
    ]


def test_a_wait_is_bounded_and_says_what_holds_the_lock(
    cni_env: CniEnv, notice_soon: list[str]
) -> None:
    cni = cni_env.cni(lock_wait=0.5)
    lock = Path(cni.lock_path("net"))
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(CnirunError) as exc:
            cni.del_network_list(cni_env.network(), cni_env.rt())
    finally:
        holder.kill()
        holder.wait()
    text = str(exc.value)
    assert text.startswith("gave up after ")
    assert text.endswith(
        f"s waiting for the CNI lock of network net, held by pid {holder.pid}: "
        "if that process is stuck, kill it, else retry later"
    )
    assert cni_env.calls() == []


def test_the_default_bound_is_the_longest_timeout_and_a_margin(cni_env: CniEnv) -> None:
    assert cni_env.cni(timeout=20).lock_wait == 20 + api.LOCK_MARGIN_SECONDS
    assert cni_env.cni(timeout=20, del_timeout=5).lock_wait == 20 + api.LOCK_MARGIN_SECONDS
    assert cni_env.cni(timeout=None).lock_wait is None  # plugins may take forever too


def test_a_wait_ends_when_the_callers_signal_counter_moves(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"sleep": 1}}}])
    thread = threading.Thread(target=cni_env.cni().add_network_list, args=(net, cni_env.rt()))
    thread.start()
    _wait_for(lambda: len(cni_env.calls()) == 1)
    signals = [0]
    waiter = cni_env.cni()
    waiter.interrupted = lambda: signals[0]
    threading.Timer(0.1, lambda: signals.__setitem__(0, 1)).start()
    with pytest.raises(CnirunError) as exc:
        waiter.del_network_list(net, cni_env.rt())
    thread.join()
    assert str(exc.value) == (
        f"interrupted while waiting for the CNI lock of network net, "
        f"held by pid {os.getpid()} (plugin fake, ADD)"
    )
    assert cni_env.trace() == [("fake", "ADD")]


def test_sigterm_ends_a_wait_under_the_signal_guard(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"sleep": 60}}}])
    conf = net.bytes.decode()
    holder = subprocess.Popen(
        [sys.executable, "-c", RUNTIME, str(cni_env.bin_a), str(cni_env.cache), conf], cwd=REPO
    )
    waiter: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: len(cni_env.calls()) == 1)  # its plugin sleeps, the lock held
        waiter = subprocess.Popen(
            [sys.executable, "-c", WAITER, str(cni_env.cache), conf],
            cwd=REPO, stderr=subprocess.PIPE, text=True,
        )
        assert waiter.stderr is not None
        line = waiter.stderr.readline()  # after LOCK_NOTICE_SECONDS
        assert line == (
            f"waiting for the CNI lock of network net, held by pid {holder.pid} "
            "(plugin fake, ADD)\n"
        )
        waiter.send_signal(signal.SIGTERM)
        assert waiter.wait(30) == 3
        assert waiter.stderr.read() == "interrupted by SIGTERM\n"
    finally:
        for proc in (waiter, holder):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [c["env"]["CNI_COMMAND"] for c in cni_env.calls()] == ["ADD"]

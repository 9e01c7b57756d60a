"""The one signal state machine `run` and `priv-net-run` share: each mode means one thing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cnirun.host.signals import Interrupted, Mode, SignalGuard


@pytest.fixture
def guard() -> Iterator[SignalGuard]:
    g = SignalGuard()
    g.install()
    yield g
    g.restore(ignore=False)


def deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs in the main thread before kill returns


def notes(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records]


@pytest.fixture
def said() -> Iterator[list[logging.LogRecord]]:
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("cnirun.host.signals")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_abort_raises_at_once(guard: SignalGuard) -> None:
    with pytest.raises(Interrupted) as caught:
        deliver(signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM and guard.mode is Mode.TEARDOWN


def test_defer_notes_and_the_checkpoint_stops(guard: SignalGuard) -> None:
    guard.enter(Mode.DEFER)
    deliver(signal.SIGHUP)  # no exception: the step must not be cut in half
    with pytest.raises(Interrupted) as caught:
        guard.checkpoint()
    assert caught.value.signum == signal.SIGHUP


def test_adding_lets_the_first_signal_wait_and_the_second_abort(
    guard: SignalGuard, said: list[logging.LogRecord]
) -> None:
    guard.enter(Mode.ADDING)
    deliver(signal.SIGINT)
    assert notes(said) == ["SIGINT received: stopping after the current ADD (again: at once)"]
    with pytest.raises(Interrupted) as caught:
        deliver(signal.SIGINT)
    assert caught.value.signum == signal.SIGINT  # the first signal decides the exit status


def test_teardown_says_so_and_carries_on(guard: SignalGuard, said: list[logging.LogRecord]) -> None:
    guard.enter(Mode.TEARDOWN)
    deliver(signal.SIGTERM)
    assert notes(said) == ["SIGTERM received: finishing teardown first"]


def test_forward_waits_for_the_child_then_passes_the_signal_on(guard: SignalGuard) -> None:
    forwarded: list[int] = []
    guard._on_forwarded = forwarded.append
    guard.enter(Mode.FORWARD)
    deliver(signal.SIGTERM)  # no child yet: only noted
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
         "print('ready', flush=True)\ntime.sleep(30)\n"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    guard.set_child(child)  # now the noted SIGTERM reaches it
    assert child.wait(timeout=30) == 42
    assert forwarded == [signal.SIGTERM]


def test_no_signal_reaches_a_child_that_has_exited(guard: SignalGuard) -> None:
    forwarded: list[int] = []
    guard._on_forwarded = forwarded.append
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    guard.enter(Mode.FORWARD)
    guard.set_child(child)
    deliver(signal.SIGTERM)
    assert forwarded == []  # its pid may belong to someone else by now


def test_restore_ignore_keeps_a_late_signal_from_changing_the_exit() -> None:
    originals = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    g = SignalGuard()
    g.install()
    try:
        g.restore(ignore=True)
        assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in originals)
        deliver(signal.SIGTERM)  # ignored: the test process lives on
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)

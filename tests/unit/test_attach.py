"""cnirun.attach: an ADD slower than SLOW_ADD_NOTE_AFTER gets a one-line note that the CLI
shows on a terminal only (issue 14, item 6)."""

from __future__ import annotations

import io
import logging
import signal
import threading
import time
from typing import Any

import pytest

from cnirun import attach
from cnirun.attach import Attachment
from cnirun.cli import output
from cnirun.host.signals import Interrupted, SignalGuard
from tests.unit.conftest import CniEnv


class SlowCNI:
    interrupted = None

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def add_network_list(self, net: Any, rt: Any) -> str:
        time.sleep(self.seconds)
        return "result"


class Guard:
    mode = None
    signals: list[int] = []

    def enter(self, mode: Any) -> None:
        self.mode = mode

    def checkpoint(self) -> None:
        pass


class Net:
    name = "slownet"
    plugins = ()  # no portmap: no localhost guard to install


def notes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "still waiting for the CNI plugins" in r.getMessage()]


@pytest.mark.parametrize(("seconds", "noted"), [(0.3, True), (0.0, False)])
def test_a_slow_add_is_noted_for_terminals(
    seconds: float, noted: bool, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr(attach, "SLOW_ADD_NOTE_AFTER", 0.05)
    caplog.set_level(logging.INFO, logger="cnirun")
    logging.getLogger("cnirun").propagate = True
    try:
        attachments = [attach.Attachment(Net(), None)]  # type: ignore[arg-type]
        results = attach.add_all(SlowCNI(seconds), attachments, Guard())  # type: ignore[arg-type]
    finally:
        logging.getLogger("cnirun").propagate = False
    assert results == ["result"]
    time.sleep(0.1)  # a cancelled note never comes late
    found = notes(caplog)
    assert bool(found) is noted
    if found:
        message = "still waiting for the CNI plugins of network slownet (ADD)..."
        assert found[0].getMessage() == message
        assert getattr(found[0], "terminal_only", False)


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_terminal_only_notes_never_reach_a_pipe(
    tty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    handler = output._StderrHandler()
    note = logging.LogRecord("cnirun", logging.INFO, "", 0, "waiting", (), None)
    note.terminal_only = True
    handler.emit(note)
    handler.emit(logging.LogRecord("cnirun", logging.WARNING, "", 0, "always", (), None))
    expected = ("cnirun: waiting\n" if tty else "") + "cnirun: warning: always\n"
    assert stream.getvalue() == expected


def test_a_signal_ends_a_wait_for_the_lock_during_adding(cni_env: CniEnv) -> None:
    """ADDING lets the first signal wait for the ADD; a wait for the network's lock (held
    by another cnirun) is no part of it and ends at once, before any plugin runs."""
    net = cni_env.network()
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with cni_env.cni().lock("net"):
            holding.set()
            done.wait(10)  # only bounds how long a failure takes

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(30)
    guard = SignalGuard()
    threading.Timer(0.1, lambda: guard.signals.append(signal.SIGTERM)).start()
    try:
        with pytest.raises(Interrupted):
            attach.add_all(cni_env.cni(timeout=None), [Attachment(net, cni_env.rt())], guard)
    finally:
        done.set()
        holder.join()
    assert cni_env.calls() == []

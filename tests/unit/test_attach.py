"""cnirun.attach: an ADD slower than SLOW_ADD_NOTE_AFTER gets a one-line note that the CLI
shows on a terminal only (issue 14, item 6)."""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import pytest

from cnirun import attach
from cnirun.cli import output


class SlowCNI:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def add_network_list(self, net: Any, rt: Any) -> str:
        time.sleep(self.seconds)
        return "result"


class Guard:
    mode = None

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

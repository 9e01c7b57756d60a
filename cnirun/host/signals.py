"""The one signal state machine of the commands that own a sandbox (`run`, `priv-net-run`).

SIGINT, SIGTERM and SIGHUP mean "stop", but what stopping means depends on the phase:

- ABORT: nothing is half done (each step is recorded before it happens): raise Interrupted.
- DEFER: a step that must not be cut in half runs (netns creation): note the signal; the
  next `checkpoint()` raises Interrupted.
- ADDING: a CNI ADD runs. An ADD cut short leaves state only its result can undo, so the
  first signal lets it finish (the next checkpoint stops); a second one aborts it at once.
- FORWARD: the child (the docker CLI, or priv-net-run's command) owns the terminal: pass the
  signal on, except a terminal's Ctrl-C, which already reached the child's process group.
  Before the child exists the signal is only noted; `set_child` forwards it then.
- TEARDOWN: say that teardown finishes first, and carry on.

What a signal makes cnirun say goes to the `cnirun.signals` logger (the CLI shows it).
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised in the main thread to abandon a setup on a signal (like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class Mode(enum.Enum):
    ABORT = "abort"
    DEFER = "defer"
    ADDING = "adding"
    FORWARD = "forward"
    TEARDOWN = "teardown"


def in_foreground() -> bool:
    """Whether we run in the terminal's foreground process group (so a Ctrl-C there also
    reached our children, which share the group)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


class SignalGuard:
    """Installs the handlers and decides, per phase, what a signal does.

    `on_forwarded(signum)` runs after a signal was passed to the child (the run arms its
    kill-after-grace timer there).
    """

    def __init__(self, on_forwarded: Callable[[int], None] | None = None) -> None:
        self.mode = Mode.ABORT
        self.signals: list[int] = []
        self.child: subprocess.Popen[bytes] | None = None
        self._pending: list[int] = []  # noted in FORWARD before the child existed
        self._on_forwarded = on_forwarded
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in HANDLED_SIGNALS}

    def restore(self, ignore: bool) -> None:
        """Put the old handlers back, or ignore the signals for good (the process is exiting:
        a late signal must not replace the exit status)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore else handler)

    def enter(self, mode: Mode) -> None:
        self.mode = mode

    def checkpoint(self) -> None:
        """Stop here if a signal arrived during a phase that could not be cut short."""
        if self.signals:
            self.mode = Mode.TEARDOWN
            raise Interrupted(self.signals[0])

    def set_child(self, child: subprocess.Popen[bytes]) -> None:
        """The child exists now: forward what arrived while it was being started."""
        self.child = child
        while self._pending:
            self._forward(self._pending.pop(0))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        name = signal.Signals(signum).name
        if self.mode is Mode.ABORT or (self.mode is Mode.ADDING and len(self.signals) > 1):
            self.mode = Mode.TEARDOWN
            raise Interrupted(self.signals[0])
        if self.mode is Mode.ADDING:
            log.info("%s received: stopping after the current ADD (again: at once)", name)
        elif self.mode is Mode.FORWARD:
            if self.child is None:
                self._pending.append(signum)
            else:
                self._forward(signum)
        elif self.mode is Mode.TEARDOWN:
            log.info("%s received: finishing teardown first", name)

    def _forward(self, signum: int) -> None:
        child = self.child
        if child is None or child.poll() is not None:  # never a pid that may be reused
            return
        if not (signum == signal.SIGINT and in_foreground()):
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                return
        if self._on_forwarded is not None:
            self._on_forwarded(signum)

"""What the commands that own a sandbox (`run`, `priv-net-run`) share about signals.

Both install handlers for the same signals, abort setup by raising Interrupted, and must
not forward a terminal's Ctrl-C that the child already received.
"""

from __future__ import annotations

import os
import signal
import sys

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised in the main thread to abandon a setup on a signal (like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def in_foreground() -> bool:
    """Whether we run in the terminal's foreground process group (so a Ctrl-C there also
    reached our children, which share the group)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False

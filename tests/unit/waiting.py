"""Polling for the unit tests that watch real processes (no timing assertion: the bound only
limits how long a failure takes)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], bound: float = 30.0) -> bool:
    """Poll `condition` until it holds; False if it still does not after `bound` seconds."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True

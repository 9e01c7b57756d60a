"""Docker's pull progress, drawn on stderr as the docker CLI draws it (the `PullDisplay` the
Docker layer reports to): per-layer lines redrawn in place on a terminal, plain status lines
otherwise; `-q` shows nothing at all (no display is made)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TextIO

BAR_WIDTH = 50
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(size: float) -> str:
    """A byte count in decimal units with at most 4 significant digits: "1.234MB"."""
    for unit in _UNITS:
        if abs(size) < 1000 or unit == _UNITS[-1]:
            return f"{size:.4g}{unit}"
        size /= 1000
    raise AssertionError("unreachable")


def progress_text(detail: Mapping[str, Any], bar: bool = True) -> str:
    """Render `progressDetail` as "[=====>      ] 1.2MB/3.4MB" ("" when it holds no numbers)."""
    current = int(detail.get("current") or 0)
    total = int(detail.get("total") or 0)
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return human_size(current)
    # A layer that grew past its announced size shows just the count, as docker does.
    counts = f"{human_size(current)}/{human_size(total)}"
    if current > total:
        counts = human_size(current)
    if not bar:
        return counts
    filled = min(BAR_WIDTH, current * BAR_WIDTH // total)
    return f"[{'=' * filled}>{' ' * (BAR_WIDTH - filled)}] {counts}"


class ProgressDisplay:
    """Shows an engine's pull events on a stream, as the docker CLI shows them.

    On a terminal each layer owns one line, redrawn in place (cursor up, clear, rewrite,
    cursor back down) as its status and byte counts change. Elsewhere a line is printed per
    status change and byte-count updates are dropped, so logs stay short.
    """

    def __init__(self, out: TextIO, tty: bool | None = None, width: int | None = None) -> None:
        self.out = out
        self.tty = _isatty(out) if tty is None else tty
        self.width = width or _width(out)
        # Layer id -> its line in the block above the cursor; the cursor stays just below.
        self.rows: dict[str, int] = {}

    def notice(self, text: str) -> None:
        self.rows = {}
        self._write(text + "\n")

    def show(self, event: Mapping[str, Any]) -> None:
        """Render one decoded event (a dict of the engine's JSON stream)."""
        status = str(event.get("status") or "")
        if not status:
            return
        ident = str(event.get("id") or "")
        detail = event.get("progressDetail")
        if not ident or not isinstance(detail, Mapping):
            # Not about one layer ("Digest: ...", "tag: Pulling from repo"): a line of its own,
            # and the layers above are done being redrawn.
            self.rows = {}
            self._write((f"{ident}: {status}" if ident else status) + "\n")
            return
        if not self.tty:
            if not progress_text(detail):
                self._write(f"{ident}: {status}\n")
            return
        line = self._fit(f"{ident}: {status}", detail, str(event.get("progress") or ""))
        row = self.rows.get(ident)
        if row is None:
            self.rows[ident] = len(self.rows)
            self._write(f"\x1b[2K{line}\n")
            return
        up = len(self.rows) - row
        self._write(f"\x1b[{up}A\x1b[2K\r{line}\r\x1b[{up}B")

    def close(self) -> None:
        self.rows = {}
        try:
            self.out.flush()
        except (OSError, ValueError):
            pass

    def _fit(self, head: str, detail: Mapping[str, Any], fallback: str) -> str:
        # A line longer than the terminal would wrap and break the cursor arithmetic.
        for bar in (True, False):
            progress = progress_text(detail, bar=bar) or (fallback if bar else "")
            line = f"{head} {progress}" if progress else head
            if len(line) < self.width:
                return line
        return line[: max(self.width - 1, 1)]

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not fail the pull


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (OSError, ValueError):
        return False


def _width(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80

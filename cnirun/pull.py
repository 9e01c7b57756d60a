"""Image pulls cnirun makes itself (a user-chosen infra image), shown the way `docker run` does.

Owns the `--pull missing|always|never` decision and the progress display on stderr: per-layer
lines redrawn in place on a terminal, plain status lines otherwise, nothing with `-q`. The
workload image is not pulled here: the docker CLI that runs it does that with the same flags.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from cnirun import engine
from cnirun.errors import DockerRuntimeError

__all__ = ["POLICIES", "ProgressDisplay", "ensure_image", "human_size", "progress_text", "pull"]

log = logging.getLogger(__name__)

POLICIES = ("missing", "always", "never")
BAR_WIDTH = 50
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def ensure_image(
    image: str,
    *,
    present: bool,
    policy: str | None = None,
    quiet: bool = False,
    platform: str | None = None,
    role: str = "image",
    out: TextIO | None = None,
) -> None:
    """Pull `image` if `policy` (None or "" mean "missing", as in docker) asks for it.

    `present` says whether the engine already has the image. `role` names the image in
    messages ("infra image"). Progress goes to `out` (default stderr) unless `quiet`.

    Raises:
        DockerRuntimeError: the image is missing under `never`, or the pull failed.
    """
    policy = policy or "missing"
    if policy not in POLICIES:
        raise DockerRuntimeError(f"invalid pull policy {policy!r}: want always, missing or never")
    if policy == "never":
        if not present:
            raise DockerRuntimeError(
                f"{role} {image} is not present locally and --pull=never forbids pulling it: "
                f"run `docker pull {image}` first, or drop --pull=never"
            )
        return
    if policy == "missing" and present:
        return
    stream = out if out is not None else sys.stderr
    if policy == "missing" and not quiet:
        print(f"Unable to find {role} '{image}' locally", file=stream, flush=True)
    pull(image, platform=platform, display=None if quiet else ProgressDisplay(stream), role=role)


def pull(
    image: str,
    *,
    platform: str | None = None,
    display: ProgressDisplay | None = None,
    role: str = "image",
) -> None:
    """Pull one image (":latest" when untagged) through the engine, showing progress on `display`.

    Uses the Docker SDK, imported only now: it reads registry credentials (config.json and
    credential helpers) as the docker CLI does, which is worth its import time here.

    Raises:
        DockerRuntimeError: the engine or the registry refused or failed the pull.
    """
    import docker
    import requests

    log.debug("docker: pull %s (platform %s)", image, platform or "default")
    try:
        # The daemon cnirun.engine talks to (cnirun refuses TLS and ssh hosts before any pull).
        client = docker.APIClient(base_url=engine.docker_host(), version="auto")
        try:
            events = client.pull(image, stream=True, decode=True, platform=platform)
            for event in events:
                error = _event_error(event)
                if error:
                    raise DockerRuntimeError(f"cannot pull {role} {image}: {error}")
                if display is not None:
                    display.show(event)
        finally:
            client.close()
    except docker.errors.APIError as e:
        reason = e.explanation or str(e)
        raise DockerRuntimeError(f"cannot pull {role} {image}: {_one_line(reason)}") from None
    except (docker.errors.DockerException, requests.RequestException, OSError) as e:
        raise DockerRuntimeError(f"cannot pull {role} {image}: {_one_line(str(e))}") from None
    finally:
        if display is not None:
            display.close()


def _event_error(event: Any) -> str:
    if not isinstance(event, Mapping):
        return ""
    detail = event.get("errorDetail")
    message = event.get("error") or (detail.get("message") if isinstance(detail, Mapping) else "")
    return _one_line(str(message)) if message else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the progress display ---------------------------------------------------------------------


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

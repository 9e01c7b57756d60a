"""Everything cnirun writes to its user: errors, warnings and notices on stderr, tables and
JSON on stdout. The layers below never print; they raise, return data, or log to the
`cnirun` logger, which this module shows as `cnirun: warning: ...` (or `cnirun: ...` for a
notice, `cnirun: DEBUG: ...` with --debug)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from cnirun.errors import CnirunError, MultiError, NeedsRootError

# ERROR records are --debug's tracebacks; errors themselves are printed by `report`.
_PREFIX = {logging.DEBUG: "DEBUG: ", logging.INFO: "", logging.WARNING: "warning: "}


class _StderrHandler(logging.Handler):
    """One `cnirun: ...` line per record. Also called from signal handlers, which may
    interrupt a write to stderr: then the line goes out with a raw write instead."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "terminal_only", False) and not _stderr_is_a_terminal():
            return  # a progress note: never in a pipe or a log file
        prefix = _PREFIX.get(record.levelno, "ERROR: ")
        try:
            line = f"cnirun: {prefix}{record.getMessage()}\n"
            if record.exc_info:
                line += logging.Formatter().formatException(record.exc_info) + "\n"
        except Exception:  # a broken log call must not end the run
            return
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except RuntimeError:  # reentrant call inside a write interrupted by a signal
            os.write(2, line.encode())
        except (OSError, ValueError):
            pass


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(debug: bool) -> None:
    """Show cnirun's notices and warnings on stderr; with `debug`, every plugin and Docker call."""
    logger = logging.getLogger("cnirun")
    if not logger.handlers:
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def system_error(error: OSError) -> CnirunError:
    """A system error nothing more specific caught, as one line (never a traceback); a
    permission refused to a user who is not root says what to do about it."""
    text = error.strerror or str(error)
    line = f"{text}: {error.filename}" if error.filename else text
    if isinstance(error, PermissionError) and os.geteuid() != 0:
        return NeedsRootError(line)
    return CnirunError(line)


def require_root(detail: str = "") -> None:
    """Refuse, in one line, a command that cannot work without root when cnirun is not root.

    Raises:
        NeedsRootError: this process is not root.
    """
    if os.geteuid() != 0:
        raise NeedsRootError(detail)


def report(error: BaseException) -> None:
    """Print one line for an error; the traceback only with --debug."""
    logger = logging.getLogger("cnirun")
    if logger.isEnabledFor(logging.DEBUG):
        logger.error("traceback", exc_info=error)
    message = _printable(error).strip() or type(error).__name__
    label = getattr(error, "label", "error")
    print(f"cnirun: {label}: {message}" if label else f"cnirun: {message}", file=sys.stderr)
    hint = getattr(error, "hint", "")
    if hint:
        print(hint, file=sys.stderr)
    sys.stderr.flush()


def _escaped(text: str) -> str:
    """`text` with control characters (a newline in a network name...) shown escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _printable(error: BaseException) -> str:
    """An error's text on one line (a MultiError: one line per error)."""
    if isinstance(error, MultiError) and str(error) == "\n".join(map(str, error.errors)):
        return "\n".join(_escaped(str(e)) for e in error.errors)
    return _escaped(str(error))


def warn(message: str) -> None:
    print(f"cnirun: warning: {message}", file=sys.stderr, flush=True)


def say(line: str = "") -> None:
    """One line on stdout."""
    print(line, flush=True)


def json_out(data: Any, indent: int = 2) -> None:
    print(json.dumps(data, indent=indent), flush=True)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], gap: str = "   ") -> None:
    """Columns padded to their widest cell, as `docker ps` prints them."""
    lines = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print(gap.join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    sys.stdout.flush()

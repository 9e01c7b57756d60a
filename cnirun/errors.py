"""The exception tree and exit codes shared by every cnirun module.

Imports only the standard library, so any module (including the pure CNI core) may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, unique
from typing import Self


@unique
class ExitCode(IntEnum):
    """Exit statuses, following `docker run`'s convention."""

    SUCCESS = 0
    FAILURE = 1
    CNIRUN_ERROR = 125  # cnirun itself (or the Docker daemon) failed
    CANNOT_INVOKE = 126  # docker: the command could not be invoked
    NOT_FOUND = 127  # docker: the command was not found
    CTRL_C = 130


class CnirunError(Exception):
    """Base of every error cnirun raises on purpose; caught once, in the CLI."""

    exit_code: int = ExitCode.CNIRUN_ERROR
    label = "error"  # how the CLI introduces it: "cnirun: error: ..."
    hint = ""  # advice of cnirun's own, shown on a line of its own ("See 'cnirun --help'.")

    def hinted(self, hint: str) -> Self:
        """This error, with `hint` to show after it."""
        self.hint = hint
        return self


class ConfigError(CnirunError, ValueError):
    """Raised when a network configuration cannot be found, read or parsed."""


class NoConfigsFoundError(ConfigError):
    """Raised when a configuration directory holds no network configuration at all."""


class NetworkNotFoundError(ConfigError):
    """Raised when no configuration in the directory has the requested network name."""


class UsageError(CnirunError, ValueError):
    """Raised when the command line is inconsistent or names something invalid."""


class CNIError(CnirunError):
    """A CNI error: the spec's `{code, msg, details}` plus the context it arose in.

    `context` is a prefix such as `plugin type="bridge" failed (add): `, added as the
    error travels up the layers; `code` survives the wrapping (STATUS relies on it).
    """

    def __init__(self, code: int, msg: str, details: str = "", context: str = "") -> None:
        self.code = code
        self.msg = msg
        self.details = details
        self.context = context
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.msg}; {self.details}" if self.details else self.msg
        return f"{self.context}{text}"

    def wrap(self, prefix: str) -> CNIError:
        """Return a copy of this error with `prefix` put in front of its message."""
        return type(self)(self.code, self.msg, self.details, prefix + self.context)


class PluginNotFoundError(CNIError):
    """Raised when a plugin's binary cannot be found in the plugin directories."""


class PluginTimeoutError(CNIError):
    """Raised when a plugin does not finish within the per-call timeout."""


class CacheError(CnirunError):
    """Raised when the result cache cannot be read or written."""


class NetnsError(CnirunError):
    """Raised when a network namespace cannot be created, held, entered or removed."""


class DockerRuntimeError(CnirunError):
    """Raised when the Docker engine refuses or fails a request."""


class SettingsError(UsageError):
    """Raised when an environment variable or flag that cnirun reads has an unusable value."""


class NeedsRootError(CnirunError):
    """Raised when cnirun lacks the privileges a command needs (it does not run as root)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("cnirun needs root: run it with sudo" + (f" ({detail})" if detail else ""))


def closest(word: str, known: Sequence[str]) -> str | None:
    """The known word most like `word` (a typo's likely meaning), or None."""
    import difflib

    found = difflib.get_close_matches(word, list(known), n=1)
    return found[0] if found else None


def suggestion(word: str, known: Sequence[str], what: str) -> str:
    """` (did you mean "x"? sandboxes: a, b)` for a name that was not found: the closest
    known name and what exists (the first ten), for the end of a not-found message."""
    if not known:
        return f" (there are no {what})"
    near = closest(word, known)
    listed = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
    hint = f'did you mean "{near}"? ' if near else ""
    return f" ({hint}{what}: {listed})"


class MultiError(CnirunError):
    """Several independent failures, reported together: CNI DEL and GC, teardown and `gc`
    keep going after an error and say everything that went wrong at the end."""

    def __init__(self, errors: Sequence[Exception | str], summary: str = "") -> None:
        self.errors = list(errors)
        texts = [str(e) for e in self.errors]
        super().__init__(f"{summary}: " + "; ".join(texts) if summary else "\n".join(texts))

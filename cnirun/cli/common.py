"""Options several commands share, spelled and explained once."""

from __future__ import annotations

import typer

from cnirun.settings import DEFAULT_CNI_TIMEOUT

NETCONF_DIR = typer.Option(None, "--netconf-dir", help="Config dir [env NETCONFPATH].")
CNI_PATH = typer.Option(None, "--cni-path", help="Plugin dirs, colon-separated [env CNI_PATH].")
CNI_ARGS = typer.Option(None, "--cni-args", help="CNI_ARGS pair K=V (repeatable).")
CNI_TIMEOUT = typer.Option(
    None, "--cni-timeout", help=f"Seconds a plugin call may take [default {DEFAULT_CNI_TIMEOUT:g}]."
)
FORMAT = typer.Option("table", "--format", help="Output format: table or json.")


def check_format(output: str) -> None:
    """Refuse a --format other than table or json."""
    from cnirun.errors import UsageError

    if output not in ("table", "json"):
        raise UsageError(f"unknown --format {output!r}: use table or json")

"""Options several commands share, spelled and explained once."""

from __future__ import annotations

import typer

from cnirun.cli.context import FORMATS as FORMATS
from cnirun.cli.context import check_format as check_format
from cnirun.cli.context import command_settings as command_settings
from cnirun.cli.context import complete_formats as complete_formats
from cnirun.cli.context import complete_networks as complete_networks
from cnirun.cli.context import complete_sandboxes as complete_sandboxes
from cnirun.cli.context import use_settings as use_settings
from cnirun.settings import DEFAULT_CNI_TIMEOUT

NETCONF_DIR = typer.Option(None, "--netconf-dir", help="Config dir [env NETCONFPATH].")
CNI_PATH = typer.Option(None, "--cni-path", help="Plugin dirs, colon-separated [env CNI_PATH].")
CNI_ARGS = typer.Option(None, "--cni-args", help="CNI_ARGS pair K=V (repeatable).")
CNI_TIMEOUT = typer.Option(
    None, "--cni-timeout", help=f"Seconds a plugin call may take [default {DEFAULT_CNI_TIMEOUT:g}]."
)
FORMAT = typer.Option("table", "--format", help="Output format: table or json.")

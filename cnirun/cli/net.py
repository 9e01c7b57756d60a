"""`cnirun net`: a cnitool-compatible front end to the CNI core, needing no Go toolchain.

Reads the same inputs as cnitool (NETCONFPATH, CNI_PATH, CNI_ARGS, CAP_ARGS, CNI_IFNAME) and
the equivalent flags; ADD prints the result JSON, DEL and CHECK print nothing on success.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from cnirun.cli import netcmd
from cnirun.cli.app import command, register
from cnirun.cli.common import (
    CNI_PATH,
    FORMAT,
    NETCONF_DIR,
    check_format,
    complete_networks,
)
from cnirun.cli.netcmd import Target, _target
from cnirun.cli.output import json_out, require_root, say
from cnirun.errors import UsageError
from cnirun.settings import DEFAULT_CNI_TIMEOUT

if TYPE_CHECKING:
    from cnirun.cni.types import RuntimeConf

app = typer.Typer(
    help="Run CNI operations on a network namespace, like cnitool.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NETWORK = typer.Argument(
    ..., autocompletion=complete_networks, help="Network name, as in a config file's `name`."
)
NETNS = typer.Argument(..., help="Network namespace path (or a name in /run/netns).")
IFNAME = typer.Option(None, "--ifname", help="Interface name [env CNI_IFNAME, default eth0].")
CONTAINER_ID = typer.Option(
    None, "--container-id", help="Container ID [default: derived from the netns path, as cnitool]."
)
ARGS = typer.Option(None, "--args", help="CNI_ARGS pair K=V (repeatable) [env CNI_ARGS].")
CAP_ARGS = typer.Option(None, "--cap-args", help="Capability args as JSON [env CAP_ARGS].")
CACHE_DIR = typer.Option(None, "--cache-dir", help="Result cache dir [default /var/lib/cni].")
TIMEOUT = typer.Option(DEFAULT_CNI_TIMEOUT, "--timeout", help="Seconds each plugin call may take.")
IGNORED_NETNS = typer.Argument(None, help="Ignored (accepted for cnitool compatibility).")
VALID = typer.Option(
    None, "--valid", help="An attachment still in use, as CONTAINERID/IFNAME (repeatable)."
)
ALL_STALE = typer.Option(
    False, "--all", help="Treat every cached attachment of NETWORK as stale (like cnitool gc)."
)


def _on_netns(
    operation: Callable[[Target, RuntimeConf], None], must_exist: bool, doc: str
) -> Callable[..., None]:
    """A command that acts on one namespace's attachment (add, check, del): one signature."""

    def on_netns(
        network: str = NETWORK,
        netns: str = NETNS,
        ifname: str | None = IFNAME,
        container_id: str | None = CONTAINER_ID,
        args: list[str] | None = ARGS,
        cap_args: str | None = CAP_ARGS,
        netconf_dir: str | None = NETCONF_DIR,
        cni_path: str | None = CNI_PATH,
        cache_dir: str | None = CACHE_DIR,
        timeout: float = TIMEOUT,
    ) -> None:
        netcmd.on_netns(
            operation, must_exist, network, netns, ifname, container_id, args, cap_args,
            netconf_dir, cni_path, cache_dir, timeout,
        )  # fmt: skip

    on_netns.__doc__ = doc
    return on_netns


register(
    app,
    "add",
    _on_netns(
        netcmd.do_add,
        True,
        """ADD the namespace to NETWORK and print the result JSON.

    \b
    Example:
      ip netns add demo && cnirun net add mynet /run/netns/demo
    """,
    ),
)
register(
    app,
    "check",
    _on_netns(
        netcmd.do_check,
        True,
        "CHECK that the namespace's attachment to NETWORK is as the plugins left it.",
    ),
)
register(
    app,
    "del",
    _on_netns(
        netcmd.do_del,
        False,
        "DEL the namespace from NETWORK (idempotent; a vanished namespace is fine).",
    ),
)


@command(app, "gc")
def gc(
    network: str = NETWORK,
    netns: str | None = IGNORED_NETNS,
    valid: list[str] | None = VALID,
    all_stale: bool = ALL_STALE,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
    cache_dir: str | None = CACHE_DIR,
    timeout: float = TIMEOUT,
) -> None:
    """DEL every cached attachment of NETWORK not listed with --valid, then run plugin GC.

    \b
    Example:
      cnirun net gc mynet --valid cnitool-0123456789abcdef0123/eth0
    """
    if not valid and not all_stale:
        raise UsageError(
            "net gc needs the attachments still in use "
            "(--valid CONTAINERID/IFNAME, repeatable); "
            "pass --all to delete every attachment of the network"
        )
    if valid and all_stale:
        raise UsageError("--valid and --all cannot be used together")
    attachments = []
    for item in valid or []:
        cid, sep, ifname = item.partition("/")
        if not sep or not cid or not ifname:
            raise UsageError(f'invalid --valid "{item}": expected CONTAINERID/IFNAME')
        attachments.append((cid, ifname))
    require_root()
    target = _target(network, netconf_dir, cni_path, cache_dir, timeout)
    target.cni.gc_network_list(target.net, attachments)


@command(app, "status")
def status(
    network: str = NETWORK,
    netns: str | None = IGNORED_NETNS,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
    cache_dir: str | None = CACHE_DIR,
    timeout: float = TIMEOUT,
) -> None:
    """Ask NETWORK's plugins whether they are ready for ADD (cniVersion 1.1.0 networks)."""

    target = _target(network, netconf_dir, cni_path, cache_dir, timeout)
    target.cni.status_network_list(target.net)


@command(app, "version")
def version(
    network: str = NETWORK,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
    timeout: float = TIMEOUT,
    output: str = FORMAT,
) -> None:
    """Show the CNI versions each plugin of NETWORK supports (VERSION)."""

    target = _target(network, netconf_dir, cni_path, None, timeout)
    rows = []
    for plugin in target.net.plugins:
        info = target.cni.version_info(plugin.type)
        rows.append({"type": plugin.type, "supportedVersions": list(info.supported_versions)})
    check_format(output)
    if output == "json":
        net = target.net
        json_out({"network": net.name, "cniVersion": net.cni_version, "plugins": rows}, indent=4)
        return
    say(f"network {target.net.name} (cniVersion {target.net.cni_version or '0.1.0'})")
    for row in rows:
        say(f"{row['type']}: {', '.join(row['supportedVersions'])}")

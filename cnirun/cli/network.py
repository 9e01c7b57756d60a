"""`cnirun network create | ls | inspect | rm`: the commands (the work is cnirun.netconf.manage)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

from cnirun.cli import lists
from cnirun.cli.app import command
from cnirun.cli.common import (
    CNI_PATH,
    NETCONF_DIR,
    command_settings,
    complete_formats,
    complete_networks,
    complete_sandboxes,
)
from cnirun.cli.output import json_out, require_root, say

if TYPE_CHECKING:
    from cnirun.netconf.select import Configs

app = typer.Typer(
    help="Create, list, inspect and remove CNI network configs; connect and disconnect sandboxes.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NAME = typer.Argument(..., help="Network name (also the file name, NAME.conflist).")
NAMES = typer.Argument(
    ..., metavar="NETWORK", autocompletion=complete_networks, help="Network name(s)."
)
DRIVER = typer.Option("bridge", "--driver", "-d", help="bridge, ptp, macvlan or ipvlan.")
SUBNET = typer.Option(
    None, "--subnet", help="Subnet CIDR (repeatable) [default: a free /24 of 10.78.0.0/15]."
)
GATEWAY = typer.Option(None, "--gateway", help="Gateway of a subnet (repeatable).")
IP_RANGE = typer.Option(
    None, "--ip-range", help="Allocate container addresses only from this CIDR (repeatable)."
)
PARENT = typer.Option(None, "--parent", help="Host interface (macvlan, ipvlan).")
BRIDGE = typer.Option(None, "--bridge", help="Bridge device name [default: cni-<hash of NAME>].")
INTERNAL = typer.Option(
    False, "--internal", help="No gateway, masquerade, default route or port mapping."
)
LABEL = typer.Option(None, "--label", help="KEY=VALUE (repeatable).")
BANDWIDTH = typer.Option(
    False,
    "--bandwidth",
    help="Add the bandwidth plugin, so `cnirun run --bandwidth` can limit the rates (bridge, ptp).",
)
DNS = typer.Option(
    False,
    "--dns",
    help="Add the dnsname plugin: a dnsmasq on the bridge answers the sandboxes' names and "
    "aliases, and their resolv.conf points at it (bridge only; needs dnsmasq).",
)
ISOLATION = typer.Option(
    None,
    "--isolation",
    metavar="POLICY",
    help="same-bridge: the firewall plugin drops traffic from other isolated bridges (bridge).",
)
CNI_VERSION = typer.Option(
    None, "--cni-version", help="[default: the newest all its plugins support]"
)
LS_FORMAT = typer.Option(
    "table",
    "--format",
    autocompletion=complete_formats,
    help="table, json, or a template: '{{.name}}\\t{{.subnets}}'.",
)
QUIET = typer.Option(False, "--quiet", "-q", help="Only print network names.")
FORCE = typer.Option(
    False, "--force", "-f", help="Also remove files cnirun did not create, or in use."
)

NETWORK = typer.Argument(
    ..., metavar="NETWORK", autocompletion=complete_networks, help="Network name."
)
SANDBOX = typer.Argument(
    ...,
    metavar="SANDBOX",
    autocompletion=complete_sandboxes,
    help="Workload container ID, name or unique prefix (or sandbox ID).",
)
CONNECT_IP = typer.Option(
    None, "--ip", help="Ask for this address (IPv4 or IPv6; repeatable, one of each)."
)
ALIAS = typer.Option(None, "--alias", help="A name its peers on NETWORK reach it by (repeatable).")
DISCONNECT_FORCE = typer.Option(
    False, "--force", "-f", help="Also remove its last network (it keeps only lo)."
)

_configs = lists.network_configs


def _writable(configs: Configs) -> Configs:
    """The configs, once their directory is known to be writable (or cnirun is root)."""
    directory = configs.directory
    if os.path.isdir(directory) and not os.access(directory, os.W_OK):
        require_root(f"{directory} is not writable")
    return configs


@command(app, "create")
def create(
    name: str = NAME,
    driver: str = DRIVER,
    subnet: list[str] | None = SUBNET,
    gateway: list[str] | None = GATEWAY,
    ip_range: list[str] | None = IP_RANGE,
    parent: str | None = PARENT,
    bridge: str | None = BRIDGE,
    internal: bool = INTERNAL,
    label: list[str] | None = LABEL,
    bandwidth: bool = BANDWIDTH,
    dns: bool = DNS,
    isolation: str | None = ISOLATION,
    cni_version: str | None = CNI_VERSION,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
) -> None:
    """Write a new network config, NAME.conflist, into the config dir.

    \b
    Examples:
      cnirun network create web --subnet 10.78.5.0/24
      cnirun network create lan --driver macvlan --parent eth1
      cnirun network create slow --bandwidth
      cnirun network create ci --dns
      cnirun network create front --isolation same-bridge
    """
    from cnirun.netconf import manage

    req = manage.CreateRequest(
        name=name,
        driver=driver,
        subnets=subnet or [],
        gateways=gateway or [],
        ip_ranges=ip_range or [],
        parent=parent,
        bridge=bridge,
        internal=internal,
        labels=label or [],
        cni_version=cni_version,
        bandwidth=bandwidth,
        dns=dns,
        isolation=isolation,
    )
    manage.create_network(_writable(_configs(netconf_dir, cni_path)), req)
    say(name)


@command(app, "ls")
def ls(
    output: str = LS_FORMAT,
    quiet: bool = QUIET,
    netconf_dir: str | None = NETCONF_DIR,
) -> None:
    """List the networks of the config dir (files that do not load are reported on stderr).

    A template may use the JSON's keys (.name .driver .subnets .cniVersion .default
    .createdByCnirun .file .created) and Docker's .Name and .Driver.

    \b
    Examples:
      cnirun network ls
      cnirun network ls -q
      cnirun network ls --format '{{.name}} {{join .subnets " "}}'
    """
    lists.network_ls(output, quiet, netconf_dir)


@command(app, "inspect")
def inspect(
    names: list[str] = NAMES,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
) -> None:
    """Show networks as JSON: config, plugins with their versions, live attachments."""
    from cnirun.netconf import manage

    configs = _configs(netconf_dir, cni_path)
    json_out([manage.inspect_network(configs, n) for n in names])


@command(app, "rm")
def rm(
    names: list[str] = NAMES,
    force: bool = FORCE,
    netconf_dir: str | None = NETCONF_DIR,
) -> None:
    """Remove networks cnirun created (refused while attachments exist, unless --force)."""
    from cnirun.netconf import manage

    configs = _writable(_configs(netconf_dir, None))
    for name in names:
        manage.remove_network(configs, name, force)
        say(name)


@command(app, "connect")
def connect(
    network: str = NETWORK,
    sandbox: str = SANDBOX,
    ip: list[str] | None = CONNECT_IP,
    alias: list[str] | None = ALIAS,
    netconf_dir: str | None = NETCONF_DIR,
) -> None:
    """Attach a running sandbox to one more network (its next interface: eth1, eth2, ...).

    \b
    Examples:
      cnirun network connect backend web
      cnirun network connect --ip 10.78.5.20 --alias api backend web
    """
    from cnirun.sandbox import joins

    require_root()
    settings = command_settings(netconf_dir=netconf_dir)  # the sandbox's own plugin dirs
    docker, store = lists.sandboxes(settings)
    joins.connect(docker, store, settings, sandbox, network, ip or [], alias or [])


@command(app, "disconnect")
def disconnect(
    network: str = NETWORK,
    sandbox: str = SANDBOX,
    force: bool = DISCONNECT_FORCE,
) -> None:
    """Detach a sandbox from one of its networks (CNI DEL of that interface).

    \b
    Examples:
      cnirun network disconnect backend web
      cnirun network disconnect -f backend web
    """
    from cnirun.sandbox import joins

    require_root()
    docker, store = lists.sandboxes()
    joins.disconnect(docker, store, sandbox, network, force)

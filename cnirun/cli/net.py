"""`cnirun net`: a cnitool-compatible front end to the CNI core, needing no Go toolchain.

Reads the same inputs as cnitool (NETCONFPATH, CNI_PATH, CNI_ARGS, CAP_ARGS, CNI_IFNAME) and
the equivalent flags; ADD prints the result JSON, DEL and CHECK print nothing on success.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import typer

from cnirun.cli.app import command, register
from cnirun.cli.common import (
    CNI_PATH,
    FORMAT,
    NETCONF_DIR,
    check_format,
    command_settings,
    complete_networks,
)
from cnirun.cli.output import json_out, require_root, say
from cnirun.cni import gojson, validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import CacheEntry
from cnirun.cni.config import NetworkConfigList
from cnirun.cni.types import RuntimeConf
from cnirun.errors import CacheError, UsageError
from cnirun.host import localnet
from cnirun.host.netns import NETNS_DIR
from cnirun.netconf.select import Configs
from cnirun.settings import DEFAULT_CNI_TIMEOUT, Settings

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


class Target(NamedTuple):
    """A loaded network plus the runtime to act on it."""

    settings: Settings
    cni: CNIConfig
    net: NetworkConfigList


def _target(
    network: str,
    netconf_dir: str | None,
    cni_path: str | None,
    cache_dir: str | None,
    timeout: float,
) -> Target:
    if timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {timeout:g}")
    settings = command_settings(netconf_dir=netconf_dir, cni_path=cni_path, cache_dir=cache_dir)
    cni = CNIConfig(settings.plugin_dirs, settings.cache_dir, timeout=timeout)
    return Target(settings, cni, Configs(settings.netconf_dir, cni).find(network))


def resolve_netns(netns: str, must_exist: bool) -> str:
    """An absolute netns path; a bare name always means /run/netns/<name>, so `del` after
    `ip netns del` derives the same container ID as the `add` did."""
    if "/" not in netns:
        netns = os.path.join(NETNS_DIR, netns)
    path = os.path.abspath(netns)
    if must_exist and not os.path.exists(path):
        raise UsageError(f"network namespace {path} does not exist")
    return path


def cnitool_container_id(netns_path: str) -> str:
    """cnitool's container ID: `cnitool-` and the first 10 bytes of sha512(netns path), in hex."""
    return "cnitool-" + hashlib.sha512(netns_path.encode()).hexdigest()[:20]


def _runtime(
    target: Target,
    netns: str,
    must_exist: bool,
    ifname: str | None,
    container_id: str | None,
    args: list[str] | None,
    cap_args: str | None,
) -> RuntimeConf:
    path = resolve_netns(netns, must_exist)
    if args:
        cni_args = validate.cni_args_pairs(args)
    else:
        cni_args = validate.parse_cni_args(target.settings.get("CNI_ARGS"))
    caps_text = cap_args if cap_args is not None else target.settings.get("CAP_ARGS")
    caps: dict[str, Any] = {}
    if caps_text:
        try:
            caps = gojson.loads(caps_text)
        except ValueError as e:
            raise UsageError(
                f"capability args (--cap-args / CAP_ARGS) are not valid JSON: {e}"
            ) from None
        if not isinstance(caps, dict):
            raise UsageError("capability args (--cap-args / CAP_ARGS) must be a JSON object")
    return RuntimeConf(
        container_id=container_id or cnitool_container_id(path),
        netns=path,
        ifname=ifname or target.settings.get("CNI_IFNAME") or "eth0",
        cni_args=cni_args,
        capability_args=caps,
    )


def _with_cached_args(target: Target, rt: RuntimeConf) -> RuntimeConf:
    """Fill in the CNI_ARGS and capability args the attachment was added with, when the
    caller gives none: plugins such as portmap only undo what their DEL is told about."""
    if rt.cni_args and rt.capability_args:
        return rt
    entry = _cached_attachment(target, rt)
    if entry is None:
        return rt
    return rt._replace(
        cni_args=rt.cni_args or entry.cni_args,
        capability_args=rt.capability_args or entry.capability_args,
    )


def _cached_attachment(target: Target, rt: RuntimeConf) -> CacheEntry | None:
    """The cache's entry for this network, container ID and interface, if any.

    Raises:
        CacheError: the cache cannot be read.
    """
    for entry in target.cni.cache.attachments(rt.container_id):
        if entry.network_name == target.net.name and entry.ifname == rt.ifname:
            return entry
    return None


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
        require_root()
        target = _target(network, netconf_dir, cni_path, cache_dir, timeout)
        operation(target, _runtime(target, netns, must_exist, ifname, container_id, args, cap_args))

    on_netns.__doc__ = doc
    return on_netns


def _add(target: Target, rt: RuntimeConf) -> None:
    # A second ADD would fail in the plugins, and its rollback DEL would then undo the first
    # attachment: refuse it before anything runs (cnitool's ADD leaves the first intact too).
    try:
        existing = _cached_attachment(target, rt)
    except CacheError:
        existing = None  # an unreadable cache: the ADD itself says so, after its rollback
    if existing is not None:
        raise UsageError(
            f"{rt.netns} is already attached to network {target.net.name} as {rt.ifname} "
            f"(container ID {rt.container_id}): `cnirun net del` it first, or use --ifname"
        )
    if localnet.needed(p.type for p in target.net.plugins):
        localnet.ensure()
    json_out(target.cni.add_network_list(target.net, rt).to_json(), indent=4)


def _check(target: Target, rt: RuntimeConf) -> None:
    target.cni.check_network_list(target.net, rt)


def _del(target: Target, rt: RuntimeConf) -> None:
    target.cni.del_network_list(target.net, _with_cached_args(target, rt))


register(
    app,
    "add",
    _on_netns(
        _add,
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
        _check, True, "CHECK that the namespace's attachment to NETWORK is as the plugins left it."
    ),
)
register(
    app,
    "del",
    _on_netns(
        _del, False, "DEL the namespace from NETWORK (idempotent; a vanished namespace is fine)."
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

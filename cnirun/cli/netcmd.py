"""The work of `cnirun net add | check | del`, free of typer: `main()` runs a plain command
line of these directly (cnirun.cli.direct), typer the rest (cnirun.cli.net has the options and
the help, and calls the same functions)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from cnirun.cli.context import command_settings
from cnirun.cli.output import json_out, require_root
from cnirun.errors import CacheError, UsageError
from cnirun.settings import DEFAULT_CNI_TIMEOUT, Settings

# The CNI core is imported on use: `cnirun --help` loads this module too (through cli.net).
if TYPE_CHECKING:
    from cnirun.cni.api import CNIConfig
    from cnirun.cni.cache import CacheEntry
    from cnirun.cni.config import NetworkConfigList
    from cnirun.cni.types import RuntimeConf

NETNS_DIR = "/run/netns"  # cnirun.host.netns.NETNS_DIR, without that module's imports


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
    from cnirun.cni.api import CNIConfig
    from cnirun.netconf.select import Configs

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
    import hashlib  # on use, as the CNI core

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
    from cnirun.cni import gojson, validate
    from cnirun.cni.types import RuntimeConf

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


def do_add(target: Target, rt: RuntimeConf) -> None:
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
    from cnirun.host import localnet

    if localnet.needed(p.type for p in target.net.plugins):
        localnet.ensure()
    json_out(target.cni.add_network_list(target.net, rt).to_json(), indent=4)


def do_check(target: Target, rt: RuntimeConf) -> None:
    target.cni.check_network_list(target.net, rt)


def do_del(target: Target, rt: RuntimeConf) -> None:
    target.cni.del_network_list(target.net, _with_cached_args(target, rt))


def on_netns(
    operation: Callable[[Target, RuntimeConf], None],
    must_exist: bool,
    network: str,
    netns: str,
    ifname: str | None = None,
    container_id: str | None = None,
    args: list[str] | None = None,
    cap_args: str | None = None,
    netconf_dir: str | None = None,
    cni_path: str | None = None,
    cache_dir: str | None = None,
    timeout: float = DEFAULT_CNI_TIMEOUT,
) -> None:
    """One operation on one namespace's attachment to `network` (add, check, del)."""
    require_root()
    target = _target(network, netconf_dir, cni_path, cache_dir, timeout)
    operation(target, _runtime(target, netns, must_exist, ifname, container_id, args, cap_args))


def add(network: str, netns: str, **options: Any) -> None:
    """`cnirun net add`."""
    on_netns(do_add, True, network, netns, **options)


def check(network: str, netns: str, **options: Any) -> None:
    """`cnirun net check`."""
    on_netns(do_check, True, network, netns, **options)


def del_(network: str, netns: str, **options: Any) -> None:
    """`cnirun net del`."""
    on_netns(do_del, False, network, netns, **options)

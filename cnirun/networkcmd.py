"""`cnirun network create|ls|inspect|rm`: manage the network configs in the config dir.

The functions here do the work and return data; the typer commands at the bottom only print.
Generation, subnet choice, the marker and atomic writes live in `cnirun.defaultnet`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import typer

from cnirun import defaultnet
from cnirun.cni import validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import CacheEntry, ResultCache, cache_dir_from_env
from cnirun.cni.config import NetworkConfigList, netconf_dir_from_env
from cnirun.cni.invoke import plugin_dirs
from cnirun.defaultnet import IPNetwork, IPRange, NetworkSpec, UsedSubnet
from cnirun.errors import CNIError, CnirunError, ConfigError, NetworkNotFoundError, UsageError

log = logging.getLogger(__name__)

DEFAULT_IPAM_DIR = "/var/lib/cni/networks"
VERSION_TIMEOUT = 10.0


class CreateRequest(NamedTuple):
    """The options of `network create`, as given on the command line."""

    name: str
    driver: str = "bridge"
    subnets: Sequence[str] = ()
    gateways: Sequence[str] = ()
    ip_ranges: Sequence[str] = ()
    parent: str | None = None
    bridge: str | None = None
    internal: bool = False
    labels: Sequence[str] = ()
    cni_version: str | None = None


# -- lookup ---------------------------------------------------------------------------------


def find_network(netconf_dir: str, name: str) -> NetworkConfigList:
    """The network called `name`, in libcni's search order (lists first, then single confs).

    Unlike a libcni lookup, a broken unrelated file does not stop the search.

    Raises:
        NetworkNotFoundError: no loadable config has that name.
    """
    paths = defaultnet.config_paths(netconf_dir)
    ordered = sorted(p for p in paths if p.endswith(".conflist")) + sorted(
        p for p in paths if not p.endswith(".conflist")
    )
    for path in ordered:
        try:
            net = defaultnet.load_config_file(path)
        except ConfigError:
            continue
        if net.name == name:
            return net
    raise NetworkNotFoundError(f'no network named "{name}" in {netconf_dir}')


def _names_in_use(netconf_dir: str) -> dict[str, str]:
    """Network name -> file, read leniently (a broken file still reserves its name)."""
    names: dict[str, str] = {}
    for path in defaultnet.config_paths(netconf_dir):
        try:
            with open(path, "rb") as handle:
                raw = json.loads(handle.read())
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            names.setdefault(raw["name"], path)
    return names


def default_choice(netconf_dir: str) -> str | None:
    """The name `resolve_default_network` would pick without generating anything."""
    builtin = None
    for path in defaultnet.config_paths(netconf_dir):
        try:
            net = defaultnet.load_config_file(path)
            validate.network_name(net.name)
        except (ConfigError, CNIError):
            continue
        if defaultnet.is_builtin_default(net):
            builtin = builtin or net.name
            continue
        return net.name
    return builtin


# -- create ---------------------------------------------------------------------------------


def _parse_labels(labels: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for label in labels:
        key, _, value = label.partition("=")
        if not key:
            raise UsageError(f'invalid --label "{label}": expected KEY=VALUE')
        out[key] = value
    return out


def _owner(addr: Any, subnets: list[IPNetwork], what: str) -> IPNetwork:
    owners = [s for s in subnets if s.version == addr.version and addr in s]
    if not owners:
        listed = ", ".join(map(str, subnets))
        raise UsageError(f"{what} is not inside any --subnet ({listed})")
    return owners[0]


def _ranges(req: CreateRequest, subnets: list[IPNetwork]) -> list[IPRange]:
    gateways: dict[IPNetwork, Any] = {}
    for text in req.gateways:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise UsageError(f'invalid --gateway "{text}": not an IP address') from None
        subnet = _owner(addr, subnets, f"--gateway {text}")
        if subnet in gateways:
            raise UsageError(f"two --gateway values for subnet {subnet}")
        last = subnet.broadcast_address if subnet.version == 4 else None
        if addr in (subnet.network_address, last):
            raise UsageError(f"--gateway {text} is not a usable address of {subnet}")
        gateways[subnet] = addr
    ip_ranges: dict[IPNetwork, IPNetwork] = {}
    for text in req.ip_ranges:
        rng = defaultnet.parse_subnet(text, "--ip-range")
        subnet = _owner(rng.network_address, subnets, f"--ip-range {text}")
        if not rng.subnet_of(subnet):  # type: ignore[arg-type]
            raise UsageError(f"--ip-range {text} is not inside --subnet {subnet}")
        if subnet in ip_ranges:
            raise UsageError(f"two --ip-range values for subnet {subnet}")
        ip_ranges[subnet] = rng
    out = []
    for subnet in subnets:
        gw = gateways.get(subnet, defaultnet.gateway(subnet))
        start: Any = None
        end: Any = None
        chosen = ip_ranges.get(subnet)
        if chosen is not None:
            # Keep host-local inside the subnet's usable addresses.
            start = max(chosen.network_address, subnet.network_address + 1)
            top = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
            end = min(chosen.broadcast_address, top)
        out.append(IPRange(subnet, gw, start, end))
    return out


def _check_options(req: CreateRequest) -> None:
    try:
        validate.network_name(req.name)
    except CNIError as e:
        raise UsageError(f'invalid network name "{req.name}": {e}') from None
    if req.driver not in defaultnet.DRIVERS:
        raise UsageError(
            f'unknown --driver "{req.driver}" (choose from {", ".join(defaultnet.DRIVERS)})'
        )
    if req.driver in ("macvlan", "ipvlan"):
        if not req.parent:
            raise UsageError(f"--driver {req.driver} needs --parent IFACE (a host interface)")
        if not os.path.exists(f"/sys/class/net/{req.parent}"):
            raise UsageError(f'--parent "{req.parent}": no such host interface')
    elif req.parent:
        raise UsageError(f"--parent applies to macvlan and ipvlan, not {req.driver}")
    if req.bridge is not None:
        if req.driver != "bridge":
            raise UsageError(f"--bridge applies to the bridge driver, not {req.driver}")
        try:
            validate.interface_name(req.bridge)
        except CNIError as e:
            raise UsageError(f'invalid --bridge "{req.bridge}": {e}') from None
    if (req.gateways or req.ip_ranges) and not req.subnets:
        raise UsageError("--gateway and --ip-range need --subnet")


def _choose_subnets(req: CreateRequest, used: list[UsedSubnet]) -> list[IPNetwork]:
    if not req.subnets:
        chosen = defaultnet.pick_free(defaultnet.pool_subnets(), used)
        if chosen is None:
            raise ConfigError(
                f"no free /{defaultnet.CREATE_PREFIXLEN} left in {defaultnet.CREATE_POOL}; "
                "pass --subnet"
            )
        return [chosen]
    subnets = [defaultnet.parse_subnet(s) for s in req.subnets]
    for index, subnet in enumerate(subnets):
        for other in subnets[:index]:
            if other.version == subnet.version and other.overlaps(subnet):
                raise UsageError(f"--subnet {subnet} overlaps --subnet {other}")
        clash = defaultnet.overlapping(subnet, [u for u in used if u.where.startswith("network")])
        if clash is not None:
            raise ConfigError(f"subnet {subnet} overlaps {clash.net} of {clash.where}")
        # Bridged and routed networks must not shadow a host route; macvlan/ipvlan sit on one.
        clash = defaultnet.overlapping(subnet, [u for u in used if u.where.startswith("route")])
        if clash is not None and req.driver in ("bridge", "ptp"):
            defaultnet.warn(f"subnet {subnet} overlaps the host's {clash.where} ({clash.net})")
    return subnets


def create_network(netconf_dir: str, cni: CNIConfig, req: CreateRequest) -> str:
    """Write `<netconf_dir>/<name>.conflist` for `req`; return its path.

    Raises:
        UsageError: inconsistent options. ConfigError: name or subnet taken, plugins missing
            or without a common version, or the file cannot be written.
    """
    _check_options(req)
    labels = _parse_labels(req.labels)
    plugins = defaultnet.available_plugins(cni, req.driver)
    if req.cni_version:
        defaultnet.check_version(cni, plugins, req.cni_version)
        version = req.cni_version
    else:
        version = defaultnet.newest_common_version(cni, plugins)
    path = os.path.join(netconf_dir, f"{req.name}.conflist")
    docker_nets = defaultnet.docker_subnets() if not req.subnets else []
    try:
        with defaultnet.config_dir_lock(netconf_dir):
            taken = _names_in_use(netconf_dir)
            if req.name in taken:
                raise ConfigError(f'network "{req.name}" already exists in {taken[req.name]}')
            if os.path.lexists(path):
                raise ConfigError(f"{path} already exists")
            used = defaultnet.used_subnets(netconf_dir, docker=False)
            used += [UsedSubnet(n, "a Docker network") for n in docker_nets]
            spec = NetworkSpec(
                name=req.name,
                driver=req.driver,
                ranges=_ranges(req, _choose_subnets(req, used)),
                cni_version=version,
                bridge=req.bridge,
                parent=req.parent,
                internal=req.internal,
                labels=labels,
            )
            defaultnet.write_conflist(path, defaultnet.build_conflist(spec, plugins))
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# -- ls and inspect -------------------------------------------------------------------------


def _summary(net: NetworkConfigList, default: str | None) -> dict[str, Any]:
    mark = defaultnet.marker(net.raw)
    return {
        "name": net.name,
        "driver": net.plugins[0].type,
        "subnets": [str(s) for s in defaultnet.subnets_of(net.raw)],
        "cniVersion": net.cni_version,
        "plugins": [p.type for p in net.plugins],
        "default": net.name == default,
        "builtinDefault": defaultnet.is_builtin_default(net),
        "createdByCnirun": mark is not None,
        "created": (mark or {}).get("created", ""),
        "labels": (mark or {}).get("labels", {}),
        "file": net.source,
    }


def list_networks(netconf_dir: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A summary of every loadable network, and one line per file that does not load."""
    default = default_choice(netconf_dir)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in defaultnet.config_paths(netconf_dir):
        try:
            net = defaultnet.load_config_file(path)
        except ConfigError as e:
            errors.append(str(e))
            continue
        rows.append(_summary(net, default))
    return rows, errors


def _attachment(entry: CacheEntry) -> dict[str, Any]:
    addresses = []
    for ip in (entry.result or {}).get("ips") or []:
        if isinstance(ip, dict) and isinstance(ip.get("address"), str):
            addresses.append(ip["address"])
    return {
        "containerId": entry.container_id,
        "ifname": entry.ifname,
        "netns": entry.netns,
        "netnsExists": bool(entry.netns) and os.path.exists(entry.netns),
        "addresses": addresses,
    }


def attachments(cache: ResultCache, name: str) -> list[CacheEntry]:
    """The cached attachments of network `name` (what DEL would still have to undo)."""
    return [e for e in cache.attachments() if e.network_name == name]


def _plugin_info(cni: CNIConfig, plugin_type: str, role: str) -> dict[str, Any]:
    info: dict[str, Any] = {"type": plugin_type, "role": role}
    try:
        info["path"] = cni.exec.find_in_path(plugin_type, cni.plugin_dirs)
        info["supportedVersions"] = list(cni.version_info(plugin_type).supported_versions)
    except CnirunError as e:
        info["error"] = str(e)
    return info


def inspect_network(netconf_dir: str, cni: CNIConfig, name: str) -> dict[str, Any]:
    """The network's summary, its plugins with their versions, live attachments and config."""
    net = find_network(netconf_dir, name)
    out = _summary(net, default_choice(netconf_dir))
    plugins: list[dict[str, Any]] = []
    for plugin in net.plugins:
        plugins.append(_plugin_info(cni, plugin.type, "main" if not plugins else "chained"))
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
            plugins.append(_plugin_info(cni, ipam["type"], f"ipam of {plugin.type}"))
    out["plugins"] = plugins
    out["attachments"] = [_attachment(e) for e in attachments(cni.cache, name)]
    out["config"] = net.raw
    return out


# -- rm -------------------------------------------------------------------------------------


def remove_network(netconf_dir: str, cache: ResultCache, name: str, force: bool) -> str:
    """Delete the network's config file; return its path.

    Without `force`, refuses files cnirun did not create and networks with cached attachments.
    A bridge cnirun created is deleted too once no port is left on it, and so is the
    network's empty host-local state directory.
    """
    try:
        with defaultnet.config_dir_lock(netconf_dir):
            net = find_network(netconf_dir, name)
            if not force and not defaultnet.created_by_cnirun(net):
                raise ConfigError(
                    f"{net.source} was not created by cnirun; refusing to remove it (use --force)"
                )
            live = attachments(cache, name)
            if live and not force:
                ids = ", ".join(sorted({e.container_id for e in live})[:3])
                more = ", ..." if len({e.container_id for e in live}) > 3 else ""
                raise ConfigError(
                    f'network "{name}" still has {len(live)} attachment(s) ({ids}{more}); '
                    "stop them (or run `cnirun gc`) first, or use --force"
                )
            os.unlink(net.source)
    except OSError as e:
        raise ConfigError(f"cannot remove network {name}: {e.strerror or e}") from None
    if defaultnet.created_by_cnirun(net):
        _cleanup_host_state(netconf_dir, net)
    return net.source


def _cleanup_host_state(netconf_dir: str, net: NetworkConfigList) -> None:
    first = net.plugins[0].raw
    bridge = first.get("bridge") if first.get("type") == "bridge" else None
    if isinstance(bridge, str) and bridge and not _bridge_still_configured(netconf_dir, bridge):
        _delete_idle_bridge(bridge)
    ipam = first.get("ipam")
    data_dir = ipam.get("dataDir") if isinstance(ipam, dict) else None
    if not isinstance(data_dir, str) or not data_dir:
        data_dir = DEFAULT_IPAM_DIR
    state = os.path.join(data_dir, net.name)
    with contextlib.suppress(OSError):
        leftovers = os.listdir(state)
        # Only host-local's bookkeeping is left when no address is reserved any more.
        if all(n == "lock" or n.startswith("last_reserved_ip") for n in leftovers):
            shutil.rmtree(state)


def _bridge_still_configured(netconf_dir: str, bridge: str) -> bool:
    for path in defaultnet.config_paths(netconf_dir):
        with contextlib.suppress(ConfigError):
            net = defaultnet.load_config_file(path)
            if any(p.raw.get("bridge") == bridge for p in net.plugins):
                return True
    return False


def _delete_idle_bridge(bridge: str) -> None:
    base = f"/sys/class/net/{bridge}"
    try:
        if not os.path.isdir(f"{base}/bridge") or os.listdir(f"{base}/brif"):
            return
    except OSError:
        return
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            ipr.link("del", ifname=bridge)
        log.debug("deleted idle bridge %s", bridge)
    except Exception as e:  # pyroute2 raises its own NetlinkError; the file is gone either way
        defaultnet.warn(f"could not delete bridge {bridge}: {e}")


# -- the typer commands ---------------------------------------------------------------------

app = typer.Typer(
    help="Create, list, inspect and remove CNI network configs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NETCONF_DIR = typer.Option(None, "--netconf-dir", help="Config dir [env NETCONFPATH].")
CNI_PATH = typer.Option(None, "--cni-path", help="Plugin dirs, colon-separated [env CNI_PATH].")
NAME = typer.Argument(..., help="Network name (also the file name, NAME.conflist).")
NAMES = typer.Argument(..., help="Network name(s).")
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
CNI_VERSION = typer.Option(
    None, "--cni-version", help="[default: the newest all its plugins support]"
)
FORMAT = typer.Option("table", "--format", help="table or json.")
FORCE = typer.Option(
    False, "--force", "-f", help="Also remove files cnirun did not create, or in use."
)


def _guarded(body: Callable[[], None]) -> None:
    # Imported here: cnirun.cli imports this module while it registers its commands.
    from cnirun.cli import guarded

    guarded(body)


def _cni(cni_path: str | None) -> CNIConfig:
    return CNIConfig(plugin_dirs(cni_path), cache_dir_from_env(), timeout=VERSION_TIMEOUT)


@app.command("create")
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
    cni_version: str | None = CNI_VERSION,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
) -> None:
    """Write a new network config, NAME.conflist, into the config dir.

    \b
    Examples:
      cnirun network create web --subnet 10.78.5.0/24
      cnirun network create lan --driver macvlan --parent eth1
    """

    def body() -> None:
        req = CreateRequest(
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
        )
        create_network(netconf_dir_from_env(netconf_dir), _cni(cni_path), req)
        print(name)

    _guarded(body)


@app.command("ls")
def ls(
    output: str = FORMAT,
    netconf_dir: str | None = NETCONF_DIR,
) -> None:
    """List the networks of the config dir (files that do not load are reported on stderr)."""

    def body() -> None:
        if output not in ("table", "json"):
            raise UsageError(f'invalid --format "{output}": use table or json')
        rows, errors = list_networks(netconf_dir_from_env(netconf_dir))
        for error in errors:
            typer.echo(f"cnirun: warning: {error}", err=True)
        if output == "json":
            print(json.dumps(rows, indent=2))
            return
        table = [("NAME", "DRIVER", "SUBNETS", "CNIVERSION", "DEFAULT", "CREATED BY", "FILE")]
        for row in rows:
            table.append(
                (
                    row["name"],
                    row["driver"],
                    ",".join(row["subnets"]) or "-",
                    row["cniVersion"] or "-",
                    "*" if row["default"] else "",
                    "cnirun" if row["createdByCnirun"] else "-",
                    row["file"],
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for r in table:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

    _guarded(body)


@app.command("inspect")
def inspect(
    names: list[str] = NAMES,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
) -> None:
    """Show networks as JSON: config, plugins with their versions, live attachments."""

    def body() -> None:
        directory, cni = netconf_dir_from_env(netconf_dir), _cni(cni_path)
        print(json.dumps([inspect_network(directory, cni, n) for n in names], indent=2))

    _guarded(body)


@app.command("rm")
def rm(
    names: list[str] = NAMES,
    force: bool = FORCE,
    netconf_dir: str | None = NETCONF_DIR,
) -> None:
    """Remove networks cnirun created (refused while attachments exist, unless --force)."""

    def body() -> None:
        directory = netconf_dir_from_env(netconf_dir)
        cache = ResultCache(cache_dir_from_env())
        for name in names:
            remove_network(directory, cache, name, force)
            print(name)

    _guarded(body)

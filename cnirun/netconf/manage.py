"""`cnirun network create|ls|inspect|rm`: the network configs of the config dir, as data.

Lookups go through `cnirun.netconf.select.Configs` (the one rule every command shares);
generation and writing are `cnirun.netconf.generate`'s.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any, NamedTuple

from cnirun.cni import gojson, validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import CacheEntry, ResultCache
from cnirun.cni.config import NetworkConfigList, read_file
from cnirun.errors import CNIError, CnirunError, ConfigError, UsageError
from cnirun.host import links
from cnirun.netconf import generate, select
from cnirun.netconf import subnets as netsubnets
from cnirun.netconf.generate import IPRange, NetworkSpec
from cnirun.netconf.select import Configs
from cnirun.netconf.subnets import IPNetwork, UsedSubnet

log = logging.getLogger(__name__)

DEFAULT_IPAM_DIR = "/var/lib/cni/networks"
# Where the dnsname plugin finds dnsmasq (its PATH is cnirun's: a root shell's, or sudo's).
DNSMASQ_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    bandwidth: bool = False  # the bandwidth plugin, for `cnirun run --bandwidth`
    dns: bool = False  # the dnsname plugin: names answered by a dnsmasq on the bridge
    isolation: str | None = None  # the firewall plugin's ingressPolicy ("same-bridge")


def _names_in_use(netconf_dir: str) -> dict[str, str]:
    """Network name -> file, read leniently (a broken file still reserves its name)."""
    names: dict[str, str] = {}
    for path in select.config_paths(netconf_dir):
        try:
            raw = gojson.loads(read_file(path))
        except ValueError:  # ConfigError included
            continue
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            names.setdefault(raw["name"], path)
    return names


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
        rng = netsubnets.parse_subnet(text, "--ip-range")
        subnet = _owner(rng.network_address, subnets, f"--ip-range {text}")
        if not rng.subnet_of(subnet):  # type: ignore[arg-type]
            raise UsageError(f"--ip-range {text} is not inside --subnet {subnet}")
        if subnet in ip_ranges:
            raise UsageError(f"two --ip-range values for subnet {subnet}")
        ip_ranges[subnet] = rng
    out = []
    for subnet in subnets:
        gw = gateways.get(subnet, netsubnets.gateway(subnet))
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
    if req.driver not in generate.DRIVERS:
        raise UsageError(
            f'unknown --driver "{req.driver}" (choose from {", ".join(generate.DRIVERS)})'
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
    if req.bandwidth and req.driver not in generate.BANDWIDTH_DRIVERS:
        raise UsageError(
            f"--bandwidth needs a veth on the host (the bridge or ptp driver), not {req.driver}"
        )
    if req.dns:
        _check_dns(req)
    if req.isolation is not None and req.isolation not in generate.ISOLATIONS:
        raise UsageError(
            f'invalid --isolation "{req.isolation}": choose {", ".join(generate.ISOLATIONS)}'
        )
    if req.isolation == "same-bridge" and req.driver != "bridge":
        raise UsageError(f"--isolation same-bridge needs the bridge driver, not {req.driver}")
    if (req.gateways or req.ip_ranges) and not req.subnets:
        raise UsageError("--gateway and --ip-range need --subnet")


def _check_dns(req: CreateRequest) -> None:
    if req.driver not in generate.DNS_DRIVERS:
        raise UsageError(
            f"--dns needs the bridge driver (dnsmasq listens on the bridge), not {req.driver}"
        )
    if req.internal:
        raise UsageError(
            "--dns and --internal exclude each other: an internal bridge has no address for "
            "dnsmasq to listen on"
        )
    if shutil.which("dnsmasq", path=DNSMASQ_PATH) is None:
        raise ConfigError(
            f"--dns: the dnsname plugin runs dnsmasq, which is not in {DNSMASQ_PATH} "
            "(install Debian's dnsmasq-base)"
        )


def _choose_subnets(req: CreateRequest, used: list[UsedSubnet]) -> list[IPNetwork]:
    if not req.subnets:
        chosen = netsubnets.pick_free(netsubnets.pool_subnets(), used)
        if chosen is None:
            raise ConfigError(
                f"no free /{netsubnets.CREATE_PREFIXLEN} left in {netsubnets.CREATE_POOL}; "
                "pass --subnet"
            )
        return [chosen]
    subnets = [netsubnets.parse_subnet(s) for s in req.subnets]
    for index, subnet in enumerate(subnets):
        for other in subnets[:index]:
            if other.version == subnet.version and other.overlaps(subnet):
                raise UsageError(f"--subnet {subnet} overlaps --subnet {other}")
        clash = netsubnets.overlapping(subnet, [u for u in used if u.where.startswith("network")])
        if clash is not None:
            raise ConfigError(f"subnet {subnet} overlaps {clash.net} of {clash.where}")
        # Bridged and routed networks must not shadow a host route; macvlan/ipvlan sit on one.
        clash = netsubnets.overlapping(subnet, [u for u in used if u.where.startswith("route")])
        if clash is not None and req.driver in ("bridge", "ptp"):
            log.warning(f"subnet {subnet} overlaps the host's {clash.where} ({clash.net})")
    return subnets


def create_network(configs: Configs, req: CreateRequest) -> str:
    """Write `<config dir>/<name>.conflist` for `req`; return its path.

    Raises:
        UsageError: inconsistent options. ConfigError: name or subnet taken, plugins missing
            or without a common version, or the file cannot be written.
    """
    _check_options(req)
    labels = _parse_labels(req.labels)
    netconf_dir, cni = configs.directory, configs.cni
    plugins = generate.available_plugins(cni, req.driver, bandwidth=req.bandwidth, dns=req.dns)
    if req.isolation == "same-bridge":
        generate.check_ingress_policy(cni, plugins)
    if req.cni_version:
        generate.check_version(cni, plugins, req.cni_version)
        version = req.cni_version
    else:
        version = generate.newest_common_version(cni, plugins)
    path = os.path.join(netconf_dir, f"{req.name}.conflist")
    docker_nets = configs.docker_subnets() if not req.subnets else ()
    try:
        with generate.config_dir_lock(netconf_dir):
            taken = _names_in_use(netconf_dir)
            if req.name in taken:
                raise ConfigError(f'network "{req.name}" already exists in {taken[req.name]}')
            if os.path.lexists(path):
                raise ConfigError(f"{path} already exists")
            used = netsubnets.used_subnets(netconf_dir, docker_nets)
            spec = NetworkSpec(
                name=req.name,
                driver=req.driver,
                ranges=_ranges(req, _choose_subnets(req, used)),
                cni_version=version,
                bridge=req.bridge,
                parent=req.parent,
                internal=req.internal,
                labels=labels,
                isolation=req.isolation or "",
            )
            generate.write_conflist(path, generate.build_conflist(spec, plugins))
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# -- ls and inspect -------------------------------------------------------------------------


def _summary(net: NetworkConfigList, default: str | None) -> dict[str, Any]:
    mark = select.marker(net.raw)
    return {
        "name": net.name,
        "driver": net.plugins[0].type,
        "subnets": [str(s) for s in netsubnets.subnets_of(net.raw)],
        "cniVersion": net.cni_version,
        "plugins": [p.type for p in net.plugins],
        "default": net.name == default,
        "builtinDefault": select.is_builtin_default(net),
        "createdByCnirun": mark is not None,
        "created": (mark or {}).get("created", ""),
        "labels": (mark or {}).get("labels", {}),
        "file": net.source,
    }


def list_networks(configs: Configs) -> tuple[list[dict[str, Any]], list[str]]:
    """A summary of every loadable network, and one line per file that does not load."""
    found = configs.scan()
    default = found.default_choice()
    rows = [_summary(net, default.name if default else None) for net in found.networks]
    return rows, [str(e) for e in found.problems]


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


def inspect_network(configs: Configs, name: str) -> dict[str, Any]:
    """The network's summary, its plugins with their versions, live attachments and config."""
    net, cni = configs.find(name, generate=False), configs.cni  # a look changes nothing
    default = configs.scan().default_choice()
    out = _summary(net, default.name if default else None)
    plugins: list[dict[str, Any]] = []
    for plugin in net.plugins:
        plugins.append(_plugin_info(cni, plugin.type, "main" if not plugins else "chained"))
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
            plugins.append(_plugin_info(cni, ipam["type"], f"ipam of {plugin.type}"))
    out["plugins"] = plugins
    dns = next((p.raw for p in net.plugins if p.type == generate.DNS_PLUGIN), None)
    if dns is not None:
        out["dns"] = {"plugin": generate.DNS_PLUGIN, "domain": dns.get("domainName", "")}
    out["attachments"] = [_attachment(e) for e in attachments(cni.cache, name)]
    out["config"] = net.raw
    return out


# -- rm -------------------------------------------------------------------------------------


def remove_network(configs: Configs, name: str, force: bool) -> str:
    """Delete the network's config file; return its path.

    Without `force`, refuses files cnirun did not create and networks with cached attachments.
    A bridge cnirun created is deleted too once no port is left on it, and so is the
    network's empty host-local state directory.
    """
    try:
        with generate.config_dir_lock(configs.directory):
            net = configs.find(name, generate=False)
            if not force and not select.created_by_cnirun(net):
                raise ConfigError(
                    f"{net.source} was not created by cnirun; refusing to remove it (use --force)"
                )
            live = attachments(configs.cni.cache, name)
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
    if select.created_by_cnirun(net):
        _cleanup_host_state(configs.directory, net)
    return net.source


def _cleanup_host_state(netconf_dir: str, net: NetworkConfigList) -> None:
    first = net.plugins[0].raw
    bridge = first.get("bridge") if first.get("type") == "bridge" else None
    if isinstance(bridge, str) and bridge and not _bridge_still_configured(netconf_dir, bridge):
        deleted = links.delete_idle_bridge(bridge)
        if deleted and any(p.type == generate.DNS_PLUGIN for p in net.plugins):
            links.drop_dns_rule(bridge)
        if deleted and any(p.raw.get("ingressPolicy") == "same-bridge" for p in net.plugins):
            # The firewall plugin's DEL leaves them on purpose (another network could share
            # the bridge); no network has this bridge any more.
            links.remove_isolation_rules(bridge)
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
    networks = select.scan(netconf_dir).networks
    return any(p.raw.get("bridge") == bridge for net in networks for p in net.plugins)

"""The conflists cnirun writes itself: the built-in default network and `cnirun network create`.

Owns choosing the default network, generating conflists (plugin chain, newest common cniVersion,
a subnet free of host routes, Docker networks and other configs), the cnirun marker, and writing
files into the config dir atomically under its lock file. Never imports docker at module level.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from cnirun import __version__
from cnirun.cni import validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import (
    NetworkConfigList,
    conf_files,
    conf_from_file,
    list_from_bytes,
    list_from_file,
    list_from_plugin,
    load_network,
)
from cnirun.cni.version import CURRENT, VersionError, parse_version
from cnirun.errors import (
    CNIError,
    CnirunError,
    ConfigError,
    NetworkNotFoundError,
    NoConfigsFoundError,
)

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
JSONDict = dict[str, Any]

# The built-in default network. The file name sorts after the usual `10-x.conflist` names,
# so tools that take "the first file" (containerd, kubelet) prefer a user's own network.
DEFAULT_NETWORK_NAME = "cnirun"
DEFAULT_BRIDGE = "cnirun0"
DEFAULT_FILE = "zz-cnirun-default.conflist"
# /16s tried in order; chosen to miss Docker (172.17+), podman (10.88/10.89), nerdctl (10.4),
# k8s service ranges (10.96/12) and the pool `network create` uses.
DEFAULT_SUBNETS = tuple(f"10.{n}.0.0/16" for n in range(77, 69, -1))
# Test hooks (and an escape hatch for odd hosts); read only when the default is generated.
ENV_DEFAULT_NAME = "CNIRUN_DEFAULT_NETWORK"
ENV_DEFAULT_BRIDGE = "CNIRUN_DEFAULT_BRIDGE"
ENV_DEFAULT_SUBNET = "CNIRUN_DEFAULT_SUBNET"

# `network create` without --subnet takes the first free /24 of this pool.
CREATE_POOL = "10.78.0.0/15"
CREATE_PREFIXLEN = 24

MARKER_KEY = "cnirun"  # top-level conflist key; libcni and plugins ignore unknown keys
LOCK_FILE = ".cnirun.lock"
DRIVERS = ("bridge", "ptp", "macvlan", "ipvlan")
# Appended after the main plugin when installed; a missing one is left out with a warning.
EXTRA_PLUGINS = {
    "bridge": ("portmap", "firewall", "tuning"),
    "ptp": ("portmap", "firewall", "tuning"),
    "macvlan": ("tuning",),
    "ipvlan": ("tuning",),
}

_noticed: set[str] = set()


def warn(message: str) -> None:
    """A one-line warning for the user on stderr (not a log record: always shown)."""
    print(f"cnirun: warning: {message}", file=sys.stderr, flush=True)


# -- markers and lookup ---------------------------------------------------------------------


def marker(raw: JSONDict) -> JSONDict | None:
    """The cnirun marker of a parsed conflist, or None when cnirun did not write it."""
    value = raw.get(MARKER_KEY)
    return value if isinstance(value, dict) else None


def created_by_cnirun(net: NetworkConfigList) -> bool:
    return marker(net.raw) is not None


def is_builtin_default(net: NetworkConfigList) -> bool:
    """True for the file cnirun generated as its built-in default network."""
    mark = marker(net.raw)
    return mark is not None and mark.get("default") is True


def load_config_file(path: str) -> NetworkConfigList:
    """A `.conflist`, or a `.conf`/`.json` upconverted to a one-plugin list."""
    if path.endswith(".conflist"):
        return list_from_file(path)
    return list_from_plugin(conf_from_file(path), path)


def config_paths(netconf_dir: str) -> list[str]:
    """Every config file of the directory, sorted by file name as default selection does."""
    paths = conf_files(netconf_dir, (".conflist", ".conf", ".json"))
    return sorted(paths, key=os.path.basename)


def find_builtin_default(netconf_dir: str) -> NetworkConfigList | None:
    """The saved built-in default network, if a loadable one is in the directory."""
    for path in config_paths(netconf_dir):
        try:
            net = load_config_file(path)
        except ConfigError:
            continue
        if is_builtin_default(net):
            return net
    return None


def resolve_default_network(netconf_dir: str, cni: CNIConfig) -> NetworkConfigList:
    """The network used when no --network is given.

    The first loadable network in the directory (files sorted by name; single configs without
    a valid name, such as a bare loopback `.conf`, are passed over), not counting cnirun's own
    built-in default, which is used (and generated on first use) only when nothing else is there.

    Raises:
        ConfigError: the directory holds config files but none loads (the first error is
            named, so a typo is not silently replaced by the built-in default).
    """
    builtin: NetworkConfigList | None = None
    first_error: ConfigError | None = None
    for path in config_paths(netconf_dir):
        try:
            net = load_config_file(path)
            validate.network_name(net.name)
        except ConfigError as e:
            first_error = first_error or e
            continue
        except CNIError:
            continue
        if is_builtin_default(net):
            builtin = builtin or net
            continue
        return net
    if builtin is not None:
        return builtin
    if first_error is not None:
        raise ConfigError(
            f"no usable network in {netconf_dir}: {first_error}; "
            "fix the file or choose a network with --network"
        )
    return default_network(netconf_dir, cni)


def load_network_or_default(netconf_dir: str, name: str, cni: CNIConfig) -> NetworkConfigList:
    """`load_network`, except that the built-in default's name works before it was generated."""
    try:
        return load_network(netconf_dir, name)
    except NetworkNotFoundError:
        if name != _default_name() or find_builtin_default(netconf_dir) is not None:
            raise
    except NoConfigsFoundError:
        if name != _default_name():
            raise NoConfigsFoundError(
                f'no network named "{name}": no net configurations found in {netconf_dir}'
            ) from None
    return default_network(netconf_dir, cni)


# -- the built-in default -------------------------------------------------------------------


def _default_name() -> str:
    return os.environ.get(ENV_DEFAULT_NAME) or DEFAULT_NETWORK_NAME


def default_network(
    netconf_dir: str,
    cni: CNIConfig,
    *,
    name: str | None = None,
    bridge: str | None = None,
    subnet: str | None = None,
    notify: bool = True,
) -> NetworkConfigList:
    """The built-in default network, saved as `<netconf_dir>/zz-cnirun-default.conflist`.

    The first call generates it (bridge + host-local, portmap, firewall, tuning at the newest
    cniVersion every plugin supports, on the first free subnet of DEFAULT_SUBNETS) and prints
    a one-time notice on stderr; later calls load the saved file, so the subnet stays stable.
    When the directory cannot be written, the network is used from memory and not saved.

    Args:
        name, bridge, subnet: override DEFAULT_NETWORK_NAME, DEFAULT_BRIDGE and the subnet
            search (also settable with $CNIRUN_DEFAULT_NETWORK, _BRIDGE and _SUBNET).

    Raises:
        ConfigError: bridge or host-local is not installed, the plugins share no version, or
            no candidate subnet is free.
    """
    existing = find_builtin_default(netconf_dir)
    if existing is not None:
        return existing
    name = name or _default_name()
    bridge = bridge or os.environ.get(ENV_DEFAULT_BRIDGE) or DEFAULT_BRIDGE
    subnet = subnet or os.environ.get(ENV_DEFAULT_SUBNET) or None
    path = os.path.join(netconf_dir, DEFAULT_FILE)
    try:
        with config_dir_lock(netconf_dir):
            existing = find_builtin_default(netconf_dir)  # another cnirun may have won the race
            if existing is not None:
                return existing
            if os.path.lexists(path):  # e.g. hand-edited into something that no longer loads
                try:
                    load_config_file(path)
                    problem = "is not cnirun's built-in default (no marker)"
                except ConfigError as e:
                    problem = f"does not load ({e})"
                raise ConfigError(f"{path} {problem}; fix or remove it")
            conf = _generate_default(netconf_dir, cni, name, bridge, subnet)
            write_conflist(path, conf)
        net = list_from_file(path)
        saved = ""
    except OSError as e:
        conf = _generate_default(netconf_dir, cni, name, bridge, subnet)
        net = list_from_bytes(json.dumps(conf, indent=2).encode(), source="<built-in>")
        saved = f"not saved ({path}: {e.strerror or e})"
    if notify:
        notice_once(net, saved or f"saved as {path}", netconf_dir)
    return net


def notice_once(net: NetworkConfigList, where: str, netconf_dir: str) -> None:
    """Tell the user (once per process and network) that the built-in default is in use."""
    if net.name in _noticed:
        return
    _noticed.add(net.name)
    first = net.plugins[0].raw
    subnets = ", ".join(str(s) for s in subnets_of(net.raw))
    print(
        f'cnirun: using the built-in default network "{net.name}" '
        f"(bridge {first.get('bridge', '?')}, subnet {subnets}), {where}; "
        f"choose another with --network NAME or by adding a network config to {netconf_dir}",
        file=sys.stderr,
        flush=True,
    )


def _generate_default(
    netconf_dir: str, cni: CNIConfig, name: str, bridge: str, subnet: str | None
) -> JSONDict:
    try:
        validate.network_name(name)
    except CNIError as e:
        raise ConfigError(f"invalid default network name {name!r}: {e}") from None
    if subnet:
        chosen = parse_subnet(subnet, "default subnet")
    else:
        chosen = _pick_default_subnet(netconf_dir, bridge)
    plugins = available_plugins(cni, "bridge")
    version = newest_common_version(cni, plugins)
    spec = NetworkSpec(
        name=name,
        driver="bridge",
        ranges=[IPRange(chosen, gateway(chosen))],
        cni_version=version,
        bridge=bridge,
        default=True,
    )
    return build_conflist(spec, plugins)


def _pick_default_subnet(netconf_dir: str, bridge: str) -> IPNetwork:
    routes = host_routes()
    # The bridge kept from an earlier default (after `network rm`) keeps its address: reuse it.
    own = [net for iface, net in routes if iface == bridge and net.version == 4]
    used = [u for u in used_subnets(netconf_dir, routes=routes) if u.where != f"route {bridge}"]
    for net in own:
        if not overlapping(net, used):
            return net
    candidates = [ipaddress.ip_network(c) for c in DEFAULT_SUBNETS]
    chosen = pick_free(candidates, used)
    if chosen is None:
        raise ConfigError(
            f"no free subnet for the default network (tried {', '.join(DEFAULT_SUBNETS)}); "
            f"add a network config to {netconf_dir} or set ${ENV_DEFAULT_SUBNET}"
        )
    return chosen


# -- conflist generation --------------------------------------------------------------------


class IPRange(NamedTuple):
    """One host-local range: a subnet, its gateway, and an optional allocation sub-range."""

    subnet: IPNetwork
    gateway: IPAddress | None = None
    start: IPAddress | None = None
    end: IPAddress | None = None

    def to_json(self) -> JSONDict:
        out: JSONDict = {"subnet": str(self.subnet)}
        if self.start is not None:
            out["rangeStart"] = str(self.start)
        if self.end is not None:
            out["rangeEnd"] = str(self.end)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out


class NetworkSpec(NamedTuple):
    """What `network create` (or the built-in default) asks for."""

    name: str
    driver: str
    ranges: list[IPRange]
    cni_version: str
    bridge: str | None = None
    parent: str | None = None
    internal: bool = False
    labels: dict[str, str] | None = None
    default: bool = False


def bridge_name_for(network: str) -> str:
    """A created bridge network's bridge: `cni-` + 11 hex digits of sha256(name) (15 bytes max)."""
    import hashlib

    return "cni-" + hashlib.sha256(network.encode()).hexdigest()[:11]


def build_conflist(spec: NetworkSpec, plugins: Sequence[str]) -> JSONDict:
    """The conflist for `spec`; `plugins` is the chain to use (main plugin first)."""
    ipam: JSONDict = {"type": "host-local", "ranges": [[r.to_json()] for r in spec.ranges]}
    if not spec.internal:
        families = sorted({r.subnet.version for r in spec.ranges})
        ipam["routes"] = [{"dst": "0.0.0.0/0" if f == 4 else "::/0"} for f in families]
    main: JSONDict = {"type": spec.driver}
    if spec.driver == "bridge":
        main.update(
            bridge=spec.bridge or bridge_name_for(spec.name),
            isGateway=not spec.internal,
            ipMasq=not spec.internal,
            hairpinMode=True,
        )
    elif spec.driver == "ptp":
        main["ipMasq"] = not spec.internal
    elif spec.driver == "macvlan":
        main.update(master=spec.parent, mode="bridge")
    elif spec.driver == "ipvlan":
        main.update(master=spec.parent, mode="l2")
    else:
        raise ConfigError(f"unknown driver {spec.driver!r} (choose from {', '.join(DRIVERS)})")
    main["capabilities"] = {"ips": True}  # lets `cnirun run --ip` reach host-local
    main["ipam"] = ipam
    chain: list[JSONDict] = [main]
    for plugin in plugins[1:]:
        if plugin == "portmap" and not spec.internal:
            chain.append({"type": "portmap", "capabilities": {"portMappings": True}})
        elif plugin == "firewall":
            chain.append({"type": "firewall"})
        elif plugin == "tuning":
            chain.append({"type": "tuning", "capabilities": {"mac": True}})
    import datetime  # here, like tempfile below: they cost start-up time for every command

    mark: JSONDict = {
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "version": __version__,
        "driver": spec.driver,
    }
    if spec.labels:
        mark["labels"] = dict(spec.labels)
    if spec.default:
        mark["default"] = True
    return {"cniVersion": spec.cni_version, "name": spec.name, MARKER_KEY: mark, "plugins": chain}


def available_plugins(cni: CNIConfig, driver: str) -> list[str]:
    """The chain for `driver`: main plugin and host-local required, extras only if installed.

    Raises:
        ConfigError: the main plugin or host-local is missing.
    """
    missing = []
    for required in (driver, "host-local"):
        try:
            cni.exec.find_in_path(required, cni.plugin_dirs)
        except CNIError:
            missing.append(required)
    if missing:
        raise ConfigError(
            f"CNI plugin(s) {', '.join(missing)} not found in {':'.join(cni.plugin_dirs)} "
            "(install the CNI plugins or set --cni-path / $CNI_PATH)"
        )
    chain = [driver]
    skipped = []
    for extra in EXTRA_PLUGINS[driver]:
        try:
            cni.exec.find_in_path(extra, cni.plugin_dirs)
            chain.append(extra)
        except CNIError:
            skipped.append(extra)
    if skipped:
        warn(
            f"plugin(s) {', '.join(skipped)} not found in {':'.join(cni.plugin_dirs)}; "
            "the network is created without them"
        )
    return chain


def _ipam_types(plugins: Sequence[str]) -> list[str]:
    return [plugins[0], "host-local", *plugins[1:]]


def supported_versions(cni: CNIConfig, plugin_types: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """VERSION of each plugin type (ConfigError naming the plugin when one cannot answer)."""
    out: dict[str, tuple[str, ...]] = {}
    for plugin in plugin_types:
        if plugin in out:
            continue
        try:
            out[plugin] = cni.version_info(plugin).supported_versions
        except CnirunError as e:
            raise ConfigError(f"cannot ask plugin {plugin} for its versions: {e}") from None
    return out


def newest_common_version(cni: CNIConfig, plugins: Sequence[str]) -> str:
    """The newest cniVersion (not above what cnirun speaks) every plugin and host-local support.

    Raises:
        ConfigError: they share none.
    """
    versions = supported_versions(cni, _ipam_types(plugins))
    common: set[str] | None = None
    for supported in versions.values():
        common = set(supported) if common is None else common & set(supported)
    usable = []
    for version in common or set():
        with contextlib.suppress(VersionError):
            if parse_version(version) <= parse_version(CURRENT):
                usable.append(version)
    if not usable:
        listing = "; ".join(f"{p}: {', '.join(v)}" for p, v in versions.items())
        raise ConfigError(f"the plugins share no CNI version cnirun can use ({listing})")
    return max(usable, key=parse_version)


def check_version(cni: CNIConfig, plugins: Sequence[str], version: str) -> None:
    """Raise ConfigError unless every plugin of the chain supports `version`."""
    try:
        parsed = parse_version(version)
    except VersionError as e:
        raise ConfigError(f"invalid --cni-version {version!r}: {e}") from None
    if parsed > parse_version(CURRENT):
        raise ConfigError(f"--cni-version {version} is newer than cnirun supports ({CURRENT})")
    versions = supported_versions(cni, _ipam_types(plugins))
    lacking = [p for p, v in versions.items() if version not in v]
    if lacking:
        names = ", ".join(lacking)
        raise ConfigError(f"cniVersion {version} is not supported by plugin(s) {names}")


# -- subnets --------------------------------------------------------------------------------


class UsedSubnet(NamedTuple):
    """A subnet already taken, and by what (for messages)."""

    net: IPNetwork
    where: str


def parse_subnet(text: str, what: str = "--subnet") -> IPNetwork:
    """A CIDR given by the user; host bits must be clear (`10.1.2.3/24` is refused)."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise ConfigError(f"invalid {what} {text!r}: {e}") from None
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise ConfigError(f"invalid {what} {text!r}: host bits set (did you mean {net}?)")
    if net.num_addresses < 4:
        raise ConfigError(f"invalid {what} {text!r}: too small for containers")
    return net


def gateway(subnet: IPNetwork) -> IPAddress:
    """The conventional gateway: the first address after the network address."""
    return subnet.network_address + 1


def overlapping(net: IPNetwork, used: Iterable[UsedSubnet]) -> UsedSubnet | None:
    return next((u for u in used if u.net.version == net.version and u.net.overlaps(net)), None)


def pick_free(candidates: Iterable[IPNetwork], used: Sequence[UsedSubnet]) -> IPNetwork | None:
    return next((c for c in candidates if overlapping(c, used) is None), None)


def pool_subnets(pool: str = CREATE_POOL, prefixlen: int = CREATE_PREFIXLEN) -> Iterator[IPNetwork]:
    yield from ipaddress.ip_network(pool).subnets(new_prefix=prefixlen)


def _hex_ipv4(text: str) -> ipaddress.IPv4Address:
    # /proc/net/route prints addresses as host-order (little-endian here) hex words.
    return ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(text), "little"))


def parse_proc_route(text: str) -> list[tuple[str, IPNetwork]]:
    """(interface, destination) of every non-default route in /proc/net/route text."""
    routes: list[tuple[str, IPNetwork]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, mask = _hex_ipv4(fields[1]), _hex_ipv4(fields[7])
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if net.prefixlen:
            routes.append((fields[0], net))
    return routes


def parse_proc_ipv6_route(text: str) -> list[tuple[str, IPNetwork]]:
    """(interface, destination) of every non-default, non-link-local IPv6 route."""
    routes: list[tuple[str, IPNetwork]] = []
    link_local = ipaddress.IPv6Network("fe80::/10")
    multicast = ipaddress.IPv6Network("ff00::/8")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            dest = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            net6 = ipaddress.IPv6Network(f"{dest}/{int(fields[1], 16)}", strict=False)
        except ValueError:
            continue
        local = net6.subnet_of(link_local) or net6.subnet_of(multicast)
        if net6.prefixlen and not local and fields[9] != "lo":
            routes.append((fields[9], net6))
    return routes


def host_routes() -> list[tuple[str, IPNetwork]]:
    """The host's routes (main IPv4 table and IPv6), without default routes."""
    routes: list[tuple[str, IPNetwork]] = []
    for path, parse in (
        ("/proc/net/route", parse_proc_route),
        ("/proc/net/ipv6_route", parse_proc_ipv6_route),
    ):
        try:
            with open(path) as handle:
                routes += parse(handle.read())
        except OSError:
            continue
    return routes


def docker_subnets(timeout: float = 3.0) -> list[IPNetwork]:
    """Subnets of Docker's networks; empty when Docker cannot be asked (best effort)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            networks = client.api.networks()
        finally:
            client.close()
    except Exception as e:  # any failure just means "nothing known from Docker"
        log.debug("cannot list Docker networks for subnet selection: %s", e)
        return []
    subnets: list[IPNetwork] = []
    for network in networks:
        for config in (network.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, TypeError):
                subnets.append(ipaddress.ip_network(config.get("Subnet"), strict=False))
    return subnets


def _ipam_subnets(ipam: Any) -> list[str]:
    if not isinstance(ipam, dict):
        return []
    found = []
    if isinstance(ipam.get("subnet"), str):
        found.append(ipam["subnet"])
    for rangeset in ipam.get("ranges") or []:
        for item in rangeset if isinstance(rangeset, list) else []:
            if isinstance(item, dict) and isinstance(item.get("subnet"), str):
                found.append(item["subnet"])
    return found


def subnets_of(raw: JSONDict) -> list[IPNetwork]:
    """Every host-local subnet a parsed conflist (or single conf) declares."""
    plugins = raw.get("plugins")
    objects = plugins if isinstance(plugins, list) else [raw]
    out: list[IPNetwork] = []
    for plugin in objects:
        if not isinstance(plugin, dict):
            continue
        for text in _ipam_subnets(plugin.get("ipam")):
            with contextlib.suppress(ValueError):
                out.append(ipaddress.ip_network(text, strict=False))
    return out


def conflist_subnets(netconf_dir: str, exclude: str = "") -> list[UsedSubnet]:
    """Subnets declared by the directory's config files (read leniently, broken ones too)."""
    used: list[UsedSubnet] = []
    for path in config_paths(netconf_dir):
        if exclude and os.path.basename(path) == exclude:
            continue
        try:
            with open(path, "rb") as handle:
                raw = json.loads(handle.read())
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict):
            label = f"network {raw.get('name', '?')} ({path})"
            used += [UsedSubnet(net, label) for net in subnets_of(raw)]
    return used


def used_subnets(
    netconf_dir: str,
    *,
    routes: list[tuple[str, IPNetwork]] | None = None,
    docker: bool = True,
) -> list[UsedSubnet]:
    """Everything a new network must not overlap: configs, host routes, Docker networks."""
    used = conflist_subnets(netconf_dir)
    for iface, net in host_routes() if routes is None else routes:
        used.append(UsedSubnet(net, f"route {iface}"))
    if docker:
        used += [UsedSubnet(net, "a Docker network") for net in docker_subnets()]
    return used


# -- writing --------------------------------------------------------------------------------


@contextlib.contextmanager
def config_dir_lock(netconf_dir: str) -> Iterator[None]:
    """Hold `<netconf_dir>/.cnirun.lock` (creating the directory if needed).

    Raises:
        OSError: the directory or the lock file cannot be created (e.g. read-only /etc).
    """
    os.makedirs(netconf_dir, mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(netconf_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def write_conflist(path: str, conf: JSONDict) -> None:
    """Write `conf` to `path` atomically (temp file, fsync, rename), mode 0644.

    The temp file's `.tmp` extension keeps config loaders from ever reading it half-written.
    """
    import tempfile

    data = (json.dumps(conf, indent=2) + "\n").encode()
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".cnirun-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

"""Generating conflists: the plugin chain of a driver, the newest cniVersion its plugins share,
the cnirun marker, and writing the file atomically under the config dir's lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from cnirun import __version__
from cnirun.cni.api import CNIConfig
from cnirun.cni.version import CURRENT, VersionError, parse_version
from cnirun.errors import CNIError, CnirunError, ConfigError
from cnirun.files import ensure_dir, locked, write_atomic
from cnirun.netconf.select import MARKER_KEY
from cnirun.netconf.subnets import IPAddress, IPNetwork, JSONDict

log = logging.getLogger(__name__)

LOCK_FILE = ".cnirun.lock"
DRIVERS = ("bridge", "ptp", "macvlan", "ipvlan")
# Appended after the main plugin when installed; a missing one is left out with a warning.
EXTRA_PLUGINS = {
    "bridge": ("portmap", "firewall", "tuning"),
    "ptp": ("portmap", "firewall", "tuning"),
    "macvlan": ("tuning",),
    "ipvlan": ("tuning",),
}
# `network create --isolation`: the firewall plugin's ingressPolicy values cnirun sets.
ISOLATIONS = ("same-bridge",)
# Drivers whose container interface has a host-side veth peer, which the bandwidth plugin shapes.
BANDWIDTH_DRIVERS = ("bridge", "ptp")
# `network create --dns`: the dnsname plugin runs a dnsmasq on the bridge's addresses, so only
# a bridge with a gateway address can have it. Its domain (podman's is dns.podman).
DNS_DRIVERS = ("bridge",)
DNS_PLUGIN = "dnsname"
DNS_DOMAIN = "dns.cnirun"


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
    dns_domain: str = DNS_DOMAIN  # the dnsname plugin's domainName, when the chain has it
    isolation: str = ""  # the firewall plugin's ingressPolicy; "" leaves it out ("open")


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
            firewall: JSONDict = {"type": "firewall"}
            if spec.isolation:
                firewall["ingressPolicy"] = spec.isolation
            chain.append(firewall)
        elif plugin == "tuning":
            chain.append({"type": "tuning", "capabilities": {"mac": True}})
        elif plugin == DNS_PLUGIN:  # after tuning, as podman has it
            dns: JSONDict = {"type": DNS_PLUGIN, "domainName": spec.dns_domain}
            dns["capabilities"] = {"aliases": True}  # `cnirun run --network-alias`
            chain.append(dns)
        elif plugin == "bandwidth":  # last: it shapes the veth the chain so far has made
            chain.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    import datetime  # here: it costs start-up time for every command

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


def available_plugins(
    cni: CNIConfig, driver: str, bandwidth: bool | None = False, dns: bool = False
) -> list[str]:
    """The chain for `driver`: main plugin and host-local required, extras only if installed.
    `bandwidth`: True requires the bandwidth plugin at the end, None adds it if installed
    (the built-in default network), False leaves it out. `dns` requires dnsname, after the
    extras (podman's place for it) and before bandwidth.

    Raises:
        ConfigError: the main plugin or host-local (or a required bandwidth or dnsname) is
            missing.
    """
    missing = []
    extras = EXTRA_PLUGINS[driver]
    needed: tuple[str, ...] = (driver, "host-local")
    if dns:
        needed = (*needed, DNS_PLUGIN)
    if driver in BANDWIDTH_DRIVERS and bandwidth is None:
        extras = (*extras, "bandwidth")
    elif bandwidth:
        needed = (*needed, "bandwidth")
    for plugin in needed:
        try:
            cni.exec.find_in_path(plugin, cni.plugin_dirs)
        except CNIError:
            missing.append(plugin)
    if missing:
        package = "the CNI plugins"
        if DNS_PLUGIN in missing:
            package += " (dnsname: Debian's golang-github-containernetworking-plugin-dnsname)"
        raise ConfigError(
            f"CNI plugin(s) {', '.join(missing)} not found in {':'.join(cni.plugin_dirs)} "
            f"(install {package} or set --cni-path / $CNI_PATH)"
        )
    chain = [driver]
    skipped = []
    for extra in extras:
        try:
            cni.exec.find_in_path(extra, cni.plugin_dirs)
            chain.append(extra)
        except CNIError:
            skipped.append(extra)
    if dns:
        chain.append(DNS_PLUGIN)
    if bandwidth:
        chain.append("bandwidth")
    if skipped:
        log.warning(
            f"plugin(s) {', '.join(skipped)} not found in {':'.join(cni.plugin_dirs)}; "
            "the network is created without them"
        )
    return chain


def check_ingress_policy(cni: CNIConfig, plugins: Sequence[str]) -> None:
    """Refuse `--isolation` unless the chain's firewall plugin knows `ingressPolicy` (from
    plugins 1.1.0; an older one ignores the key, which would isolate nothing). Its binary
    names the JSON key; the plugins print no release version (Debian's: "version unknown").

    Raises:
        ConfigError: no firewall plugin, or one without ingressPolicy.
    """
    if "firewall" not in plugins:
        raise ConfigError(
            "--isolation needs the firewall plugin, which is not installed"
            f" in {':'.join(cni.plugin_dirs)}"
        )
    path = cni.exec.find_in_path("firewall", cni.plugin_dirs)
    try:
        with open(path, "rb") as binary:
            known = b'json:"ingressPolicy' in binary.read(256 << 20)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    if not known:
        raise ConfigError(
            f"--isolation needs a firewall plugin with ingressPolicy (CNI plugins 1.1.0 or"
            f" later); {path} does not have it"
        )


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


@contextlib.contextmanager
def config_dir_lock(netconf_dir: str) -> Iterator[None]:
    """Hold `<netconf_dir>/.cnirun.lock` (creating the directory if needed).

    Raises:
        OSError: the directory or the lock file cannot be created (e.g. read-only /etc).
    """
    ensure_dir(netconf_dir, 0o755)
    with locked(os.path.join(netconf_dir, LOCK_FILE), dir_mode=0o755):
        yield


def write_conflist(path: str, conf: JSONDict) -> None:
    """Write `conf` to `path` atomically, mode 0644 (plugins run as root read it)."""
    write_atomic(path, (json.dumps(conf, indent=2) + "\n").encode(), 0o644)

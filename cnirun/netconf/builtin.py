"""cnirun's built-in default network, for a config dir with nothing usable in it.

Generated on first use as `<config dir>/zz-cnirun-default.conflist` (the name sorts after the
usual `10-x.conflist`, so tools that take "the first file" prefer a user's own network):
bridge `cnirun0` with host-local, portmap, firewall, tuning and bandwidth (each extra one only
when installed) at the newest cniVersion every
plugin supports, on the first free /16 of DEFAULT_SUBNETS. Later runs load the saved file, so
the subnet stays stable. When the directory cannot be written, it is used from memory.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from typing import TYPE_CHECKING

from cnirun.cni import validate
from cnirun.cni.config import NetworkConfigList, list_from_bytes, list_from_file
from cnirun.errors import CNIError, ConfigError
from cnirun.netconf import generate
from cnirun.netconf.select import default_network_name, load_config_file, scan
from cnirun.netconf.subnets import (
    IPNetwork,
    JSONDict,
    gateway,
    host_routes,
    overlapping,
    parse_subnet,
    pick_free,
    subnets_of,
    used_subnets,
)
from cnirun.testhooks import ENV_DEFAULT_SUBNET, default_network_overrides

if TYPE_CHECKING:
    from cnirun.netconf.select import Configs

log = logging.getLogger(__name__)

DEFAULT_BRIDGE = "cnirun0"
DEFAULT_FILE = "zz-cnirun-default.conflist"
# /16s tried in order; chosen to miss Docker (172.17+), podman (10.88/10.89), nerdctl (10.4),
# k8s service ranges (10.96/12) and the pool `network create` uses.
DEFAULT_SUBNETS = tuple(f"10.{n}.0.0/16" for n in range(77, 69, -1))

_noticed: set[str] = set()


def ensure(configs: Configs) -> NetworkConfigList:
    """The built-in default network of `configs.directory`, generated and saved if missing.

    Raises:
        ConfigError: bridge or host-local is not installed, the plugins share no version, no
            candidate subnet is free, or the file is there but is not (or no longer) cnirun's.
    """
    directory = configs.directory
    path = os.path.join(directory, DEFAULT_FILE)
    try:
        with generate.config_dir_lock(directory):
            existing = scan(directory).builtin()  # another cnirun may have won the race
            if existing is not None:
                return existing
            if os.path.lexists(path):  # e.g. hand-edited into something that no longer loads
                try:
                    load_config_file(path)
                    problem = "is not cnirun's built-in default (no marker)"
                except ConfigError as e:
                    problem = f"does not load ({e})"
                raise ConfigError(f"{path} {problem}; fix or remove it")
            generate.write_conflist(path, _generate(configs))
        net = list_from_file(path)
        where = f"saved as {path}"
    except OSError as e:
        conf = _generate(configs)
        net = list_from_bytes(json.dumps(conf, indent=2).encode(), source="<built-in>")
        where = f"not saved ({path}: {e.strerror or e})"
    _notice_once(net, where, directory)
    return net


def _notice_once(net: NetworkConfigList, where: str, netconf_dir: str) -> None:
    """Tell the user (once per process and network) that the built-in default is in use."""
    if net.name in _noticed:
        return
    _noticed.add(net.name)
    first = net.plugins[0].raw
    subnets = ", ".join(str(s) for s in subnets_of(net.raw))
    log.info(
        'using the built-in default network "%s" (bridge %s, subnet %s), %s; choose another '
        "with --network NAME or by adding a network config to %s",
        net.name,
        first.get("bridge", "?"),
        subnets,
        where,
        netconf_dir,
    )


def _generate(configs: Configs) -> JSONDict:
    name, bridge, subnet = default_network_overrides()
    name = name or default_network_name()
    bridge = bridge or DEFAULT_BRIDGE
    try:
        validate.network_name(name)
    except CNIError as e:
        raise ConfigError(f"invalid default network name {name!r}: {e}") from None
    if subnet:
        chosen = parse_subnet(subnet, "default subnet")
    else:
        chosen = _pick_subnet(configs, bridge)
    plugins = generate.available_plugins(configs.cni, "bridge", bandwidth=None)
    spec = generate.NetworkSpec(
        name=name,
        driver="bridge",
        ranges=[generate.IPRange(chosen, gateway(chosen))],
        cni_version=generate.newest_common_version(configs.cni, plugins),
        bridge=bridge,
        default=True,
    )
    return generate.build_conflist(spec, plugins)


def _pick_subnet(configs: Configs, bridge: str) -> IPNetwork:
    routes = host_routes()
    # The bridge kept from an earlier default (after `network rm`) keeps its address: reuse it.
    own = [net for iface, net in routes if iface == bridge and net.version == 4]
    used = [
        u
        for u in used_subnets(configs.directory, configs.docker_subnets(), routes)
        if u.where != f"route {bridge}"
    ]
    for net in own:
        if not overlapping(net, used):
            return net
    candidates = [ipaddress.ip_network(c) for c in DEFAULT_SUBNETS]
    chosen = pick_free(candidates, used)
    if chosen is None:
        raise ConfigError(
            f"no free subnet for the default network (tried {', '.join(DEFAULT_SUBNETS)}); "
            f"add a network config to {configs.directory} or set ${ENV_DEFAULT_SUBNET}"
        )
    return chosen

"""Planning a run: every network, plugin and flag is loaded and checked before anything exists."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from cnirun.cni.api import CNIConfig
from cnirun.cni.config import NetworkConfigList
from cnirun.docker import workload
from cnirun.docker.pause import PAUSE_IMAGE
from cnirun.docker.runtime import Docker
from cnirun.dockerargs import PortMapping, RunArgs
from cnirun.errors import CnirunError, UsageError
from cnirun.netconf.select import Configs
from cnirun.sandbox import dnsname, names, published
from cnirun.sandbox.records import RecordStore
from cnirun.settings import Settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkPlan(NamedTuple):
    """One network to attach, with what its plugins will be given."""

    net: NetworkConfigList
    ifname: str
    capability_args: dict[str, Any]  # filled in by make_plan


class Plan(NamedTuple):
    """Everything decided and validated before the first side effect."""

    args: RunArgs
    settings: Settings
    sandbox_id: str
    networks: list[NetworkPlan]
    cni: CNIConfig
    infra_image: str
    ports: list[PortMapping]


def configs_for(settings: Settings, cni: CNIConfig, docker: Docker | None) -> Configs:
    """The config dir as every command sees it; Docker's subnets are avoided when known."""

    def docker_subnets() -> list[str]:
        if docker is None:
            return []
        try:
            return docker.network_subnets()
        except CnirunError:
            return []  # best effort: Docker's networks are only avoided when it can be asked

    return Configs(settings.netconf_dir, cni, docker_subnets)


def make_plan(args: RunArgs, settings: Settings, docker: Docker) -> Plan:
    """Load and check every network, plugin and flag; create nothing.

    Raises:
        CnirunError: for the first problem found, naming the network, file or flag.
    """
    check_workload(args, docker, settings.environ)
    cni = CNIConfig(
        settings.plugin_dirs,
        settings.cache_dir,
        timeout=settings.cni_timeout,
        del_timeout=settings.cni_del_timeout,
    )
    nets = configs_for(settings, cni, docker).resolve(args.networks)
    plans = [
        NetworkPlan(net, f"eth{index}", dnsname.capability_args(net, args.aliases))
        for index, net in enumerate(nets)
    ]
    names.check_free(
        RecordStore(settings.state_dir), [n.name for n in nets], [args.name or "", *args.aliases]
    )
    ports: list[PortMapping] = []
    if args.publish:
        target = first_with_capability(plans, "portMappings", "-p/--publish", "the portmap plugin")
        # Docker refuses a port that is taken when it starts the container; this is as close
        # as cnirun can check it before creating anything (README, -p: the race left).
        ports = published.check_ports(args.publish, RecordStore(settings.state_dir), cni.cache)
        target.capability_args["portMappings"] = [p.to_cni() for p in ports]
    if args.ips:
        target = first_with_capability(plans, "ips", "--ip/--ip6", "an IPAM such as host-local")
        check_ips(target.net, args.ips)
        target.capability_args["ips"] = list(args.ips)
    if args.mac:
        target = first_with_capability(
            plans, "mac", "--mac-address", "the bridge or tuning plugin"
        )
        target.capability_args["mac"] = args.mac
    if args.bandwidth is not None:
        target = first_with_capability(
            plans,
            "bandwidth",
            "--bandwidth",
            'a {"type": "bandwidth"} plugin at the end of the chain',
            also="; `cnirun network create --bandwidth NAME` makes a network with it",
        )
        target.capability_args["bandwidth"] = args.bandwidth.to_cni()
    return Plan(
        args=args,
        settings=settings,
        sandbox_id=os.urandom(16).hex(),  # as uuid4().hex, without importing uuid
        networks=plans,
        cni=cni,
        infra_image=args.infra_image or PAUSE_IMAGE,
        ports=ports,
    )


def check_workload(args: RunArgs, docker: Docker, environ: Mapping[str, str]) -> None:
    """What Docker would refuse the workload for, found before the infra exists: a container
    name in use, an image that is missing while `--pull=never` forbids pulling it (a missing
    image is otherwise pulled by the workload's own `docker run`, with Docker's display), a
    flag newer than the docker CLI or the engine.

    Raises:
        UsageError: in Docker's words.
    """
    if args.name:
        holder = docker.container_id(args.name)
        if holder is not None:
            raise UsageError(
                f'Conflict. The container name "/{args.name}" is already in use by container'
                f' "{holder}". You have to remove (or rename) that container to be able to'
                " reuse that name."
            )
    if args.pull == "never" and not docker.image_exists(args.image):
        raise UsageError(f"No such image: {args.image} (and --pull=never forbids pulling it)")
    workload.check_flags(
        args.docker_flags,
        lambda: workload.client_version(docker.endpoint.cli_environ(environ)),
        lambda: str(docker.version().get("ApiVersion") or ""),
    )


def _host_local_ranges(net: NetworkConfigList) -> list[tuple[IPNetwork, str, str]]:
    """(subnet, rangeStart, rangeEnd) of the host-local IPAM of `net`'s plugins, as far as
    the config says (both of its spellings: `ranges` and the older `subnet`)."""
    found = []
    for plugin in net.plugins:
        ipam = plugin.raw.get("ipam")
        if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
            continue
        ranges = [r for rs in ipam.get("ranges") or [] if isinstance(rs, list) for r in rs]
        if ipam.get("subnet"):
            ranges.append(ipam)
        for entry in ranges:
            try:
                subnet = ipaddress.ip_network(str(entry.get("subnet")), strict=False)
            except (ValueError, AttributeError):
                continue
            start, end = (str(entry.get(k) or "") for k in ("rangeStart", "rangeEnd"))
            found.append((subnet, start, end))
    return found


def check_ips(net: NetworkConfigList, ips: Sequence[str]) -> None:
    """`--ip`/`--ip6` must fit the network's host-local ranges, where its config names them.

    Raises:
        UsageError: an address outside every range of its IP version.
    """
    ranges = _host_local_ranges(net)
    for text in ips:
        ip = ipaddress.ip_address(text)
        same = [r for r in ranges if r[0].version == ip.version]
        if not same or any(_in_range(ip, *r) for r in same):
            continue
        described = ", ".join(
            str(s) + (f" ({start or s[1]}-{end or s[-2]})" if start or end else "")
            for s, start, end in same
        )
        flag = "--ip" if ip.version == 4 else "--ip6"
        raise UsageError(
            f"{flag} {text} is outside the address range of network {net.name}: {described}"
        )


def _in_range(ip: IPAddress, subnet: IPNetwork, start: str, end: str) -> bool:
    try:
        low = ipaddress.ip_address(start) if start else None
        high = ipaddress.ip_address(end) if end else None
    except ValueError:
        return ip in subnet
    return ip in subnet and (low is None or ip >= low) and (high is None or ip <= high)  # type: ignore[operator]


def first_with_capability(
    plans: list[NetworkPlan], cap: str, flag: str, hint: str, also: str = ""
) -> NetworkPlan:
    for plan in plans:
        if any(p.capabilities.get(cap) for p in plan.net.plugins):
            return plan
    names = ", ".join(p.net.name for p in plans)
    raise UsageError(
        f"{flag} needs a network whose plugins accept the {cap!r} capability, "
        f'and {names} has none: add "capabilities": {{"{cap}": true}} to {hint} '
        f"in its config, or choose another --network{also}"
    )

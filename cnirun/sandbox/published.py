"""The host ports cnirun has published already, and the check of a run's `-p`s against them,
against each other and against the host's sockets (before anything is created).

cnirun's own ports come from two places: the `ports` of every sandbox record in the state dir
(whether or not its owner still runs: a record that exists still holds its ports, until `rm`
or `gc` removes it), and the `portMappings` capability args of every attachment in the CNI
result cache (`cnirun net add`, priv-net-run, and the sandboxes' own attachments again).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from cnirun.cni.cache import ResultCache
from cnirun.dockerargs import PortMapping
from cnirun.host.ports import HostPort, PortInUseError, check_unbound, overlaps
from cnirun.sandbox.records import CNI_ID_PREFIX, RecordError, RecordStore

log = logging.getLogger(__name__)


class Published(NamedTuple):
    """A host port held by a sandbox or attachment of cnirun's, with how to free it."""

    port: HostPort
    holder: str  # "sandbox 0123456789ab", "the attachment X of network N"
    hint: str


def host_port(mapping: PortMapping) -> HostPort:
    return HostPort(mapping.host_ip, mapping.host_port, mapping.protocol)


def from_cni(entries: Any) -> list[HostPort]:
    """The host ports of a `portMappings` list as stored (entries that are not of its shape,
    or ask for no host port, are skipped: they hold nothing)."""
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        port, protocol, ip = entry.get("hostPort"), entry.get("protocol"), entry.get("hostIP")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
            continue
        protocol = protocol.lower() if isinstance(protocol, str) and protocol else "tcp"
        found.append(HostPort(ip if isinstance(ip, str) else "", port, protocol))
    return found


def published(store: RecordStore, cache: ResultCache, exclude: str = "") -> list[Published]:
    """Every host port the records of `store` and the attachments cached in `cache` hold
    (but those of CNI container ID `exclude`: a sandbox being updated).

    A record that cannot be read is skipped (logged): `gc` or `rm -f` reports and removes it.

    Raises:
        CnirunError: the state dir or the cache cannot be listed.
    """
    found: list[Published] = []
    recorded: set[str] = set()
    for sandbox_id in store.ids():
        try:
            record = store.load(sandbox_id)
        except RecordError as e:
            log.debug("ports of %s unknown: %s", sandbox_id, e)
            continue
        recorded.add(record.cni_container_id)
        if record.cni_container_id == exclude:
            continue
        short = record.id[:12]
        hint = f"See `cnirun ps`; `cnirun rm -f {short}` frees it, or publish another host port."
        found += [Published(p, f"sandbox {short}", hint) for p in from_cni(record.ports)]
    for entry in cache.attachments():
        if entry.container_id in recorded or entry.container_id == exclude:
            continue  # the sandbox's own attachment, named above
        caps = entry.capability_args or {}
        holder = f"the CNI attachment {entry.container_id} of network {entry.network_name}"
        netns = entry.netns or "NETNS"
        hint = (
            f"It was added by `cnirun net add` or priv-net-run: `cnirun net del"
            f" {entry.network_name} {netns} --container-id {entry.container_id}` frees it,"
            " or publish another host port."
            if not entry.container_id.startswith(CNI_ID_PREFIX)
            else "`cnirun gc` removes it if its sandbox is gone, or publish another host port."
        )
        found += [Published(p, holder, hint) for p in from_cni(caps.get("portMappings"))]
    return found


def check_ports(
    ports: Sequence[PortMapping],
    store: RecordStore,
    cache: ResultCache,
    exclude: str = "",
    kept: Sequence[PortMapping] = (),
) -> list[PortMapping]:
    """Refuse the run's `-p`s if two of them overlap, if cnirun has published one already, or
    if a socket of the host holds one (Docker's errors, with what to do); return them with a
    free host port chosen for each `-p 80` (Docker picks one too; portmap needs a number).
    `cnirun update --publish` passes the sandbox's CNI container ID as `exclude` and the
    ports it keeps as `kept`: the new ones must not overlap those either.

    Raises:
        PortInUseError: `Bind for 0.0.0.0:80 failed: port is already allocated` (duplicates,
            cnirun's own ports) or `Error starting userland proxy: ...` (a host socket).
    """
    wanted = [host_port(m) for m in ports if m.host_port]
    _check_duplicates(wanted)
    if not ports:
        return []
    held = published(store, cache, exclude)
    own = "See `cnirun port`; --unpublish it first to publish it again."
    held += [Published(host_port(m), "this sandbox", own) for m in kept if m.host_port]
    for port in wanted:
        for other in held:
            if overlaps(port, other.port):
                said = f"{other.holder} publishes {_shown(other.port)}. {other.hint}"
                raise allocated(port, said)
    for port in wanted:
        check_unbound(port)
    taken = [*wanted, *(h.port for h in held)]
    chosen = []
    for mapping in ports:
        if not mapping.host_port:
            mapping = _with_free_port(mapping, taken)
            taken.append(host_port(mapping))
        chosen.append(mapping)
    return chosen


def _check_duplicates(wanted: Iterable[HostPort]) -> None:
    seen: list[HostPort] = []
    for port in wanted:
        for earlier in seen:
            if overlaps(port, earlier):
                raise allocated(
                    port, f"-p gives {_shown(earlier)} and {_shown(port)}: publish it once."
                )
        seen.append(port)


def allocated(port: HostPort, hint: str) -> PortInUseError:
    return PortInUseError(f"Bind for {port.address} failed: port is already allocated").hinted(hint)


def _shown(port: HostPort) -> str:
    return f"{port.address}/{port.protocol}"


def _with_free_port(mapping: PortMapping, taken: Sequence[HostPort]) -> PortMapping:
    """`mapping` with a host port the kernel calls free and cnirun has not published."""
    kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in mapping.host_ip else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, kind) as probe:
            probe.bind((mapping.host_ip, 0))
            port = int(probe.getsockname()[1])
        candidate = mapping._replace(host_port=port)
        if not any(overlaps(host_port(candidate), t) for t in taken):
            return candidate
    raise PortInUseError(f"no free host port for -p {mapping.container_port}/{mapping.protocol}")

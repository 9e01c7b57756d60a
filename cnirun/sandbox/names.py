"""Names between sandboxes on one CNI network, through their workloads' /etc/hosts.

As on a Docker user-defined network, a sandbox is reachable by the others on each of its
networks under its container name (--name), its hostname, its --network-alias names and
its workload's short ID. There is no extra service: the records are the registry (they hold
each sandbox's networks, addresses and names), and every sandbox that is up gets the peers of
its networks appended to its own hosts file (`hosts.base`, what the run wrote, plus one line
per peer address), rewritten in place so the bind mount sees it. A refresh recomputes it all
under one lock (on the records' directory), so concurrent joins and leaves end consistent;
it runs when a sandbox joins or leaves, is stopped, started or restarted, and whenever
cnirun reconciles the sandboxes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable

from cnirun.docker.runtime import Docker
from cnirun.dockerargs import HOSTS_NAME
from cnirun.errors import CnirunError, UsageError
from cnirun.files import open_dir, read_limited
from cnirun.host import etcfiles
from cnirun.sandbox.records import RecordStore, SandboxRecord

log = logging.getLogger(__name__)

BASE_FILE = "hosts.base"  # next to `hosts` in the sandbox's own dir
PEERS_MARK = "# cnirun: the other sandboxes on this sandbox's networks\n"
_MAX_BASE = 1 << 20


def own_names(record: SandboxRecord, workload_id: str = "", network: str = "") -> list[str]:
    """What peers call a sandbox: name, hostname, aliases, short workload ID (valid ones);
    on `network`, also the aliases `network connect --alias` gave it there."""
    found: list[str] = []
    extra = record.network_aliases.get(network, []) if network else []
    for name in (record.workload, record.hostname, *record.aliases, *extra, workload_id[:12]):
        if name and HOSTS_NAME.fullmatch(name) and name not in found:
            found.append(name)
    return found


def addresses(record: SandboxRecord, network: str) -> list[str]:
    """The sandbox's addresses on `network` (without prefix length), from its CNI result."""
    result = record.results.get(network) or {}
    found = []
    for ip in result.get("ips") or []:
        address = ip.get("address") if isinstance(ip, dict) else None
        if isinstance(address, str):
            found.append(address.split("/")[0])
    return found


def _networks(record: SandboxRecord) -> set[str]:
    return {a.network for a in record.attachments}


def _others(store: RecordStore, sandbox_id: str) -> list[SandboxRecord]:
    """Every other readable record (the unreadable are `ps -a`'s business)."""
    found = []
    for other in store.ids():
        if other == sandbox_id:
            continue
        try:
            found.append(store.load(other))
        except CnirunError:
            continue
    return found


def has_peers(store: RecordStore, record: SandboxRecord, left: Iterable[str] = ()) -> bool:
    """Whether another sandbox shares a network with this one, or one of the networks it
    `left` (records only, no Docker): a lone sandbox, the common case, costs nothing more."""
    mine = _networks(record) | set(left)
    return any(_networks(other) & mine for other in _others(store, record.id))


def any_shared(store: RecordStore) -> bool:
    """Whether any two sandboxes share a network (records only, no Docker)."""
    seen: set[str] = set()
    for record in _others(store, ""):
        mine = _networks(record)
        if mine & seen:
            return True
        seen |= mine
    return False


def tell_peers(
    docker: Docker, store: RecordStore, record: SandboxRecord, left: Iterable[str] = ()
) -> None:
    """Refresh the hosts files when `record`'s sandbox joined, left, stopped or started and
    has peers, there or on the networks it just `left` (a lone sandbox costs nothing more).
    Names are a convenience: a failure is a warning, never the end of the run, stop,
    teardown or connect that asked."""
    try:
        if has_peers(store, record, left):
            refresh(docker, store)
    except (CnirunError, OSError) as e:
        log.warning("cannot update the hosts files of sandbox %s's peers: %s", record.id[:12], e)


def check_free(
    store: RecordStore,
    networks: Iterable[str],
    names: Iterable[str],
    sandbox_id: str = "",
    flags: str = "--name or --network-alias",
) -> None:
    """Refuse a name or alias another sandbox on one of `networks` already answers to.

    Raises:
        UsageError: naming the name, the network and the sandbox that has it.
    """
    wanted = [n for n in names if n]
    nets = set(networks)
    for other in _others(store, sandbox_id):
        for network in sorted(_networks(other) & nets):
            taken = set(own_names(other, network=network))
            clash = next((n for n in wanted if n in taken), None)
            if clash:
                raise UsageError(
                    f"the name {clash!r} is taken on network {network} by sandbox"
                    f" {other.id[:12]}: choose another {flags}"
                )


def write_base(store: RecordStore, record: SandboxRecord, text: str) -> None:
    """Keep what the run wrote as the sandbox's own hosts file, for refreshes to add to."""
    etcfiles.write(os.path.join(store.files_dir(record.id), BASE_FILE), text)


def refresh(docker: Docker, store: RecordStore) -> None:
    """Rewrite the peers part of the hosts file of every sandbox that is up."""
    from cnirun.sandbox import registry

    with contextlib.ExitStack() as stack:
        try:  # the records' own directory is the lock: no file to leave behind
            directory = stack.enter_context(open_dir(store.directory, follow=False))
        except OSError as e:  # no sandbox at all, or a directory not safe to use
            log.debug("not refreshing the hosts files: %s", e)
            return
        fcntl.flock(directory, fcntl.LOCK_EX)
        sandboxes, _ = registry.load_all(docker, store)
        members = [s for s in sandboxes if s.up and not s.elsewhere]
        for sandbox in members:
            lines: list[str] = []
            mine = _networks(sandbox.record)
            for peer in members:
                if peer.record.id == sandbox.record.id:
                    continue
                for network in sorted(mine & _networks(peer.record)):
                    names = " ".join(own_names(peer.record, peer.workload_id, network))
                    for ip in addresses(peer.record, network):
                        line = f"{ip}\t{names}\n"
                        if names and line not in lines:
                            lines.append(line)
            _write(sandbox.files_dir, lines)


def _write(directory: str, lines: list[str]) -> None:
    base_path = os.path.join(directory, BASE_FILE)
    hosts_path = os.path.join(directory, "hosts")
    try:
        base = read_limited(base_path, _MAX_BASE, trusted=True).decode(errors="replace")
        current = read_limited(hosts_path, _MAX_BASE, trusted=True).decode(errors="replace")
    except OSError:
        return  # being torn down, or made before cnirun knew names: nothing to add to
    text = base + (PEERS_MARK + "".join(lines) if lines else "")
    if text != current:
        try:
            etcfiles.rewrite(hosts_path, text)
        except CnirunError as e:
            log.warning("%s", e)

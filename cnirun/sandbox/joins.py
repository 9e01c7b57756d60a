"""`cnirun network connect` and `disconnect`: one more network for a sandbox that runs, or
one less.

Both follow the rule of every other step: the record says it first. A connect records the
attachment, marked with its cnirun's process (`pending`), before its ADD starts, under the
sandbox's lock (so a teardown waits, then DELs it too); a disconnect marks it before its DEL
and drops it once the DEL succeeded. Killed anywhere in between, the attachment is still in the
record: `rm -f` and the foreground run's own teardown DEL it with the others, and `gc` DELs an
attachment whose connect or disconnect died and drops it from the sandbox (`finish`). Then the
names: the sandbox's own hosts file gains (or loses) its address on that network, its
resolv.conf the network's DNS servers, and every peer's hosts file is refreshed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from typing import Any

from cnirun.attach import Attachment, add_all, del_all
from cnirun.cni.config import NetworkConfigList
from cnirun.cni.types import Result, RuntimeConf
from cnirun.docker.runtime import Docker
from cnirun.dockerargs import HOSTS_NAME
from cnirun.errors import CnirunError, ExitCode, UsageError
from cnirun.files import read_limited
from cnirun.host import etcfiles
from cnirun.host.signals import Interrupted, Mode, SignalGuard
from cnirun.sandbox import dnsname, names, plan, registry
from cnirun.sandbox.records import AttachmentRecord, RecordStore, SandboxRecord, process_start
from cnirun.sandbox.registry import Sandbox
from cnirun.sandbox.teardown import recorded_attachments
from cnirun.settings import Settings
from cnirun.testhooks import fault_point

log = logging.getLogger(__name__)

_MAX_ETC = 1 << 20


class ConnectInterrupted(CnirunError):
    """A signal ended a connect (what it had added is DELeted again)."""

    exit_code = ExitCode.CTRL_C


def next_ifname(used: Sequence[str]) -> str:
    """The first of eth0, eth1, ... that no attachment of the sandbox has."""
    index = 0
    while f"eth{index}" in used:
        index += 1
    return f"eth{index}"


def _pending_mark() -> str:
    pid = os.getpid()
    return f"{pid}:{process_start(pid)}"


def _not_updating(record: SandboxRecord) -> None:
    # `cnirun update` names attachments by their place in the record: leave them be meanwhile.
    if record.updating:
        raise UsageError(
            f"sandbox {record.id[:12]} has a `cnirun update` under way (or interrupted:"
            " `cnirun gc` rolls it back): try again once it is done"
        )


def check_connect(record: SandboxRecord, network: str, aliases: Sequence[str]) -> None:
    """What `connect` refuses before anything runs (the network is known to exist).

    Raises:
        UsageError: the sandbox is on the network already, or an alias is not a name, or an
            update of it is under way.
    """
    _not_updating(record)
    short = record.id[:12]
    if network in record.networks():
        raise UsageError(f"sandbox {short} is already on network {network}")
    for alias in aliases:
        if not HOSTS_NAME.fullmatch(alias):
            raise UsageError(f"invalid --alias {alias!r}: not a container name")


def check_disconnect(record: SandboxRecord, network: str, force: bool) -> AttachmentRecord:
    """The attachment `disconnect` removes.

    Raises:
        UsageError: the sandbox is not on the network, or it is its last one and not `force`,
            or an update of it is under way.
    """
    _not_updating(record)
    short = record.id[:12]
    found = [a for a in record.attachments if a.network == network]
    if not found:
        on = ", ".join(record.networks()) or "none"
        raise UsageError(f"sandbox {short} is not on network {network} (its networks: {on})")
    if len(record.attachments) == 1 and not force:
        raise UsageError(
            f"network {network} is the last network of sandbox {short}: use"
            " `cnirun network disconnect -f` to leave it with only lo"
        )
    return found[0]


def _must_run(sandbox: Sandbox, what: str) -> None:
    registry.check_here(sandbox)
    if sandbox.state != "running":
        raise UsageError(
            f"sandbox {sandbox.record.id[:12]} is {sandbox.state}: only a running sandbox can be"
            f" {what} (`cnirun start` it first)"
        )


def capability_args(net: NetworkConfigList, ifname: str, ips: Sequence[str]) -> dict[str, Any]:
    if not ips:
        return {}
    versions = []
    for ip in ips:
        try:
            versions.append(ipaddress.ip_address(ip).version)
        except ValueError:
            raise UsageError(f"invalid --ip {ip!r}: not an IP address") from None
    if len(set(versions)) != len(versions):
        raise UsageError("--ip takes one IPv4 and one IPv6 address at most")
    plan.first_with_capability(
        [plan.NetworkPlan(net, ifname, {})], "ips", "--ip", "an IPAM such as host-local"
    )
    plan.check_ips(net, ips)
    return {"ips": list(ips)}


def _cni_args(record: SandboxRecord, net: NetworkConfigList) -> tuple[tuple[str, str], ...]:
    """The run's CNI_ARGS (--cni-args, as its first attachment got them, without what
    dnsname added there), with what dnsname needs when the new network has it."""
    given: list[tuple[str, str]] = []
    attachments, _ = recorded_attachments(record)
    if attachments:
        first = attachments[0]
        ours = (dnsname.IGNORE_UNKNOWN, dnsname.POD_NAME) if dnsname.in_chain(first.net) else ()
        given = [(k, v) for k, v in first.rt.cni_args if k not in ours]
    return dnsname.cni_args(net, given, record.workload or record.hostname)


def _attachment_record(net: NetworkConfigList, rt: RuntimeConf) -> AttachmentRecord:
    return AttachmentRecord.of(net, rt, pending=_pending_mark())


def connect(
    docker: Docker,
    store: RecordStore,
    settings: Settings,
    ref: str,
    network: str,
    ips: Sequence[str] = (),
    aliases: Sequence[str] = (),
) -> str:
    """Attach a running sandbox to one more network; return its interface name.

    Raises:
        CnirunError: refused (one line saying why), or the ADD failed (then undone).
    """
    sandbox = registry.find(docker, store, ref)
    _must_run(sandbox, "connected")
    check_connect(sandbox.record, network, aliases)
    net = plan.configs_for(settings, sandbox.record.cni(), docker).resolve([network])[0]
    guard = SignalGuard()
    guard.install()
    guard.enter(Mode.DEFER)  # a signal is acted on between steps only (see _add)
    try:
        with store.lock(sandbox.record.id) as recorded:
            if not recorded:
                raise UsageError(f"sandbox {sandbox.record.id[:12]} is gone")
            record = store.load(sandbox.record.id)  # as it is now, under its lock
            check_connect(record, network, aliases)
            wanted = [*names.own_names(record, sandbox.workload_id), *aliases]
            names.check_free(store, [network], wanted, record.id, "--alias")
            ifname = next_ifname([a.ifname for a in record.attachments])
            caps = capability_args(net, ifname, ips)
            caps.update(dnsname.capability_args(net, [*record.aliases, *aliases]))
            rt = RuntimeConf(
                container_id=record.cni_container_id,
                netns=record.netns_path,
                ifname=ifname,
                cni_args=_cni_args(record, net),
                capability_args=caps,
            )
            result = _add(store, record, Attachment(net, rt), list(aliases), guard)
    finally:
        guard.restore(ignore=False)
    dns = result.data.get("dns") or {}
    _files_after(store, record, network, added=result.addresses(), dns=dns)
    names.tell_peers(docker, store, record)
    return ifname


def _add(
    store: RecordStore,
    record: SandboxRecord,
    attachment: Attachment,
    aliases: list[str],
    guard: SignalGuard,
) -> Result:
    """Record the attachment, ADD it, record its result (all under the sandbox's lock)."""
    entry = _attachment_record(attachment.net, attachment.rt)
    record.attachments.append(entry)
    if aliases:
        record.network_aliases[entry.network] = aliases
    store.save(record)
    fault_point("join")
    results: list[Result] = []
    try:
        results = add_all(record.cni(), [attachment], guard)
    except (CnirunError, Interrupted) as e:
        guard.enter(Mode.TEARDOWN)
        # A failed ADD was rolled back by the core, best effort; an interrupted one was not.
        # DEL it (again: DEL is idempotent) before the record forgets it.
        failures = del_all(record.cni(), [attachment])
        if failures:  # still recorded, marked: `cnirun gc` (or rm -f) retries the DEL
            raise CnirunError(
                f"{failures[0]}; it stays recorded: `cnirun gc` retries the DEL"
            ) from None
        _forget(store, record, entry)
        if isinstance(e, Interrupted):
            raise ConnectInterrupted("connect interrupted: nothing of it is left") from None
        raise
    record.results[entry.network] = results[0].to_json()
    record.attachments[-1] = entry._replace(pending="")
    store.save(record)
    return results[0]


def _forget(store: RecordStore, record: SandboxRecord, entry: AttachmentRecord) -> None:
    record.attachments = [a for a in record.attachments if a.ifname != entry.ifname]
    record.results.pop(entry.network, None)
    record.network_aliases.pop(entry.network, None)
    store.save(record)


def disconnect(docker: Docker, store: RecordStore, ref: str, network: str, force: bool) -> None:
    """DEL one attachment of a sandbox and drop it from its record.

    Raises:
        CnirunError: refused (one line saying why), or the DEL failed (the attachment stays
            recorded: a retry, `rm -f` or gc DELs it again).
    """
    sandbox = registry.find(docker, store, ref)
    registry.check_here(sandbox)
    if not sandbox.live or sandbox.workload is None:
        raise UsageError(
            f"sandbox {sandbox.record.id[:12]} is {sandbox.state}: nothing to disconnect"
        )
    check_disconnect(sandbox.record, network, force)
    with store.lock(sandbox.record.id) as recorded:
        if not recorded:
            raise UsageError(f"sandbox {sandbox.record.id[:12]} is gone")
        record = store.load(sandbox.record.id)
        entry = check_disconnect(record, network, force)
        gone = _del(store, record, entry)
    dns = gone.get("dns") or {}
    _files_after(store, record, network, removed=Result("", gone).addresses(), dns=dns)
    names.tell_peers(docker, store, record, left=[network])


def _del(store: RecordStore, record: SandboxRecord, entry: AttachmentRecord) -> dict[str, Any]:
    """Mark, DEL, drop one attachment (under the sandbox's lock); return its old result."""
    index = record.attachments.index(entry)
    record.attachments[index] = entry._replace(pending=_pending_mark())
    store.save(record)
    fault_point("join")
    attachments, unreadable = recorded_attachments(_only(record, entry))
    failures = unreadable + del_all(record.cni(), attachments)
    if failures:  # as it was: attached (a retry DELs it), or gc's to retry
        record.attachments[index] = entry
        store.save(record)
        raise CnirunError(
            f"cannot disconnect: {failures[0]}; it stays attached: fix the cause and retry"
        )
    result = dict(record.results.get(entry.network) or {})
    _forget(store, record, entry)
    return result


def _only(record: SandboxRecord, entry: AttachmentRecord) -> SandboxRecord:
    """A copy of the record with `entry` as its one attachment (for recorded_attachments)."""
    return SandboxRecord(**{**vars(record), "attachments": [entry]})


def finish(docker: Docker, store: RecordStore, sandbox_id: str) -> list[str]:
    """gc's part: DEL each attachment whose connect or disconnect died midway and drop it
    from the sandbox's record; return what failed."""
    with store.lock(sandbox_id) as recorded:
        if not recorded:
            return []
        record = store.load(sandbox_id)
        failures: list[str] = []
        done: list[tuple[str, dict[str, Any]]] = []
        for entry in [a for a in record.attachments if a.is_interrupted()]:
            try:
                done.append((entry.network, _del(store, record, entry)))
            except CnirunError as e:
                failures.append(f"sandbox {sandbox_id[:12]}: {e}")
    for network, gone in done:
        dns = gone.get("dns") or {}
        _files_after(store, record, network, removed=Result("", gone).addresses(), dns=dns)
    if done:
        names.tell_peers(docker, store, record, left=[network for network, _ in done])
    return failures


def interrupted(sandboxes: Sequence[Sandbox]) -> list[tuple[Sandbox, AttachmentRecord]]:
    """The attachments of these sandboxes whose connect or disconnect died midway."""
    return [(s, a) for s in sandboxes for a in s.record.attachments if a.is_interrupted()]


def _files_after(
    store: RecordStore,
    record: SandboxRecord,
    network: str,
    added: Sequence[str] = (),
    removed: Sequence[str] = (),
    dns: Any = None,
) -> None:
    """The sandbox's own hosts (its base: names.refresh adds the peers) and resolv.conf,
    once its address on `network` came or went; `dns` is that network's CNI DNS. A failure
    is a warning: names and DNS are a convenience, the attachment itself is done."""
    directory = store.files_dir(record.id)
    others = [n for n in record.networks() if n != network]
    kept = [ip for other in others for ip in names.addresses(record, other)]
    own = [record.hostname, *names.own_names(record, network=network)]
    servers, search = _dns_parts(dns)
    still = [_dns_parts((record.results.get(n) or {}).get("dns")) for n in others]
    try:
        base = _read(os.path.join(directory, names.BASE_FILE))
        text = etcfiles.with_own_addresses(base, added, removed, kept, own)
        names.write_base(store, record, text)
        change: tuple[list[str], list[str], list[str], list[str]]
        if added:
            change = (servers, [], search, [])
        else:
            change = (
                [],
                [s for s in servers if not any(s in other for other, _ in still)],
                [],
                [d for d in search if not any(d in other for _, other in still)],
            )
        if any(change):
            path = os.path.join(directory, "resolv.conf")
            etcfiles.rewrite(path, etcfiles.with_dns(_read(path), *change))
    except (CnirunError, OSError) as e:
        log.warning("sandbox %s: cannot update its /etc files: %s", record.id[:12], e)


def _dns_parts(dns: Any) -> tuple[list[str], list[str]]:
    """(nameservers, search domains) of a CNI result's `dns` object."""
    if not isinstance(dns, dict):
        return [], []
    servers = [str(s) for s in dns.get("nameservers") or []]
    search = [str(d) for d in dns.get("search") or []]
    if not search and dns.get("domain"):
        search = [str(dns["domain"])]
    return servers, search


def _read(path: str) -> str:
    return read_limited(path, _MAX_ETC, trusted=True).decode(errors="replace")

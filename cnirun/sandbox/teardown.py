"""Idempotent, best-effort teardown of a sandbox from its record.

CNI DEL for each attachment in reverse order (with the recorded config, args and capability
args, so an edited or deleted conflist is still undone correctly), overlapped with removing
the infra container — the bind-mounted netns keeps the interfaces alive until DEL — and then
the sandbox's files, the netns holder and the record. Every failure is collected, none stops
the rest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from cnirun.attach import Attachment, del_all
from cnirun.cni.config import list_from_bytes
from cnirun.docker.runtime import Docker
from cnirun.errors import CnirunError
from cnirun.host import netns
from cnirun.sandbox import names, owners
from cnirun.sandbox.records import RecordStore, SandboxRecord

log = logging.getLogger(__name__)


def teardown(
    record: SandboxRecord,
    store: RecordStore,
    docker: Docker,
    owner: bool = False,
    interrupted: Callable[[], int] | None = None,
    reread: bool = True,
) -> list[str]:
    """Undo everything the record says was set up; return what could not be undone.

    The record is read again under the lock (`reread`), so what `network connect`,
    `disconnect` and `update` changed since the caller loaded it counts: a connected network
    is DELeted, a disconnected one is not. A run still setting up passes `reread=False`: its own
    record in memory may be ahead of the file (a save that failed).

    `interrupted` counts the stop signals received (the run's SignalGuard): one arriving
    while a DEL waits for its network's lock ends that wait (that DEL fails: gc retries it).

    Holds the sandbox's lock: of two teardowns at once (`rm` twice, `rm` and `gc`), the
    second waits, then finds the record gone and has nothing to do. The `owner` (the run
    that set the sandbox up) also tears down what is still there when its record was
    removed from outside: it has it all in memory.
    """
    with contextlib.ExitStack() as stack:
        try:
            recorded = stack.enter_context(store.lock(record.id))
        except CnirunError as e:  # a read-only or full state dir: tear down all the same
            log.warning("%s; tearing down without it", e)
            recorded = True
        if not recorded and not (owner and _still_there(record, docker)):
            return []
        if not recorded:
            log.warning(
                "the record of sandbox %s was removed from outside: tearing down from memory",
                record.id[:12],
            )
        elif reread:
            record = _as_saved(record, store)
        try:
            return _teardown(record, store, docker, interrupted)
        except OSError as e:  # whatever the host refuses, the caller gets a line, not a trace
            return [f"{e.strerror or e}: {e.filename}" if e.filename else str(e)]


def _as_saved(record: SandboxRecord, store: RecordStore) -> SandboxRecord:
    """The record as saved now: `cnirun update` may have changed its attachments' capability
    args since its owner read it (a DEL with the old ones would leave the new ports). The
    one in memory when the saved one cannot be read."""
    try:
        return store.load(record.id)
    except CnirunError as e:
        log.debug("tearing down sandbox %s from memory: %s", record.id[:12], e)
        return record


def _still_there(record: SandboxRecord, docker: Docker) -> bool:
    """Whether anything of the sandbox's is left (nobody else tore it down)."""
    if record.netns_path and netns.netns_exists(record.netns_path):
        return True
    try:
        return bool(docker.containers(record.id))
    except CnirunError:
        return True  # cannot tell: a teardown of what is gone does no harm


def recorded_attachments(record: SandboxRecord) -> tuple[list[Attachment], list[str]]:
    """The record's attachments as the core takes them; plus those whose config is unreadable."""
    attachments, failures = [], []
    for recorded in record.attachments:
        try:
            net = list_from_bytes(recorded.config, recorded.source)
        except CnirunError as e:
            failures.append(f"network {recorded.network} ({recorded.ifname}): {e}")
            continue
        attachments.append(Attachment(net, recorded.runtime_conf(record)))
    return attachments, failures


def _hold_again(record: SandboxRecord, docker: Docker) -> None:
    """Hold the netns again from the infra when its holder vanished (unmounted or
    `ip netns delete`d from outside): without it, the DELs cannot reach the interfaces, and
    plugins such as bridge then skip part of their cleanup (its masquerade rules)."""
    if not record.netns_name or not record.netns_path or netns.netns_exists(record.netns_path):
        return
    pid = docker.pid(record.infra_id) if record.infra_id else None
    if pid is None:
        log.warning(
            "sandbox %s: its network namespace %s is gone and so is its infra container; "
            "the plugins' DEL cannot check what was inside it",
            record.id[:12],
            record.netns_path,
        )
        return
    netns.release_netns(record.netns_name)  # a stub file left by an outside unmount
    netns.hold_netns(f"/proc/{pid}/ns/net", record.netns_name)
    log.debug("held netns %s again from the infra container (pid %d)", record.netns_path, pid)


def _teardown(
    record: SandboxRecord,
    store: RecordStore,
    docker: Docker,
    interrupted: Callable[[], int] | None = None,
) -> list[str]:
    failures: list[str] = []
    try:
        _hold_again(record, docker)
    except CnirunError as e:
        failures.append(str(e))

    def remove_infra() -> None:
        try:
            docker.remove(record.infra_id or record.infra_name)
        except CnirunError as e:
            failures.append(str(e))

    remover = threading.Thread(target=remove_infra, name="remove-infra")
    remover.start()
    cni = record.cni()
    cni.interrupted = interrupted
    attachments, unreadable = recorded_attachments(record)
    del_failures = unreadable + del_all(cni, attachments)
    failures += del_failures
    remover.join()
    try:
        store.delete_files(record.id)
    except CnirunError as e:
        failures.append(str(e))
    if record.netns_name and del_failures:
        # The retry (gc, rm) needs the namespace: a DEL without it undoes only part.
        log.debug("keeping netns %s until every DEL has succeeded", record.netns_path)
    elif record.netns_name:
        try:
            netns.release_netns(record.netns_name)
        except CnirunError as e:
            failures.append(str(e))
    if not failures:
        try:
            store.delete(record.id)
        except OSError as e:
            failures.append(f"cannot remove the record {store.path(record.id)}: {e.strerror}")
        else:
            owners.release(record.id)
            names.tell_peers(docker, store, record)
    else:
        log.debug("keeping state %s for `cnirun gc`", store.path(record.id))
    return failures


def forget(record: SandboxRecord, store: RecordStore, failures: list[str]) -> None:
    """Drop a sandbox whose teardown keeps failing (`rm -f`): its files, record and owner go.
    Its netns holder and the CNI cache's attachments stay, so `cnirun gc` (or `cnirun net
    del`) can still finish the DEL, with the namespace it needs. What may remain is said."""
    for failure in failures:
        log.warning("rm -f: %s", failure)
    for attachment in record.attachments:
        result = record.results.get(attachment.network) or {}
        ips = [ip.get("address", "?") for ip in result.get("ips") or [] if isinstance(ip, dict)]
        log.warning(
            "rm -f: network %s (%s) may keep what its plugins set up for %s (addresses %s, "
            "iptables rules naming it, netns %s): `cnirun gc` retries its DEL, or run "
            "`cnirun net del %s %s --container-id %s --ifname %s`",
            attachment.network,
            attachment.ifname,
            record.cni_container_id,
            ", ".join(ips) or "none recorded",
            record.netns_path or "-",
            attachment.network,
            record.netns_path or "-",
            record.cni_container_id,
            attachment.ifname,
        )
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(CnirunError):  # under its lock, which then goes with it
            stack.enter_context(store.lock(record.id))
        with contextlib.suppress(CnirunError, OSError):
            store.delete_files(record.id)
        with contextlib.suppress(OSError):
            store.delete(record.id)
    if not (record.netns_name and netns.netns_exists(record.netns_path)):
        owners.release(record.id)  # else gc of its state dir drops it with the holder

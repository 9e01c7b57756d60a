"""Mending a sandbox whose infra container Docker restarted in a new network namespace.

After an engine restart, Docker restarts the infra (its restart policy) and the workload
rejoins it: both are then in a fresh namespace with only `lo`, while the holder still holds
the old one with the CNI interfaces. The repair DELs the old attachments (with the recorded
config and args, as teardown does), holds the new namespace, and ADDs each network again,
asking for the recorded addresses through the `ips` capability where the chain has it, so a
workload that restarts keeps its address.
"""

from __future__ import annotations

import logging

from cnirun.attach import Attachment, add_all, del_all
from cnirun.cni.types import Result
from cnirun.docker.runtime import ROLE_WORKLOAD, Docker
from cnirun.errors import CnirunError
from cnirun.host import netns
from cnirun.host.signals import SignalGuard
from cnirun.sandbox import names
from cnirun.sandbox.records import RecordStore, SandboxRecord, process_start
from cnirun.sandbox.teardown import recorded_attachments

log = logging.getLogger(__name__)

# The restart policies under which Docker would have started the workload again.
RESTARTING = ("always", "unless-stopped", "on-failure")


def _asking_for_old_addresses(record: SandboxRecord, attachment: Attachment) -> Attachment:
    """The attachment with its old addresses requested, when its chain takes `ips`."""
    rt = attachment.rt
    args = dict(rt.capability_args or {})
    takes_ips = any(p.capabilities.get("ips") for p in attachment.net.plugins)
    ips = names.addresses(record, attachment.net.name)
    if takes_ips and ips and "ips" not in args:
        args["ips"] = ips
    return Attachment(attachment.net, rt._replace(capability_args=args))


def repair(docker: Docker, store: RecordStore, record: SandboxRecord) -> list[str]:
    """Bring the sandbox's network into its infra's current namespace; return what failed.

    Nothing is done when the infra is not running (there is no namespace to repair into) or
    is still in the held namespace; the record then just notes the infra process seen.
    """
    with store.lock(record.id) as recorded:
        if not recorded:
            return []
        record = store.load(record.id)  # as it is now, under the lock
        pid = docker.pid(record.infra_id) if record.infra_id else None
        if pid is None:
            return []
        current = f"/proc/{pid}/ns/net"
        if record.netns_path and not netns.same_netns(current, record.netns_path):
            failures = _reattach(record, current)
            if failures:
                return failures
        record.infra_pid, record.infra_start = pid, process_start(pid)
        store.save(record)
    _start_what_docker_could_not(docker, record)
    return []


def _start_what_docker_could_not(docker: Docker, record: SandboxRecord) -> None:
    """Start a workload whose restart policy wants it running but whose start failed only
    because its infra was not up yet: after an engine restart, Docker (26 and 28 seen) starts
    the two in any order and does not try again."""
    for row in docker.containers(record.id, ROLE_WORKLOAD):
        info = docker.inspect(row["Id"]) or {}
        state, host = info.get("State"), info.get("HostConfig")
        if not isinstance(state, dict) or not isinstance(host, dict) or state.get("Running"):
            continue
        policy = (host.get("RestartPolicy") or {}).get("Name")
        # Docker 26: "cannot join network of a non running container"; 28: "... network
        # namespace of ...".
        if policy in RESTARTING and "cannot join network" in str(state.get("Error") or ""):
            log.warning("sandbox %s: starting its workload, as its restart policy says",
                        record.id[:12])  # fmt: skip
            docker.start(row["Id"])


def _reattach(record: SandboxRecord, current: str) -> list[str]:
    log.warning(
        "sandbox %s: Docker restarted its infra container in a new network namespace;"
        " attaching its networks again",
        record.id[:12],
    )
    cni = record.cni()
    attachments, unreadable = recorded_attachments(record)
    if unreadable:
        return unreadable
    failures = del_all(cni, attachments)  # in the old namespace, still held: undone fully
    if failures:
        return [f"cannot repair sandbox {record.id[:12]}: {f}" for f in failures]
    try:
        netns.release_netns(record.netns_name)
        netns.hold_netns(current, record.netns_name)
    except CnirunError as e:
        return [f"cannot repair sandbox {record.id[:12]}: {e}"]
    wanted = [_asking_for_old_addresses(record, a) for a in attachments]
    results: dict[str, Result] = {}
    try:
        add_all(
            cni,
            wanted,
            SignalGuard(),
            after_add=lambda a, r: results.__setitem__(a.net.name, r),
        )
    except CnirunError as e:
        # What was added is DELeted by `rm`/gc from the record, which still lists it all.
        return [f"cannot repair sandbox {record.id[:12]}: {e}"]
    for name, result in results.items():
        old = set(names.addresses(record, name))
        new = {cidr.split("/")[0] for cidr in result.addresses()}
        if old and old != new:
            log.warning(
                "sandbox %s: network %s gave new addresses %s (was %s); the workload's"
                " /etc/hosts still names the old ones",
                record.id[:12],
                name,
                ", ".join(sorted(new)),
                ", ".join(sorted(old)),
            )
        record.results[name] = result.to_json()
    return []

"""`cnirun update`: change a running sandbox's bandwidth limits and published ports in place.

Only the plugins whose capability args change are re-applied, each with the attachment's
cached result (the plugin calls and why each is safe: cnirun.cni.update). The sandbox's lock
is held throughout, so `rm`, `stop` or another update waits. Write-ahead, so a kill -9 at
any point leaves a state that `gc` or the next `update` rolls back:

1. The record gets `updating` (the old and new capability args of each attachment, the old
   ports, and this process), and each attachment capability args that undo both policies
   (`merged`): a teardown (`rm -f`, gc) from here on removes whatever is in place.
2. cnirun.cni.update.reapply per attachment (it writes the cache the same way first).
   Between a bandwidth plugin's DEL and ADD, the qdiscs its DEL leaves on the host veth
   are removed (cnirun.host.links.clear_shaping).
3. The record gets the new args, ports and results, and loses `updating`.

A failing call re-applies the old args the same way (`rollback`) and the update fails with
the plugin's message. An `updating` left by a process that is gone is rolled back by `gc` and
by the next `update` of the sandbox (`settle`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from cnirun.cni import update as core
from cnirun.cni.cache import ResultCache
from cnirun.cni.config import PluginConfig, list_from_bytes
from cnirun.cni.types import JSONDict, Result
from cnirun.dockerargs import PortMapping
from cnirun.errors import CnirunError, UsageError
from cnirun.host import links
from cnirun.sandbox import published
from cnirun.sandbox.records import (
    AttachmentRecord,
    RecordStore,
    SandboxRecord,
    process_runs,
    process_start,
    same_process,
)
from cnirun.sandbox.registry import UP_STATES, Sandbox
from cnirun.testhooks import fault_point

BANDWIDTH = "bandwidth"
PORTS = "portMappings"


class Request(NamedTuple):
    """What `cnirun update` asks for. `bandwidth`: the new capability object ({} lifts the
    limit), None to leave it."""

    bandwidth: JSONDict | None = None
    publish: tuple[PortMapping, ...] = ()
    unpublish: tuple[PortMapping, ...] = ()


class Step(NamedTuple):
    """One attachment to re-apply: its index in the record, old and new capability args,
    and the indexes of the plugins whose capabilities change."""

    attachment: int
    old: JSONDict
    new: JSONDict
    plugins: tuple[int, ...]


def updatable(sandbox: Sandbox) -> None:
    """Refuse `update` of a sandbox that is not set up here: still starting, orphaned,
    damaged or another engine's (its workload may be stopped: the netns is still held)."""
    if sandbox.state not in (*UP_STATES, "exited", "created"):
        raise UsageError(
            f"sandbox {sandbox.record.id[:12]} is {sandbox.state}: it cannot be updated"
            " (`cnirun gc` reclaims an orphaned one; point DOCKER_HOST at another engine's)"
        )


def mapping(entry: dict[str, Any]) -> PortMapping:
    """A recorded `portMappings` entry as a PortMapping."""
    return PortMapping(
        str(entry.get("hostIP") or ""),
        int(entry.get("hostPort") or 0),
        int(entry.get("containerPort") or 0),
        str(entry.get("protocol") or "tcp").lower(),
    )


def _matches(held: PortMapping, spec: PortMapping) -> bool:
    """Whether `--unpublish SPEC` names `held`: same container port and protocol, and the
    same host port and address where SPEC gives them."""
    return (
        held.container_port == spec.container_port
        and held.protocol == spec.protocol
        and spec.host_port in (0, held.host_port)
        and spec.host_ip in ("", held.host_ip)
    )


def _target(record: SandboxRecord, capability: str, flag: str) -> int:
    """The attachment a capability goes to: the one that has it already, else the first
    whose chain takes it."""
    for index, attachment in enumerate(record.attachments):
        if capability in attachment.capability_args:
            return index
    for index, attachment in enumerate(record.attachments):
        net = list_from_bytes(attachment.config, attachment.source)
        if any(p.capabilities.get(capability) for p in net.plugins):
            return index
    raise UsageError(
        f"{flag} needs a network whose plugins accept the {capability!r} capability;"
        f" sandbox {record.id[:12]} has none"
    )


def plan(
    record: SandboxRecord, request: Request, store: RecordStore, cache_dir: str
) -> tuple[list[Step], list[dict[str, Any]]]:
    """The attachments to re-apply and the sandbox's new ports (checked: Docker's errors).

    Raises:
        UsageError: a flag the sandbox's chains cannot take, or an unpublish of nothing.
        PortInUseError: a new host port is taken (cnirun.sandbox.published's rule).
        CnirunError: an attachment's plugin is not safe to re-apply (cnirun.cni.update).
    """
    new_caps = [dict(a.capability_args) for a in record.attachments]
    ports = [mapping(p) for p in record.ports]
    if request.unpublish or request.publish:
        index = _target(record, PORTS, "--publish")
        for spec in request.unpublish:
            gone = [p for p in ports if _matches(p, spec)]
            if not gone:
                raise UsageError(f"--unpublish {_spec(spec)}: sandbox {record.id[:12]} does not"
                                 " publish it (see `cnirun port`)")  # fmt: skip
            ports = [p for p in ports if p not in gone]
        added = published.check_ports(
            request.publish, store, ResultCache(cache_dir),
            exclude=record.cni_container_id, kept=ports,
        )  # fmt: skip
        ports += added
        new_caps[index][PORTS] = [p.to_cni() for p in ports]
        if not ports:
            del new_caps[index][PORTS]
    if request.bandwidth is not None:
        index = _target(record, BANDWIDTH, "--bandwidth")
        new_caps[index][BANDWIDTH] = request.bandwidth
        if not request.bandwidth:
            del new_caps[index][BANDWIDTH]
    steps = []
    for index, attachment in enumerate(record.attachments):
        net = list_from_bytes(attachment.config, attachment.source)
        plugins = core.changed(net, attachment.capability_args, new_caps[index])
        core.safe(net, plugins)
        if plugins:
            steps.append(Step(index, attachment.capability_args, new_caps[index], tuple(plugins)))
    return steps, [p.to_cni() for p in ports]


def _spec(spec: PortMapping) -> str:
    host = f"{spec.host_ip}:" if spec.host_ip else ""
    host += f"{spec.host_port}:" if spec.host_port else ""
    return f"{host}{spec.container_port}/{spec.protocol}"


def _between(plugin: PluginConfig, cached: Result) -> None:
    """After a plugin's DEL: what its ADD needs gone first (bandwidth's host-veth qdiscs)."""
    fault_point("update-deleted")
    if plugin.type != "bandwidth":
        return
    for interface in cached.data.get("interfaces") or []:
        if not interface.get("sandbox") and isinstance(interface.get("name"), str):
            links.clear_shaping(interface["name"])


def _apply(record: SandboxRecord, step: Step, old: JSONDict, new: JSONDict) -> Result:
    """Re-apply one step's plugins: DEL with `old`'s args, ADD with `new`'s."""
    attachment = record.attachments[step.attachment]
    net = list_from_bytes(attachment.config, attachment.source)
    rt = attachment.runtime_conf(record)
    return core.reapply(
        record.cni(),
        net,
        rt._replace(capability_args=old),
        rt._replace(capability_args=new),
        step.plugins,
        _between,
    )


def _with_caps(attachment: AttachmentRecord, caps: JSONDict) -> AttachmentRecord:
    return attachment._replace(capability_args=caps)


def update(store: RecordStore, record_id: str, request: Request, cache_dir: str) -> list[str]:
    """Apply `request` to the sandbox; return one line per attachment changed.

    Raises:
        CnirunError: refused (nothing done), or failed (the previous policy restored, or
            left for `gc` to restore: the message says which).
    """
    with store.lock(record_id) as exists:
        if not exists:
            raise UsageError(f"sandbox {record_id[:12]} is gone")
        record = store.load(record_id)
        if record.netns_path == "" or not record.attachments:
            raise UsageError(f"sandbox {record_id[:12]} has no CNI network to update")
        if interrupted(record):
            settle(store, record)
        steps, ports = plan(record, request, store, cache_dir)
        if not steps:
            return []
        old_ports = record.ports
        record.updating = {
            "pid": os.getpid(),
            "start": process_start(os.getpid()),
            "ports": old_ports,
            "steps": [{"attachment": s.attachment, "from": s.old, "to": s.new} for s in steps],
        }  # fmt: skip
        for step in steps:
            attachment = record.attachments[step.attachment]
            record.attachments[step.attachment] = _with_caps(
                attachment, core.merged(step.old, step.new)
            )
        record.ports = _merged_ports(old_ports, ports)  # held until done: no one takes them
        store.save(record)
        fault_point("update-recorded")
        done: list[Step] = []
        try:
            for step in steps:
                done.append(step)
                result = _apply(record, step, step.old, step.new)
                record.results[record.attachments[step.attachment].network] = result.to_json()
            fault_point("update-applied")
        except CnirunError as e:
            failure = str(e)
            for step in steps[len(done) :]:  # never called: only the record to restore
                attachment = record.attachments[step.attachment]
                record.attachments[step.attachment] = _with_caps(attachment, step.old)
            try:
                _roll_back(record, done)
            except CnirunError as again:
                raise CnirunError(
                    f"update failed: {failure}; restoring the previous policy failed too: "
                    f"{again} (`cnirun gc` or another `cnirun update` retries)"
                ) from None
            store.save(record)
            raise CnirunError(f"update failed, previous policy restored: {failure}") from None
        for step in steps:
            attachment = record.attachments[step.attachment]
            record.attachments[step.attachment] = _with_caps(attachment, step.new)
        record.ports = ports
        record.updating = None
        store.save(record)
        return [
            f"{record.attachments[s.attachment].network}: "
            + ", ".join(_plugin_type(record, s, i) for i in s.plugins)
            + " re-applied"
            for s in steps
        ]


def _plugin_type(record: SandboxRecord, step: Step, index: int) -> str:
    attachment = record.attachments[step.attachment]
    return list_from_bytes(attachment.config, attachment.source).plugins[index].type


def _merged_ports(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[Any]:
    return [*old, *(p for p in new if p not in old)]


def _roll_back(record: SandboxRecord, steps: Sequence[Step]) -> None:
    """Re-apply the old args of `steps` (DEL with what undoes both), last first; on success
    the record (not saved here) is as before the update."""
    for step in reversed(steps):
        result = _apply(record, step, core.merged(step.old, step.new), step.old)
        attachment = record.attachments[step.attachment]
        record.attachments[step.attachment] = _with_caps(attachment, step.old)
        record.results[attachment.network] = result.to_json()
    record.ports = list(record.updating["ports"]) if record.updating else record.ports
    record.updating = None


def interrupted(record: SandboxRecord) -> bool:
    """Whether the record has an update whose process is gone (killed mid-way)."""
    updating = record.updating
    if not updating:
        return False
    pid, start = updating.get("pid"), updating.get("start")
    alive = isinstance(pid, int) and process_runs(pid) and same_process(pid, str(start))
    return not alive


def settle(store: RecordStore, record: SandboxRecord) -> None:
    """Roll back an interrupted update: the old args re-applied (whatever step it reached:
    each re-application is a DEL of both policies and an ADD), the record as before it.

    Raises:
        CnirunError: a plugin call failed (the record keeps `updating`, for a retry).
    """
    updating = record.updating or {}
    try:
        steps = []
        for entry in updating.get("steps") or []:
            index, old, new = entry["attachment"], entry["from"], entry["to"]
            if not 0 <= index < len(record.attachments):
                raise CnirunError(f"its record names attachment {index}, which it has not")
            attachment = record.attachments[index]
            net = list_from_bytes(attachment.config, attachment.source)
            plugins = core.changed(net, old, new)  # from the chain: never the record's word
            core.safe(net, plugins)
            steps.append(Step(index, old, new, tuple(plugins)))
        _roll_back(record, steps)
    except CnirunError as e:
        raise CnirunError(
            f"sandbox {record.id[:12]}: cannot roll back its interrupted update: {e}"
        ) from None
    store.save(record)


def settle_locked(store: RecordStore, record_id: str) -> list[str]:
    """`settle` under the sandbox's lock, if the record still has an interrupted update;
    returns what failed (gc's way)."""
    with store.lock(record_id) as exists:
        if not exists:
            return []
        record = store.load(record_id)
        if not interrupted(record):
            return []
        try:
            settle(store, record)
        except CnirunError as e:
            return [str(e)]
        return []

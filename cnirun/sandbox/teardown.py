"""Idempotent, best-effort teardown of a sandbox from its record.

CNI DEL for each attachment in reverse order (with the recorded config, args and capability
args, so an edited or deleted conflist is still undone correctly), overlapped with removing
the infra container — the bind-mounted netns keeps the interfaces alive until DEL — and then
the sandbox's files, the netns holder and the record. Every failure is collected, none stops
the rest.
"""

from __future__ import annotations

import logging
import threading

from cnirun.attach import Attachment, del_all
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf
from cnirun.docker.runtime import Docker
from cnirun.errors import CnirunError
from cnirun.host import netns
from cnirun.sandbox.records import RecordStore, SandboxRecord

log = logging.getLogger(__name__)


def teardown(record: SandboxRecord, store: RecordStore, docker: Docker) -> list[str]:
    """Undo everything the record says was set up; return what could not be undone.

    Holds the sandbox's lock: of two teardowns at once (`rm` twice, `rm` and `gc`), the
    second waits, then finds the record gone and has nothing to do.
    """
    with store.lock(record.id) as recorded:
        if not recorded:
            return []
        return _teardown(record, store, docker)


def recorded_attachments(record: SandboxRecord) -> tuple[list[Attachment], list[str]]:
    """The record's attachments as the core takes them; plus those whose config is unreadable."""
    attachments, failures = [], []
    for recorded in record.attachments:
        try:
            net = list_from_bytes(recorded.config, recorded.source)
        except CnirunError as e:
            failures.append(f"network {recorded.network} ({recorded.ifname}): {e}")
            continue
        rt = RuntimeConf(
            container_id=record.cni_container_id,
            netns=record.netns_path,
            ifname=recorded.ifname,
            cni_args=tuple((k, v) for k, v in recorded.cni_args),
            capability_args=recorded.capability_args,
        )
        attachments.append(Attachment(net, rt))
    return attachments, failures


def _teardown(record: SandboxRecord, store: RecordStore, docker: Docker) -> list[str]:
    failures: list[str] = []

    def remove_infra() -> None:
        try:
            docker.remove(record.infra_id or record.infra_name)
        except CnirunError as e:
            failures.append(str(e))

    remover = threading.Thread(target=remove_infra, name="remove-infra")
    remover.start()
    cni = CNIConfig(record.plugin_dirs, record.cache_dir, timeout=record.cni_timeout)
    attachments, unreadable = recorded_attachments(record)
    failures += unreadable + del_all(cni, attachments)
    remover.join()
    try:
        store.delete_files(record.id)
    except CnirunError as e:
        failures.append(str(e))
    if record.netns_name:
        try:
            netns.release_netns(record.netns_name)
        except CnirunError as e:
            failures.append(str(e))
    if not failures:
        store.delete(record.id)
    else:
        log.debug("keeping state %s for `cnirun gc`", store.path(record.id))
    return failures

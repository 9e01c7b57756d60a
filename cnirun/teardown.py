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

from cnirun import netns
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf
from cnirun.docker_runtime import Docker
from cnirun.errors import CnirunError
from cnirun.state import SandboxRecord, fault_point, sandbox_lock

log = logging.getLogger(__name__)


def teardown(record: SandboxRecord, docker: Docker) -> list[str]:
    """Undo everything the record says was set up; return what could not be undone.

    Holds the sandbox's lock: of two teardowns at once (`rm` twice, `rm` and `gc`), the
    second waits, then finds the record gone and has nothing to do.
    """
    with sandbox_lock(record.id) as recorded:
        if not recorded:
            return []
        return _teardown(record, docker)


def _teardown(record: SandboxRecord, docker: Docker) -> list[str]:
    failures: list[str] = []

    def remove_infra() -> None:
        try:
            docker.remove(record.infra_id or record.infra_name)
        except CnirunError as e:
            failures.append(str(e))

    remover = threading.Thread(target=remove_infra, name="remove-infra")
    remover.start()
    cni = CNIConfig(record.plugin_dirs, record.cache_dir, timeout=record.cni_timeout)
    for attachment in reversed(record.attachments):
        try:
            net = list_from_bytes(attachment.config, attachment.source)
            rt = RuntimeConf(
                container_id=record.cni_container_id,
                netns=record.netns_path,
                ifname=attachment.ifname,
                cni_args=tuple((k, v) for k, v in attachment.cni_args),
                capability_args=attachment.capability_args,
            )
            cni.del_network_list(net, rt)
            fault_point("teardown")
        except CnirunError as e:
            failures.append(f"network {attachment.network} ({attachment.ifname}): {e}")
    remover.join()
    try:
        record.delete_files()
    except CnirunError as e:
        failures.append(str(e))
    if record.netns_name:
        try:
            netns.release_netns(record.netns_name)
        except CnirunError as e:
            failures.append(str(e))
    if not failures:
        record.delete()
    else:
        log.debug("keeping state %s for `cnirun gc`", record.path)
    return failures

"""Sandboxes that outlive a command: listing, inspecting, removing, and reclaiming leftovers.

State on disk plus reconciliation is the design (Docker has no hooks for us): a sandbox is
live while the cnirun process that owns it runs, or, once detached, while its workload runs.
Anything else that is cnirun's — records, infra containers, netns holders, CNI attachments
whose container ID starts with `cnirun-` — is reclaimed by `gc`, and nothing else is touched.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NamedTuple

from cnirun import __version__, netns, state
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import CacheEntry, ResultCache, cache_dir_from_env
from cnirun.cni.config import list_from_bytes
from cnirun.cni.invoke import plugin_dirs
from cnirun.cni.version import parse_version
from cnirun.docker_runtime import (
    LABEL_ROLE,
    LABEL_SANDBOX,
    LABEL_STATE_DIR,
    ROLE_INFRA,
    ROLE_WORKLOAD,
    Docker,
)
from cnirun.errors import CnirunError, UsageError
from cnirun.etcfiles import ETC_FILES
from cnirun.state import CNI_ID_PREFIX, SandboxRecord
from cnirun.teardown import teardown

log = logging.getLogger(__name__)

GC_TIMEOUT = 60.0


class Sandbox(NamedTuple):
    """A recorded sandbox joined with what Docker says about its containers."""

    record: SandboxRecord
    workload: dict[str, Any] | None = None
    infra: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        """running, starting (setup in progress), exited, or orphaned (its owner is gone)."""
        if self.record.owner_alive():
            return "starting" if self.record.detach and self.workload is None else "running"
        if self.record.detach and self._workload_running():
            return "running"
        if self.record.detach and self.workload is not None:
            return "exited"
        return "orphaned"

    def _workload_running(self) -> bool:
        return self.workload is not None and self.workload.get("State") == "running"

    @property
    def live(self) -> bool:
        """Owned by a running cnirun, or detached with its workload still running. A
        foreground run whose cnirun died is not live, even if its workload still runs."""
        if self.record.owner_alive():
            return True
        return self.record.detach and self._workload_running()

    def addresses(self) -> list[str]:
        found: list[str] = []
        for result in self.record.results.values():
            for ip in result.get("ips", []):
                found.append(ip["address"])
            for key in ("ip4", "ip6"):
                if key in result:
                    found.append(result[key]["ip"])
        return found

    def row(self) -> dict[str, Any]:
        workload = self.workload or {}
        names = workload.get("Names") or [""]
        return {
            "sandbox": self.record.id,
            "workload": (workload.get("Id") or "")[:12],
            "name": names[0].lstrip("/"),
            "image": self.record.image,
            "infra": self.record.infra_name,
            "networks": [a.network for a in self.record.attachments],
            "addresses": self.addresses(),
            "ports": self.record.ports,
            "state": self.state,
            "created": self.record.created,
        }

    def inspect(self) -> dict[str, Any]:
        return {
            **self.row(),
            "workloadId": (self.workload or {}).get("Id", ""),
            "infraId": self.record.infra_id,
            "hostname": self.record.hostname,
            "netns": self.record.netns_path,
            # The workload's own copies (Docker writes none for the infra): a sidecar joining
            # the infra's network can bind-mount them too.
            "etcFiles": {name: os.path.join(self.record.files_dir, name) for name in ETC_FILES},
            "cniContainerId": self.record.cni_container_id,
            "results": self.record.results,
            "attachments": [
                {"network": a.network, "ifname": a.ifname, "capabilityArgs": a.capability_args}
                for a in self.record.attachments
            ],
            "cnirunVersion": __version__,
        }


def load_all(docker: Docker) -> tuple[list[Sandbox], list[str]]:
    """Every readable sandbox record with its containers; plus the unreadable record IDs."""
    by_sandbox: dict[str, dict[str, dict[str, Any]]] = {}
    for container in docker.containers():
        labels = container.get("Labels") or {}
        role = labels.get(LABEL_ROLE, "")
        by_sandbox.setdefault(labels.get(LABEL_SANDBOX, ""), {})[role] = container
    sandboxes, broken = [], []
    for sandbox_id in state.list_ids():
        try:
            record = state.load(sandbox_id)
        except CnirunError as e:
            log.debug("%s", e)
            broken.append(sandbox_id)
            continue
        found = by_sandbox.get(sandbox_id, {})
        sandboxes.append(Sandbox(record, found.get(ROLE_WORKLOAD), found.get(ROLE_INFRA)))
    return sandboxes, broken


def find(docker: Docker, ref: str) -> Sandbox:
    """A sandbox by workload ID, name or unique prefix, or by sandbox ID (prefix)."""
    sandboxes, _ = load_all(docker)
    matches = []
    for sandbox in sandboxes:
        workload = sandbox.workload or {}
        names = [n.lstrip("/") for n in workload.get("Names") or []]
        ids = [workload.get("Id", ""), sandbox.record.id]
        if ref in names or any(i and i.startswith(ref) for i in ids):
            matches.append(sandbox)
    if not matches:
        raise UsageError(f"no such sandbox: {ref}")
    if len(matches) > 1:
        raise UsageError(f"{ref} matches {len(matches)} sandboxes: use a longer prefix")
    return matches[0]


def remove(docker: Docker, sandbox: Sandbox, force: bool, stop_only: bool = False) -> list[str]:
    """Stop (and unless `stop_only`, remove) the workload, then tear the sandbox down."""
    workload = sandbox.workload
    if workload is not None:
        running = workload.get("State") == "running"
        if running and not force and not stop_only:
            raise UsageError(
                f"sandbox {sandbox.record.id[:12]} is running: stop it first or use rm -f"
            )
        if running:
            docker.stop(workload["Id"])
        if not stop_only:
            docker.remove(workload["Id"])
    return teardown(sandbox.record, docker)


class GcReport:
    """What `gc` did (or, with --dry-run, would do)."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.failures: list[str] = []


def gc(docker: Docker, dry_run: bool = False, cache_dir: str | None = None) -> GcReport:
    """Reclaim everything of cnirun's whose owner is gone; never touch live sandboxes."""
    report = GcReport()
    sandboxes, broken = load_all(docker)
    live_ids = {s.record.id for s in sandboxes if s.live}
    for sandbox in sandboxes:
        if sandbox.live:
            continue
        report.actions.append(f"sandbox {sandbox.record.id}: {sandbox.state}, tearing down")
        if dry_run:
            continue
        if sandbox.workload is not None and not sandbox.record.detach:
            # Its cnirun died: stop the orphaned workload as the run would have.
            try:
                docker.kill(sandbox.workload["Id"])
                if sandbox.record.remove:
                    docker.remove(sandbox.workload["Id"])
            except CnirunError as e:
                report.failures.append(str(e))
        report.failures.extend(teardown(sandbox.record, docker))
    for sandbox_id in broken:
        report.actions.append(f"sandbox {sandbox_id}: unreadable record removed")
        if not dry_run:
            try:
                state.delete_files(sandbox_id)
            except CnirunError as e:
                report.failures.append(str(e))
            os.unlink(state.record_path(sandbox_id))
    known = {s.record.id for s in sandboxes}
    # Sandboxes of another state dir (another cnirun installation) are not ours to judge.
    mine = state.state_dir()
    containers = docker.containers()
    foreign = {
        labels.get(LABEL_SANDBOX, "")
        for labels in (c.get("Labels") or {} for c in containers)
        if labels.get(LABEL_STATE_DIR, mine) != mine
    }
    protected = live_ids | foreign
    # Infra containers whose sandbox is gone or dead.
    for container in containers:
        labels = container.get("Labels") or {}
        owner = labels.get(LABEL_SANDBOX, "")
        if labels.get(LABEL_ROLE) != ROLE_INFRA or owner in protected:
            continue
        if owner in known and not dry_run:
            continue  # already removed by the teardown above
        report.actions.append(f"infra container {container['Id'][:12]}: removed")
        if not dry_run:
            try:
                docker.remove(container["Id"])
            except CnirunError as e:
                report.failures.append(str(e))
    # Netns holders without a live sandbox.
    for name in netns.list_held(CNI_ID_PREFIX):
        owner = name[len(CNI_ID_PREFIX) :]
        if owner in protected or (owner in known and not dry_run) or privnet_live(name):
            continue
        report.actions.append(f"netns /run/netns/{name}: released")
        if not dry_run:
            try:
                netns.release_netns(name)
            except CnirunError as e:
                report.failures.append(str(e))
    _gc_attachments(report, protected, known, dry_run, cache_dir_from_env(cache_dir))
    return report


def _gc_attachments(
    report: GcReport, protected: set[str], known: set[str], dry_run: bool, cache_dir: str
) -> None:
    """DEL cached attachments of cnirun's dead sandboxes with the cached config, then run
    CNI GC (1.1.0 networks) with every attachment still in the cache as the valid set."""
    cache = ResultCache(cache_dir)
    cni = CNIConfig(plugin_dirs(), cache_dir, timeout=GC_TIMEOUT)
    entries = cache.attachments()
    gc_networks: dict[str, CacheEntry] = {}
    for entry in entries:
        owner = entry.container_id[len(CNI_ID_PREFIX) :]
        if not entry.container_id.startswith(CNI_ID_PREFIX) or owner in protected:
            continue
        if privnet_live(entry.container_id):
            continue
        if owner in known and not dry_run:
            continue  # its sandbox teardown above already handled it
        report.actions.append(
            f"attachment {entry.network_name}/{entry.container_id}/{entry.ifname}: deleted"
        )
        if dry_run:
            continue
        try:
            net = list_from_bytes(entry.config, entry.path)
            cni.del_network_list(net, entry.runtime_conf())
            if parse_version(net.cni_version or "0.1.0") >= (1, 1, 0):
                gc_networks[net.name] = entry
        except CnirunError as e:
            report.failures.append(f"attachment {entry.path}: {e}")
    for name, entry in gc_networks.items():
        remaining = [
            (e.container_id, e.ifname) for e in cache.attachments() if e.network_name == name
        ]
        try:
            cni.gc_network_list(list_from_bytes(entry.config, entry.path), remaining)
            report.actions.append(f"network {name}: CNI GC with {len(remaining)} valid attachments")
        except CnirunError as e:
            report.failures.append(f"network {name}: CNI GC: {e}")


def _detached_and_unowned(sandbox_id: str) -> bool:
    try:
        record = state.load(sandbox_id)
    except CnirunError:
        return False
    return record.detach and not record.owner_alive()


def reconcile_quietly() -> None:
    """`reconcile` for commands that do not otherwise need Docker: problems are only logged."""
    try:
        reconcile(Docker())
    except CnirunError as e:
        log.debug("reconciling sandboxes: %s", e)


def privnet_live(name: str) -> bool:
    """A `priv-net-run` session (netns and CNI container ID share its name) still running."""
    from cnirun import privnet

    return name.startswith(privnet.NETNS_PREFIX) and privnet.is_live(name)


def reconcile(docker: Docker) -> None:
    """The cheap part of gc, run at the start of commands: tear down detached sandboxes
    whose workload has exited or vanished. Asks Docker only when such sandboxes exist."""
    if not any(_detached_and_unowned(sandbox_id) for sandbox_id in state.list_ids()):
        return
    sandboxes, _ = load_all(docker)
    for sandbox in sandboxes:
        if sandbox.record.detach and not sandbox.live:
            failures = teardown(sandbox.record, docker)
            for failure in failures:
                log.warning("reclaiming sandbox %s: %s", sandbox.record.id[:12], failure)

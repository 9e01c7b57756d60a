"""What `cnirun gc` reclaims: one selection (`reclaimable`), which `gc --dry-run` and `doctor`
show and `gc` carries out, so the three can never disagree.

Reclaimed: every recorded sandbox that is not live (see Sandbox.live), unreadable records,
and anything of cnirun's without a live sandbox — infra containers, netns holders, CNI
attachments whose container ID starts with `cnirun-`. Never touched: live sandboxes, live
priv-net-run sessions, sandboxes of another state dir, and anyone else's attachments. After
DELing attachments of a 1.1.0 network, gc runs CNI GC with every attachment left as valid.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

from cnirun import privnet
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import CacheEntry, ResultCache
from cnirun.cni.config import list_from_bytes
from cnirun.cni.version import parse_version
from cnirun.docker.runtime import LABEL_ROLE, LABEL_SANDBOX, LABEL_STATE_DIR, ROLE_INFRA, Docker
from cnirun.errors import CnirunError
from cnirun.host import netns
from cnirun.sandbox.records import CNI_ID_PREFIX, RecordStore
from cnirun.sandbox.registry import Sandbox, load_all
from cnirun.sandbox.teardown import teardown
from cnirun.settings import Settings

GC_TIMEOUT = 60.0


class Reclaim(NamedTuple):
    """One thing to reclaim: what it is (as gc reports it), and how; `run` returns failures."""

    what: str
    run: Callable[[], list[str]]


class GcReport:
    """What `gc` did (or, with --dry-run, would do)."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.failures: list[str] = []


def _attempt(action: Callable[[], object]) -> list[str]:
    try:
        action()
    except CnirunError as e:
        return [str(e)]
    return []


def _attempting(action: Callable[[], object]) -> Callable[[], list[str]]:
    return functools.partial(_attempt, action)


class _Selection:
    """The state gc judges by, read once."""

    def __init__(self, docker: Docker, store: RecordStore, settings: Settings) -> None:
        self.docker, self.store, self.settings = docker, store, settings
        # What exists first, then the records: a run records a sandbox before creating any of
        # its containers, netns holders or attachments, so whatever is listed here and
        # belongs to a live run has its record read below (the other order races a new run).
        self.containers = docker.containers()
        self.held = netns.list_held(CNI_ID_PREFIX)
        self.cached = ResultCache(settings.cache_dir).attachments()
        self.sandboxes, self.broken = load_all(docker, store)
        mine = store.state_dir
        # Sandboxes of another state dir (another cnirun installation) are not ours to judge.
        foreign = {
            labels.get(LABEL_SANDBOX, "")
            for labels in (c.get("Labels") or {} for c in self.containers)
            if labels.get(LABEL_STATE_DIR, mine) != mine
        }
        live = {s.record.id for s in self.sandboxes if s.live}
        # Anything of a recorded sandbox goes with its record's teardown, or stays with it.
        self.skip = live | foreign | {s.record.id for s in self.sandboxes}
        self.cni = CNIConfig(settings.plugin_dirs, settings.cache_dir, timeout=GC_TIMEOUT)
        self.gc_networks: dict[str, CacheEntry] = {}

    def items(self) -> list[Reclaim]:
        items = [self._sandbox(s) for s in self.sandboxes if not s.live]
        items += [self._broken(sandbox_id) for sandbox_id in self.broken]
        for container in self.containers:
            labels = container.get("Labels") or {}
            if labels.get(LABEL_ROLE) == ROLE_INFRA and labels.get(LABEL_SANDBOX) not in self.skip:
                cid = container["Id"]
                remove = functools.partial(self.docker.remove, cid)
                items.append(Reclaim(f"infra container {cid[:12]}: removed", _attempting(remove)))
        for name in self.held:
            if name[len(CNI_ID_PREFIX) :] in self.skip or privnet.is_live(name):
                continue
            release = functools.partial(netns.release_netns, name)
            items.append(Reclaim(f"netns /run/netns/{name}: released", _attempting(release)))
        for entry in self.cached:
            cid = entry.container_id
            if not cid.startswith(CNI_ID_PREFIX) or cid[len(CNI_ID_PREFIX) :] in self.skip:
                continue
            if privnet.is_live(cid):
                continue
            what = f"attachment {entry.network_name}/{cid}/{entry.ifname}: deleted"
            items.append(Reclaim(what, functools.partial(self._del_attachment, entry)))
        return items

    def _sandbox(self, sandbox: Sandbox) -> Reclaim:
        def run() -> list[str]:
            failures: list[str] = []
            if sandbox.workload is not None and not sandbox.record.detach:
                # Its cnirun died: stop the orphaned workload as the run would have.
                workload_id = sandbox.workload["Id"]
                failures += _attempt(lambda: self.docker.kill(workload_id))
                if sandbox.record.remove and not failures:
                    failures += _attempt(lambda: self.docker.remove(workload_id))
            return failures + teardown(sandbox.record, self.store, self.docker)

        return Reclaim(f"sandbox {sandbox.record.id}: {sandbox.state}, tearing down", run)

    def _broken(self, sandbox_id: str) -> Reclaim:
        run = _attempting(functools.partial(self.store.discard, sandbox_id))
        return Reclaim(f"sandbox {sandbox_id}: invalid record removed", run)

    def _del_attachment(self, entry: CacheEntry) -> list[str]:
        try:
            net = list_from_bytes(entry.config, entry.path)
            self.cni.del_network_list(net, entry.runtime_conf())
        except CnirunError as e:
            return [f"attachment {entry.path}: {e}"]
        if parse_version(net.cni_version or "0.1.0") >= (1, 1, 0):
            self.gc_networks[net.name] = entry
        return []

    def cni_gc(self, report: GcReport) -> None:
        """CNI GC of each 1.1.0 network gc DELeted from, every cached attachment left valid."""
        cache = ResultCache(self.settings.cache_dir)
        for name, entry in self.gc_networks.items():
            remaining = [
                (e.container_id, e.ifname) for e in cache.attachments() if e.network_name == name
            ]
            try:
                self.cni.gc_network_list(list_from_bytes(entry.config, entry.path), remaining)
                report.actions.append(
                    f"network {name}: CNI GC with {len(remaining)} valid attachments"
                )
            except CnirunError as e:
                report.failures.append(f"network {name}: CNI GC: {e}")


def reclaimable(docker: Docker, store: RecordStore, settings: Settings) -> list[str]:
    """What gc would reclaim now, one line each (doctor's and `gc --dry-run`'s view)."""
    return [item.what for item in _Selection(docker, store, settings).items()]


def gc(docker: Docker, store: RecordStore, settings: Settings, dry_run: bool = False) -> GcReport:
    """Reclaim everything of cnirun's whose owner is gone; never touch live sandboxes."""
    report = GcReport()
    selection = _Selection(docker, store, settings)
    for item in selection.items():
        report.actions.append(item.what)
        if not dry_run:
            report.failures += item.run()
    selection.cni_gc(report)
    return report

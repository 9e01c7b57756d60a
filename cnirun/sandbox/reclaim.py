"""What `cnirun gc` reclaims: one selection (`reclaimable`), which `gc --dry-run` and `doctor`
show and `gc` carries out, so the three can never disagree.

Reclaimed: every recorded sandbox that is not live (see Sandbox.live), unreadable records,
and anything of cnirun's without a live sandbox — infra containers, netns holders, CNI
attachments whose container ID starts with `cnirun-`. Never touched: live sandboxes (another
engine's included), live priv-net-run sessions, sandboxes of another state dir, anyone else's
attachments, the infra of a workload that is up, and a namespace some process still lives in
(what has no record is judged by what is there). A live sandbox keeps everything but an
attachment whose `network connect` or `disconnect` died midway: that one is DELeted and
dropped from it. After DELing attachments of a 1.1.0 network, gc runs CNI GC with every
attachment left as valid.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from cnirun import privnet
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import CacheEntry, ResultCache
from cnirun.cni.config import list_from_bytes
from cnirun.cni.version import parse_version
from cnirun.docker.runtime import (
    LABEL_ROLE,
    LABEL_SANDBOX,
    LABEL_STATE_DIR,
    ROLE_INFRA,
    ROLE_WORKLOAD,
    Docker,
)
from cnirun.errors import CnirunError
from cnirun.host import netns
from cnirun.sandbox import joins, owners, pool, update
from cnirun.sandbox.records import CNI_ID_PREFIX, RecordStore
from cnirun.sandbox.registry import UP_STATES, Sandbox, load_all
from cnirun.sandbox.teardown import teardown
from cnirun.settings import Settings

log = logging.getLogger(__name__)

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

    def __init__(
        self, docker: Docker, store: RecordStore, settings: Settings, with_pool: bool = False
    ) -> None:
        self.docker, self.store, self.settings = docker, store, settings
        self.with_pool = with_pool
        # What exists first, then the records: a run records a sandbox before creating any of
        # its containers, netns holders or attachments, so whatever is listed here and
        # belongs to a live run has its record read below (the other order races a new run).
        self.containers = docker.containers()
        self.held = netns.list_held(CNI_ID_PREFIX)
        self.cached = ResultCache(settings.cache_dir).attachments()
        self.sandboxes, self.broken = load_all(docker, store)
        self.pooled = pool.members(store.state_dir)  # judged on their own: see _pool_items
        mine = store.state_dir
        # Sandboxes of another state dir (another cnirun installation) are not ours to judge.
        foreign = {
            labels.get(LABEL_SANDBOX, "")
            for labels in (c.get("Labels") or {} for c in self.containers)
            if labels.get(LABEL_STATE_DIR, mine) != mine
        }
        live = {s.record.id for s in self.sandboxes if s.live}
        # A workload that is up keeps its infra (a restart would rejoin it), record or not.
        up = {
            labels.get(LABEL_SANDBOX, "")
            for c in self.containers
            for labels in [c.get("Labels") or {}]
            if labels.get(LABEL_ROLE) == ROLE_WORKLOAD and c.get("State") in UP_STATES
        }
        # Anything of a recorded sandbox goes with its record's teardown, or stays with it.
        self.up = up
        self.skip = live | foreign | up | {s.record.id for s in self.sandboxes} | set(self.pooled)
        self._removed_infra: list[str] = []  # leftover infra containers gc removes
        self.cni = self._cni(settings.plugin_dirs)
        self.gc_networks: dict[str, CacheEntry] = {}
        self.undeleted: set[str] = set()  # netns paths with an attachment whose DEL failed

    def _cni(self, plugin_dirs: Sequence[str]) -> CNIConfig:
        """GC's runtime: GC_TIMEOUT a call, DELs no longer than the settings' DEL timeout."""
        return CNIConfig(
            plugin_dirs,
            self.settings.cache_dir,
            timeout=GC_TIMEOUT,
            del_timeout=min(GC_TIMEOUT, self.settings.cni_del_timeout),
        )

    def items(self) -> list[Reclaim]:
        """In the order they must happen: sandboxes, then infra containers without a record,
        then their attachments (DEL while the netns is still held), then the holders."""
        items = [self._sandbox(s) for s in self.sandboxes if not s.live]
        # A live sandbox whose `cnirun update` was killed: its old policy re-applied.
        items += [
            self._interrupted_update(s.record.id)
            for s in self.sandboxes
            if s.live and not s.elsewhere and update.interrupted(s.record)
        ]
        items += self._interrupted_joins()
        # An unreadable record of a cnirun that still runs is that run's to finish.
        mine = self.store.state_dir
        # An unreadable record of a workload that is up stays too: `ps -a` lists it as
        # damaged, and `rm -f` removes both.
        items += [
            self._broken(i)
            for i in self.broken
            if not owners.not_mine(i, mine) and i not in self.up
        ]
        items += self._pool_items()
        for sandbox_id in self.store.unrecorded():
            if self._leftover(sandbox_id):
                discard = _attempting(functools.partial(self.store.discard, sandbox_id))
                items.append(
                    Reclaim(f"sandbox {sandbox_id}: files without a record removed", discard)
                )
        for container in self.containers:
            labels = container.get("Labels") or {}
            owner = labels.get(LABEL_SANDBOX, "")
            if labels.get(LABEL_ROLE) == ROLE_INFRA and self._leftover(owner):
                cid = container["Id"]
                self._removed_infra.append(cid)
                remove = functools.partial(self.docker.remove, cid)
                items.append(Reclaim(f"infra container {cid[:12]}: removed", _attempting(remove)))
        for entry in self.cached:
            cid = entry.container_id
            if not cid.startswith(CNI_ID_PREFIX) or not self._leftover(cid[len(CNI_ID_PREFIX) :]):
                continue
            if privnet.is_live(cid) or self._in_use(entry.netns):
                continue
            what = f"attachment {entry.network_name}/{cid}/{entry.ifname}: deleted"
            items.append(Reclaim(what, functools.partial(self._del_attachment, entry)))
        for name in self.held:
            if not self._leftover(name[len(CNI_ID_PREFIX) :]) or privnet.is_live(name):
                continue
            if self._in_use(netns.netns_path(name)):
                continue
            release = functools.partial(self._release, name)
            items.append(Reclaim(f"netns /run/netns/{name}: released", release))
        return items

    def _pool_items(self) -> list[Reclaim]:
        """Infra pool members that are not ready to be claimed (all of them with `--all`):
        a stopped or vanished container, or a marker whose filler died before making one."""
        items = []
        infra = {
            (c.get("Labels") or {}).get(LABEL_SANDBOX, ""): c
            for c in self.containers
            if (c.get("Labels") or {}).get(LABEL_ROLE) == ROLE_INFRA
        }
        for sandbox_id in self.pooled:
            container = infra.get(sandbox_id)
            if container is None:
                marker = pool.read_marker(self.store.state_dir, sandbox_id)
                if marker is not None and marker.filler_alive():
                    continue  # being made
                forget = functools.partial(pool.forget, self.store.state_dir, sandbox_id)
                what = f"infra pool member {sandbox_id}: stale marker removed"
                items.append(Reclaim(what, _attempting(forget)))
            elif self.with_pool or container.get("State") != "running":
                cid = container["Id"]
                run = functools.partial(self._remove_member, sandbox_id, cid)
                items.append(Reclaim(f"infra pool member {cid[:12]}: removed", run))
        return items

    def _remove_member(self, sandbox_id: str, container_id: str) -> list[str]:
        # The marker first: a run that claims it meanwhile finds it gone and makes its own.
        try:
            if not pool.forget(self.store.state_dir, sandbox_id):
                return []  # a run claimed it after all: its infra now
        except OSError as e:
            return [f"infra pool member {sandbox_id}: {e}"]
        return _attempt(lambda: self.docker.remove(container_id))

    def _interrupted_joins(self) -> list[Reclaim]:
        """A live sandbox keeps its networks, but not one whose `network connect` or
        `disconnect` died midway: that attachment is DELeted and dropped from it."""
        found: dict[str, list[str]] = {}
        live = [s for s in self.sandboxes if s.live and not s.elsewhere]
        for sandbox, entry in joins.interrupted(live):
            found.setdefault(sandbox.record.id, []).append(f"{entry.network} ({entry.ifname})")
        return [
            Reclaim(
                f"sandbox {sandbox_id}: network {', '.join(nets)}: its connect or disconnect"
                " was interrupted, deleting",
                functools.partial(joins.finish, self.docker, self.store, sandbox_id),
            )
            for sandbox_id, nets in found.items()
        ]

    @functools.cached_property
    def _infra_pids(self) -> set[int]:
        """The processes of the leftover infra containers gc removes before any DEL."""
        return {p for p in (self.docker.pid(c) for c in self._removed_infra) if p is not None}

    def _in_use(self, path: str) -> bool:
        """Whether a process other than a leftover infra's lives in the netns at `path`."""
        if not path:
            return False
        users = [p for p in netns.processes_in(path) if p not in self._infra_pids]
        if users:
            log.warning(
                "netns %s has no sandbox record, but process %d still lives in it: kept",
                path,
                users[0],
            )
        return bool(users)

    def _leftover(self, sandbox_id: str) -> bool:
        """Not a known sandbox's, nor one another state dir or a running cnirun still owns."""
        return sandbox_id not in self.skip and not owners.not_mine(sandbox_id, self.store.state_dir)

    def _release(self, name: str) -> list[str]:
        path = netns.netns_path(name)
        if path in self.undeleted:
            return [f"netns {path} kept: a DEL in it failed (the retry needs it)"]
        return _attempt(lambda: netns.release_netns(name))

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

    def _interrupted_update(self, sandbox_id: str) -> Reclaim:
        run = functools.partial(update.settle_locked, self.store, sandbox_id)
        return Reclaim(f"sandbox {sandbox_id}: interrupted update rolled back", run)

    def _broken(self, sandbox_id: str) -> Reclaim:
        run = _attempting(functools.partial(self.store.discard, sandbox_id))
        return Reclaim(f"sandbox {sandbox_id}: invalid record removed", run)

    def _del_attachment(self, entry: CacheEntry) -> list[str]:
        owner = owners.read(entry.container_id[len(CNI_ID_PREFIX) :])
        cni = self.cni  # the plugins the sandbox was set up with, when that is known
        if owner is not None and owner.plugin_dirs:
            cni = self._cni(owner.plugin_dirs)
        try:
            net = list_from_bytes(entry.config, entry.path)
            cni.del_network_list(net, entry.runtime_conf())
        except CnirunError as e:
            self.undeleted.add(entry.netns)
            return [f"attachment {entry.path}: {e}"]
        if parse_version(net.cni_version or "0.1.0") >= (1, 1, 0):
            self.gc_networks[net.name] = entry
        return []

    def cni_gc(self, report: GcReport) -> None:
        """CNI GC of each 1.1.0 network gc DELeted from, every cached attachment left valid."""
        cache = ResultCache(self.settings.cache_dir)
        for name, entry in self.gc_networks.items():
            try:
                # Under the network's lock, so an ADD cannot land between the listing and
                # the GC (its attachment would not be among the valid ones).
                with self.cni.lock(name, "GC"):
                    remaining = [
                        (e.container_id, e.ifname)
                        for e in cache.attachments()
                        if e.network_name == name
                    ]
                    self.cni.gc_network_list(list_from_bytes(entry.config, entry.path), remaining)
                report.actions.append(
                    f"network {name}: CNI GC with {len(remaining)} valid attachments"
                )
            except CnirunError as e:
                report.failures.append(f"network {name}: CNI GC: {e}")


def reclaimable(docker: Docker, store: RecordStore, settings: Settings) -> list[str]:
    """What gc would reclaim now, one line each (doctor's and `gc --dry-run`'s view)."""
    return [item.what for item in _Selection(docker, store, settings).items()]


def gc(
    docker: Docker,
    store: RecordStore,
    settings: Settings,
    dry_run: bool = False,
    with_pool: bool = False,
) -> GcReport:
    """Reclaim everything of cnirun's whose owner is gone; never touch live sandboxes.
    `with_pool`: the infra pool's ready members too (see cnirun.sandbox.pool)."""
    report = GcReport()
    selection = _Selection(docker, store, settings, with_pool)
    for item in selection.items():
        report.actions.append(item.what)
        if not dry_run:
            report.failures += item.run()
    selection.cni_gc(report)
    if not dry_run and not report.failures:
        owners.forget_dead(store.state_dir)  # what they owned is gone now
    return report

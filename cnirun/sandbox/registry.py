"""Sandboxes that outlive a command: listing, finding and reconciling them (their verbs:
cnirun.sandbox.lifecycle).

State on disk plus reconciliation is the design (Docker has no hooks for us): a sandbox is
live while the cnirun process that owns it runs, or, once detached, while its workload runs.
What is not live is reclaimed (see cnirun.sandbox.reclaim).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple

from cnirun import __version__
from cnirun.docker.runtime import (
    LABEL_ROLE,
    LABEL_SANDBOX,
    LABEL_STATE_DIR,
    ROLE_INFRA,
    ROLE_WORKLOAD,
    Docker,
    connect,
)
from cnirun.errors import CnirunError, UsageError, suggestion
from cnirun.host.etcfiles import ETC_FILES
from cnirun.sandbox import names, pool
from cnirun.sandbox.records import SANDBOX_ID, RecordStore, SandboxRecord
from cnirun.sandbox.teardown import teardown
from cnirun.settings import Settings

log = logging.getLogger(__name__)

_reported: set[str] = set()  # invalid records already warned about


# Docker's states in which a container counts as up (`docker ps` without -a lists these).
UP_STATES = ("running", "paused", "restarting")


class Sandbox(NamedTuple):
    """A recorded sandbox joined with what Docker says about its containers."""

    record: SandboxRecord
    files_dir: str
    workload: dict[str, Any] | None = None
    infra: dict[str, Any] | None = None
    elsewhere: bool = False  # made through another Docker engine than the one asked
    damaged: str = ""  # why its record cannot be used (then `record` holds only its ID)

    @property
    def state(self) -> str:
        """The workload's state in Docker's words (running, paused, restarting, exited,
        created, dead), or cnirun's own: `starting` (its cnirun is still setting it up),
        `elsewhere` (another engine's, not judged here), `orphaned` (to be reclaimed)."""
        if self.damaged:
            return "damaged"
        if self.elsewhere:
            return "elsewhere"
        if self.workload is not None and (self.record.detach or self.record.owner_alive()):
            return str(self.workload.get("State") or "unknown")
        return "starting" if self.record.owner_alive() else "orphaned"

    @property
    def up(self) -> bool:
        """What `ps` lists without -a: running, paused, restarting, or being set up."""
        return self.state in (*UP_STATES, "starting")

    @property
    def live(self) -> bool:
        """Owned by a running cnirun, or detached with its workload container still there in
        any state (a stopped one can be started again, a restarting one rejoins the netns),
        or another engine's. A foreground run whose cnirun died is not live, even if its
        workload still runs: nobody is left to tear it down."""
        if self.elsewhere or self.record.owner_alive():
            return True
        return self.record.detach and self.workload is not None

    def addresses(self) -> list[str]:
        found: list[str] = []
        for result in self.record.results.values():
            for ip in result.get("ips", []):
                found.append(ip["address"])
            for key in ("ip4", "ip6"):
                if key in result:
                    found.append(result[key]["ip"])
        return found

    @property
    def workload_id(self) -> str:
        return str((self.workload or {}).get("Id") or "")

    def names(self) -> list[str]:
        """The workload's container names (without Docker's leading "/"); for a sandbox
        of another engine, the --name it was run with."""
        if self.workload is None:
            return [self.record.workload] if self.elsewhere and self.record.workload else []
        return [n.lstrip("/") for n in self.workload.get("Names") or []]

    def bandwidth(self) -> Any:
        """The `bandwidth` capability args of the attachment that got them (None if none)."""
        for attachment in self.record.attachments:
            if "bandwidth" in attachment.capability_args:
                return attachment.capability_args["bandwidth"]
        return None

    def ingress_policy(self) -> dict[str, str]:
        """Each network's firewall `ingressPolicy` as its recorded config sets it: `open`
        (the plugin's default), `same-bridge`, or `none` (no firewall plugin)."""
        policies = {}
        for attachment in self.record.attachments:
            try:
                conf = json.loads(attachment.config)
                plugins = conf.get("plugins") or [conf]
                firewalls = [
                    p for p in plugins if isinstance(p, dict) and p.get("type") == "firewall"
                ]
            except (ValueError, AttributeError):
                firewalls = []
            policy = str(firewalls[0].get("ingressPolicy") or "open") if firewalls else "none"
            policies[attachment.network] = policy
        return policies

    def row(self) -> dict[str, Any]:
        workload = self.workload or {}
        return {
            "sandbox": self.record.id,
            "workload": (workload.get("Id") or "")[:12],
            "name": (self.names() or [""])[0],
            "image": self.record.image,
            "infra": self.record.infra_name,
            "networks": [a.network for a in self.record.attachments],
            "addresses": self.addresses(),
            "ports": self.record.ports,
            # --bandwidth's limits, as the CNI capability (bits/s, bits) the plugin was given
            "bandwidth": self.bandwidth(),
            # the firewall plugin's ingressPolicy per network (`network create --isolation`)
            "ingressPolicy": self.ingress_policy(),
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
            "etcFiles": {name: os.path.join(self.files_dir, name) for name in ETC_FILES},
            "cniContainerId": self.record.cni_container_id,
            "results": self.record.results,
            "attachments": [
                {"network": a.network, "ifname": a.ifname, "capabilityArgs": a.capability_args}
                for a in self.record.attachments
            ],
            "NetworkSettings": {"Networks": self.docker_networks()},
            "cnirunVersion": __version__,
        }

    def docker_networks(self) -> dict[str, dict[str, Any]]:
        """Each network as `docker inspect` shows one under NetworkSettings.Networks, for the
        scripts written against it: addresses, prefix lengths, gateways, MAC, aliases."""
        shown: dict[str, dict[str, Any]] = {}
        for network, result in self.record.results.items():
            entry: dict[str, Any] = {
                "IPAddress": "", "IPPrefixLen": 0, "Gateway": "",
                "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
                "MacAddress": "",
                "Aliases": names.own_names(self.record, self.workload_id, network),
            }  # fmt: skip
            interfaces = result.get("interfaces") or []
            for ip in result.get("ips") or []:
                if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
                    continue
                address, _, length = ip["address"].partition("/")
                v6 = ":" in address
                if entry["GlobalIPv6Address" if v6 else "IPAddress"]:
                    continue  # Docker shows one of each
                entry["GlobalIPv6Address" if v6 else "IPAddress"] = address
                entry["GlobalIPv6PrefixLen" if v6 else "IPPrefixLen"] = int(length or 0)
                entry["IPv6Gateway" if v6 else "Gateway"] = str(ip.get("gateway") or "")
                index = ip.get("interface")
                if isinstance(index, int) and 0 <= index < len(interfaces):
                    entry["MacAddress"] = str((interfaces[index] or {}).get("mac") or "")
            shown[network] = entry
        return shown


Grouped = dict[str, dict[str, dict[str, Any]]]  # sandbox ID -> role -> `docker ps` row


def _grouped(docker: Docker) -> Grouped:
    """cnirun's containers on this engine, by the sandbox and role their labels name."""
    by_sandbox: Grouped = {}
    for container in docker.containers():
        labels = container.get("Labels") or {}
        role = labels.get(LABEL_ROLE, "")
        by_sandbox.setdefault(labels.get(LABEL_SANDBOX, ""), {})[role] = container
    return by_sandbox


def load_all(docker: Docker, store: RecordStore) -> tuple[list[Sandbox], list[str]]:
    """Every readable sandbox record with its containers; plus the unreadable record IDs.

    A record none of whose containers this engine has, and that names another engine, is
    that engine's (`elsewhere`): never judged from here. The engine's ID is asked only then.
    """
    return _load(docker, store, _grouped(docker))


def _load(
    docker: Docker, store: RecordStore, by_sandbox: Grouped
) -> tuple[list[Sandbox], list[str]]:
    sandboxes, broken = [], []
    for sandbox_id in store.ids():
        try:
            record = store.load(sandbox_id)
        except CnirunError as e:
            if sandbox_id not in _reported:  # once per command, however often it is listed
                _reported.add(sandbox_id)
                log.warning("%s (skipped: `ps -a` lists it, `rm -f ID` removes it)", e)
            broken.append(sandbox_id)
            continue
        found = by_sandbox.get(sandbox_id, {})
        files = store.files_dir(sandbox_id)
        elsewhere = bool(not found and record.engine_id and record.engine_id != docker.engine_id())
        workload, infra = found.get(ROLE_WORKLOAD), found.get(ROLE_INFRA)
        sandboxes.append(Sandbox(record, files, workload, infra, elsewhere))
    return sandboxes, broken


def listing(docker: Docker, store: RecordStore) -> list[Sandbox]:
    """What `ps -a` shows: every readable sandbox, then the damaged ones (see `_damaged`),
    from one look at the engine's containers."""
    by_sandbox = _grouped(docker)
    sandboxes, broken = _load(docker, store, by_sandbox)
    return sandboxes + _damaged(store, broken, by_sandbox)


def find(docker: Docker, store: RecordStore, ref: str) -> Sandbox:
    """A sandbox by workload ID, name or unique prefix, or by sandbox ID (prefix).

    Raises:
        UsageError: none matches (the message lists the sandboxes and the closest name), or
            several do.
    """
    sandboxes, _ = load_all(docker, store)
    matches = []
    for sandbox in sandboxes:
        ids = [sandbox.workload_id, sandbox.record.id]
        if ref in sandbox.names() or any(i and i.startswith(ref) for i in ids):
            matches.append(sandbox)
    if not matches:
        known = [s.names()[0] if s.names() else s.record.id[:12] for s in sandboxes]
        raise UsageError(f"no such sandbox: {ref}" + suggestion(ref, known, "sandboxes"))
    if len(matches) > 1:
        raise UsageError(f"{ref} matches {len(matches)} sandboxes: use a longer prefix")
    return matches[0]


def _damaged(store: RecordStore, broken: list[str], by_sandbox: Grouped) -> list[Sandbox]:
    """The sandboxes cnirun cannot read the record of (`broken`, from `_load`) or whose
    record is gone while their infra is still there, with the containers their labels name:
    `ps -a` lists them, so a live one is never lost."""
    # An infra of this state dir without a record: the record went (a run records before it
    # creates the infra, and teardown removes the infra before the record).
    pooled = set(pool.members(store.state_dir))
    lost = [
        sandbox_id
        for sandbox_id, containers in by_sandbox.items()
        if ROLE_INFRA in containers
        and (containers[ROLE_INFRA].get("Labels") or {}).get(LABEL_STATE_DIR) == store.state_dir
        and SANDBOX_ID.fullmatch(sandbox_id)
        and not os.path.exists(store.path(sandbox_id))
        and sandbox_id not in pooled  # an infra pool member: no sandbox (yet)
    ]
    found = []
    for sandbox_id in [*broken, *(i for i in lost if i not in broken)]:
        # Only its ID is known: no owner (pid 0 never runs), no networks, nothing to act on.
        stub = SandboxRecord(
            id=sandbox_id, infra_name="", netns_name="", cache_dir="", plugin_dirs=[],
            cni_timeout=1.0, owner_pid=0, owner_start="",
        )  # fmt: skip
        containers = by_sandbox.get(sandbox_id, {})
        workload, infra = containers.get(ROLE_WORKLOAD), containers.get(ROLE_INFRA)
        why = "its record is missing" if sandbox_id in lost else "its record is unreadable"
        sandbox = Sandbox(stub, store.files_dir(sandbox_id), workload, infra, damaged=why)
        found.append(sandbox)
    return found


def discard_invalid(docker: Docker, store: RecordStore, ref: str) -> bool:
    """`rm -f` of a sandbox whose record is invalid, named by the record file's name (or a
    unique prefix) or its workload's name: the workload is removed, then the record; what
    its plugins set up is left for `cnirun gc` (the record cannot say what it was). False
    when `ref` names no such sandbox."""
    listed = [s for s in listing(docker, store) if s.damaged]
    matches = [b for b in listed if b.record.id == ref or ref in b.names()] or [
        b for b in listed if b.record.id.startswith(ref)
    ]
    if len(matches) != 1:
        return False
    sandbox = matches[0]
    if sandbox.workload is not None:
        docker.remove(sandbox.workload_id)
    store.discard(sandbox.record.id)
    if sandbox.workload is not None or sandbox.infra is not None:
        log.warning(
            "sandbox %s: its invalid record is removed; `cnirun gc` reclaims its network",
            sandbox.record.id[:12],
        )
    return True


def workload_id(sandbox: Sandbox) -> str:
    """The ID of a sandbox's workload container.

    Raises:
        UsageError: it has none (still starting, or removed).
    """
    if not sandbox.workload_id:
        raise UsageError(f"sandbox {sandbox.record.id[:12]} has no workload container")
    return sandbox.workload_id


def opened(settings: Settings) -> tuple[Docker, RecordStore]:
    """The engine and the records the sandbox commands work on (nothing is sent yet)."""
    return connect(settings.environ), RecordStore(settings.state_dir)


def check_here(sandbox: Sandbox) -> None:
    """Refuse to act on a sandbox of another Docker engine."""
    if sandbox.elsewhere:
        raise UsageError(
            f"sandbox {sandbox.record.id[:12]} is on another Docker engine"
            f" (ID {sandbox.record.engine_id}): point DOCKER_HOST or --context at that engine"
        )


def _detached_and_unowned(store: RecordStore, sandbox_id: str) -> bool:
    try:
        record = store.load(sandbox_id)
    except CnirunError:
        return False
    return record.detach and not record.owner_alive()


def reconcile(docker: Docker, store: RecordStore) -> None:
    """The cheap part of gc, run at the start of commands: tear down detached sandboxes
    whose workload container is gone, and repair those whose infra Docker restarted in a
    new network namespace. Asks Docker only when detached sandboxes exist."""
    if not any(_detached_and_unowned(store, sandbox_id) for sandbox_id in store.ids()):
        return
    from cnirun.sandbox import repair

    sandboxes, _ = load_all(docker, store)
    for sandbox in sandboxes:
        record = sandbox.record
        if not record.detach or record.owner_alive() or sandbox.elsewhere:
            continue
        if not sandbox.live:
            for failure in teardown(record, store, docker):
                log.warning("reclaiming sandbox %s: %s", record.id[:12], failure)
        elif (sandbox.infra or {}).get("State") == "running" and not record.infra_unchanged():
            for failure in repair.repair(docker, store, record):
                log.warning("%s", failure)
    if names.any_shared(store):  # a workload Docker stopped or started drops out or is back
        names.refresh(docker, store)


def reconcile_quietly(settings: Settings) -> None:
    """`reconcile` for commands that do not otherwise need Docker: problems are only logged."""
    try:
        reconcile(*opened(settings))
    except (CnirunError, OSError) as e:
        log.debug("reconciling sandboxes: %s", e)

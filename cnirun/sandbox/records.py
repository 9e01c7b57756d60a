"""Sandbox records: what a run has set up, persisted before each side effect.

One JSON file per sandbox in `<state dir>/sandboxes/`, written atomically, with enough to undo
every step even if cnirun is killed: the infra name, the netns holder, and each CNI attachment
with its config, args and capability args. Next to it: the sandbox's lock file and its `.etc`
directory (the workload's hosts and resolv.conf).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from cnirun.errors import CnirunError
from cnirun.files import open_lock, unlink_quietly, write_atomic

CNI_ID_PREFIX = "cnirun-"


def process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot ("" if it is gone): with the pid,
    it identifies the process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


class AttachmentRecord(NamedTuple):
    """One CNI attachment, recorded before its ADD starts."""

    network: str
    ifname: str
    config_b64: str  # the network list bytes, so DEL works even if the file changes
    source: str
    cni_args: list[list[str]]
    capability_args: dict[str, Any]

    @property
    def config(self) -> bytes:
        return base64.b64decode(self.config_b64)


class SandboxRecord:
    """Everything needed to find and tear down one sandbox (saved as JSON: see to_json)."""

    def __init__(
        self,
        *,
        id: str,
        infra_name: str,
        netns_name: str,
        cache_dir: str,
        plugin_dirs: list[str],
        cni_timeout: float,
        created: float | None = None,
        infra_id: str = "",
        netns_path: str = "",
        hostname: str = "",
        image: str = "",
        detach: bool = False,
        remove: bool = False,
        workload: str = "",
        ports: list[dict[str, Any]] | None = None,
        attachments: list[AttachmentRecord] | None = None,
        results: dict[str, Any] | None = None,
        owner_pid: int | None = None,
        owner_start: str | None = None,
    ) -> None:
        self.id = id
        self.infra_name = infra_name
        self.netns_name = netns_name
        self.cache_dir = cache_dir
        self.plugin_dirs = plugin_dirs
        self.cni_timeout = cni_timeout
        self.created = time.time() if created is None else created
        self.infra_id = infra_id
        self.netns_path = netns_path
        self.hostname = hostname
        self.image = image
        self.detach = detach
        self.remove = remove  # the workload was started with --rm
        self.workload = workload
        self.ports = ports or []
        self.attachments = attachments or []
        self.results = results or {}  # network -> result JSON
        self.owner_pid = os.getpid() if owner_pid is None else owner_pid
        self.owner_start = process_start(self.owner_pid) if owner_start is None else owner_start

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["attachments"] = [a._asdict() for a in self.attachments]
        return data

    @property
    def cni_container_id(self) -> str:
        """The CNI container ID; the prefix marks attachments as cnirun's for `gc`."""
        return CNI_ID_PREFIX + self.id

    def owner_alive(self) -> bool:
        """Whether the cnirun process that made this record is still running."""
        return process_start(self.owner_pid) == self.owner_start != ""


class RecordStore:
    """The records of one state dir."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.directory = os.path.join(state_dir, "sandboxes")

    def path(self, sandbox_id: str) -> str:
        return os.path.join(self.directory, f"{sandbox_id}.json")

    def files_dir(self, sandbox_id: str) -> str:
        """Where a sandbox keeps the files its workload bind-mounts (next to its record)."""
        return os.path.join(self.directory, f"{sandbox_id}.etc")

    def save(self, record: SandboxRecord) -> None:
        """Write the record atomically (a reader sees the old or the new file, never half)."""
        path = self.path(record.id)
        data = json.dumps(record.to_json(), indent=1, sort_keys=True).encode()
        try:
            write_atomic(path, data, 0o600, dir_mode=0o700)
        except OSError as e:
            raise CnirunError(f"cannot write sandbox state {path}: {e.strerror or e}") from None

    def load(self, sandbox_id: str) -> SandboxRecord:
        """Read one record; raises CnirunError if it is missing or unreadable."""
        path = self.path(sandbox_id)
        try:
            with open(path, "rb") as handle:
                raw = json.loads(handle.read())
            attachments = [AttachmentRecord(**a) for a in raw.pop("attachments", [])]
            return SandboxRecord(**raw, attachments=attachments)
        except (OSError, ValueError, TypeError) as e:
            raise CnirunError(f"cannot read sandbox state {path}: {e}") from None

    def delete(self, sandbox_id: str) -> None:
        unlink_quietly(self.path(sandbox_id))

    def delete_files(self, sandbox_id: str) -> None:
        """Remove a sandbox's own files (the workload's hosts and resolv.conf); gone is fine."""
        directory = self.files_dir(sandbox_id)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CnirunError(f"cannot remove {directory}: {e.strerror or e}") from None

    def ids(self) -> list[str]:
        """IDs of every recorded sandbox."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    @contextlib.contextmanager
    def lock(self, sandbox_id: str) -> Iterator[bool]:
        """Hold one sandbox's lock; yields whether its record still exists. The lock file goes
        with the record, so a waiter that then gets the lock finds no record."""
        path = os.path.join(self.directory, f"{sandbox_id}.lock")
        try:
            fd = open_lock(path)
        except OSError as e:
            raise CnirunError(f"cannot lock sandbox {sandbox_id}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield os.path.exists(self.path(sandbox_id))
            if not os.path.exists(self.path(sandbox_id)):
                unlink_quietly(path)
        finally:
            os.close(fd)

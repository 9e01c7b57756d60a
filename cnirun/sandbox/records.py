"""Sandbox records: what a run has set up, persisted before each side effect.

One JSON file per sandbox in `<state dir>/sandboxes/<id>.json`, written atomically, with enough
to undo every step even if cnirun is killed: the infra name, the netns holder, and each CNI
attachment with its config, args and capability args. Next to it: the sandbox's lock file and
its `.etc` directory (the workload's hosts and resolv.conf).

Root acts on a record (it runs its plugins, removes its containers), so nothing in one is
taken on trust: the state dir and `sandboxes/` are created 0700 and must be root's and writable
by no one else, a record must be a regular file of root's that only root can write, its
identity is its file name (32 hex digits), and every field is checked against the schema in
cnirun.sandbox.schema. A record that fails any of this is a RecordError: reported by name,
never acted on, and removed by `gc` or `rm -f <its id>`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from cnirun.cni import gojson
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import NetworkConfigList
from cnirun.cni.types import RuntimeConf
from cnirun.errors import CnirunError
from cnirun.files import (
    drop_partial_writes,
    ensure_dir,
    open_lock,
    read_limited,
    unlink_quietly,
    write_atomic,
)
from cnirun.sandbox import schema

CNI_ID_PREFIX = "cnirun-"
# A sandbox ID: os.urandom(16).hex(), as a record's file name gives it.
SANDBOX_ID = re.compile(r"[0-9a-f]{32}")
MAX_RECORD_BYTES = 16 << 20  # records are KiB: a few configs and decoded results


class RecordError(CnirunError):
    """A sandbox record that cannot be used (unreadable, unsafe, or not of the schema)."""


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (none if the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()
    except OSError:
        return []


def process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot ("" if it is gone): with the pid,
    it identifies the process even after the pid is reused."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def same_process(pid: int, start: str) -> bool:
    """Whether `pid` is still the process that started at `start` (see process_start)."""
    return process_start(pid) == start != ""


def process_runs(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie or a dead one has)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


class AttachmentRecord(NamedTuple):
    """One CNI attachment, recorded before its ADD starts."""

    network: str
    ifname: str
    config_b64: str  # the network list bytes, so DEL works even if the file changes
    source: str
    cni_args: list[list[str]]
    capability_args: dict[str, Any]
    # "PID:START" of a `network connect` or `disconnect` under way (see is_interrupted); ""
    # once its ADD has succeeded, and always for a run's own attachments (its owner's).
    pending: str = ""

    @classmethod
    def of(cls, net: NetworkConfigList, rt: RuntimeConf, pending: str = "") -> AttachmentRecord:
        """What is recorded of `net` attached as `rt` (the effective list, as DEL needs it)."""
        effective = {
            "cniVersion": net.cni_version,
            "name": net.name,
            "plugins": [p.raw for p in net.plugins],
        }
        return cls(
            network=net.name,
            ifname=rt.ifname,
            config_b64=base64.b64encode(json.dumps(effective).encode()).decode(),
            source=net.source,
            cni_args=[list(pair) for pair in rt.cni_args],
            capability_args=dict(rt.capability_args or {}),
            pending=pending,
        )

    @property
    def config(self) -> bytes:
        return base64.b64decode(self.config_b64)

    def runtime_conf(self, sandbox: SandboxRecord) -> RuntimeConf:
        """The runtime config this attachment of `sandbox` was set up with (DEL's, CHECK's)."""
        return RuntimeConf(
            container_id=sandbox.cni_container_id,
            netns=sandbox.netns_path,
            ifname=self.ifname,
            cni_args=tuple((k, v) for k, v in self.cni_args),
            capability_args=self.capability_args,
        )

    def to_json(self) -> dict[str, Any]:
        data = self._asdict()
        if not self.pending:
            del data["pending"]
        return data

    def is_interrupted(self) -> bool:
        """A connect or disconnect of this attachment whose cnirun died before it finished."""
        if not self.pending:
            return False
        pid, _, start = self.pending.partition(":")
        return not same_process(int(pid), start)


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
        cni_del_timeout: float | None = None,
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
        engine_id: str = "",
        infra_pid: int = 0,
        infra_start: str = "",
        aliases: list[str] | None = None,
        updating: dict[str, Any] | None = None,
        network_aliases: dict[str, list[str]] | None = None,
    ) -> None:
        self.id = id
        self.infra_name = infra_name
        self.netns_name = netns_name
        self.cache_dir = cache_dir
        self.plugin_dirs = plugin_dirs
        self.cni_timeout = cni_timeout
        # DEL's own timeout; None in a record written before it had one: cni_timeout then.
        self.cni_del_timeout = cni_del_timeout
        self.created = time.time() if created is None else created
        self.infra_id = infra_id
        self.netns_path = netns_path
        self.hostname = hostname
        self.image = image
        self.detach = detach
        self.remove = remove  # the workload was started with --rm
        self.workload = workload  # the workload's --name, if it was given one
        self.ports = ports or []
        self.attachments = attachments or []
        self.results = results or {}  # network -> result JSON
        self.owner_pid = os.getpid() if owner_pid is None else owner_pid
        self.owner_start = process_start(self.owner_pid) if owner_start is None else owner_start
        self.engine_id = engine_id  # the Docker engine's ID ("" until known)
        # The infra's main process as last seen: if it is not running any more, Docker has
        # restarted the infra (in a new netns) or it is gone, and the sandbox needs a look.
        self.infra_pid = infra_pid
        self.infra_start = infra_start
        self.aliases = aliases or []  # --network-alias: names its peers know it by
        # An update under way (cnirun.sandbox.update): the old and new capability args of
        # each attachment it re-applies, the old ports, and the updating process.
        self.updating = updating
        # `network connect --alias`: names its peers on that one network know it by
        self.network_aliases = network_aliases or {}

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["attachments"] = [a.to_json() for a in self.attachments]
        if data["cni_del_timeout"] is None:
            del data["cni_del_timeout"]
        if data["updating"] is None:
            del data["updating"]
        if not data["network_aliases"]:
            del data["network_aliases"]
        return data

    def cni(self) -> CNIConfig:
        """A CNI runtime as the sandbox was set up with: its plugin dirs, cache, timeouts."""
        return CNIConfig(
            self.plugin_dirs,
            self.cache_dir,
            timeout=self.cni_timeout,
            del_timeout=self.cni_del_timeout,
        )

    @property
    def cni_container_id(self) -> str:
        """The CNI container ID; the prefix marks attachments as cnirun's for `gc`."""
        return CNI_ID_PREFIX + self.id

    def owner_alive(self) -> bool:
        """Whether the cnirun process that made this record is still running."""
        return same_process(self.owner_pid, self.owner_start)

    def networks(self) -> list[str]:
        return [a.network for a in self.attachments]

    def infra_unchanged(self) -> bool:
        """Whether the infra process last seen still runs (no Docker request needed)."""
        return self.infra_pid > 0 and same_process(self.infra_pid, self.infra_start)


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

    def ensure(self) -> None:
        """Create the state dir and `sandboxes/` (0700 whatever the umask); check both.

        Raises:
            CnirunError: one cannot be created, or is not root's alone (says how to fix it).
        """
        try:
            ensure_dir(self.state_dir, 0o700)
            ensure_dir(self.directory, 0o700)
        except OSError as e:
            raise CnirunError(f"state dir {self.state_dir}: {e.strerror or e}") from None

    def save(self, record: SandboxRecord) -> None:
        """Write the record atomically (a reader sees the old or the new file, never half)."""
        path = self.path(record.id)
        data = json.dumps(record.to_json(), indent=1, sort_keys=True).encode()
        self.ensure()
        try:
            write_atomic(path, data, 0o600)
        except OSError as e:
            raise CnirunError(f"cannot write sandbox state {path}: {e.strerror or e}") from None

    def load(self, sandbox_id: str) -> SandboxRecord:
        """Read and check one record.

        Raises:
            RecordError: it is missing, unreadable, unsafe or not of the schema.
        """
        path = self.path(sandbox_id)
        try:
            if not SANDBOX_ID.fullmatch(sandbox_id):
                raise ValueError("the file name is not <32 hex digits>.json")
            raw = gojson.loads(read_limited(path, MAX_RECORD_BYTES, trusted=True))
            fields = schema.check(raw, sandbox_id)
            attachments = [AttachmentRecord(**a) for a in fields.pop("attachments", [])]
            return SandboxRecord(**fields, attachments=attachments)
        except OSError as e:
            raise RecordError(f"cannot read sandbox state {path}: {e.strerror or e}") from None
        except ValueError as e:  # gojson.JSONError and schema.SchemaError included
            raise RecordError(f"invalid sandbox state {path}: {e}") from None

    def delete(self, sandbox_id: str) -> None:
        unlink_quietly(self.path(sandbox_id))
        drop_partial_writes(self.path(sandbox_id), lambda pid: not process_runs(pid))

    def delete_files(self, sandbox_id: str) -> None:
        """Remove a sandbox's own files (the workload's hosts and resolv.conf); gone is fine.
        A symlink planted in their place is removed itself, never followed."""
        directory = self.files_dir(sandbox_id)
        try:
            if os.path.islink(directory):
                os.unlink(directory)
            else:
                shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CnirunError(f"cannot remove {directory}: {e.strerror or e}") from None

    def discard(self, sandbox_id: str) -> None:
        """Remove a record that cannot be used, with its files and lock, acting on nothing
        it says (`sandbox_id` is a record file's name, so a single path element)."""
        self.delete_files(sandbox_id)
        self.delete(sandbox_id)
        unlink_quietly(os.path.join(self.directory, f"{sandbox_id}.lock"))

    def ids(self) -> list[str]:
        """The names of every record file, without `.json` (valid sandbox IDs or not: one
        with a bad name is a record `load` refuses, and gc removes).

        Raises:
            CnirunError: the state dir is not root's alone.
        """
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except PermissionError:
            raise  # not root: the CLI says so (cnirun.cli.output.system_error)
        except OSError as e:
            raise CnirunError(f"cannot list {self.directory}: {e.strerror or e}") from None
        self.ensure()  # refuse records others could have planted
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def unrecorded(self) -> list[str]:
        """Sandbox IDs with files (`.etc`) but no record: what a record removed from outside
        left behind."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        ids = {n[: -len(".etc")] for n in names if n.endswith(".etc")}
        return sorted(i for i in ids if SANDBOX_ID.fullmatch(i) and f"{i}.json" not in names)

    @contextlib.contextmanager
    def lock(self, sandbox_id: str) -> Iterator[bool]:
        """Hold one sandbox's lock; yields whether its record still exists. The lock file goes
        with the record, so a waiter that then gets the lock finds no record."""
        path = os.path.join(self.directory, f"{sandbox_id}.lock")
        try:
            self.ensure()
            fd = open_lock(path)
        except (OSError, CnirunError) as e:
            text = e.strerror if isinstance(e, OSError) else str(e)
            raise CnirunError(f"cannot lock sandbox {sandbox_id}: {text or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield os.path.exists(self.path(sandbox_id))
            if not os.path.exists(self.path(sandbox_id)):
                unlink_quietly(path)
        finally:
            os.close(fd)

"""A small pool of started infra containers, so a run skips creating and starting its own.

Creating and starting the paused, network-less infra container is ~110 ms of every run (the
engine's work, not cnirun's). A run that needs a plain infra (the pause image, no -h or
--domainname: those are set at create) claims one that an earlier run started, and while its
workload runs it starts the next one (CNIRUN_INFRA_POOL of them, default 1; 0: no pool).

A pool member is an infra container exactly as a run makes it (labels, restart policy, state
dir), made for a sandbox ID that no run has used yet, plus a marker file
`<state dir>/pool/<sandbox ID>` saying which engine and image it was made on. It has no
network: CNI ADD happens only once a run has claimed it. What stays after a run is documented
and bounded: at most CNIRUN_INFRA_POOL paused containers (the pause process, no CPU) and their
marker files; `cnirun gc --all` removes them, plain `gc` keeps them.

Claiming is atomic across processes: the claimer first writes the sandbox's owner file (so gc
never sees the container unowned), then unlinks the marker; whoever unlinks it owns it. The
filler writes the marker before it creates the container, so gc never sees an unmarked one;
a marker whose filler died before its container existed is stale, and gc removes it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import NamedTuple

from cnirun.docker.runtime import LABEL_STATE_DIR, Docker, Infra, InfraSpec, infra_name
from cnirun.errors import CnirunError
from cnirun.files import UnsafePathError, ensure_dir, open_dir, read_limited, write_atomic
from cnirun.sandbox import owners
from cnirun.sandbox.records import SANDBOX_ID, process_start, same_process
from cnirun.testhooks import fault_point

log = logging.getLogger(__name__)

_MAX_MARKER_BYTES = 4096


class Marker(NamedTuple):
    """What a pool marker says: where its container was made, and by which process."""

    engine: str
    image: str
    pid: int
    start: str

    def filler_alive(self) -> bool:
        return same_process(self.pid, self.start)


def pool_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "pool")


def members(state_dir: str) -> list[str]:
    """The sandbox IDs of the pool's markers (names that are not IDs are not markers)."""
    try:
        names = os.listdir(pool_dir(state_dir))
    except OSError:
        return []
    return sorted(n for n in names if SANDBOX_ID.fullmatch(n))


def read_marker(state_dir: str, sandbox_id: str) -> Marker | None:
    """A marker's content; None when it is gone or is not what cnirun writes."""
    try:
        path = os.path.join(pool_dir(state_dir), sandbox_id)
        raw = json.loads(read_limited(path, _MAX_MARKER_BYTES, trusted=True))
        marker = Marker(str(raw["engine"]), str(raw["image"]), int(raw["pid"]), str(raw["start"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return marker


def forget(state_dir: str, sandbox_id: str) -> bool:
    """Remove a member's marker (its container is the caller's to remove); whether this call
    removed it. The pool dir is never followed if a symlink was put in its place.

    Raises:
        OSError, UnsafePathError: the pool dir cannot be used.
    """
    try:
        with open_dir(pool_dir(state_dir), follow=False) as dir_fd:
            os.unlink(sandbox_id, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


class Pool:
    """The pool of one state dir, on one engine, for one infra image."""

    def __init__(self, docker: Docker, state_dir: str, image: str, size: int) -> None:
        self.docker, self.state_dir, self.image, self.size = docker, state_dir, image, size
        self._filler: threading.Thread | None = None

    def _mine(self, marker: Marker | None) -> bool:
        return (
            marker is not None
            and marker.engine == self.docker.endpoint.host
            and marker.image == self.image
        )

    def claim(self, plugin_dirs: tuple[str, ...]) -> tuple[str, Infra] | None:
        """A started pool member, now this process's sandbox: (its sandbox ID, its infra);
        None when there is none to take. A member that is no longer running is removed."""
        for sandbox_id in members(self.state_dir):
            if not self._mine(read_marker(self.state_dir, sandbox_id)):
                continue
            owners.claim(sandbox_id, self.state_dir, plugin_dirs)
            try:
                mine = forget(self.state_dir, sandbox_id)
            except (OSError, UnsafePathError) as e:
                owners.release(sandbox_id)
                log.warning("infra pool %s: %s (not used)", pool_dir(self.state_dir), e)
                return None
            if not mine:  # another run took it first
                owners.release(sandbox_id)
                continue
            fault_point("pool-claimed")
            try:
                infra = self.docker.adopt_infra(sandbox_id, self.state_dir)
            except CnirunError as e:
                log.debug("cannot adopt pool member %s: %s", sandbox_id, e)
                infra = None
            if infra is not None:
                log.debug("docker: claimed pooled infra %s, pid %d", infra.name, infra.pid)
                return sandbox_id, infra
            self._discard(sandbox_id)
            owners.release(sandbox_id)
        return None

    def _discard(self, sandbox_id: str) -> None:
        try:
            self.docker.remove(infra_name(sandbox_id))
        except CnirunError as e:  # gc finds it: an infra of no sandbox
            log.debug("cannot remove pool member %s: %s", sandbox_id, e)

    def fill_in_background(self) -> None:
        """Start making the members the pool lacks, in a thread `wait` joins."""
        if self.size <= 0 or len(members(self.state_dir)) >= self.size:
            return
        self._filler = threading.Thread(target=self._fill, name="infra-pool", daemon=True)
        self._filler.start()

    def wait(self) -> None:
        if self._filler is not None:
            self._filler.join()
            self._filler = None

    def _fill(self) -> None:
        try:
            while len(members(self.state_dir)) < self.size:
                self._make_one()
        except (CnirunError, OSError) as e:  # only the next run's speed is at stake (and
            # UnsafePathError is an OSError)
            log.debug("cannot fill the infra pool: %s", e)

    def _make_one(self) -> None:
        sandbox_id = os.urandom(16).hex()
        marker = os.path.join(pool_dir(self.state_dir), sandbox_id)
        pid = os.getpid()
        data = {"engine": self.docker.endpoint.host, "image": self.image, "pid": pid}
        data["start"] = process_start(pid)
        ensure_dir(self.state_dir, 0o700)
        write_atomic(
            marker, json.dumps(data).encode(), 0o600, dir_mode=0o700, follow_dir=False, sync=False
        )
        fault_point("pool-marked")
        try:
            self.docker.create_infra(
                InfraSpec(
                    sandbox_id=sandbox_id,
                    image=self.image,
                    labels={LABEL_STATE_DIR: self.state_dir},
                )
            )
        except CnirunError:
            self._discard(sandbox_id)
            forget(self.state_dir, sandbox_id)
            raise
        log.debug("docker: pooled infra %s", infra_name(sandbox_id))

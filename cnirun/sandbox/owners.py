"""Who owns a sandbox's host-wide leftovers, independently of any state dir or container.

A netns holder (`/run/netns/cnirun-<id>`) and a CNI attachment (container ID `cnirun-<id>`)
are host-wide, but their record lives in one state dir. gc of another state dir sees neither
the record nor, once teardown has removed the infra, any container: it would take them for
leftovers and tear into a sandbox that is still being torn down. So each sandbox also leaves
`/run/cnirun/owners/<id>.json` (its state dir, its cnirun process, its plugin dirs), written
before anything is created and removed with the record (or, when `rm -f` left the holder for
gc to retry a DEL, once the holder is gone too).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from cnirun.files import drop_partial_writes, unlink_quietly, write_atomic
from cnirun.host.netns import NETNS_DIR
from cnirun.sandbox.records import process_runs, process_start, same_process

OWNERS_DIR = "/run/cnirun/owners"
_MAX_BYTES = 64 * 1024


class Owner(NamedTuple):
    state_dir: str
    pid: int
    start: str
    plugin_dirs: tuple[str, ...]

    def alive(self) -> bool:
        return same_process(self.pid, self.start)


def _path(sandbox_id: str) -> str:
    return os.path.join(OWNERS_DIR, f"{sandbox_id}.json")


def claim(sandbox_id: str, state_dir: str, plugin_dirs: tuple[str, ...] | list[str]) -> None:
    """Say that this process, of `state_dir`, owns the sandbox (best effort: a host whose /run
    cannot be written only loses this protection)."""
    pid = os.getpid()
    data = {"stateDir": state_dir, "pid": pid, "start": process_start(pid)}
    data["pluginDirs"] = list(plugin_dirs)
    try:
        write_atomic(_path(sandbox_id), json.dumps(data).encode(), 0o600, dir_mode=0o700)
    except OSError:
        pass


def release(sandbox_id: str) -> None:
    try:
        unlink_quietly(_path(sandbox_id))
    except OSError:
        pass
    drop_partial_writes(_path(sandbox_id), lambda pid: not process_runs(pid))


def read(sandbox_id: str) -> Owner | None:
    """The sandbox's owner, or None (no file, or one that is not what cnirun writes)."""
    try:
        with open(_path(sandbox_id), "rb") as handle:
            raw = json.loads(handle.read(_MAX_BYTES + 1))
        dirs = raw["pluginDirs"]
        owner = Owner(str(raw["stateDir"]), int(raw["pid"]), str(raw["start"]), tuple(dirs))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(d, str) and os.path.isabs(d) for d in owner.plugin_dirs):
        return None
    return owner


def not_mine(sandbox_id: str, state_dir: str) -> bool:
    """Whether gc of `state_dir` must leave the sandbox's leftovers alone: its owner still
    runs, or it belongs to another state dir whose record of it still exists."""
    owner = read(sandbox_id)
    if owner is None:
        return False
    if owner.alive():
        return True
    record = os.path.join(owner.state_dir, "sandboxes", f"{sandbox_id}.json")
    # `rm -f` of a sandbox whose DEL kept failing drops its record but keeps its holder for
    # its own gc's retry (which needs its cache dir): the holder is still that state dir's.
    kept = os.path.exists(os.path.join(NETNS_DIR, f"cnirun-{sandbox_id}"))
    return owner.state_dir != state_dir and (os.path.exists(record) or kept)


def forget_dead(state_dir: str) -> None:
    """Remove the owner files of `state_dir` whose cnirun, record and netns holder are gone."""
    try:
        names = os.listdir(OWNERS_DIR)
    except OSError:
        return
    for name in names:
        sandbox_id = name.removesuffix(".json")
        owner = read(sandbox_id) if name.endswith(".json") else None
        if owner is None or owner.state_dir != state_dir or owner.alive():
            continue
        record = os.path.join(state_dir, "sandboxes", name)
        holder = os.path.join(NETNS_DIR, f"cnirun-{sandbox_id}")
        if not os.path.exists(record) and not os.path.exists(holder):
            release(sandbox_id)

"""What the sandbox verbs do to a sandbox `registry.find` found: rm, stop, start, restart.

Each acts on the workload as the docker verb of that name does, and keeps the sandbox's
network in step: stop keeps it, start and restart first make sure the infra runs and the
network is in its namespace (cnirun.sandbox.repair), rm tears it down.
"""

from __future__ import annotations

from cnirun.docker.runtime import Docker
from cnirun.errors import UsageError
from cnirun.sandbox import names
from cnirun.sandbox.records import RecordStore
from cnirun.sandbox.registry import UP_STATES, Sandbox, check_here, workload_id
from cnirun.sandbox.teardown import forget, teardown


def remove(docker: Docker, store: RecordStore, sandbox: Sandbox, force: bool) -> list[str]:
    """Remove the workload (`force`: killed at once, as `docker rm -f`), then tear the
    sandbox down; return what could not be undone (with `force`, nothing is kept for it)."""
    check_here(sandbox)
    workload = sandbox.workload
    if workload is not None:
        state = str(workload.get("State") or "")
        if state in UP_STATES and not force:
            raise UsageError(
                f"sandbox {sandbox.record.id[:12]} is {state}: stop it first or use rm -f"
            )
        docker.remove(workload["Id"])
    failures = teardown(sandbox.record, store, docker)
    if failures and force:
        forget(sandbox.record, store, failures)  # the way out of a DEL that keeps failing
        return []
    return failures


def _grace(docker: Docker, workload: str, timeout: int | None, default: float) -> int | None:
    """The stop timeout to send: `timeout`, else None when the workload has its own
    --stop-timeout (Docker applies it), else `default`."""
    if timeout is not None:
        return timeout
    config = (docker.inspect(workload) or {}).get("Config") or {}
    if not isinstance(config, dict) or config.get("StopTimeout") is None:
        return round(default)
    return None


def stop(
    docker: Docker, store: RecordStore, sandbox: Sandbox, timeout: int | None, default: float
) -> list[str]:
    """Stop the workload as `docker stop` does, after `timeout` seconds, else its own
    --stop-timeout, else `default`. The sandbox keeps its network: `cnirun start` or
    `docker start` starts it again, and `rm` removes it. One started with --rm is removed by
    Docker as it stops, so its sandbox goes too."""
    check_here(sandbox)
    workload = sandbox.workload
    if workload is None:
        return []
    docker.stop(workload["Id"], _grace(docker, workload["Id"], timeout, default))
    if sandbox.record.remove:
        return teardown(sandbox.record, store, docker)
    names.tell_peers(docker, store, sandbox.record)
    return []


def _ready(docker: Docker, store: RecordStore, sandbox: Sandbox) -> list[str]:
    """Its infra running, and the network in the infra's namespace: what a workload about to
    start needs. Returns what could not be repaired."""
    from cnirun.sandbox import repair

    check_here(sandbox)
    if sandbox.record.infra_id:
        docker.start(sandbox.record.infra_id)
    return repair.repair(docker, store, sandbox.record)


def start(docker: Docker, store: RecordStore, sandbox: Sandbox) -> list[str]:
    """Start a stopped sandbox: its infra first (and the network mended if the infra has a
    new netns), then its workload. Returns what could not be repaired."""
    workload = workload_id(sandbox)
    failures = _ready(docker, store, sandbox)
    if not failures:
        docker.start(workload)
        names.tell_peers(docker, store, sandbox.record)
    return failures


def restart(
    docker: Docker, store: RecordStore, sandbox: Sandbox, timeout: int | None, default: float
) -> list[str]:
    """`docker restart` of the workload (grace time as `stop`), its network kept."""
    workload = workload_id(sandbox)
    failures = _ready(docker, store, sandbox)
    if not failures:
        docker.restart(workload, _grace(docker, workload, timeout, default))
    return failures

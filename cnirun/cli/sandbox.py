"""`cnirun ps | inspect | stop | rm | gc`: the sandbox lifecycle commands."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import typer

from cnirun.cli.common import FORMAT, check_format, command_settings
from cnirun.cli.output import json_out, say, table
from cnirun.errors import MultiError
from cnirun.settings import Settings

if TYPE_CHECKING:
    from cnirun.docker.runtime import Docker
    from cnirun.sandbox.records import RecordStore

ALL = typer.Option(False, "--all", "-a", help="Show exited and orphaned sandboxes too.")
REFS = typer.Argument(
    ..., metavar="SANDBOX", help="Workload container ID, name or unique prefix (or sandbox ID)."
)
FORCE = typer.Option(False, "--force", "-f", help="Remove a running sandbox (stops it first).")
DRY_RUN = typer.Option(False, "--dry-run", help="Only print what would be reclaimed.")


def _sandboxes(settings: Settings | None = None) -> tuple[Docker, RecordStore]:
    """The engine and the records the sandbox commands work on."""
    from cnirun.docker.runtime import connect
    from cnirun.sandbox.records import RecordStore

    settings = settings or command_settings()
    return connect(settings.environ), RecordStore(settings.state_dir)


def ps(all_states: bool = ALL, output: str = FORMAT) -> None:
    """List sandboxes: workload, networks, addresses, ports and state.

    \b
    Examples:
      cnirun ps
      cnirun ps -a --format json
    """
    from cnirun.sandbox import registry

    check_format(output)
    docker, store = _sandboxes()
    registry.reconcile(docker, store)
    found, _ = registry.load_all(docker, store)
    rows = [s.row() for s in found if all_states or s.state == "running"]
    if output == "json":
        json_out(rows)
        return
    header = ("SANDBOX", "WORKLOAD", "NAME", "IMAGE", "NETWORKS", "ADDRESSES", "STATE")
    table(
        header,
        (
            (
                r["sandbox"][:12],
                r["workload"],
                r["name"],
                r["image"],
                ",".join(r["networks"]),
                ",".join(r["addresses"]),
                r["state"],
            )
            for r in rows
        ),
    )


def inspect(refs: list[str] = REFS) -> None:
    """Show sandboxes as JSON: CNI results per network, ports, hostname, netns.

    \b
    Example:
      cnirun inspect web
    """
    from cnirun.sandbox import registry

    docker, store = _sandboxes()
    out = []
    for ref in refs:
        data = registry.find(docker, store, ref).inspect()
        data["created"] = datetime.datetime.fromtimestamp(
            data["created"], tz=datetime.UTC
        ).isoformat()
        out.append(data)
    json_out(out)


def _remove(refs: list[str], force: bool, stop_only: bool) -> None:
    from cnirun.sandbox import registry

    docker, store = _sandboxes()
    failures: list[str] = []
    for ref in refs:
        sandbox = registry.find(docker, store, ref)
        failures += registry.remove(docker, store, sandbox, force=force, stop_only=stop_only)
        say(ref)
    if failures:
        raise MultiError(failures, "teardown incomplete")


def stop(refs: list[str] = REFS) -> None:
    """Stop workloads and tear their sandboxes down (the stopped container stays).

    \b
    Example:
      cnirun stop web
    """
    _remove(refs, force=True, stop_only=True)


def rm(refs: list[str] = REFS, force: bool = FORCE) -> None:
    """Remove workloads and tear their sandboxes down.

    \b
    Example:
      cnirun rm -f web
    """
    _remove(refs, force=force, stop_only=False)


def gc(dry_run: bool = DRY_RUN) -> None:
    """Reclaim every sandbox, infra container, netns holder and CNI attachment of
    cnirun's whose owner is gone. Live sandboxes and others' attachments are never touched.

    \b
    Examples:
      cnirun gc --dry-run
      cnirun gc
    """
    from cnirun.sandbox import reclaim

    settings = command_settings()
    report = reclaim.gc(*_sandboxes(settings), settings, dry_run=dry_run)
    prefix = "would reclaim: " if dry_run else "reclaimed: "
    for action in report.actions:
        say(prefix + action)
    if not report.actions:
        say("nothing to reclaim")
    if report.failures:
        raise MultiError(report.failures, "teardown incomplete")

"""`cnirun ps | inspect | stop | rm | gc`: the sandbox lifecycle commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from cnirun.cli.common import (
    command_settings,
    complete_formats,
    complete_sandboxes,
)
from cnirun.cli.listing import Template, ago, emit, parse_filters, parse_format, rfc3339
from cnirun.cli.output import json_out, say
from cnirun.errors import MultiError, UsageError
from cnirun.settings import Settings

if TYPE_CHECKING:
    from cnirun.docker.runtime import Docker
    from cnirun.sandbox.records import RecordStore
    from cnirun.sandbox.registry import Sandbox

ALL = typer.Option(
    False, "--all", "-a", help="Show every sandbox (default: running, paused, restarting)."
)
QUIET = typer.Option(False, "--quiet", "-q", help="Only print container IDs.")
NO_TRUNC = typer.Option(False, "--no-trunc", help="Do not truncate IDs and commands.")
FILTER = typer.Option(
    None, "--filter", "-f", help="name=, network=, status=, label=KEY[=VALUE] or id= (repeatable)."
)
PS_FORMAT = typer.Option(
    "table",
    "--format",
    autocompletion=complete_formats,
    help="table, json, or a template: 'table {{.Names}}\\t{{.Ports}}'.",
)
INSPECT_FORMAT = typer.Option(
    None, "--format", "-f", help="A template over the JSON: '{{.netns}}', '{{json .results}}'."
)
REFS = typer.Argument(
    ...,
    metavar="SANDBOX",
    autocompletion=complete_sandboxes,
    help="Workload container ID, name or unique prefix (or sandbox ID).",
)
FORCE = typer.Option(False, "--force", "-f", help="Remove a running sandbox (kills it first).")
STOP_TIME = typer.Option(
    None, "--time", "-t", min=0, help="Seconds to wait before killing the workload."
)
DRY_RUN = typer.Option(False, "--dry-run", help="Only print what would be reclaimed.")

PS_FILTERS = ("name", "network", "status", "label", "id")
PS_HEADER = (
    "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES", "NETWORKS",
    "ADDRESSES",
)  # fmt: skip


def _sandboxes(settings: Settings | None = None) -> tuple[Docker, RecordStore]:
    """The engine and the records the sandbox commands work on."""
    from cnirun.sandbox import registry

    return registry.opened(settings or command_settings())


def _port_text(port: dict[str, Any]) -> str:
    host_ip = str(port.get("hostIP") or "0.0.0.0")
    host = f"[{host_ip}]" if ":" in host_ip else host_ip
    return f"{host}:{port['hostPort']}->{port['containerPort']}/{port.get('protocol', 'tcp')}"


def _bandwidth_text(capability: object) -> str:
    """The recorded limits in --bandwidth's own grammar ("" when none)."""
    from cnirun.bandwidth import Bandwidth

    limits = Bandwidth.from_cni(capability)
    return limits.text() if limits is not None else ""


def _quoted(command: str, no_trunc: bool) -> str:
    if not no_trunc and len(command) > 20:
        command = command[:19] + "\u2026"
    return f'"{command}"'


_OWN_STATUS = {
    "damaged": "Damaged record (cnirun rm -f removes it)",
    "starting": "Starting",
    "orphaned": "Orphaned (its cnirun is gone)",
    "elsewhere": "On another engine",
}


def ps_fields(sandbox: Sandbox, no_trunc: bool = False) -> dict[str, Any]:
    """One row of `ps`: the JSON keys, and Docker's template fields (.ID, .Names, ...)."""
    row = sandbox.row()
    workload = sandbox.workload or {}
    full_id = sandbox.workload_id
    created = float(workload.get("Created") or row["created"] or 0)
    # Docker's own words for a workload it has ("Exited (3) 5 seconds ago", "Up 1 second
    # (Paused)"), cnirun's for the rest.
    status = _OWN_STATUS.get(sandbox.state, "") or str(workload.get("Status") or "")
    if sandbox.state == "elsewhere":
        status += f" ({sandbox.record.engine_id[:14]})"
    return {
        **row,
        "created": rfc3339(row["created"] or created),
        "ID": full_id if no_trunc else full_id[:12],
        "Sandbox": row["sandbox"] if no_trunc else row["sandbox"][:12],
        "Image": row["image"] or workload.get("Image", ""),
        "Command": _quoted(str(workload.get("Command") or ""), no_trunc),
        "CreatedAt": rfc3339(created),
        "RunningFor": ago(created),
        "Status": status,
        "State": sandbox.state,
        "Ports": ", ".join(_port_text(p) for p in row["ports"]),
        "Bandwidth": _bandwidth_text(row["bandwidth"]),
        "Names": ",".join(sandbox.names()),
        "Networks": row["networks"],
        "Addresses": row["addresses"],
        "Labels": workload.get("Labels") or {},
    }


def _matches(sandbox: Sandbox, filters: list[tuple[str, str]]) -> bool:
    for key, wanted in filters:
        labels = (sandbox.workload or {}).get("Labels") or {}
        label, has_value, value = wanted.partition("=")
        ok = {
            "name": any(wanted in n for n in sandbox.names()),
            "network": wanted in [a.network for a in sandbox.record.attachments],
            "status": sandbox.state == wanted,
            "label": label in labels and (not has_value or labels[label] == value),
            "id": any(i.startswith(wanted) for i in (sandbox.workload_id, sandbox.record.id) if i),
        }[key]
        if not ok:
            return False
    return True


def ps(
    all_states: bool = ALL,
    quiet: bool = QUIET,
    no_trunc: bool = NO_TRUNC,
    filters: list[str] | None = FILTER,
    output: str = PS_FORMAT,
) -> None:
    """List sandboxes: container, image, command, status, ports, networks, addresses.

    The JSON has cnirun's keys (created in RFC 3339); a template may use them and Docker's
    fields: .ID .Sandbox .Image .Command .CreatedAt .RunningFor .Status .State .Ports .Names
    .Networks .Addresses .Bandwidth .Labels (the README lists the template subset).

    \b
    Examples:
      cnirun ps
      cnirun ps -a --filter network=mynet -q
      cnirun ps --format 'table {{.Names}}\\t{{.Addresses}}'
      cnirun ps --format '{{.Names}} {{.Bandwidth}}'
      cnirun ps -a --format json
    """
    from cnirun.sandbox import registry

    wanted = parse_filters(filters or (), PS_FILTERS)
    form = parse_format(output)
    docker, store = _sandboxes()
    registry.reconcile(docker, store)
    found, broken = registry.load_all(docker, store)
    every_state = all_states or any(key == "status" for key, _ in wanted)
    if every_state and broken:
        found += registry.damaged(docker, store, broken)
    shown = [s for s in found if (every_state or s.up) and _matches(s, wanted)]
    rows = [ps_fields(s, no_trunc) for s in shown]
    if quiet:
        for row in rows:
            say(row["ID"] or row["Sandbox"])
        return
    emit(
        form,
        rows,
        json_rows=lambda: [{k: v for k, v in r.items() if k[0].islower()} for r in rows],
        header=PS_HEADER,
        cells=lambda r: (
            r["ID"] or "-",
            r["Image"],
            r["Command"],
            r["RunningFor"],
            r["Status"],
            r["Ports"],
            r["Names"],
            ",".join(r["Networks"]),
            ",".join(r["Addresses"]),
        ),  # fmt: skip
    )


def inspect(refs: list[str] = REFS, template: str | None = INSPECT_FORMAT) -> None:
    """Show sandboxes as JSON: CNI results per network, ports, bandwidth, hostname, netns.

    \b
    Examples:
      cnirun inspect web
      cnirun inspect -f '{{.netns}}' web
    """
    from cnirun.sandbox import registry

    form = Template(template) if template else None
    docker, store = _sandboxes()
    out = []
    for ref in refs:
        data = registry.find(docker, store, ref).inspect()
        data["created"] = rfc3339(data["created"])
        out.append(data)
    if form is None:
        json_out(out)
    else:
        for data in out:
            say(form.render(data))


def _each(
    refs: list[str],
    act: Callable[[Docker, RecordStore, Sandbox], list[str]],
    discard_invalid: bool = False,
) -> None:
    """Act on each sandbox named; print each one done (as docker does: only what was).
    With `discard_invalid` (`rm -f`), a record too damaged to be a sandbox is removed."""
    from cnirun.sandbox import registry

    docker, store = _sandboxes()
    failures: list[str] = []
    for ref in refs:
        try:
            sandbox = registry.find(docker, store, ref)
        except UsageError:
            if discard_invalid and registry.discard_invalid(docker, store, ref):
                say(ref)
                continue
            raise
        left = act(docker, store, sandbox)
        if not left:
            say(ref)
        failures += left
    if failures:
        raise MultiError(failures, "teardown incomplete")


def stop(refs: list[str] = REFS, seconds: int | None = STOP_TIME) -> None:
    """Stop sandboxes' workloads; their networks stay, for `cnirun start` (or `docker
    start`). The grace time is -t, else the workload's --stop-timeout, else
    $CNIRUN_STOP_TIMEOUT (10 s).

    \b
    Examples:
      cnirun stop web
      cnirun stop -t 0 web
    """
    from cnirun.sandbox import registry

    default = command_settings().stop_timeout
    _each(refs, lambda d, s, box: registry.stop(d, s, box, seconds, default))


def start(refs: list[str] = REFS) -> None:
    """Start stopped sandboxes: the infra (its network mended if Docker gave it a new
    namespace), then the workload. Use `cnirun logs -f` or `docker attach` to follow it.

    \b
    Example:
      cnirun start web
    """
    from cnirun.sandbox import registry

    _each(refs, registry.start)


def restart(refs: list[str] = REFS, seconds: int | None = STOP_TIME) -> None:
    """Restart sandboxes' workloads, as `docker restart`; their networks and addresses stay.
    The grace time is as for `stop`.

    \b
    Example:
      cnirun restart -t 2 web
    """
    from cnirun.sandbox import registry

    default = command_settings().stop_timeout
    _each(refs, lambda d, s, box: registry.restart(d, s, box, seconds, default))


def rm(refs: list[str] = REFS, force: bool = FORCE) -> None:
    """Remove sandboxes: the workload (killed at once with -f), its network and record.

    \b
    Example:
      cnirun rm -f web
    """
    from cnirun.sandbox import registry

    _each(refs, lambda d, s, box: registry.remove(d, s, box, force), discard_invalid=force)


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

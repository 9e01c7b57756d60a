"""`cnirun ps | inspect | stop | rm | gc`: the sandbox lifecycle commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from cnirun.cli import lists
from cnirun.cli.common import (
    command_settings,
    complete_formats,
    complete_sandboxes,
)
from cnirun.cli.listing import Template, rfc3339
from cnirun.cli.output import json_out, say
from cnirun.errors import MultiError, UsageError

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
REF = typer.Argument(
    ...,
    metavar="SANDBOX",
    autocompletion=complete_sandboxes,
    help="Workload container ID, name or unique prefix (or sandbox ID).",
)
UPDATE_BANDWIDTH = typer.Option(
    None,
    "--bandwidth",
    metavar="LIMITS",
    help="New limits, as run's --bandwidth (they replace the old ones), or 'none'.",
)
PUBLISH = typer.Option(None, "--publish", "-p", metavar="SPEC", help="Publish one more port.")
UNPUBLISH = typer.Option(None, "--unpublish", metavar="SPEC", help="Stop publishing a port.")
DRY_RUN = typer.Option(False, "--dry-run", help="Only print what would be reclaimed.")
POOL_TOO = typer.Option(
    False, "--all", help="Also remove the infra pool's ready containers (CNIRUN_INFRA_POOL)."
)

_sandboxes = lists.sandboxes


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
    lists.ps(all_states, quiet, no_trunc, filters, output)


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
    from cnirun.sandbox import lifecycle

    default = command_settings().stop_timeout
    _each(refs, lambda d, s, box: lifecycle.stop(d, s, box, seconds, default))


def start(refs: list[str] = REFS) -> None:
    """Start stopped sandboxes: the infra (its network mended if Docker gave it a new
    namespace), then the workload. Use `cnirun logs -f` or `docker attach` to follow it.

    \b
    Example:
      cnirun start web
    """
    from cnirun.sandbox import lifecycle

    _each(refs, lifecycle.start)


def restart(refs: list[str] = REFS, seconds: int | None = STOP_TIME) -> None:
    """Restart sandboxes' workloads, as `docker restart`; their networks and addresses stay.
    The grace time is as for `stop`.

    \b
    Example:
      cnirun restart -t 2 web
    """
    from cnirun.sandbox import lifecycle

    default = command_settings().stop_timeout
    _each(refs, lambda d, s, box: lifecycle.restart(d, s, box, seconds, default))


def rm(refs: list[str] = REFS, force: bool = FORCE) -> None:
    """Remove sandboxes: the workload (killed at once with -f), its network and record.

    \b
    Example:
      cnirun rm -f web
    """
    from cnirun.sandbox import lifecycle

    _each(refs, lambda d, s, box: lifecycle.remove(d, s, box, force), discard_invalid=force)


def update(
    ref: str = REF,
    bandwidth: list[str] | None = UPDATE_BANDWIDTH,
    publish: list[str] | None = PUBLISH,
    unpublish: list[str] | None = UNPUBLISH,
) -> None:
    """Change a running sandbox's bandwidth limits and published ports in place: only the
    plugins concerned (bandwidth, portmap) are re-applied; its interface, address, MAC and
    connections stay. On failure the previous policy is restored (exit 125).

    \b
    Examples:
      cnirun update web --bandwidth ingress=10mbit,egress=2mbit
      cnirun update web --bandwidth none
      cnirun update web --publish 8443:443 --unpublish 8080:80
    """
    from cnirun.bandwidth import FLAG, Bandwidth, parse_bandwidth
    from cnirun.dockerargs import parse_port_spec
    from cnirun.sandbox import registry
    from cnirun.sandbox import update as updating

    limits: dict[str, int] | None = None
    if bandwidth:
        if bandwidth == ["none"]:
            limits = {}
        elif "none" in bandwidth:
            raise UsageError(f"{FLAG} none cannot be given with limits")
        else:
            given: Bandwidth | None = None
            for value in bandwidth:
                given = parse_bandwidth(value, given)
            assert given is not None
            limits = given.to_cni()
    request = updating.Request(
        bandwidth=limits,
        publish=tuple(m for spec in publish or [] for m in parse_port_spec(spec)),
        unpublish=tuple(m for spec in unpublish or [] for m in parse_port_spec(spec)),
    )
    if request == updating.Request():
        raise UsageError("nothing to update: give --bandwidth, --publish or --unpublish")
    settings = command_settings()
    docker, store = _sandboxes(settings)
    sandbox = registry.find(docker, store, ref)
    updating.updatable(sandbox)
    for line in updating.update(store, sandbox.record.id, request, settings.cache_dir):
        say(f"{ref}: {line}")


def gc(dry_run: bool = DRY_RUN, all_too: bool = POOL_TOO) -> None:
    """Reclaim every sandbox, infra container, netns holder and CNI attachment of
    cnirun's whose owner is gone. Live sandboxes and others' attachments are never touched;
    the infra pool's ready containers only with --all.

    \b
    Examples:
      cnirun gc --dry-run
      cnirun gc
      cnirun gc --all
    """
    from cnirun.sandbox import reclaim

    settings = command_settings()
    report = reclaim.gc(*_sandboxes(settings), settings, dry_run=dry_run, with_pool=all_too)
    prefix = "would reclaim: " if dry_run else "reclaimed: "
    for action in report.actions:
        say(prefix + action)
    if not report.actions:
        say("nothing to reclaim")
    if report.failures:
        raise MultiError(report.failures, "teardown incomplete")

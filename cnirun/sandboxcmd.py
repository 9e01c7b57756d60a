"""`cnirun ps | inspect | stop | rm | gc`: the sandbox lifecycle commands."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING

import typer

from cnirun.cli import guarded
from cnirun.errors import CnirunError, TeardownError

if TYPE_CHECKING:
    from cnirun.docker_runtime import Docker

FORMAT = typer.Option("table", "--format", help="Output format: table or json.")
ALL = typer.Option(False, "--all", "-a", help="Show exited and orphaned sandboxes too.")
REFS = typer.Argument(..., help="Workload container ID, name or unique prefix (or sandbox ID).")
FORCE = typer.Option(False, "--force", "-f", help="Remove a running sandbox (stops it first).")
DRY_RUN = typer.Option(False, "--dry-run", help="Only print what would be reclaimed.")


def _docker() -> Docker:
    from cnirun.docker_runtime import Docker

    return Docker()


def register(app: typer.Typer) -> None:
    """Add the sandbox commands to the top-level app."""

    @app.command("ps")
    def ps(all_states: bool = ALL, output: str = FORMAT) -> None:
        """List sandboxes: workload, networks, addresses, ports and state.

        \b
        Examples:
          cnirun ps
          cnirun ps -a --format json
        """

        def body() -> None:
            from cnirun import sandboxes

            docker = _docker()
            sandboxes.reconcile(docker)
            found, _ = sandboxes.load_all(docker)
            rows = [s.row() for s in found if all_states or s.state == "running"]
            if output == "json":
                print(json.dumps(rows, indent=2))
                return
            if output != "table":
                raise CnirunError(f"unknown --format {output!r}: use table or json")
            header = ("SANDBOX", "WORKLOAD", "NAME", "IMAGE", "NETWORKS", "ADDRESSES", "STATE")
            table = [header] + [
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
            ]
            widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
            for row in table:
                print(
                    "   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                )

        guarded(body)

    @app.command("inspect")
    def inspect(refs: list[str] = REFS) -> None:
        """Show sandboxes as JSON: CNI results per network, ports, hostname, netns.

        \b
        Example:
          cnirun inspect web
        """

        def body() -> None:
            from cnirun import sandboxes

            docker = _docker()
            out = []
            for ref in refs:
                data = sandboxes.find(docker, ref).inspect()
                data["created"] = datetime.datetime.fromtimestamp(
                    data["created"], tz=datetime.UTC
                ).isoformat()
                out.append(data)
            print(json.dumps(out, indent=2))

        guarded(body)

    def _remove(refs: list[str], force: bool, stop_only: bool) -> None:
        from cnirun import sandboxes

        docker = _docker()
        failures: list[str] = []
        for ref in refs:
            sandbox = sandboxes.find(docker, ref)
            failures += sandboxes.remove(docker, sandbox, force=force, stop_only=stop_only)
            print(ref)
        if failures:
            raise TeardownError(failures)

    @app.command("stop")
    def stop(refs: list[str] = REFS) -> None:
        """Stop workloads and tear their sandboxes down (the stopped container stays).

        \b
        Example:
          cnirun stop web
        """
        guarded(lambda: _remove(refs, force=True, stop_only=True))

    @app.command("rm")
    def rm(refs: list[str] = REFS, force: bool = FORCE) -> None:
        """Remove workloads and tear their sandboxes down.

        \b
        Example:
          cnirun rm -f web
        """
        guarded(lambda: _remove(refs, force=force, stop_only=False))

    @app.command("gc")
    def gc(dry_run: bool = DRY_RUN) -> None:
        """Reclaim every sandbox, infra container, netns holder and CNI attachment of
        cnirun's whose owner is gone. Live sandboxes and others' attachments are never touched.

        \b
        Examples:
          cnirun gc --dry-run
          cnirun gc
        """

        def body() -> None:
            from cnirun import sandboxes

            report = sandboxes.gc(_docker(), dry_run=dry_run)
            prefix = "would reclaim: " if dry_run else "reclaimed: "
            for action in report.actions:
                print(prefix + action)
            if not report.actions:
                print("nothing to reclaim")
            if report.failures:
                raise TeardownError(report.failures)

        guarded(body)

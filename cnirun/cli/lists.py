"""The bodies of `cnirun ps` and `cnirun network ls`, free of typer: `main()` runs a plain
command line of either directly (cnirun.cli.direct), typer the rest (cnirun.cli.sandbox,
cnirun.cli.network); both call these functions with the same arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnirun.cli.context import command_settings
from cnirun.cli.listing import ago, emit, parse_filters, parse_format, rfc3339
from cnirun.cli.output import say, warn

if TYPE_CHECKING:
    from cnirun.docker.runtime import Docker
    from cnirun.netconf.select import Configs
    from cnirun.sandbox.records import RecordStore
    from cnirun.sandbox.registry import Sandbox
    from cnirun.settings import Settings

PS_FILTERS = ("name", "network", "status", "label", "id")
PS_HEADER = (
    "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES", "NETWORKS",
    "ADDRESSES",
)  # fmt: skip


def sandboxes(settings: Settings | None = None) -> tuple[Docker, RecordStore]:
    """The engine and the records the sandbox commands work on."""
    from cnirun.sandbox import registry

    return registry.opened(settings or command_settings())


def _port_text(port: dict[str, Any]) -> str:
    host_ip = str(port.get("hostIP") or "0.0.0.0")
    host = f"[{host_ip}]" if ":" in host_ip else host_ip
    return f"{host}:{port['hostPort']}->{port['containerPort']}/{port.get('protocol', 'tcp')}"


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


def _bandwidth_text(capability: object) -> str:
    """The recorded limits in --bandwidth's own grammar ("" when none)."""
    from cnirun.bandwidth import Bandwidth

    limits = Bandwidth.from_cni(capability)
    return limits.text() if limits is not None else ""


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
        "IngressPolicy": ",".join(f"{n}={p}" for n, p in row["ingressPolicy"].items()),
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
    all_states: bool = False,
    quiet: bool = False,
    no_trunc: bool = False,
    filters: list[str] | None = None,
    output: str = "table",
) -> None:
    """`cnirun ps` (cnirun.cli.sandbox.ps has the help and the options)."""
    from cnirun.sandbox import registry

    wanted = parse_filters(filters or (), PS_FILTERS)
    form = parse_format(output)
    docker, store = sandboxes()
    registry.reconcile(docker, store)
    every_state = all_states or any(key == "status" for key, _ in wanted)
    # Every state includes the damaged: those whose record is unreadable or gone.
    found = registry.listing(docker, store) if every_state else registry.load_all(docker, store)[0]
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


def network_configs(netconf_dir: str | None, cni_path: str | None) -> Configs:
    """The configs of the network commands: the config dir and plugin dirs of the command
    line, Docker's subnets avoided when Docker can be asked."""
    from cnirun.cni import api
    from cnirun.docker.runtime import connect
    from cnirun.errors import CnirunError
    from cnirun.sandbox.plan import configs_for
    from cnirun.settings import VERSION_TIMEOUT

    settings = command_settings(netconf_dir=netconf_dir, cni_path=cni_path)
    cni = api.CNIConfig(settings.plugin_dirs, settings.cache_dir, timeout=VERSION_TIMEOUT)
    try:
        docker = connect(settings.environ)
    except CnirunError:
        docker = None  # Docker's subnets are only avoided when it can be asked
    return configs_for(settings, cni, docker)


def network_ls(output: str = "table", quiet: bool = False, netconf_dir: str | None = None) -> None:
    """`cnirun network ls` (cnirun.cli.network.ls has the help and the options)."""
    from cnirun.netconf import manage

    form = parse_format(output)
    rows, errors = manage.list_networks(network_configs(netconf_dir, None))
    for error in errors:
        warn(error)
    if quiet:
        for row in rows:
            say(row["name"])
        return
    emit(
        form,
        [{**row, "Name": row["name"], "Driver": row["driver"]} for row in rows],
        json_rows=lambda: rows,
        header=("NAME", "DRIVER", "SUBNETS", "CNIVERSION", "DEFAULT", "CREATED BY", "FILE"),
        cells=lambda row: (
            row["name"],
            row["driver"],
            ",".join(row["subnets"]) or "-",
            row["cniVersion"] or "-",
            "*" if row["default"] else "",
            "cnirun" if row["createdByCnirun"] else "-",
            row["file"],
        ),
        gap="  ",
    )

"""`cnirun priv-net-run`: its options and outcome (the session is cnirun.privnet)."""

from __future__ import annotations

import typer

from cnirun.cli.common import CNI_ARGS, CNI_PATH, CNI_TIMEOUT, NETCONF_DIR, command_settings

NETWORK = typer.Option(
    None, "--network", help="Network to attach (repeatable: eth0, eth1, ...) [default: see below]."
)
COMMAND = typer.Argument(..., help="The command to run inside the namespace, and its arguments.")


def priv_net_run(
    command: list[str] = COMMAND,
    network: list[str] | None = NETWORK,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
    cni_args: list[str] | None = CNI_ARGS,
    cni_timeout: float | None = CNI_TIMEOUT,
) -> int:
    """Run COMMAND in a private network namespace set up by CNI (no Docker needed).

    The namespace gets one interface per --network (eth0, eth1, ...); without --network, the
    first network of the config dir, or else cnirun's built-in default (created on first use).
    Everything is torn down when COMMAND exits, fails to start, or cnirun gets a signal.
    Exits with COMMAND's status.

    \b
    Examples:
      cnirun priv-net-run ifconfig
      cnirun priv-net-run --network mynet -- ping -c1 10.22.0.1
    """
    from cnirun import privnet

    settings = command_settings(netconf_dir=netconf_dir, cni_path=cni_path, cni_timeout=cni_timeout)
    plan = privnet.make_plan(settings, network or (), cni_args or ())
    return privnet.priv_net_run(command, plan, exiting=True)

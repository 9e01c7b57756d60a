"""`cnirun doctor`: its options and report (the checks are cnirun.doctor)."""

from __future__ import annotations

from cnirun.cli.common import CNI_PATH, NETCONF_DIR, command_settings
from cnirun.cli.output import say


def doctor(netconf_dir: str | None = NETCONF_DIR, cni_path: str | None = CNI_PATH) -> int:
    """Check Docker, the CNI plugins and configs, forwarding and stale state; exit 1 on FAIL.

    \b
    Example:
      cnirun doctor --netconf-dir /etc/cni/net.d
    """
    from cnirun import doctor as checks

    settings = command_settings(netconf_dir=netconf_dir, cni_path=cni_path)
    return checks.doctor(settings, lambda check: say(check.line()))

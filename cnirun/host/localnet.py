"""The localhost guard (CVE-2020-8558 class).

For host ports on 127.0.0.1, portmap sets `route_localnet=1` on the bridge, for good. From
then on, a container on that bridge that routes 127.0.0.1 via its gateway reaches the host's
services bound to 127.0.0.1 only. kube-proxy's mitigation closes this: one filter rule that
drops packets to 127.0.0.0/8 arriving from outside loopback unless they were DNAT'd (what
portmap's own 127.0.0.1 host ports are) or belong to a connection already established.

`ensure` installs that rule once, before any chain with portmap is attached; it is
idempotent and permanent (nothing of cnirun removes it: README, "Security model", says how).
Stdlib only; iptables is run with `-w` (it waits for the xtables lock).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from cnirun.errors import CnirunError
from cnirun.files import locked

COMMENT = "cnirun: drop non-DNAT packets to 127.0.0.0/8 from outside lo (CVE-2020-8558)"
RULE = (
    "INPUT",
    "-d", "127.0.0.0/8", "!", "-i", "lo",
    "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT",
    "-m", "comment", "--comment", COMMENT,
    "-j", "DROP",
)  # fmt: skip
LOCK = "/run/cnirun/localnet.lock"
TIMEOUT = 30.0


def needed(plugin_types: Iterable[str]) -> bool:
    """Whether a chain of these plugin types needs the guard (it has portmap)."""
    return "portmap" in plugin_types


def iptables(
    *args: str, what: str = "localhost guard", tool: str = "iptables"
) -> subprocess.CompletedProcess[str]:
    """Run `iptables -w -t filter ARGS` (the one runner of cnirun's own iptables calls;
    `tool="ip6tables"` for IPv6's table).

    Raises:
        CnirunError: the tool is missing or does not answer (the message starts with `what`).
    """
    binary = shutil.which(tool) or f"/usr/sbin/{tool}"
    try:
        return subprocess.run(
            [binary, "-w", "-t", "filter", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CnirunError(f"{what}: cannot run {tool}: {e}") from None


_iptables = iptables


def present() -> bool:
    """Whether the guard rule is in the filter table's INPUT chain.

    Raises:
        CnirunError: iptables cannot be run.
    """
    return _iptables("-C", *RULE).returncode == 0


def ensure() -> None:
    """Install the guard rule unless it is there (one cnirun at a time decides).

    Raises:
        CnirunError: it cannot be checked or installed (the attachment must not go ahead).
    """
    if present():
        return
    try:
        with locked(LOCK):
            if present():
                return
            done = _iptables("-I", *RULE[:1], "1", *RULE[1:])
    except OSError as e:
        raise CnirunError(f"localhost guard: cannot lock {LOCK}: {e.strerror or e}") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[:300]
        raise CnirunError(f"localhost guard: cannot install its iptables rule: {detail}")

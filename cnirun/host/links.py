"""Host network devices cnirun itself removes (plugins create and delete everything else)."""

from __future__ import annotations

import logging
import os

from cnirun.errors import CnirunError

log = logging.getLogger(__name__)


def delete_idle_bridge(bridge: str) -> bool:
    """Delete the bridge `bridge` if it exists and no port is left on it; True if deleted.

    A failure is only a warning: the caller's work (removing a network) is done either way.
    """
    base = f"/sys/class/net/{bridge}"
    try:
        if not os.path.isdir(f"{base}/bridge") or os.listdir(f"{base}/brif"):
            return False
    except OSError:
        return False
    from pyroute2 import IPRoute  # ~250 ms to import: only `network rm` pays for it

    try:
        with IPRoute() as ipr:
            ipr.link("del", ifname=bridge)
    except Exception as e:  # pyroute2 raises its own NetlinkError
        log.warning("could not delete bridge %s: %s", bridge, e)
        return False
    log.debug("deleted idle bridge %s", bridge)
    return True


def drop_dns_rule(bridge: str) -> None:
    """Remove the rule the dnsname plugin inserts for its dnsmasq and never removes
    (`-A INPUT -i BRIDGE -p udp -m udp --dport 53 -j ACCEPT`), once its bridge is gone.

    A failure is only a warning, as for the bridge itself.
    """
    from cnirun.host import localnet

    rule = ("INPUT", "-i", bridge, "-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT")
    try:
        for _ in range(8):  # one per ADD that raced to insert it; normally a single one
            if localnet.iptables("-D", *rule, what="dnsname's DNS rule").returncode != 0:
                break
            log.debug("deleted dnsname's DNS rule of bridge %s", bridge)
    except CnirunError as e:
        log.warning("%s", e)

"""Host network devices cnirun itself removes (plugins create and delete everything else)."""

from __future__ import annotations

import logging
import os

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

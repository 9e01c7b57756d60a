"""Host network devices and qdiscs cnirun itself removes (plugins create and delete the rest)."""

from __future__ import annotations

import logging
import os
import subprocess

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


def is_veth_end(device: str) -> bool:
    """Whether host device `device` has a peer elsewhere (a veth; a bridge has none)."""
    base = f"/sys/class/net/{os.path.basename(device)}"
    try:
        with open(f"{base}/iflink") as a, open(f"{base}/ifindex") as b:
            return a.read().strip() != b.read().strip()
    except OSError:
        return False


def clear_shaping(device: str) -> list[str]:
    """Remove from host veth `device` what the bandwidth plugin's ADD put there and its DEL
    leaves: a root `tbf` qdisc with handle 1: and the `ingress` qdisc (its redirect filter
    goes with it). Anything else is left alone; a device that is gone has nothing. Returns
    the qdiscs removed.

    Raises:
        CnirunError: tc cannot list or remove them.
    """
    if not is_veth_end(device):
        return []
    shown = _tc("qdisc", "show", "dev", device)
    removed = []
    for line in shown.splitlines():
        words = line.split()
        if words[1:4] == ["tbf", "1:", "root"]:
            _tc("qdisc", "del", "dev", device, "root", "handle", "1:")
            removed.append("tbf")
        elif words[1:3] == ["ingress", "ffff:"]:
            _tc("qdisc", "del", "dev", device, "ingress")
            removed.append("ingress")
    if removed:
        log.debug("removed the bandwidth plugin's %s qdisc of %s", " and ".join(removed), device)
    return removed


ISOLATION_COMMENT = "CNI firewall plugin rules (ingressPolicy: same-bridge)"


def remove_isolation_rules(bridge: str) -> None:
    """Remove the firewall plugin's two `ingressPolicy: same-bridge` rules of `bridge` (in
    CNI-ISOLATION-STAGE-1 and -2, both families), which its DEL never removes. The chains
    and FORWARD's jump to them are shared by every isolated bridge and stay. Failures are
    only logged: there may be none, or no ip6tables."""
    from cnirun.host import localnet

    comment = ["-m", "comment", "--comment", ISOLATION_COMMENT]
    rules = (
        ("CNI-ISOLATION-STAGE-1", ["-i", bridge, "!", "-o", bridge, "-j", "CNI-ISOLATION-STAGE-2"]),
        ("CNI-ISOLATION-STAGE-2", ["-o", bridge, "-j", "DROP"]),
    )
    for tool in ("iptables", "ip6tables"):
        for chain, rule in rules:
            try:
                done = localnet.iptables(
                    "-D", chain, *rule, *comment, what="isolation rule", tool=tool
                )
            except CnirunError as e:
                log.debug("%s", e)
                continue
            if done.returncode == 0:
                log.debug("removed %s's isolation rule from %s (%s)", bridge, chain, tool)


def _tc(*args: str) -> str:
    try:
        done = subprocess.run(
            ["tc", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CnirunError(f"tc {' '.join(args)}: {e}") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["failed"])[0]
        raise CnirunError(f"tc {' '.join(args)}: {said}")
    return done.stdout

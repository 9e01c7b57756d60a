"""What the tests read of a network namespace (pyroute2; production code has no need of it)."""

from __future__ import annotations

from pyroute2 import IPRoute

from cnirun.errors import NetnsError
from cnirun.host.netns import netns_exists


def interface_addresses(path: str) -> dict[str, list[str]]:
    """Return every interface in the netns at `path` with its addresses in CIDR form.

    Interfaces without an address map to an empty list.

    Raises:
        NetnsError: `path` is missing or not a netns, or netlink fails.
    """


    if not netns_exists(path):
        raise NetnsError(f"{path} is not a network namespace")
    try:
        # flags=0: pyroute2 would otherwise create a namespace at a missing path.
        # groups=0: a one-shot dump needs no event subscription.
        with IPRoute(netns=path, flags=0, groups=0) as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.link("dump")}
            result: dict[str, list[str]] = {name: [] for name in names.values()}
            for addr in ipr.addr("dump"):
                # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on p2p links.
                local = addr.get("local") or addr.get("address")
                result[names[addr["index"]]].append(f"{local}/{addr['prefixlen']}")
    except OSError as e:
        raise NetnsError(f"cannot list interfaces in netns {path}: {e}") from e
    return result

"""What the `dnsname` plugin needs from cnirun, given as podman's CNI backend gives it.

dnsname (containers/dnsname; Debian: golang-github-containernetworking-plugin-dnsname, with
dnsmasq-base) runs one dnsmasq per network, on the bridge's addresses, and answers for each
attached container under the name it reads from `CNI_ARGS` (`K8S_POD_NAME`, which the other
plugins of the chain do not know: hence `IgnoreUnknown=1`) and the aliases of its `aliases`
capability (`runtimeConfig.aliases`: network name -> names; plugin 1.1.1 and later). Its
result names those addresses as the DNS servers, with its domain as the search domain, so
the workload's resolv.conf (cnirun.host.etcfiles, from the CNI result) points at that
dnsmasq. DEL takes the name off again and stops dnsmasq with the last container.

Only a chain that has the plugin gets any of this: other networks see exactly what they did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnirun.cni.config import NetworkConfigList

PLUGIN = "dnsname"
POD_NAME = "K8S_POD_NAME"
IGNORE_UNKNOWN = "IgnoreUnknown"
ALIASES = "aliases"


def in_chain(net: NetworkConfigList) -> bool:
    """Whether the network's chain has the dnsname plugin."""
    return any(p.type == PLUGIN for p in net.plugins)


def cni_args(
    net: NetworkConfigList, given: Sequence[tuple[str, str]], name: str
) -> tuple[tuple[str, str], ...]:
    """`given` (the user's --cni-args), with `IgnoreUnknown=1` and `K8S_POD_NAME=name` in
    front when the chain has dnsname; a key the user gave is not given twice (theirs wins)."""
    if not name or not in_chain(net):
        return tuple(given)
    keys = {key for key, _ in given}
    ours = [(k, v) for k, v in ((IGNORE_UNKNOWN, "1"), (POD_NAME, name)) if k not in keys]
    return (*ours, *given)


def capability_args(net: NetworkConfigList, aliases: Sequence[str]) -> dict[str, Any]:
    """The `aliases` capability args for the network (empty without dnsname or aliases)."""
    names = list(dict.fromkeys(a for a in aliases if a))
    if not names or not in_chain(net):
        return {}
    return {ALIASES: {net.name: names}}

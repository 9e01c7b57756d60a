"""Re-applying some plugins of an attachment with new capability args: cnirun's UPDATE.

CNI has no UPDATE verb. cnirun's is a small extension of the model, built from the spec's own
calls on single plugins of the chain, and allowed only for the plugins whose re-invocation
has been shown safe (the reference plugins, containernetworking-plugins 1.1.1):

1. Which plugins: those with a capability enabled whose value changes (`changed`). Any other
   plugin is not called at all, so the interface, its addresses and MAC stay as they are.
   `safe` refuses a chain where such a plugin is not of a type listed in SAFE_TYPES.
2. Write-ahead: the cache entry gets capability args that undo both the old and the new
   policy (`merged`), so a DEL by anyone after a kill -9 from here on removes all of it.
   Then DEL of each of them, last first, with the OLD runtimeConfig and the cached result
   as prevResult (the same request the chain's own DEL would give it):
   - portmap's DEL flushes and deletes the attachment's own DNAT chain (named from the
     network and container ID) and every jump to it; it does nothing when its runtimeConfig
     has no mappings, so the request carries the mappings in place.
   - bandwidth's DEL deletes the attachment's ifb device (named from the network and
     container ID), which takes the egress token bucket with it. It leaves the token bucket
     (root `tbf`) and the `ingress` qdisc with its redirect filter on the host's veth (the
     chain's DEL never needs that: the veth goes with the bridge plugin's DEL). Its ADD then
     fails with `create qdisc: file exists`, so the caller removes those two qdiscs of the
     host veth between the DEL and the ADD (`between`), as tc would.
3. ADD of each of them, first first, with the NEW runtimeConfig. prevResult is the cached
   result without what the plugin's own earlier ADD appended to it (bandwidth appends its
   ifb device to `interfaces`; portmap and firewall pass their prevResult through), chained
   through the re-applied plugins; an ADD with no runtimeConfig for it (`--bandwidth none`,
   no port left) does nothing and passes the result through.
4. The cache entry is rewritten (atomically) with the new capability args and result, so a
   later DEL, `cnirun net del` or any libcni tool undoes what is in place; then CHECK of the
   whole chain (`check`: two defects of the 1.1.1 plugins' own CHECK are allowed for). All
   of it under the network's CNI lock.

None of these calls touches the container's namespace, its veth or its addresses, and
conntrack keeps established connections: new packets meet the new rules and qdiscs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from cnirun.cni.api import CNIConfig
from cnirun.cni.config import NetworkConfigList, PluginConfig
from cnirun.cni.types import JSONDict, Result, ResultError, RuntimeConf
from cnirun.cni.version import parse_version
from cnirun.errors import CacheError, CNIError, CnirunError

# Plugin types whose DEL-then-ADD with another runtimeConfig is shown safe (module docstring).
SAFE_TYPES = ("bandwidth", "portmap")

Between = Callable[[PluginConfig, Result], None]


def changed(net: NetworkConfigList, old: JSONDict, new: JSONDict) -> list[int]:
    """The indexes of the plugins (in chain order) with an enabled capability whose value
    differs between `old` and `new` capability args."""
    found = []
    for index, plugin in enumerate(net.plugins):
        caps = [cap for cap, on in plugin.capabilities.items() if on]
        if any(old.get(cap) != new.get(cap) for cap in caps):
            found.append(index)
    return found


def safe(net: NetworkConfigList, indexes: Sequence[int]) -> None:
    """Refuse an update that would re-apply a plugin not known to be safe.

    Raises:
        CnirunError: naming the plugin, the network and what is safe.
    """
    for index in indexes:
        plugin = net.plugins[index]
        if plugin.type not in SAFE_TYPES:
            raise CnirunError(
                f"cannot update network {net.name}: re-applying plugin {plugin.describe()}"
                f" is not known to be safe (only {', '.join(SAFE_TYPES)} are): remove and run"
                " the sandbox again instead"
            )


def merged(old: JSONDict, new: JSONDict) -> JSONDict:
    """Capability args a DEL undoes both `old` and `new` with: each key's new value, or the
    old one where the new one is empty (portmap's DEL does nothing without mappings, and
    removes the attachment's whole chain with any)."""
    return {key: new.get(key) or old.get(key) for key in {**old, **new}}


def own_interfaces(plugin: PluginConfig, network: str, container_id: str) -> set[str]:
    """The interface names a plugin's ADD appends to its prevResult (bandwidth: its ifb
    device, `bwp` and a sha512 of network name and container ID, 15 characters)."""
    if plugin.type == "bandwidth":
        digest = hashlib.sha512(f"{network}{container_id}".encode()).hexdigest()
        return {("bwp" + digest)[:15]}
    return set()


def without(result: Result, names: set[str]) -> Result:
    """`result` without the host interfaces named (IP entries' indexes renumbered)."""
    data: dict[str, Any] = dict(result.data)
    interfaces = data.get("interfaces") or []
    if not names or not interfaces:
        return result
    kept: list[Any] = []
    moved: dict[int, int] = {}
    for index, interface in enumerate(interfaces):
        if interface.get("name") in names and not interface.get("sandbox"):
            continue
        moved[index] = len(kept)
        kept.append(interface)
    ips = []
    for ip in data.get("ips") or []:
        ip = dict(ip)
        if isinstance(ip.get("interface"), int):
            if ip["interface"] not in moved:
                ip.pop("interface")
            else:
                ip["interface"] = moved[ip["interface"]]
        ips.append(ip)
    data["interfaces"] = kept
    if ips:
        data["ips"] = ips
    return Result(result.cni_version, data)


def reapply(
    cni: CNIConfig,
    net: NetworkConfigList,
    old: RuntimeConf,
    new: RuntimeConf,
    indexes: Sequence[int],
    between: Between | None = None,
) -> Result:
    """DEL the plugins at `indexes` with `old`'s capability args, ADD them with `new`'s, cache
    the result with `new` and CHECK the chain (module docstring); return the new result.

    Raises:
        CNIError: the first failing call (`plugin type="x" failed (add): ...`); what ran is
            not undone here (the caller re-applies the old args).
    """
    with cni.lock(net.name, "UPDATE"):
        try:
            cached = cni.cache.read_result(net.name, old, net.cni_version)
        except (ResultError, CacheError) as e:
            raise CNIError(0, f"cannot read the cached result of {net.name}: {e}") from None
        if cached is None:
            raise CNIError(0, f"network {net.name} has no cached result: nothing to update")
        inflight = new._replace(capability_args=merged(old.caps(), new.caps()))
        try:
            cni.cache.write(net.name, net.bytes, inflight, cached)
        except CnirunError as e:
            raise CNIError(0, f"cannot write the cached result of {net.name}: {e}") from None
        plugins = [net.plugins[i] for i in indexes]
        for plugin in reversed(plugins):
            _call(cni, net, plugin, "DEL", old, cached)
            if between is not None:
                between(plugin, cached)
        prev = cached
        for plugin in plugins:
            base = without(prev, own_interfaces(plugin, net.name, new.container_id))
            stdout = _call(cni, net, plugin, "ADD", new, base)
            try:
                prev = Result.from_plugin_output(stdout, net.cni_version)
            except CNIError as e:
                raise e.wrap(f"plugin {plugin.describe()} failed (add): ") from None
            with contextlib.suppress(ResultError):
                prev = prev.convert(net.cni_version)
        try:
            cni.cache.write(net.name, net.bytes, new, prev)
        except CnirunError as e:
            raise CNIError(0, f"cannot write the cached result of {net.name}: {e}") from None
        if parse_version(net.cni_version) >= (0, 4, 0) and not net.disable_check:
            check(cni, net, new, prev)
        return prev


def check(cni: CNIConfig, net: NetworkConfigList, rt: RuntimeConf, result: Result) -> None:
    """CHECK every plugin of the chain against `result`, as libcni does, but for two defects
    of the reference plugins 1.1.1 that fail a CHECK of any attachment, updated or not:

    - bandwidth without limits dereferences a nil pointer (main.go:301) and panics: there
      is nothing to check, so it is not called;
    - portmap checks the DNAT chain of an IPv4 attachment in ip6tables too, where it never
      creates it (`could not check ipv6 dnat: chain ... not found`): that error is ignored
      for an attachment without an IPv6 address (its IPv4 chain was checked just before).

    Raises:
        CNIError: `plugin type="x" failed (check): ...`.
    """
    v6 = any(":" in str(ip.get("address", "")) for ip in result.data.get("ips") or [])
    for plugin in net.plugins:
        limits = {"ingressRate", "egressRate"} & set(plugin.raw)
        if plugin.type == "bandwidth" and not rt.caps().get("bandwidth") and not limits:
            continue
        try:
            _call(cni, net, plugin, "CHECK", rt, result)
        except CNIError as e:
            if plugin.type == "portmap" and not v6 and "could not check ipv6 dnat" in str(e):
                continue
            raise


def _call(
    cni: CNIConfig,
    net: NetworkConfigList,
    plugin: PluginConfig,
    command: str,
    rt: RuntimeConf,
    prev: Result,
) -> bytes:
    what = {"ADD": "add", "DEL": "delete"}.get(command, command.lower())
    try:
        return cni.call_plugin(net, plugin, command, prev, rt)
    except CNIError as e:
        raise e.wrap(f"plugin {plugin.describe()} failed ({what}): ") from None

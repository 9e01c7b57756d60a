"""cnirun's UPDATE (cnirun.cni.update) at the Exec seam: which plugins of a chain get which
call, with which runtimeConfig and prevResult, what the cache holds before and after, and
what is refused. The in-process Exec below answers as the reference plugins do for what
matters here: bridge makes the interfaces and the address, bandwidth appends its ifb device
when egress is limited, the others pass their prevResult through."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from cnirun.cni import update
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import NetworkConfigList
from cnirun.cni.types import Result, RuntimeConf
from cnirun.errors import CNIError, CnirunError
from tests.unit.conftest import CniEnv

OLD = {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 524288,
                     "egressRate": 8_000_000, "egressBurst": 524288},
       "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}  # fmt: skip
# The bandwidth plugin's ifb device for network "net", container "c1" (its own naming).
IFB = ("bwp" + hashlib.sha512(b"netc1").hexdigest())[:15]


class RefExec:
    """Records every call as (command, plugin type, stdin) and answers like the reference
    plugins; `fail` makes one (command, type) fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: tuple[str, str] | None = None

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        return f"/plugins/{plugin}"

    def exec_plugin(
        self, path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None
    ) -> bytes:
        kind, command, conf = path.rsplit("/", 1)[1], env["CNI_COMMAND"], json.loads(stdin)
        self.calls.append((command, kind, conf))
        if self.fail == (command, kind):
            raise CNIError(999, "injected failure")
        if command != "ADD":
            return b""
        if kind == "bridge":
            result = {"cniVersion": "1.0.0", "interfaces": [
                {"name": "br0", "mac": "02:00:00:00:00:01"},
                {"name": "veth1", "mac": "02:00:00:00:00:02"},
                {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/tmp/ns"}],
                "ips": [{"interface": 2, "address": "10.1.2.3/24"}]}  # fmt: skip
            return json.dumps(result).encode()
        result = dict(conf["prevResult"])
        egress = conf.get("runtimeConfig", {}).get("bandwidth", {}).get("egressRate")
        if kind == "bandwidth" and egress:
            result["interfaces"] = [
                *result["interfaces"],
                {"name": IFB, "mac": "02:00:00:0f:0f:0f"},
            ]
        return json.dumps(result).encode()

    def seen(self) -> list[tuple[str, str]]:
        return [(command, kind) for command, kind, _ in self.calls]


def chain(env: CniEnv, tuning_bandwidth: bool = False) -> NetworkConfigList:
    tuning: dict[str, Any] = {"type": "tuning", "capabilities": {"mac": True}}
    if tuning_bandwidth:
        tuning["capabilities"]["bandwidth"] = True
    return env.network([
        {"type": "bridge", "capabilities": {"ips": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
        tuning,
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ])  # fmt: skip


def added(env: CniEnv, caps: dict[str, Any]) -> tuple[CNIConfig, RefExec, NetworkConfigList]:
    fake = RefExec()
    cni = env.cni(exec=fake)
    net = chain(env)
    cni.add_network_list(net, env.rt(caps=caps))
    fake.calls.clear()
    return cni, fake, net


def cache_entry(env: CniEnv) -> dict[str, Any]:
    data = json.loads(env.cache_file().read_text())
    assert isinstance(data, dict)
    return data


def rts(env: CniEnv, new: dict[str, Any]) -> tuple[RuntimeConf, RuntimeConf]:
    return env.rt(caps=OLD), env.rt(caps=new)


def test_changed_names_only_the_plugins_whose_capability_args_differ(cni_env: CniEnv) -> None:
    net = chain(cni_env)
    bandwidth = {**OLD, "bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 524288}}
    ports = {**OLD, "portMappings": []}
    assert update.changed(net, OLD, dict(OLD)) == []
    assert update.changed(net, OLD, bandwidth) == [4]
    assert update.changed(net, OLD, ports) == [1]
    assert update.changed(net, OLD, {}) == [1, 4]
    assert update.changed(net, OLD, {**OLD, "mac": "02:00:00:00:00:09"}) == [3]
    update.safe(net, [1, 4])
    with pytest.raises(CnirunError, match=r'plugin type="tuning" is not known to be safe'):
        update.safe(net, [3])
    other = chain(cni_env, tuning_bandwidth=True)  # a tuning that takes bandwidth too
    assert update.changed(other, OLD, bandwidth) == [3, 4]
    with pytest.raises(CnirunError, match="tuning"):
        update.safe(other, update.changed(other, OLD, bandwidth))


def test_a_bandwidth_change_deletes_and_adds_bandwidth_alone_then_checks(cni_env: CniEnv) -> None:
    cni, fake, net = added(cni_env, OLD)
    before = cache_entry(cni_env)["result"]
    assert [i["name"] for i in before["interfaces"]] == ["br0", "veth1", "eth0", IFB]
    new = {**OLD, "bandwidth": {"ingressRate": 3_000_000, "ingressBurst": 524288,
                                "egressRate": 3_000_000, "egressBurst": 524288}}  # fmt: skip
    cleared: list[tuple[str, list[str]]] = []

    def between(plugin: Any, cached: Result) -> None:
        cleared.append((plugin.type, [i["name"] for i in cached.data["interfaces"]]))
        assert fake.seen()[-1] == ("DEL", plugin.type)  # right after its DEL, before its ADD

    old_rt, new_rt = rts(cni_env, new)
    result = update.reapply(cni, net, old_rt, new_rt, update.changed(net, OLD, new), between)
    assert fake.seen() == [
        ("DEL", "bandwidth"), ("ADD", "bandwidth"),
        ("CHECK", "bridge"), ("CHECK", "portmap"), ("CHECK", "firewall"),
        ("CHECK", "tuning"), ("CHECK", "bandwidth"),
    ]  # fmt: skip
    (_, _, deleted), (_, _, add) = fake.calls[:2]
    assert deleted["runtimeConfig"] == {"bandwidth": OLD["bandwidth"]}
    assert deleted["prevResult"] == before
    assert add["runtimeConfig"] == {"bandwidth": new["bandwidth"]}
    # prevResult without the ifb device its own earlier ADD appended: it appends it again
    assert [i["name"] for i in add["prevResult"]["interfaces"]] == ["br0", "veth1", "eth0"]
    assert cleared == [("bandwidth", ["br0", "veth1", "eth0", IFB])]
    assert result.to_json() == before
    entry = cache_entry(cni_env)
    assert entry["capabilityArgs"] == new and entry["result"] == before


def test_a_port_and_bandwidth_change_reapplies_both_in_chain_order(cni_env: CniEnv) -> None:
    cni, fake, net = added(cni_env, OLD)
    new = {"portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "udp"}]}
    old_rt, new_rt = rts(cni_env, new)
    result = update.reapply(cni, net, old_rt, new_rt, update.changed(net, OLD, new))
    assert fake.seen()[:4] == [
        ("DEL", "bandwidth"),
        ("DEL", "portmap"),
        ("ADD", "portmap"),
        ("ADD", "bandwidth"),
    ]
    assert ("CHECK", "bandwidth") not in fake.seen()  # 1.1.1 panics without limits
    assert fake.calls[1][2]["runtimeConfig"] == {"portMappings": OLD["portMappings"]}
    assert fake.calls[2][2]["runtimeConfig"] == {"portMappings": new["portMappings"]}
    assert "runtimeConfig" not in fake.calls[3][2]  # --bandwidth none: nothing to set up
    assert [i["name"] for i in result.data["interfaces"]] == ["br0", "veth1", "eth0"]
    assert cache_entry(cni_env)["capabilityArgs"] == new
    # The chain's own DEL now undoes exactly that.
    fake.calls.clear()
    cni.del_network_list(net, new_rt)
    portmap = [conf for command, kind, conf in fake.calls if kind == "portmap"]
    assert portmap[0]["runtimeConfig"] == {"portMappings": new["portMappings"]}


def test_a_failing_add_leaves_a_cache_whose_del_undoes_both_policies(cni_env: CniEnv) -> None:
    cni, fake, net = added(cni_env, {"bandwidth": OLD["bandwidth"]})
    new = {"bandwidth": OLD["bandwidth"], "portMappings": OLD["portMappings"]}
    fake.fail = ("ADD", "portmap")
    old_rt = cni_env.rt(caps={"bandwidth": OLD["bandwidth"]})
    with pytest.raises(CNIError, match=r'plugin type="portmap" failed \(add\): injected failure'):
        update.reapply(cni, net, old_rt, cni_env.rt(caps=new), [1])
    assert fake.seen() == [("DEL", "portmap"), ("ADD", "portmap")]
    # written before the first call: old and new merged, so a DEL by anyone removes both
    assert cache_entry(cni_env)["capabilityArgs"] == new
    fake.fail = None
    fake.calls.clear()
    update.reapply(cni, net, cni_env.rt(caps=update.merged(old_rt.caps(), new)), old_rt, [1])
    assert fake.calls[0][2]["runtimeConfig"] == {"portMappings": OLD["portMappings"]}
    assert "runtimeConfig" not in fake.calls[1][2]
    assert cache_entry(cni_env)["capabilityArgs"] == {"bandwidth": OLD["bandwidth"]}


def test_merged_keeps_what_a_del_needs_of_either() -> None:
    old = {"portMappings": [{"hostPort": 1}], "bandwidth": {"ingressRate": 1}}
    assert update.merged(old, {}) == old
    assert update.merged(old, {"portMappings": [{"hostPort": 2}]}) == {
        "portMappings": [{"hostPort": 2}], "bandwidth": {"ingressRate": 1}
    }  # fmt: skip
    assert update.merged({}, {"bandwidth": {"ingressRate": 2}}) == {"bandwidth": {"ingressRate": 2}}


def test_check_allows_for_portmap_ipv6_defect_only_without_ipv6(cni_env: CniEnv) -> None:
    cni, fake, net = added(cni_env, OLD)
    result = Result.from_json(cache_entry(cni_env)["result"])
    calls: list[str] = []

    def failing(path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None) -> bytes:
        calls.append(path.rsplit("/", 1)[1])
        if path.endswith("portmap"):
            raise CNIError(999, "could not check ipv6 dnat: chain CNI-DN-x not found")
        return b""

    fake.exec_plugin = failing  # type: ignore[method-assign]
    update.check(cni, net, cni_env.rt(caps=OLD), result)
    assert calls == ["bridge", "portmap", "firewall", "tuning", "bandwidth"]
    v6 = Result.from_json({**result.to_json(), "ips": [{"interface": 2, "address": "fd00::3/64"}]})
    with pytest.raises(CNIError, match=r'plugin type="portmap" failed \(check\)'):
        update.check(cni, net, cni_env.rt(caps=OLD), v6)


def test_without_drops_host_interfaces_and_renumbers_ips() -> None:
    result = Result.from_json({"cniVersion": "1.0.0", "interfaces": [
        {"name": "x"}, {"name": "br0"}, {"name": "eth0", "sandbox": "/n"}],
        "ips": [{"interface": 2, "address": "10.0.0.2/24"}]})  # fmt: skip
    trimmed = update.without(result, {"x"})
    assert [i["name"] for i in trimmed.data["interfaces"]] == ["br0", "eth0"]
    assert trimmed.data["ips"][0]["interface"] == 1
    assert update.without(result, {"eth0"}).data == result.data  # a sandbox's stays

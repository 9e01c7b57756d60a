"""The CNI operations on a network list (reference sections 1, 3, 4 and 6; scenarios 13-41).

Plugins run in-process (tests.unit.fakes.FakePluginExec, which behaves like the executable
fake; running it as a process is test_invoke.py's subject). A smaller in-process Exec is
used where it states the point more directly (exact stdin bytes, DEL failures during
rollback).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni import validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.invoke import find_in_path
from cnirun.cni.types import Result, VersionInfo
from cnirun.errors import CacheError, CNIError, CnirunError, MultiError, PluginNotFoundError
from tests.unit.cni.conftest import R1, assert_no_leftover_cache
from tests.unit.conftest import CniEnv
from tests.unit.fakes import FakePluginExec

ADD_PREFIX = 'plugin type="fake" failed (add): '


def add_error(env: CniEnv, net: Any, rt: Any = None) -> CNIError:
    with pytest.raises(CNIError) as exc:
        env.cni().add_network_list(net, rt or env.rt())
    return exc.value


# -- scenario 13: what gets injected into stdin ----------------------------------------------


def test_injection_overrides_name_and_version_and_strips_capabilities(cni_env: CniEnv) -> None:
    plugin = {
        "type": "fake",
        "name": "x",
        "cniVersion": "0.3.1",
        "custom": {"a": [1, 2]},
        "capabilities": {"mac": True},
    }
    net = cni_env.network([plugin])
    cni_env.cni().add_network_list(net, cni_env.rt())
    (call,) = cni_env.calls()
    assert call["stdin"] == {
        "type": "fake",
        "name": "net",
        "cniVersion": "1.0.0",
        "custom": {"a": [1, 2]},
    }


def test_static_prev_result_never_reaches_the_first_plugin(cni_env: CniEnv) -> None:
    static = {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.1/24"}]}
    net = cni_env.chain(2, P1={"prevResult": static}, P2={"prevResult": static})
    cni_env.cni().add_network_list(net, cni_env.rt())
    first, second = cni_env.calls()
    assert "prevResult" not in first["stdin"]
    assert second["stdin"]["prevResult"] == {"cniVersion": "1.0.0"}  # P1's, not the static one


def test_static_runtime_config_passes_unless_replaced(cni_env: CniEnv) -> None:
    static = {"static": True}
    net = cni_env.chain(
        2,
        P1={"capabilities": {"mac": True}, "runtimeConfig": static},
        P2={"capabilities": {"ips": True}, "runtimeConfig": static},
    )
    cni_env.cni().add_network_list(net, cni_env.rt(caps={"mac": "c2:11:22:33:44:55"}))
    first, second = cni_env.calls()
    assert first["stdin"]["runtimeConfig"] == {"mac": "c2:11:22:33:44:55"}
    assert second["stdin"]["runtimeConfig"] == static


# -- scenario 14: error JSON -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "describe"), [(None, 'type="fake"'),
                                                ("p1", 'type="fake" name="p1"')])
def test_error_json_is_wrapped_with_the_plugin(
    cni_env: CniEnv, name: str | None, describe: str
) -> None:
    stdout = '{"code":7,"msg":"Invalid Configuration","details":"too small"}'
    plugin: dict[str, Any] = {"type": "fake", "fake": {"ADD": {"exit": 1, "stdout": stdout}}}
    if name:
        plugin["name"] = name
    err = add_error(cni_env, cni_env.network([plugin]))
    assert err.code == 7
    assert (err.msg, err.details) == ("Invalid Configuration", "too small")
    assert str(err) == f"plugin {describe} failed (add): Invalid Configuration; too small"


# -- scenario 17: decoding the ADD result ----------------------------------------------------


def _add_stdout(env: CniEnv, stdout: str, version: str = "1.0.0") -> Result:
    net = env.network([{"type": "fake", "fake": {"ADD": {"stdout": stdout}}}], version=version)
    return env.cni().add_network_list(net, env.rt())


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        ("", "failed to unmarshal raw result: unexpected end of JSON input"),
        ("  \n", "failed to unmarshal raw result: unexpected end of JSON input"),
        ("{", "failed to unmarshal raw result: unexpected end of JSON input"),
        ("nope", "failed to unmarshal raw result: invalid character 'n' looking for "
                 "beginning of value"),
        ("[1]", "failed to unmarshal raw result: json: cannot unmarshal array into Go value "
                "of type map[string]interface {}"),
        ('{"cniVersion":"9.9.9"}', 'unsupported CNI result version "9.9.9"'),
        ('{"ips":[{"address":"nope"}]}', "ips[0].address: invalid CIDR address: nope"),
        ('{"ips":[{"address":"10.1.2.3"}]}', "ips[0].address: invalid CIDR address: 10.1.2.3"),
        ('{"ips":[{"address":"10.1.2.3/24","gateway":"x"}]}',
         "ips[0].gateway: invalid IP address: x"),
    ],
)
def test_bad_add_output_fails_the_add(cni_env: CniEnv, stdout: str, message: str) -> None:
    with pytest.raises(CNIError) as exc:
        _add_stdout(cni_env, stdout)
    assert str(exc.value) == ADD_PREFIX + message
    assert not cni_env.cache_file().exists()
    assert cni_env.trace() == [("fake", "ADD"), ("fake", "DEL")]


def test_null_result_is_an_empty_result_of_the_list_version(cni_env: CniEnv) -> None:
    assert _add_stdout(cni_env, "null").to_json() == {"cniVersion": "1.0.0"}


@pytest.mark.parametrize(
    "stdout",
    ['{"ips":[{"address":"10.1.2.3/24"}]}',
     '{"cniVersion":"","ips":[{"address":"10.1.2.3/24"}]}',
     '{"cniVersion":5,"ips":[{"address":"10.1.2.3/24"}]}'],
)
def test_missing_result_version_means_the_list_version(cni_env: CniEnv, stdout: str) -> None:
    result = _add_stdout(cni_env, stdout, version="1.1.0")
    assert result.to_json() == {"cniVersion": "1.1.0", "ips": [{"address": "10.1.2.3/24"}]}


def test_unknown_result_keys_are_dropped_before_chaining_and_caching(cni_env: CniEnv) -> None:
    r1 = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "junk": 1}], "junk": 2}
    net = cni_env.chain(2, P1={"fake": {"ADD": {"result": r1}}})
    result = cni_env.cni().add_network_list(net, cni_env.rt())
    clean = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24"}]}
    assert result.to_json() == clean
    assert cni_env.calls()[1]["stdin"]["prevResult"] == clean
    assert json.loads(cni_env.cache_file().read_text())["result"] == clean


def test_each_result_is_converted_to_the_list_version_before_chaining(cni_env: CniEnv) -> None:
    r040 = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.3/24"}]}
    net = cni_env.chain(2, P1={"fake": {"ADD": {"result": r040}}})
    result = cni_env.cni().add_network_list(net, cni_env.rt())
    assert cni_env.calls()[1]["stdin"]["prevResult"] == R1
    assert result.to_json() == R1


# -- scenario 20: a chain of three -----------------------------------------------------------


def test_chain_of_three(cni_env: CniEnv) -> None:
    net = cni_env.chain(
        3,
        P1={"fake": {"ADD": {"result": R1}}},
        P2={"fake": {"ADD": {"result": "passthrough"}}},
        P3={"fake": {"ADD": {"result": "inject-dns", "dns": ["1.2.3.4"]}}},
    )
    result = cni_env.cni().add_network_list(net, cni_env.rt())
    p1, p2, p3 = cni_env.calls()
    assert [c["argv0"] for c in (p1, p2, p3)] == ["P1", "P2", "P3"]
    assert "prevResult" not in p1["stdin"]
    assert p2["stdin"]["prevResult"] == R1
    assert p3["stdin"]["prevResult"] == R1
    expected = {**R1, "dns": {"nameservers": ["1.2.3.4"]}}
    assert result.to_json() == expected
    assert json.loads(cni_env.cache_file().read_text())["result"] == expected


def test_chaining_happens_for_old_versions_too(cni_env: CniEnv) -> None:
    r020 = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/24"}}
    net = cni_env.chain(2, version="0.2.0", P1={"fake": {"ADD": {"result": r020}}})
    cni_env.cni().add_network_list(net, cni_env.rt())
    assert cni_env.calls()[1]["stdin"]["prevResult"] == {**r020, "dns": {}}


# -- scenario 21: runtimeConfig only for enabled and supplied capabilities -------------------


def test_runtime_config_filter(cni_env: CniEnv) -> None:
    caps = {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 2048, "ingressBurst": 1600},
        "mac": "c2:11:22:33:44:55",
    }
    net = cni_env.chain(
        3,
        P1={"capabilities": {"portMappings": True, "bandwidth": False}},
        P2={"capabilities": {}},
        P3={"capabilities": {"mac": True, "aliases": True}},
    )
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt(caps=caps))
    p1, p2, p3 = (c["stdin"] for c in cni_env.calls())
    assert p1["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert "runtimeConfig" not in p2
    assert p3["runtimeConfig"] == {"mac": caps["mac"]}
    assert all("capabilities" not in s for s in (p1, p2, p3))


# -- scenario 22: a failure in the middle of the chain ---------------------------------------


def test_mid_chain_failure_dels_everything_with_the_partial_result(cni_env: CniEnv) -> None:
    net = cni_env.chain(
        3,
        P1={"fake": {"ADD": {"result": R1}}},
        P2={"fake": {"ADD": {"exit": 1, "stdout": '{"code":11,"msg":"busy"}'}}},
    )
    err = add_error(cni_env, net)
    assert str(err) == 'plugin type="P2" failed (add): busy'
    assert err.code == 11
    assert cni_env.trace() == [
        ("P1", "ADD"), ("P2", "ADD"), ("P3", "DEL"), ("P2", "DEL"), ("P1", "DEL"),
    ]
    # libcni passes no prevResult here; cnirun passes what was set up (P1's result), so
    # that plugins like firewall can undo their rules.
    assert all(c["stdin"]["prevResult"] == R1 for c in cni_env.calls()[2:])
    assert_no_leftover_cache(cni_env)


def test_rollback_carries_on_past_del_failures(cni_env: CniEnv) -> None:
    net = cni_env.chain(
        3, P2={"fake": {"ADD": {"exit": 1}, "DEL": {"exit": 1, "stderr": "del failed"}}}
    )
    err = add_error(cni_env, net)
    assert str(err) == (
        'plugin type="P2" failed (add): netplugin failed with no error message: exit status 1'
    )
    assert cni_env.trace() == [
        ("P1", "ADD"), ("P2", "ADD"), ("P3", "DEL"), ("P2", "DEL"), ("P1", "DEL"),
    ]


def test_rollback_carries_on_past_a_missing_plugin(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake"}, {"type": "missing"}])
    with pytest.raises(PluginNotFoundError):
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert cni_env.trace() == [("fake", "ADD"), ("fake", "DEL")]


# -- scenarios 23 and 24: validation on ADD --------------------------------------------------


@pytest.mark.parametrize(
    ("cid", "ifname", "net_name", "code", "text"),
    [
        ("some-%%container-id", "eth0", "net", 4,
         "invalid characters in containerID; some-%%container-id"),
        ("", "eth0", "net", 3, "missing containerID"),
        ("c1\n", "eth0", "net", 4, "invalid characters in containerID; c1\n"),
        ("-c1", "eth0", "net", 4, "invalid characters in containerID; -c1"),
        ("c1", "", "net", 4, "interface name is empty"),
        ("c1", "1234567890123456", "net", 4,
         "interface name is too long; interface name should be less than 16 characters"),
        ("c1", "é" * 8, "net", 4,
         "interface name is too long; interface name should be less than 16 characters"),
        ("c1", ".", "net", 4, "interface name is . or .."),
        ("c1", "..", "net", 4, "interface name is . or .."),
        ("c1", "a/b", "net", 4, "interface name contains / or : or whitespace characters"),
        ("c1", "a:b", "net", 4, "interface name contains / or : or whitespace characters"),
        ("c1", "a b", "net", 4, "interface name contains / or : or whitespace characters"),
        ("c1", "a\tb", "net", 4, "interface name contains / or : or whitespace characters"),
        ("c1", "eth0", "bad net", 7, "invalid characters found in network name; bad net"),
        ("c1", "eth0", "", 7, "missing network name:"),
    ],
)
def test_ids_are_validated_before_anything_runs(
    cni_env: CniEnv, cid: str, ifname: str, net_name: str, code: int, text: str
) -> None:
    net = cni_env.network(name=net_name, filename="50-x.conflist")
    err = add_error(cni_env, net, cni_env.rt(cid=cid, ifname=ifname))
    assert (err.code, str(err)) == (code, ADD_PREFIX + text)
    assert cni_env.calls() == []
    assert_no_leftover_cache(cni_env)


@pytest.mark.parametrize("ifname", ["é" * 7, "123456789012345", "eth0.100", "a-b_c"])
def test_valid_interface_names(cni_env: CniEnv, ifname: str) -> None:
    cni_env.cni().add_network_list(cni_env.network(), cni_env.rt(ifname=ifname))
    assert cni_env.calls()[0]["env"]["CNI_IFNAME"] == ifname


def test_lookup_comes_before_id_validation(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "nope"}])
    err = add_error(cni_env, net, cni_env.rt(cid="bad id"))
    assert str(err) == (
        f'plugin type="nope" failed (add): failed to find plugin "nope" in path '
        f"[{cni_env.bin_a} {cni_env.bin_b}]"
    )


def test_del_and_check_do_not_validate_ids(cni_env: CniEnv) -> None:
    net = cni_env.network()
    cni = cni_env.cni()
    cni.del_network_list(net, cni_env.rt(cid="bad id", ifname="a b"))
    cni.check_network_list(net, cni_env.rt(cid="bad id", ifname="a b"))
    assert cni_env.trace() == [("fake", "DEL"), ("fake", "CHECK")]


def test_del_with_a_path_like_ifname_cannot_touch_files_outside_the_cache(
    cni_env: CniEnv,
) -> None:
    victim = cni_env.root / "victim"
    victim.write_text("keep me")
    net = cni_env.network()
    rt = cni_env.rt(ifname="../../victim")
    cni_env.cni().del_network_list(net, rt)
    assert victim.read_text() == "keep me"
    with pytest.raises(CNIError) as exc:
        cni_env.cni().check_network_list(net, rt)
    assert "invalid cache file name" in str(exc.value)


# -- scenario 29: DEL order and prevResult ---------------------------------------------------


def test_del_runs_in_reverse_with_the_cached_result(cni_env: CniEnv) -> None:
    caps = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "udp"}]}
    net = cni_env.chain(
        3,
        P1={"fake": {"ADD": {"result": R1}}, "capabilities": {"portMappings": True}},
        P3={"fake": {"ADD": {"result": "inject-dns"}}},
    )
    cni = cni_env.cni()
    added = cni.add_network_list(net, cni_env.rt(caps=caps))
    cni_env.clear()
    cni.del_network_list(net, cni_env.rt(caps=caps))
    assert cni_env.trace() == [("P3", "DEL"), ("P2", "DEL"), ("P1", "DEL")]
    p3, p2, p1 = (c["stdin"] for c in cni_env.calls())
    for stdin in (p1, p2, p3):
        assert stdin["prevResult"] == added.to_json()  # the same one, not chained
    assert p1["runtimeConfig"] == caps
    assert "runtimeConfig" not in p2 and "runtimeConfig" not in p3
    assert_no_leftover_cache(cni_env)


def test_del_runtime_config_comes_from_the_caller(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake", "capabilities": {"mac": True}}])
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt(caps={"mac": "at-add"}))
    cni.del_network_list(net, cni_env.rt(caps={"mac": "at-del"}))
    assert cni_env.calls()[-1]["stdin"]["runtimeConfig"] == {"mac": "at-del"}


# -- scenarios 30 and 31: no cache, corrupt cache --------------------------------------------


def test_del_without_cache_runs_without_prev_result_and_repeats(cni_env: CniEnv) -> None:
    net = cni_env.network()
    cni = cni_env.cni()
    cni.del_network_list(net, cni_env.rt())
    cni.del_network_list(net, cni_env.rt())
    assert cni_env.trace() == [("fake", "DEL"), ("fake", "DEL")]
    assert all("prevResult" not in c["stdin"] for c in cni_env.calls())


def test_del_after_add_can_be_repeated(cni_env: CniEnv) -> None:
    net = cni_env.network()
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt())
    cni.del_network_list(net, cni_env.rt())
    cni.del_network_list(net, cni_env.rt())
    assert "prevResult" in cni_env.calls()[1]["stdin"]
    assert "prevResult" not in cni_env.calls()[2]["stdin"]


def test_corrupt_cache_is_removed_by_del_and_fails_check(cni_env: CniEnv) -> None:
    net = cni_env.network()
    path = cni_env.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text("adfadsf")
    cni = cni_env.cni()
    with pytest.raises(CNIError) as exc:
        cni.check_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'failed to get network "net" cached result: decoding version from network config: '
        "invalid character 'a' looking for beginning of value"
    )
    assert cni_env.calls() == []
    cni.del_network_list(net, cni_env.rt())
    assert "prevResult" not in cni_env.calls()[0]["stdin"]
    assert not path.exists()


def test_check_without_cache_runs_without_prev_result(cni_env: CniEnv) -> None:
    cni_env.cni().check_network_list(cni_env.network(), cni_env.rt())
    (call,) = cni_env.calls()
    assert call["env"]["CNI_COMMAND"] == "CHECK"
    assert "prevResult" not in call["stdin"]


# -- scenario 28 / 32: legacy caches and versions on DEL -------------------------------------


def _write_cache(env: CniEnv, content: Any, net: str = "net") -> None:
    path = env.cache_file(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def test_legacy_bare_result_is_used_for_del_and_check(cni_env: CniEnv) -> None:
    legacy = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.3/24"}]}
    net = cni_env.network(version="0.4.0")
    _write_cache(cni_env, legacy)
    cni = cni_env.cni()
    cni.check_network_list(net, cni_env.rt())
    cni.del_network_list(net, cni_env.rt())
    expected = {**legacy, "dns": {}}
    assert [c["stdin"]["prevResult"] for c in cni_env.calls()] == [expected, expected]


def test_old_list_version_gets_no_prev_result_on_del(cni_env: CniEnv) -> None:
    net = cni_env.network(version="0.3.1")
    _write_cache(cni_env, {"cniVersion": "0.3.1", "ips": [{"version": "4",
                                                          "address": "10.1.2.3/24"}]})
    cni_env.cni().del_network_list(net, cni_env.rt())
    assert "prevResult" not in cni_env.calls()[0]["stdin"]
    assert not cni_env.cache_file().exists()


def test_cached_result_is_converted_to_the_list_version(cni_env: CniEnv) -> None:
    net = cni_env.network(version="1.0.0")
    _write_cache(cni_env, {"cniVersion": "0.3.1", "ips": [{"version": "4",
                                                          "address": "10.1.2.3/24"}]})
    cni_env.cni().del_network_list(net, cni_env.rt())
    assert cni_env.calls()[0]["stdin"]["prevResult"] == R1


def test_unknown_cached_version_is_tolerated_by_del_only(cni_env: CniEnv) -> None:
    net = cni_env.network()
    _write_cache(cni_env, {"cniVersion": "0.4567.0"})
    cni = cni_env.cni()
    with pytest.raises(CNIError) as exc:
        cni.check_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'failed to get network "net" cached result: unsupported CNI result version "0.4567.0"'
    )
    cni.del_network_list(net, cni_env.rt())
    assert "prevResult" not in cni_env.calls()[0]["stdin"]
    assert not cni_env.cache_file().exists()


def test_list_version_above_current_cannot_convert_the_cache(cni_env: CniEnv) -> None:
    net = cni_env.network(version="1.2.3")
    _write_cache(cni_env, R1)
    with pytest.raises(CNIError) as exc:
        cni_env.cni().check_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'failed to get network "net" cached result: '
        "no converter for CNI result version 1.0.0 to 1.2.3"
    )


# -- scenario 33: a failing DEL keeps the cache; a retry works -------------------------------


def test_del_failure_stops_keeps_cache_and_retry_succeeds(cni_env: CniEnv) -> None:
    net = cni_env.chain(3, P2={"fake": {"DEL": {"exit": 1, "stderr": "still in use"}}})
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt())
    cni_env.clear()
    with pytest.raises(CNIError) as exc:
        cni.del_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'plugin type="P2" failed (delete): netplugin failed: "still in use": exit status 1'
    )
    assert cni_env.trace() == [("P3", "DEL"), ("P2", "DEL")]
    assert cni_env.cache_file().exists()
    fixed = cni_env.chain(3)  # P2 repaired
    cni_env.clear()
    cni.del_network_list(fixed, cni_env.rt())
    assert cni_env.trace() == [("P3", "DEL"), ("P2", "DEL"), ("P1", "DEL")]
    assert all("prevResult" in c["stdin"] for c in cni_env.calls())
    assert not cni_env.cache_file().exists()


# -- scenarios 34 and 35: CHECK --------------------------------------------------------------


def test_check_runs_forward_with_the_same_cached_result(cni_env: CniEnv) -> None:
    net = cni_env.chain(3, P1={"fake": {"ADD": {"result": R1}}},
                        P2={"fake": {"ADD": {"result": "inject-dns"}}})
    cni = cni_env.cni()
    added = cni.add_network_list(net, cni_env.rt(args=(("K", "V"),)))
    cni_env.clear()
    cni.check_network_list(net, cni_env.rt(args=(("K", "V"),)))
    assert cni_env.trace() == [("P1", "CHECK"), ("P2", "CHECK"), ("P3", "CHECK")]
    for call in cni_env.calls():
        assert call["stdin"]["prevResult"] == added.to_json()
        assert call["env"]["CNI_ARGS"] == "K=V"


def test_check_failure_stops_and_is_unwrapped(cni_env: CniEnv) -> None:
    net = cni_env.chain(3, P2={"fake": {"CHECK": {"exit": 1,
                                                  "stdout": '{"code":100,"msg":"drifted"}'}}})
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt())
    cni_env.clear()
    with pytest.raises(CNIError) as exc:
        cni.check_network_list(net, cni_env.rt())
    assert (exc.value.code, str(exc.value)) == (100, "drifted")
    assert cni_env.trace() == [("P1", "CHECK"), ("P2", "CHECK")]


def test_disable_check_runs_nothing(cni_env: CniEnv) -> None:
    net = cni_env.network(disableCheck=True)
    cni_env.cni().check_network_list(net, cni_env.rt())
    assert cni_env.calls() == []


def test_check_needs_040_even_with_disable_check(cni_env: CniEnv) -> None:
    net = cni_env.network(version="0.3.1", disableCheck=True)
    with pytest.raises(CNIError) as exc:
        cni_env.cni().check_network_list(net, cni_env.rt())
    assert str(exc.value) == 'configuration version "0.3.1" does not support the CHECK command'
    assert exc.value.code == 1
    assert cni_env.calls() == []


def test_check_with_unparsable_version(cni_env: CniEnv) -> None:
    net = cni_env.network(version="broken")
    with pytest.raises(CNIError) as exc:
        cni_env.cni().check_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'failed to convert major version part "broken": strconv.Atoi: parsing "broken": '
        "invalid syntax"
    )


# -- scenario 36: VERSION --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ({"result": {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}},
         VersionInfo("1.0.0", ("0.4.0", "1.0.0"))),
        ({"result": {"cniVersion": "0.2.0"}}, VersionInfo("1.1.0", ("0.1.0", "0.2.0"))),
        ({"result": {"cniVersion": "0.2.0", "supportedVersions": []}},
         VersionInfo("1.1.0", ("0.1.0", "0.2.0"))),
        ({"exit": 1, "stdout": '{"code":4,"msg":"unknown CNI_COMMAND: VERSION"}'},
         VersionInfo("1.1.0", ("0.1.0",))),
    ],
)
def test_version_info(cni_env: CniEnv, version: dict[str, Any], expected: VersionInfo) -> None:
    cni_env.sidecar("fake", {"VERSION": version})
    assert cni_env.cni().version_info("fake") == expected


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ({"result": {"supportedVersions": ["1.0.0"]}},
         "decoding version info: missing field cniVersion"),
        ({"result": {"cniVersion": "0.3.0"}},
         "decoding version info: missing field supportedVersions"),
        ({"result": {"cniVersion": "1.0.0", "supportedVersions": []}},
         "decoding version info: missing field supportedVersions"),
        ({"stdout": "nope"},
         "decoding version info: invalid character 'n' looking for beginning of value"),
        ({"exit": 1, "stdout": '{"code":4,"msg":"unknown CNI_COMMAND: VERSION","details":"x"}'},
         "unknown CNI_COMMAND: VERSION; x"),
    ],
)
def test_version_info_errors(cni_env: CniEnv, version: dict[str, Any], message: str) -> None:
    cni_env.sidecar("fake", {"VERSION": version})
    with pytest.raises(CNIError) as exc:
        cni_env.cni().version_info("fake")
    assert str(exc.value) == message


# -- scenarios 37 and 38: GC -----------------------------------------------------------------


def _gc_setup(env: CniEnv, version: str = "1.1.0", **per: Any) -> tuple[CNIConfig, Any]:
    per.setdefault("P1", {"capabilities": {"mac": True}})
    net = env.chain(2, version=version, **per)
    other = env.network(name="other", version="1.1.0")
    cni = env.cni()
    cni.add_network_list(net, env.rt("c1", netns="/ns1", args=(("K", "1"),),
                                     caps={"mac": "m1"}))
    cni.add_network_list(net, env.rt("c2", netns="/ns2", args=(("K", "2"),),
                                     caps={"mac": "m2"}))
    cni.add_network_list(other, env.rt("c3"))
    env.clear()
    return cni, net


def test_gc_dels_stale_attachments_with_their_cached_args_then_gcs(cni_env: CniEnv) -> None:
    cni, net = _gc_setup(cni_env)
    cni.gc_network_list(net, [("c1", "eth0")])
    assert cni_env.trace() == [("P2", "DEL"), ("P1", "DEL"), ("P1", "GC"), ("P2", "GC")]
    p2_del, p1_del, p1_gc, p2_gc = cni_env.calls()
    for call in (p2_del, p1_del):
        assert call["env"]["CNI_CONTAINERID"] == "c2"
        assert call["env"]["CNI_NETNS"] == "/ns2"
        assert call["env"]["CNI_ARGS"] == "K=2"
        assert call["stdin"]["prevResult"] == {"cniVersion": "1.1.0"}
    assert p1_del["stdin"]["runtimeConfig"] == {"mac": "m2"}
    attachments = [{"containerID": "c1", "ifname": "eth0"}]
    for call in (p1_gc, p2_gc):
        stdin = call["stdin"]
        assert stdin["cni.dev/valid-attachments"] == attachments
        assert stdin["cni.dev/attachments"] == attachments
        assert (stdin["name"], stdin["cniVersion"]) == ("net", "1.1.0")
        assert "prevResult" not in stdin and "runtimeConfig" not in stdin
    left = sorted(p.name for p in (cni_env.cache / "results").iterdir())
    assert left == ["net-c1-eth0", "other-c3-eth0"]


def test_gc_with_an_empty_valid_list_dels_every_attachment_of_the_net(cni_env: CniEnv) -> None:
    cni, net = _gc_setup(cni_env)
    cni.gc_network_list(net, [])
    deleted = {c["env"]["CNI_CONTAINERID"] for c in cni_env.calls()
               if c["env"]["CNI_COMMAND"] == "DEL"}
    assert deleted == {"c1", "c2"}
    gc_stdin = [c["stdin"] for c in cni_env.calls() if c["env"]["CNI_COMMAND"] == "GC"]
    assert [s["cni.dev/valid-attachments"] for s in gc_stdin] == [[], []]
    assert [p.name for p in (cni_env.cache / "results").iterdir()] == ["other-c3-eth0"]


def test_gc_errors_are_combined_and_gc_keeps_going(cni_env: CniEnv) -> None:
    cni, net = _gc_setup(
        cni_env,
        P1={"capabilities": {"mac": True},
            "fake": {"GC": {"exit": 1, "stdout": '{"code":5,"msg":"gc broke"}'}}},
        P2={"fake": {"DEL": {"exit": 1, "stderr": "del broke"}}},
    )
    with pytest.raises(MultiError) as exc:
        cni.gc_network_list(net, [("c1", "eth0")])
    assert [str(e) for e in exc.value.errors] == [
        'failed to delete stale attachment c2 eth0: plugin type="P2" failed (delete): '
        'netplugin failed: "del broke": exit status 1',
        "failed to GC plugin P1: gc broke",
    ]
    assert str(exc.value) == "\n".join(str(e) for e in exc.value.errors)
    assert cni_env.trace() == [("P2", "DEL"), ("P1", "GC"), ("P2", "GC")]
    assert cni_env.cache_file(cid="c2").exists()  # a failed DEL keeps its cache entry


def test_single_gc_error_is_raised_as_itself_with_its_code(cni_env: CniEnv) -> None:
    cni, net = _gc_setup(
        cni_env,
        P1={"fake": {"GC": {"exit": 1, "stdout": '{"code":5,"msg":"gc broke"}'}}},
    )
    with pytest.raises(CNIError) as exc:
        cni.gc_network_list(net, [("c1", "eth0"), ("c2", "eth0")])
    assert (exc.value.code, str(exc.value)) == (5, "failed to GC plugin P1: gc broke")
    assert cni_env.trace() == [("P1", "GC"), ("P2", "GC")]


def test_disable_gc_runs_nothing(cni_env: CniEnv) -> None:
    net = cni_env.network(version="1.1.0", disableGC=True)
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt("c9"))
    cni_env.clear()
    cni.gc_network_list(net, [])
    assert cni_env.calls() == []
    assert cni_env.cache_file(cid="c9").exists()


def test_gc_on_a_100_list_only_dels_stale_attachments(cni_env: CniEnv) -> None:
    cni, net = _gc_setup(cni_env, version="1.0.0")
    cni.gc_network_list(net, [("c1", "eth0")])
    assert cni_env.trace() == [("P2", "DEL"), ("P1", "DEL")]


def test_gc_requires_an_explicit_valid_list() -> None:
    valid = inspect.signature(CNIConfig.gc_network_list).parameters["valid"]
    assert valid.default is inspect.Parameter.empty


def test_gc_without_cache_dir_still_gcs(cni_env: CniEnv) -> None:
    net = cni_env.network(version="1.1.0")
    cni_env.cni().gc_network_list(net, [("c1", "eth0")])
    assert cni_env.trace() == [("fake", "GC")]


# -- scenario 39: STATUS ---------------------------------------------------------------------


def test_status_stops_at_the_first_error_and_keeps_its_code(cni_env: CniEnv) -> None:
    net = cni_env.chain(3, version="1.1.0",
                        P2={"fake": {"STATUS": {"exit": 1,
                                                "stdout": '{"code":50,"msg":"not ready"}'}}})
    with pytest.raises(CNIError) as exc:
        cni_env.cni().status_network_list(net)
    assert (exc.value.code, str(exc.value)) == (50, "not ready")
    assert cni_env.trace() == [("P1", "STATUS"), ("P2", "STATUS")]
    first = cni_env.calls()[0]["stdin"]
    assert (first["name"], first["cniVersion"]) == ("net", "1.1.0")
    assert "prevResult" not in first and "runtimeConfig" not in first


def test_status_success_and_old_versions(cni_env: CniEnv) -> None:
    cni = cni_env.cni()
    cni.status_network_list(cni_env.chain(2, version="1.1.0"))
    assert cni_env.trace() == [("P1", "STATUS"), ("P2", "STATUS")]
    cni_env.clear()
    cni.status_network_list(cni_env.chain(2, version="1.0.0"))
    assert cni_env.calls() == []


# -- scenario 40: CNI_ARGS -------------------------------------------------------------------


def test_cni_args_reach_env_and_cache_and_del(cni_env: CniEnv) -> None:
    args = validate.parse_cni_args("IgnoreUnknown=1;IP=10.1.2.3/24")
    assert args == (("IgnoreUnknown", "1"), ("IP", "10.1.2.3/24"))
    net = cni_env.network()
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt(args=args))
    cached = json.loads(cni_env.cache_file().read_text())
    assert cached["cniArgs"] == [["IgnoreUnknown", "1"], ["IP", "10.1.2.3/24"]]
    (entry,) = cni.cache.attachments("c1")
    cni.del_network_list(net, entry.runtime_conf())
    assert [c["env"]["CNI_ARGS"] for c in cni_env.calls()] == [
        "IgnoreUnknown=1;IP=10.1.2.3/24", "IgnoreUnknown=1;IP=10.1.2.3/24",
    ]


@pytest.mark.parametrize(
    "pair", [("A", ""), ("", "B"), ("A", "B=C"), ("A;B", "C"), ("A", "B;C")]
)
def test_unencodable_cni_args_are_rejected_before_add_runs(
    cni_env: CniEnv, pair: tuple[str, str]
) -> None:
    err = add_error(cni_env, cni_env.network(), cni_env.rt(args=(pair,)))
    assert err.code == 4
    assert str(err).startswith(ADD_PREFIX + "invalid CNI_ARGS pair ")
    assert cni_env.calls() == []


# -- scenario 41: concurrency ----------------------------------------------------------------


def _cycles(cni: CNIConfig, net: Any, env: CniEnv, cid: str, errors: list[BaseException]) -> None:
    try:
        for _ in range(3):
            cni.add_network_list(net, env.rt(cid))
            cni.del_network_list(net, env.rt(cid))
    except BaseException as e:  # reported by the main thread
        errors.append(e)


@pytest.mark.parametrize("shared", [False, True], ids=["two-objects", "one-object"])
def test_concurrent_add_del_cycles_do_not_cross_talk(cni_env: CniEnv, shared: bool) -> None:
    net = cni_env.chain(2, P1={"fake": {"ADD": {"result": "echo-cid"}}})
    one = cni_env.cni()
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_cycles,
                         args=(one if shared else cni_env.cni(), net, cni_env, cid, errors))
        for cid in ("ca", "cb")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    calls = cni_env.calls()
    assert len(calls) == 2 * 3 * 2 * 2
    for call in calls:
        stdin, env = call["stdin"], call["env"]
        if env["CNI_COMMAND"] == "DEL" or call["argv0"] == "P2":
            assert stdin["prevResult"]["dns"]["domain"] == env["CNI_CONTAINERID"]
    assert_no_leftover_cache(cni_env)


def _wait_for_calls(env: CniEnv, n: int, bound: float = 60.0) -> None:
    deadline = time.monotonic() + bound  # only limits how long a failure takes
    while len(env.calls()) < n:
        assert time.monotonic() < deadline, "plugin never ran"
        time.sleep(0.01)


class _Probe(FakePluginExec):
    """Records `probe()` whenever a plugin of network `net` starts."""

    def __init__(self, net: str, probe: Callable[[], bool], seen: list[bool]) -> None:
        super().__init__()
        self.net, self.probe, self.seen = net, probe, seen

    def exec_plugin(
        self, path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None
    ) -> bytes:
        if json.loads(stdin)["name"] == self.net:
            self.seen.append(self.probe())
        return super().exec_plugin(path, stdin, env, timeout)


def test_the_lock_serializes_two_runtimes_on_one_network(cni_env: CniEnv) -> None:
    slow = cni_env.network([{"type": "fake", "fake": {"ADD": {"sleep": 0.5}}}])
    slow_done: list[bool] = []  # when c2's plugin started: was c1's ADD complete?
    first = cni_env.cni()
    done = cni_env.cache_file("net", "c1").exists
    second = cni_env.cni(exec=_Probe("net", done, slow_done))
    thread = threading.Thread(target=first.add_network_list, args=(slow, cni_env.rt("c1")))
    thread.start()
    _wait_for_calls(cni_env, 1)  # c1's plugin runs (and sleeps) under the lock
    second.add_network_list(slow, cni_env.rt("c2"))
    thread.join()
    first_call, second_call = cni_env.calls()
    cids = (first_call["env"]["CNI_CONTAINERID"], second_call["env"]["CNI_CONTAINERID"])
    assert cids == ("c1", "c2")
    # c2's plugin ran only once c1's ADD had finished, its result cached and all.
    assert slow_done == [True]


def test_unrelated_networks_never_wait_for_each_other(cni_env: CniEnv) -> None:
    """A plugin hanging on one network held every cnirun on the host (issue 12)."""
    slow = cni_env.network([{"type": "fake", "fake": {"DEL": {"sleep": 1}}}], name="slow")
    fast = cni_env.network(name="fast")
    cni_env.cni().add_network_list(slow, cni_env.rt("c1"))
    slow_done: list[bool] = []  # when fast's plugin started: was slow's DEL complete?
    first = cni_env.cni()
    slow_cached = cni_env.cache_file("slow", "c1")
    second = cni_env.cni(exec=_Probe("fast", lambda: not slow_cached.exists(), slow_done))
    thread = threading.Thread(target=first.del_network_list, args=(slow, cni_env.rt("c1")))
    thread.start()
    _wait_for_calls(cni_env, 2)  # slow's DEL sleeps under slow's lock
    second.add_network_list(fast, cni_env.rt("c2"))
    second.del_network_list(fast, cni_env.rt("c2"))
    thread.join()
    assert slow_done == [False, False]  # both ran while slow's DEL still slept
    assert [(c["stdin"]["name"], c["env"]["CNI_COMMAND"]) for c in cni_env.calls()] == [
        ("slow", "ADD"), ("slow", "DEL"), ("fast", "ADD"), ("fast", "DEL")
    ]


def test_one_object_holds_two_networks_from_two_threads(cni_env: CniEnv) -> None:
    cni = cni_env.cni()
    entered = threading.Event()

    def hold() -> None:
        with cni.lock("a"):
            entered.set()
            time.sleep(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    assert entered.wait(30)
    with cni.lock("b"):  # not "a": no waiting
        assert thread.is_alive()
    thread.join()


def test_the_lock_is_shared_with_other_processes(cni_env: CniEnv) -> None:
    released = cni_env.root / "released"
    holder = (
        "import sys, time\n"
        "from cnirun.cni.api import CNIConfig\n"
        "cni = CNIConfig([], sys.argv[1])\n"
        "with cni.lock('net'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(0.5)\n"
        "    open(sys.argv[2], 'w').close()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder, str(cni_env.cache), str(released)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    seen: list[bool] = []  # when the plugin started: had the other process let go?
    cni = cni_env.cni(exec=_Probe("net", released.exists, seen))
    cni.add_network_list(cni_env.network(), cni_env.rt())
    assert proc.wait(60) == 0
    assert cni_env.trace() == [("fake", "ADD")]
    assert seen == [True]


def test_lock_is_reentrant_in_one_thread(cni_env: CniEnv) -> None:
    cni = cni_env.cni()
    with cni.lock("net"), cni.lock("net"):
        cni.add_network_list(cni_env.network(), cni_env.rt())
    assert cni_env.trace() == [("fake", "ADD")]


def test_lock_files_are_one_per_network_private_and_never_follow_a_symlink(
    cni_env: CniEnv, tmp_path: Path
) -> None:
    cni = cni_env.cni()
    assert cni.lock_path("net") == str(cni_env.cache / "locks" / "net.lock")
    bad = cni.lock_path("../x")  # an invalid name: a digest, one path element
    assert os.path.dirname(bad) == str(cni_env.cache / "locks")
    with cni.lock("net"):
        pass
    assert (cni_env.cache / "locks").stat().st_mode & 0o777 == 0o700
    assert (cni_env.cache / "locks" / "net.lock").stat().st_mode & 0o777 == 0o600
    other = tmp_path / "elsewhere"
    other.mkdir(mode=0o700)
    moved = cni_env.root / "moved"
    (cni_env.cache / "locks").rename(moved)
    (cni_env.cache / "locks").symlink_to(other)
    with pytest.raises(CacheError) as exc:
        with cni.lock("net"):
            pass
    assert "is a symbolic link" in str(exc.value)
    assert list(other.iterdir()) == []


def test_del_gets_its_own_timeout(cni_env: CniEnv) -> None:
    fake = FakeExec()
    cni = cni_env.cni(exec=fake, timeout=7, del_timeout=3)
    net = cni_env.network([{"type": "b"}])
    cni.add_network_list(net, cni_env.rt())
    cni.del_network_list(net, cni_env.rt())
    assert [(c[1], c[3]) for c in fake.calls] == [("ADD", 7), ("DEL", 3)]
    assert cni_env.cni(exec=fake, timeout=7).del_timeout == 7  # not given: as the others


# -- the Exec seam, with an in-process fake ---------------------------------------------------


class FakeExec:
    """Records every call; replies per (plugin, command) with bytes or an exception."""

    def __init__(self, replies: Mapping[tuple[str, str], bytes | Exception] | None = None):
        self.replies = dict(replies or {})
        self.calls: list[tuple[str, str, bytes, float | None]] = []

    def find_in_path(self, plugin: str, paths: Sequence[str]) -> str:
        if plugin == "missing":
            return find_in_path(plugin, paths)
        return f"/fake/{plugin}"

    def exec_plugin(
        self, path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None
    ) -> bytes:
        name, command = path.rsplit("/", 1)[1], env["CNI_COMMAND"]
        self.calls.append((name, command, stdin, timeout))
        reply = self.replies.get((name, command), b"")
        if isinstance(reply, Exception):
            raise reply
        if command == "ADD" and not reply:
            return json.dumps(json.loads(stdin).get("prevResult") or {}).encode()
        return reply


def test_stdin_is_compact_json_with_sorted_keys(cni_env: CniEnv) -> None:
    fake = FakeExec()
    net = cni_env.network([{"type": "b", "z": 1, "capabilities": {"mac": True}, "a": "é"}])
    cni_env.cni(exec=fake, timeout=7).add_network_list(net, cni_env.rt(caps={"mac": "m"}))
    ((name, command, stdin, timeout),) = fake.calls
    assert (name, command, timeout) == ("b", "ADD", 7)
    assert stdin == (
        b'{"a":"\\u00e9","cniVersion":"1.0.0","name":"net","runtimeConfig":{"mac":"m"},'
        b'"type":"b","z":1}'
    )


def test_rollback_with_failing_dels_still_reaches_the_first_plugin(cni_env: CniEnv) -> None:
    fake = FakeExec({
        ("p2", "ADD"): CNIError(7, "add broke"),
        ("p3", "DEL"): CNIError(3, "never added"),
        ("p2", "DEL"): CNIError(5, "del broke"),
    })
    net = cni_env.network([{"type": "p1"}, {"type": "p2"}, {"type": "p3"}])
    with pytest.raises(CNIError) as exc:
        cni_env.cni(exec=fake).add_network_list(net, cni_env.rt())
    assert str(exc.value) == 'plugin type="p2" failed (add): add broke'
    assert [(n, c) for n, c, _, _ in fake.calls] == [
        ("p1", "ADD"), ("p2", "ADD"), ("p3", "DEL"), ("p2", "DEL"), ("p1", "DEL"),
    ]


def test_add_with_fake_exec_writes_the_cache(cni_env: CniEnv) -> None:
    fake = FakeExec({("p1", "ADD"): json.dumps(R1).encode()})
    net = cni_env.network([{"type": "p1"}])
    cni = cni_env.cni(exec=fake)
    assert cni.add_network_list(net, cni_env.rt()).to_json() == R1
    assert [e.container_id for e in cni.cache.attachments()] == ["c1"]
    assert cni.find_plugins(net) == ["/fake/p1"]


def test_errors_are_cnirun_errors() -> None:
    assert issubclass(CNIError, CnirunError)

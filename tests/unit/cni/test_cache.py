"""The result cache: libcni's cniCacheV1 format and layout (reference section 3; scenarios 25-28).

Files written here must read like libcni's and libcni's must read here, so the tests check
the exact field set and types of Go's `cachedInfo` struct.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cni.conftest import R1

from cnirun.cni.cache import ResultCache, parse_cached_result
from cnirun.cni.types import Result, ResultError
from cnirun.errors import CacheError, CNIError
from tests.unit.conftest import CniEnv

GO_FIELDS = ("kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs",
             "capabilityArgs", "result")


def go_decode_cached_info(data: bytes) -> dict[str, Any]:
    """Decode a cache file the way Go's json.Unmarshal into libcni's cachedInfo would,
    failing where Go would fail (wrong types, bad base64)."""
    obj = json.loads(data)
    assert isinstance(obj, dict)
    for key in ("kind", "containerId", "ifName", "networkName", "netns"):
        assert isinstance(obj.get(key, ""), str), key
    config = obj.get("config", "")
    assert isinstance(config, str)
    base64.b64decode(config, validate=True)  # Go's []byte: standard, padded base64
    assert len(config) % 4 == 0
    for pair in obj.get("cniArgs", []):
        assert isinstance(pair, list) and all(isinstance(p, str) for p in pair)
    assert isinstance(obj.get("capabilityArgs", {}), dict)
    assert isinstance(obj.get("result", {}), dict)
    return obj


# -- scenario 25: the file and its fields ----------------------------------------------------


def test_cache_file_layout_fields_and_modes(cni_env: CniEnv) -> None:
    caps = {"mac": "c2:11:22:33:44:55",
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    net = cni_env.chain(2, P1={"fake": {"ADD": {"result": R1}}})
    result = cni_env.cni().add_network_list(net, cni_env.rt(args=(("K", "V"),), caps=caps))
    path = cni_env.cache / "results" / "net-c1-eth0"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    entry = go_decode_cached_info(data)
    assert list(entry) == list(GO_FIELDS)  # Go's struct order
    assert entry["kind"] == "cniCacheV1"
    assert (entry["containerId"], entry["ifName"], entry["networkName"]) == ("c1", "eth0", "net")
    assert entry["netns"] == "/tmp/ns"
    assert entry["cniArgs"] == [["K", "V"]]
    assert entry["capabilityArgs"] == caps  # everything the runtime supplied
    assert entry["result"] == result.to_json() == R1
    conflist = (cni_env.netconf / "50-net.conflist").read_bytes()
    assert base64.b64decode(entry["config"]) == conflist
    assert entry["config"] == base64.b64encode(conflist).decode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["net-c1-eth0"]  # no temp files


def test_empty_optional_fields_are_omitted(cni_env: CniEnv) -> None:
    cni_env.cni().add_network_list(cni_env.network(), cni_env.rt(netns=""))
    entry = json.loads(cni_env.cache_file().read_text())
    assert list(entry) == ["kind", "containerId", "config", "ifName", "networkName", "result"]


def test_cache_path_requires_all_three_parts(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    assert cache.path("net", "c1", "eth0") == str(tmp_path / "results" / "net-c1-eth0")
    with pytest.raises(CacheError) as exc:
        cache.path("", "x", "eth0")
    assert str(exc.value) == (
        'cache file path requires network name (""), container ID ("x"), '
        'and interface name ("eth0")'
    )
    with pytest.raises(CacheError, match="invalid cache file name"):
        cache.path("net", "c1", "../../x")


def test_the_cache_dir_is_always_explicit() -> None:
    cache_dir = inspect.signature(ResultCache).parameters["cache_dir"]
    assert cache_dir.default is inspect.Parameter.empty


# -- interoperability with libcni ------------------------------------------------------------


def _libcni_file(conflist: bytes) -> bytes:
    """A cache file exactly as libcni writes it (json.Marshal of cachedInfo)."""
    config = base64.b64encode(conflist).decode()
    return (
        '{"kind":"cniCacheV1","containerId":"c7","config":"' + config + '","ifName":"eth1",'
        '"networkName":"net","netns":"/proc/42/ns/net","cniArgs":[["K","V"],["IgnoreUnknown","1"]],'
        '"capabilityArgs":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]},'
        '"result":{"cniVersion":"1.0.0","dns":{},"interfaces":[{"name":"eth1",'
        '"sandbox":"/proc/42/ns/net"}],"ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1",'
        '"interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.2.1"}]}}'
    ).encode()


def test_a_libcni_cache_file_is_read(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake", "capabilities": {"portMappings": True}}])
    conflist = (cni_env.netconf / "50-net.conflist").read_bytes()
    results = cni_env.cache / "results"
    results.mkdir(parents=True)
    (results / "net-c7-eth1").write_bytes(_libcni_file(conflist))
    cni = cni_env.cni()
    (entry,) = cni.cache.attachments("c7")
    assert (entry.container_id, entry.ifname, entry.network_name) == ("c7", "eth1", "net")
    assert entry.netns == "/proc/42/ns/net"
    assert entry.cni_args == (("K", "V"), ("IgnoreUnknown", "1"))
    assert entry.capability_args == {
        "portMappings": [{"containerPort": 80, "hostPort": 8080, "protocol": "tcp"}]
    }
    assert entry.config == conflist
    cni.del_network_list(net, entry.runtime_conf())
    (call,) = cni_env.calls()
    assert call["env"]["CNI_NETNS"] == "/proc/42/ns/net"
    assert call["env"]["CNI_ARGS"] == "K=V;IgnoreUnknown=1"
    assert call["stdin"]["runtimeConfig"] == entry.capability_args
    assert call["stdin"]["prevResult"] == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth1", "sandbox": "/proc/42/ns/net"}],
        "ips": [{"interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}],
    }
    assert not (results / "net-c7-eth1").exists()


def test_our_cache_file_parses_back_as_libcni_would(cni_env: CniEnv) -> None:
    net = cni_env.network()
    cni = cni_env.cni()
    rt = cni_env.rt(args=(("A", "1"),), caps={"ips": ["10.1.2.3/24"]})
    result = cni.add_network_list(net, rt)
    data = cni_env.cache_file().read_bytes()
    go = go_decode_cached_info(data)
    assert set(go) <= set(GO_FIELDS)
    assert parse_cached_result(data) == result
    (entry,) = cni.cache.attachments()
    assert entry.runtime_conf() == rt
    assert entry.result == result.to_json()


def test_cni_args_pairs_decode_like_go_arrays(cni_env: CniEnv) -> None:
    results = cni_env.cache / "results"
    results.mkdir(parents=True)
    entry = {"kind": "cniCacheV1", "containerId": "c1", "config": "", "ifName": "eth0",
             "networkName": "net", "cniArgs": [["K"], ["A", "B", "extra"]]}
    (results / "net-c1-eth0").write_text(json.dumps(entry))
    (found,) = ResultCache(str(cni_env.cache)).attachments()
    assert found.cni_args == (("K", ""), ("A", "B"))


# -- scenario 26: several attachments --------------------------------------------------------


def test_multi_attach_makes_one_file_per_interface(cni_env: CniEnv) -> None:
    net = cni_env.network()
    cni = cni_env.cni()
    cni.add_network_list(net, cni_env.rt(ifname="eth0"))
    cni.add_network_list(net, cni_env.rt(ifname="eth1"))
    cni.add_network_list(net, cni_env.rt(cid="c2"))
    names = sorted(p.name for p in (cni_env.cache / "results").iterdir())
    assert names == ["net-c1-eth0", "net-c1-eth1", "net-c2-eth0"]
    assert [(e.container_id, e.ifname) for e in cni.cache.attachments("c1")] == [
        ("c1", "eth0"), ("c1", "eth1"),
    ]
    assert len(cni.cache.attachments()) == 3


def test_ambiguous_file_names_are_told_apart_by_the_json(cni_env: CniEnv) -> None:
    cni = cni_env.cni()
    net_a = cni_env.network(name="a")
    net_ab = cni_env.network(name="a-b")
    cni.add_network_list(net_a, cni_env.rt(cid="b-c"))
    # "a" + "b-c" and "a-b" + "c" give the same file name: a-b-c-eth0.
    assert [p.name for p in (cni_env.cache / "results").iterdir()] == ["a-b-c-eth0"]
    assert cni.cache.attachments("c") == []
    (entry,) = cni.cache.attachments("b-c")
    assert entry.network_name == "a"
    cni.del_network_list(net_a, entry.runtime_conf())
    cni.add_network_list(net_ab, cni_env.rt(cid="c"))
    assert cni.cache.attachments("b-c") == []
    (entry,) = cni.cache.attachments("c")
    assert (entry.network_name, entry.container_id) == ("a-b", "c")


def test_attachments_skip_unusable_files(cni_env: CniEnv) -> None:
    results = cni_env.cache / "results"
    results.mkdir(parents=True)
    good = {"kind": "cniCacheV1", "containerId": "c1", "config": "", "ifName": "eth0",
            "networkName": "net"}
    files: dict[str, Any] = {
        "net-c1-eth0": good,
        "net-c1-eth1": {**good, "ifName": ""},
        "other-c1-eth0": {k: v for k, v in good.items() if k != "networkName"},
        "net-c1-eth2": {"cniVersion": "1.0.0"},  # legacy: no metadata
        "net-c1-eth3": "garbage",
        "net-c1-eth4": {**good, "kind": "cniCacheV2"},
        "net-c1-eth5": {**good, "config": "not base64!"},
        "net-c1-eth6": {**good, "cniArgs": [[1, 2]]},
        ".tmp-abc": good,
    }
    for name, content in files.items():
        (results / name).write_text(content if isinstance(content, str) else json.dumps(content))
    (results / "net-c1-dir").mkdir()
    cache = ResultCache(str(cni_env.cache))
    assert [e.path for e in cache.attachments("c1")] == [str(results / "net-c1-eth0")]
    assert [e.path for e in cache.attachments()] == [str(results / "net-c1-eth0")]
    assert cache.attachments("net") == []  # the id must follow a "-" inside the name


def test_attachments_skip_leftover_write_atomic_temp_files(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    good = {"kind": "cniCacheV1", "containerId": "c1", "config": "", "ifName": "eth0",
            "networkName": "net"}
    for name in ("net-c1-eth0", ".net-c1-eth0.4242.tmp"):  # a write killed before rename
        (results / name).write_text(json.dumps(good))
    cache = ResultCache(str(tmp_path))
    assert [e.path for e in cache.attachments()] == [str(results / "net-c1-eth0")]
    assert [e.path for e in cache.attachments("c1")] == [str(results / "net-c1-eth0")]


def test_attachments_of_a_missing_cache_dir(tmp_path: Path) -> None:
    assert ResultCache(str(tmp_path / "nope")).attachments() == []


# -- scenario 27: a cache that cannot be written ---------------------------------------------


def test_cache_write_failure_fails_add_after_the_plugins_and_dels(cni_env: CniEnv) -> None:
    cni_env.cache.mkdir()
    (cni_env.cache / "results").write_text("not a directory")
    net = cni_env.chain(2)
    with pytest.raises(CNIError) as exc:
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert str(exc.value).startswith('failed to set network "net" cached result: ')
    assert cni_env.trace() == [("P1", "ADD"), ("P2", "ADD"), ("P2", "DEL"), ("P1", "DEL")]
    # The cleanup DEL is told the complete result that could not be cached.
    prevs = [c["stdin"].get("prevResult") for c in cni_env.calls()[2:]]
    assert prevs[0] is not None and all(p == prevs[0] for p in prevs)


# -- scenario 28 and friends: reading results ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.2.3/24"}]}',
         {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.3/24"}],
          "dns": {}}),
        (b'{"kind":"other","cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24"}]}', R1),
        (b'{"kind":"cniCacheV1","containerId":"c","result":' + json.dumps(R1).encode() + b"}",
         R1),
        (b'{"kind":"cniCacheV1","containerId":"c"}', {"cniVersion": "0.1.0", "dns": {}}),
        (b"null", {"cniVersion": "0.1.0", "dns": {}}),
        (b'{"ip4":{"ip":"10.1.2.3/24"}}',
         {"cniVersion": "0.1.0", "ip4": {"ip": "10.1.2.3/24"}, "dns": {}}),
    ],
)
def test_parse_cached_result(content: bytes, expected: dict[str, Any]) -> None:
    assert parse_cached_result(content).to_json() == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"adfadsf", "decoding version from network config: invalid character 'a' looking "
                     "for beginning of value"),
        (b"", "decoding version from network config: unexpected end of JSON input"),
        (b'{"cniVersion":"0.4567.0"}', 'unsupported CNI result version "0.4567.0"'),
        (b"[1]", "decoding version from network config: result is not a JSON object"),
    ],
)
def test_parse_cached_result_errors(content: bytes, message: str) -> None:
    with pytest.raises(ResultError) as exc:
        parse_cached_result(content)
    assert str(exc.value) == message


def test_read_result_converts_and_tolerates_absence(cni_env: CniEnv) -> None:
    cache = ResultCache(str(cni_env.cache))
    rt = cni_env.rt()
    assert cache.read_result("net", rt, "1.0.0") is None
    assert not Path(cache.path("net", "c1", "eth0")).exists()
    cache.write("net", b"{}", rt, Result.from_json(R1))
    converted = cache.read_result("net", rt, "0.4.0")
    assert converted is not None
    assert converted.to_json() == {
        "cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.3/24"}], "dns": {},
    }
    cache.delete("net", "c1", "eth0")
    cache.delete("net", "c1", "eth0")  # idempotent
    assert cache.read_result("net", rt, "1.0.0") is None


def test_unreadable_cache_file_counts_as_absent(cni_env: CniEnv) -> None:
    cache = ResultCache(str(cni_env.cache))
    path = Path(cache.path("net", "c1", "eth0"))
    path.mkdir(parents=True)  # a directory where the file should be: EISDIR on read
    assert cache.read_result("net", cni_env.rt(), "1.0.0") is None


def test_write_error_is_a_cache_error(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("x")
    cache = ResultCache(str(tmp_path))
    with pytest.raises(CacheError):
        cache.write("net", b"{}", CniEnv.rt(), Result.from_json(R1))


def test_base64_config_is_validated_when_reading(tmp_path: Path) -> None:
    with pytest.raises(binascii.Error):
        base64.b64decode("not base64!", validate=True)
    results = tmp_path / "results"
    results.mkdir()
    entry = {"kind": "cniCacheV1", "containerId": "c1", "config": "e30=", "ifName": "eth0",
             "networkName": "net"}
    (results / "net-c1-eth0").write_text(json.dumps(entry))
    (found,) = ResultCache(str(tmp_path)).attachments()
    assert found.config == b"{}"
    assert found.result is None

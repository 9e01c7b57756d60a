"""The one JSON decoder (cnirun.cni.gojson): Go's encoding/json rules, bounded nesting, and
every failure one cnirun error (issue 13 items 5 and 6) with the ADD rollback still run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnirun.cni import gojson
from cnirun.cni.config import MAX_CONFIG_BYTES, list_from_bytes, load_network
from cnirun.cni.invoke import decode_failure
from cnirun.cni.types import Result
from cnirun.errors import CNIError, ConfigError
from tests.unit.cni.conftest import assert_no_leftover_cache
from tests.unit.conftest import CniEnv

DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": NaN}', "invalid character 'N' looking for beginning of value"),
        (b'{"a": Infinity}', "invalid character 'I' looking for beginning of value"),
        (b'{"a": -Infinity}', "invalid character 'I' in numeric literal"),
        (b"\xef\xbb\xbf{}", "invalid character '\\ufeff' looking for beginning of value"),
        (b'{"a": 1e400}', "json: cannot unmarshal number 1e400 into Go value of type float64"),
        (DEEP, f"exceeded max depth of {gojson.MAX_DEPTH}"),
        (b'{"a":' * 300 + b"1" + b"}" * 300, f"exceeded max depth of {gojson.MAX_DEPTH}"),
    ],
)
def test_what_go_refuses_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(gojson.JSONError) as caught:
        gojson.loads(data)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b'"\\ud800"', "\ufffd"),  # a lone surrogate escape, as Go decodes it
        (b'"\\udc00x"', "\ufffdx"),
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a pair stays a pair
        (b'"\\\\ud800"', "\\ud800"),  # an escaped backslash is no escape
        (b'{"\\ud800": 1}', {"\ufffd": 1}),
        (b'"a\xffb"', "a\ufffdb"),  # invalid UTF-8, as Go decodes it
        (b'"[[[[" ', "[[[["),  # brackets inside strings are not nesting
        (b"[" * gojson.MAX_DEPTH + b"]" * gojson.MAX_DEPTH, [[]] and ...),
    ],
)
def test_what_go_accepts_decodes_as_in_go(data: bytes, value: object) -> None:
    decoded = gojson.loads(data)
    if value is not ...:
        assert decoded == value
    '"'.join([str(decoded)]).encode()  # whatever it is, it encodes: no lone surrogate left


def test_a_config_go_refuses_is_a_config_error(cni_env: CniEnv) -> None:
    # Issue 13 item 6: NaN, Infinity and a BOM were accepted, then no plugin could DEL.
    for body in (b'{"name":"n","x":NaN,"plugins":[]}', b"\xef\xbb\xbf" + b'{"name":"n"}'):
        with pytest.raises(ConfigError, match="invalid character"):
            list_from_bytes(body)
    # Issue 13 item 5: a lone surrogate or deep nesting crashed every command reading the dir.
    cni_env.write("10-deep.conflist", b'{"name":"deep","x":' + DEEP + b',"plugins":[]}')
    with pytest.raises(ConfigError, match=r"10-deep.conflist: .*exceeded max depth"):
        load_network(str(cni_env.netconf), "deep")
    os.unlink(cni_env.netconf / "10-deep.conflist")  # any broken file stops a lookup (libcni)
    cni_env.write("20-s.conflist", b'{"name":"s\\ud800","plugins":[{"type":"fake"}]}')
    assert load_network(str(cni_env.netconf), "s\ufffd").name == "s\ufffd"


def test_only_bounded_regular_files_are_read_from_the_config_dir(cni_env: CniEnv) -> None:
    # Issue 13 item 7: a FIFO hung cnirun, /dev/zero was a MemoryError, 200 MB took 2 GB.
    cni_env.netconf.mkdir(parents=True, exist_ok=True)
    os.mkfifo(cni_env.netconf / "10-fifo.conflist")
    with pytest.raises(ConfigError, match="10-fifo.conflist: error reading file: not a regular"):
        load_network(str(cni_env.netconf), "x")
    os.unlink(cni_env.netconf / "10-fifo.conflist")
    (cni_env.netconf / "10-zero.conflist").symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="10-zero.conflist: error reading file: not a regular"):
        load_network(str(cni_env.netconf), "x")
    os.unlink(cni_env.netconf / "10-zero.conflist")
    big = cni_env.write("10-big.conflist", b" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match=f"{big}: error reading file: larger than"):
        load_network(str(cni_env.netconf), "x")


@pytest.mark.parametrize(
    "stdout",
    [
        '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"x": 1e400}',
        '{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","interface": 1e400}]}',
        '{"cniVersion":"1.0.0","dns":{"domain": NaN}}',
        "[" * 1000 + "]" * 1000,
    ],
)
def test_plugin_output_go_refuses_fails_the_add_and_rolls_back(
    cni_env: CniEnv, stdout: str
) -> None:
    # Issue 13 item 5: these were tracebacks (exit 1) that skipped the rollback DEL.
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"stdout": stdout}}}])
    with pytest.raises(CNIError, match='plugin type="fake" failed \\(add\\): failed to unmarsh'):
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert cni_env.trace() == [("fake", "ADD"), ("fake", "DEL")]
    assert_no_leftover_cache(cni_env)


def test_plugin_output_with_invalid_utf8_or_a_lone_surrogate_decodes_as_in_go() -> None:
    # Issue 13 item 6: invalid UTF-8 was refused; Go replaces it with U+FFFD.
    for stdout in (b'{"cniVersion":"1.0.0","dns":{"domain":"a\xffb"}}',
                   b'{"cniVersion":"1.0.0","dns":{"domain":"a\\ud800b"}}'):
        result = Result.from_plugin_output(stdout, "1.0.0")
        assert result.to_json()["dns"] == {"domain": "a\ufffdb"}


def test_an_error_object_go_refuses_is_one_error() -> None:
    for stdout in (b'{"code": 1e400, "msg": "x"}', b'{"msg": ' + DEEP + b"}"):
        err = decode_failure(stdout, b"", "exit status 1")
        assert "netplugin failed but error parsing its diagnostic message" in str(err)
    assert decode_failure(b'{"code":7,"msg":"a\\ud800"}', b"", "").msg == "a\ufffd"


def test_a_nested_cache_file_is_skipped(cni_env: CniEnv, tmp_path: Path) -> None:
    from cnirun.cni.cache import ResultCache

    results = cni_env.cache / "results"
    results.mkdir(parents=True)
    (results / "net-cnirun-x-eth0").write_bytes(b'{"kind":"cniCacheV1","result":' + DEEP + b"}")
    assert ResultCache(str(cni_env.cache)).attachments() == []


def test_text_with_surrogates_decodes_as_in_go() -> None:
    # A str argument (CAP_ARGS from argv) may carry surrogates: never an encoding traceback.
    assert gojson.loads('"a\udcffb\ud800"') == "a\ufffd\ufffd\ufffdb\ufffd\ufffd\ufffd"

"""Property tests (hypothesis): whatever a config file, a plugin's output, an error object, a
cache file, a sandbox record or a `docker run` command line holds, only cnirun's own error
classes escape (one line, exit 125), never a traceback (issue 13).

Bounded so the unit suite stays fast; `make fuzz` runs many more examples
(CNIRUN_FUZZ_EXAMPLES)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnirun.cni.cache import ResultCache, parse_cached_result
from cnirun.cni.config import list_from_bytes, plugin_from_bytes
from cnirun.cni.invoke import decode_failure
from cnirun.cni.types import Result
from cnirun.dockerargs import parse_run_args
from cnirun.errors import CNIError, CnirunError
from cnirun.sandbox.records import RecordError, RecordStore

EXAMPLES = int(os.environ.get("CNIRUN_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
VERSIONS = ["", "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9.9.9"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(VERSIONS + ["10.1.2.3/24", "10.1.2.1", "eth0", "fake", "::1/64"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "cniVersion",
    "name",
    "plugins",
    "type",
    "ips",
    "interfaces",
    "routes",
    "dns",
    "address",
    "gateway",
    "interface",
    "ip4",
    "ip6",
    "code",
    "msg",
    "details",
    "kind",
    "result",
    "containerId",
    "ifName",
    "networkName",
    "config",
    "cniArgs",
    "capabilityArgs",
    "mac",
    "dst",
    "gw",
    "nameservers",
    "capabilities",
    "disableCheck",
    "cniVersions",
    "ipam",
]
shaped = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)
    ),
    max_leaves=25,
)
# Raw bytes, JSON of any shape, JSON shaped like what is parsed, and Go-hostile JSON text.
documents = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | shaped.map(lambda v: json.dumps(v).encode())
    | st.sampled_from(
        [
            b"NaN",
            b'{"a":Infinity}',
            b'"\\ud800"',
            b"\xef\xbb\xbf{}",
            b"[" * 3000,
            b"1e400",
            b'{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/8","interface":1e400}]}',
        ]
    )
)


@FUZZ
@given(documents)
def test_config_loading_raises_only_config_errors(data: bytes) -> None:
    for parse in (list_from_bytes, plugin_from_bytes):
        try:
            net = parse(data)
        except CnirunError:
            continue
        assert net is not None


@FUZZ
@given(documents, st.sampled_from(VERSIONS), st.sampled_from(VERSIONS))
def test_result_decoding_and_conversion_raise_only_cni_errors(
    data: bytes, request: str, to: str
) -> None:
    try:
        result = Result.from_plugin_output(data, request)
        result.convert(to).to_json()
    except CNIError:
        pass


@FUZZ
@given(documents, st.binary(max_size=100))
def test_error_decoding_always_gives_one_cni_error(stdout: bytes, stderr: bytes) -> None:
    error = decode_failure(stdout, stderr, "exit status 1")
    assert isinstance(error, CNIError)  # `null` is an empty message, as in libcni


@FUZZ
@given(documents)
def test_cache_reading_raises_only_cnirun_errors(tmp_path_factory: Any, data: bytes) -> None:
    try:
        parse_cached_result(data)
    except CnirunError:
        pass
    results = Path(tmp_path_factory.mktemp("cache")) / "results"
    results.mkdir()
    (results / "net-cnirun-x-eth0").write_bytes(data)
    for entry in ResultCache(str(results.parent)).attachments():
        entry.runtime_conf()


record_fields = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        [
            "infra_name",
            "netns_name",
            "cache_dir",
            "plugin_dirs",
            "cni_timeout",
            "attachments",
            "results",
            "ports",
            "owner_pid",
            "infra_id",
            "netns_path",
        ],
        shaped,
    ),
)


@FUZZ
@given(record_fields | json_values)
def test_record_reading_raises_only_record_errors(tmp_path_factory: Any, raw: Any) -> None:
    store = RecordStore(str(tmp_path_factory.mktemp("state")))
    store.ensure()
    sid = "ab" * 16
    path = Path(store.path(sid))
    path.write_text(json.dumps(raw))
    path.chmod(0o600)
    try:
        record = store.load(sid)
    except RecordError:
        return
    for attachment in record.attachments:
        base64.b64decode(attachment.config_b64)


flags = st.sampled_from(
    [
        "-d",
        "--rm",
        "-it",
        "-p",
        "--publish",
        "-v",
        "--network",
        "--net",
        "-h",
        "--dns",
        "--add-host",
        "--ip",
        "--mac-address",
        "--cni-args",
        "--cni-timeout",
        "--cni-path",
        "--mount",
        "-e",
        "--entrypoint",
        "--",
        "busybox",
        "-P",
        "--link",
        "--read-only",
        "--infra-image",
        "--pull",
        "80",
        "8080:80",
        "a:b",
        "x=y",
        "-",
    ]
)


@FUZZ
@given(st.lists(flags | st.text(max_size=12), max_size=8))
def test_the_docker_flag_parser_raises_only_cnirun_errors(argv: list[str]) -> None:
    try:
        parse_run_args(argv)
    except CnirunError:
        pass

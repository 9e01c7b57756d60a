"""The workload's /etc/hosts and /etc/resolv.conf (cnirun.etcfiles), and how they are mounted."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnirun import etcfiles, lifecycle
from cnirun.cni.types import Result
from cnirun.dockerargs import parse_run_args
from cnirun.errors import CnirunError

DOCKER_DEFAULTS = [
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "ff00::0\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
]

HOST = "# written by hand\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.test\n"


# -- /etc/hosts -------------------------------------------------------------------------------


def test_hosts_has_docker_defaults_then_cni_addresses_then_added_hosts() -> None:
    text = etcfiles.hosts(
        "web", "example.test", ["10.22.0.5/16", "fd00::5/64"], [("db", "10.0.0.9")]
    )
    assert text.splitlines() == [
        *DOCKER_DEFAULTS,
        "10.22.0.5\tweb.example.test web",
        "fd00::5\tweb.example.test web",
        "10.0.0.9\tdb",
    ]


def test_hosts_without_hostname_or_domain() -> None:
    assert etcfiles.hosts("", "", ["10.0.0.5/24"], []).splitlines() == DOCKER_DEFAULTS
    assert etcfiles.hosts("web", "", ["10.0.0.5/24"], [])[-1:] == "\n"
    assert etcfiles.hosts("web", "", ["10.0.0.5/24"], []).splitlines()[-1] == "10.0.0.5\tweb"


def test_host_gateway_is_the_first_gateway_that_is_a_host_address() -> None:
    hosts = [("db", "10.0.0.9"), ("gw", "host-gateway")]
    # 192.0.2.1 (TEST-NET) is nobody's address here; 127.0.0.1 always is the host's.
    resolved = etcfiles.resolve_host_gateway(hosts, ["192.0.2.1", "127.0.0.1"])
    assert resolved == [("db", "10.0.0.9"), ("gw", "127.0.0.1")]


def test_host_gateway_without_a_host_gateway_is_a_clear_error() -> None:
    with pytest.raises(CnirunError, match="host-gateway: no network .* host's IP address"):
        etcfiles.resolve_host_gateway([("gw", "host-gateway")], ["192.0.2.1"])
    # Nothing to resolve: the gateways are not even looked at.
    assert etcfiles.resolve_host_gateway([("db", "10.0.0.9")], []) == [("db", "10.0.0.9")]


# -- /etc/resolv.conf -------------------------------------------------------------------------


def test_resolv_conf_copies_the_host_file_without_local_resolvers() -> None:
    text = etcfiles.resolv_conf(HOST, {})
    assert text == "# written by hand\nnameserver 10.0.0.2\nsearch corp.test\n"


@pytest.mark.parametrize(
    ("ipv6", "servers"),
    [
        (False, ["8.8.8.8", "8.8.4.4"]),
        (True, ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"]),
    ],
)
def test_resolv_conf_falls_back_to_public_resolvers(ipv6: bool, servers: list[str]) -> None:
    text = etcfiles.resolv_conf(
        "nameserver 127.0.0.1\nnameserver ::1\noptions edns0\n", {}, ipv6=ipv6
    )
    assert text.splitlines() == ["options edns0", *[f"nameserver {s}" for s in servers]]


def test_resolv_conf_takes_a_cni_results_dns_over_the_hosts() -> None:
    dns = {"nameservers": ["10.1.0.1"], "domain": "cni.test", "options": ["ndots:2"]}
    text = etcfiles.resolv_conf(HOST, dns)
    assert text == "nameserver 10.1.0.1\nsearch cni.test\noptions ndots:2\n"
    dns = {"nameservers": ["10.1.0.1"], "domain": "cni.test", "search": ["a.test", "b.test"]}
    assert etcfiles.resolv_conf(HOST, dns) == "nameserver 10.1.0.1\nsearch a.test b.test\n"
    # A result whose DNS names no server leaves the host's file in charge.
    assert etcfiles.resolv_conf(HOST, {"search": ["x.test"]}) == etcfiles.resolv_conf(HOST, {})


def test_each_dns_flag_replaces_only_its_own_part() -> None:
    dns = {"nameservers": ["10.1.0.1"], "search": ["cni.test"], "options": ["ndots:2"]}
    assert etcfiles.resolv_conf(HOST, dns, dns=["10.9.9.9"]) == (
        "nameserver 10.9.9.9\nsearch cni.test\noptions ndots:2\n"
    )
    assert etcfiles.resolv_conf(HOST, dns, dns_search=["u.test"], dns_options=["rotate"]) == (
        "nameserver 10.1.0.1\nsearch u.test\noptions rotate\n"
    )
    # On the host's file: its usable servers and search stay, `--dns-search .` drops search.
    assert etcfiles.resolv_conf(HOST, {}, dns_options=["ndots:1"]) == (
        "nameserver 10.0.0.2\nsearch corp.test\noptions ndots:1\n"
    )
    assert etcfiles.resolv_conf(HOST, {}, dns_search=["."]) == "nameserver 10.0.0.2\n"


def test_host_resolv_conf_skips_the_systemd_resolved_stub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    upstream.write_text("nameserver 10.0.0.2\n")
    monkeypatch.setattr(etcfiles, "HOST_RESOLV_CONF", str(stub))
    monkeypatch.setattr(etcfiles, "SYSTEMD_RESOLV_CONF", str(upstream))
    assert etcfiles.host_resolv_conf() == "nameserver 10.0.0.2\n"
    stub.write_text("nameserver 10.0.0.3\n")
    assert etcfiles.host_resolv_conf() == "nameserver 10.0.0.3\n"
    monkeypatch.setattr(etcfiles, "HOST_RESOLV_CONF", str(tmp_path / "missing"))
    assert etcfiles.host_resolv_conf() == ""


def test_result_gateways_in_every_version() -> None:
    current = Result.decode(
        {
            "ips": [
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1"},
                {"address": "10.1.0.5/24"},
            ]
        },
        "1.0.0",
    )
    assert current.gateways() == ["10.0.0.1"]
    old = Result.decode({"ip4": {"ip": "10.0.0.5/24", "gateway": "10.0.0.1"}}, "0.2.0")
    assert old.gateways() == ["10.0.0.1"]


# -- the mounts -------------------------------------------------------------------------------


def test_etc_files_are_bind_mounted_unless_the_user_mounts_there() -> None:
    args = parse_run_args(["busybox"])
    assert lifecycle._etc_mounts("/st/x.etc", args) == [
        "-v", "/st/x.etc/hosts:/etc/hosts:z",
        "-v", "/st/x.etc/resolv.conf:/etc/resolv.conf:z",
    ]  # fmt: skip
    args = parse_run_args(["-v", "/mine:/etc//hosts:ro", "--read-only", "busybox"])
    assert lifecycle._etc_mounts("/st/x.etc", args) == [
        "-v", "/st/x.etc/resolv.conf:/etc/resolv.conf:ro,z",
    ]  # fmt: skip
    args = parse_run_args(["--mount", "type=tmpfs,dst=/etc/resolv.conf", "-v", "/etc/hosts", "i"])
    assert lifecycle._etc_mounts("/st/x.etc", args) == []


def test_a_state_dir_with_a_colon_is_mounted_with_mount() -> None:
    """-v cannot carry a colon in its source; --mount can, quoted when it has a comma."""
    args = parse_run_args(["--read-only", "busybox"])
    assert lifecycle._etc_mounts("/a:b,c", args)[:2] == [
        "--mount", 'type=bind,"source=/a:b,c/hosts",target=/etc/hosts,readonly',
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "targets"),
    [
        (["-v", "/src:/dst"], ["/dst"]),
        (["-v", "/dst"], ["/dst"]),
        (["-v", "/dst:ro"], ["/dst"]),
        (["-v", "/dst:ro,z"], ["/dst"]),
        (["-v", "vol:/dst:rw"], ["/dst"]),
        (["--volume=/src:/a/./b/"], ["/a/b"]),
        (["--mount", "type=bind,source=/s,target=/t"], ["/t"]),
        (["--mount", "type=volume,destination=/d,readonly"], ["/d"]),
        (["--mount", "type=tmpfs"], []),
    ],
)
def test_mount_targets(flags: list[str], targets: list[str]) -> None:
    args = parse_run_args([*flags, "busybox"])
    assert list(args.mount_targets) == targets
    assert args.workload_flags == tuple(flags)  # still forwarded verbatim


@pytest.mark.parametrize(
    ("flags", "read_only"), [([], False), (["--read-only"], True), (["--read-only=false"], False)]
)
def test_read_only(flags: list[str], read_only: bool) -> None:
    assert parse_run_args([*flags, "busybox"]).read_only is read_only

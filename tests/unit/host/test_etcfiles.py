"""The workload's /etc/hosts and /etc/resolv.conf (cnirun.host.etcfiles), and how the run
mounts them into the workload (cnirun.sandbox.session, cnirun.docker.workload)."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni.api import CNIConfig
from cnirun.cni.types import Result
from cnirun.docker import workload
from cnirun.docker.endpoint import Endpoint
from cnirun.docker.runtime import Infra
from cnirun.dockerargs import parse_run_args
from cnirun.errors import CnirunError, DockerRuntimeError
from cnirun.host import etcfiles
from cnirun.sandbox import session
from cnirun.sandbox.plan import Plan
from cnirun.settings import Settings

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


class _Docker:
    """Just enough of Docker for a session to start its workload (no early teardown)."""

    endpoint = Endpoint("unix:///nonexistent/docker.sock")

    def watch_for_exit(self, sandbox_id: str, role: str) -> Any:
        raise DockerRuntimeError("no events here")


class _Store:
    """A record store whose sandbox files live in `files`."""

    def __init__(self, files: str) -> None:
        self.files = files
        self.state_dir = files

    def files_dir(self, sandbox_id: str) -> str:
        return self.files


class _Child:
    pid = 0

    def wait(self) -> int:
        return 0

    def poll(self) -> int:
        return 0


EtcMounts = Callable[[str, list[str]], list[str]]


@pytest.fixture
def etc_mounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> EtcMounts:
    """`mounts(files, argv)`: the mount flags cnirun adds to the workload's `docker run` for
    the `cnirun run` arguments `argv`, the sandbox's files being in the directory `files`
    (the session starts the workload; the docker CLI itself is never run)."""
    launched: list[list[str]] = []

    def popen(argv: list[str], **kwargs: Any) -> _Child:
        launched.append(argv)
        return _Child()

    monkeypatch.setattr(workload, "docker_cli", lambda: "/usr/bin/docker")
    monkeypatch.setattr(subprocess, "Popen", popen)
    checked: list[str] = []  # each bind-mount source is checked first (see the tests below)
    monkeypatch.setattr(etcfiles, "check_mount_source", checked.append)

    def mounts(files: str, argv: list[str]) -> list[str]:
        args = parse_run_args(argv)
        plan = Plan(
            args=args,
            settings=Settings.load({}),
            sandbox_id="a" * 32,
            networks=[],
            cni=CNIConfig([], str(tmp_path / "cache")),
            infra_image="cnirun/pause:1",
            ports=[],
        )
        run = session.Session(plan, _Docker(), _Store(files), None)  # type: ignore[arg-type]
        launched.clear()
        checked.clear()
        assert run._run_workload(Infra("i" * 64, "infra", 1, "h", "")) == 0
        [cli] = launched
        mounted = [a for a in cli if a.startswith((files, 'type=bind,"source=' + files))]
        assert len(checked) == len(mounted)
        assert all(source in flag for source, flag in zip(checked, mounted, strict=True))
        # flags, cnirun's labels (last: docker lets the last label win), image, command
        labels = ["--label", f"io.cnirun.sandbox={'a' * 32}", "--label", "io.cnirun.role=workload"]
        tail = len(args.workload_flags) + len(labels) + 1 + len(args.command)
        assert cli[:3] == ["/usr/bin/docker", "run", f"--network=container:{'i' * 64}"]
        assert cli[len(cli) - tail :] == [*args.workload_flags, *labels, args.image, *args.command]
        return cli[3 : len(cli) - tail]

    return mounts


def test_etc_files_are_bind_mounted_unless_the_user_mounts_there(etc_mounts: EtcMounts) -> None:
    assert etc_mounts("/st/x.etc", ["busybox"]) == [
        "-v", "/st/x.etc/hosts:/etc/hosts:z",
        "-v", "/st/x.etc/resolv.conf:/etc/resolv.conf:z",
    ]  # fmt: skip
    assert etc_mounts("/st/x.etc", ["-v", "/mine:/etc//hosts:ro", "--read-only", "busybox"]) == [
        "-v", "/st/x.etc/resolv.conf:/etc/resolv.conf:ro,z",
    ]  # fmt: skip
    argv = ["--mount", "type=tmpfs,dst=/etc/resolv.conf", "-v", "/etc/hosts", "i"]
    assert etc_mounts("/st/x.etc", argv) == []


def test_a_state_dir_with_a_colon_is_mounted_with_mount(etc_mounts: EtcMounts) -> None:
    """-v cannot carry a colon in its source; --mount can, quoted when it has a comma."""
    assert etc_mounts("/a:b,c", ["--read-only", "busybox"])[:2] == [
        "--mount", 'type=bind,"source=/a:b,c/hosts",target=/etc/hosts,readonly',
    ]  # fmt: skip


def test_bind_mounts_quote_only_what_needs_it() -> None:
    assert workload.bind_mounts({"/etc/hosts": "/a:b/hosts"}, read_only=False) == [
        "--mount", "type=bind,source=/a:b/hosts,target=/etc/hosts",
    ]  # fmt: skip
    assert workload.bind_mounts({"/etc/hosts": '/a:"b"/hosts'}, read_only=False) == [
        "--mount", 'type=bind,"source=/a:""b""/hosts",target=/etc/hosts',
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


# -- never follow a symlink when writing as root (issue 13 item 2) ---------------------------


def test_a_planted_etc_dir_symlink_is_refused(tmp_path: Path) -> None:
    host_etc = tmp_path / "etc"
    host_etc.mkdir()
    (host_etc / "hosts").write_text("root's own")
    (host_etc / "hosts").chmod(0o600)
    planted = tmp_path / "sandboxes" / "x.etc"
    planted.parent.mkdir()
    planted.symlink_to(host_etc)
    with pytest.raises(CnirunError, match=r"cannot write .*x.etc/hosts: .*x.etc is a symbolic"):
        etcfiles.write(str(planted / "hosts"), "evil")
    with pytest.raises(CnirunError, match="refusing to bind-mount"):
        etcfiles.check_mount_source(str(planted / "hosts"))
    assert (host_etc / "hosts").read_text() == "root's own"
    assert stat.S_IMODE((host_etc / "hosts").stat().st_mode) == 0o600


def test_a_planted_file_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    directory = tmp_path / "x.etc"
    directory.mkdir()
    (directory / "hosts").symlink_to(secret)
    with pytest.raises(CnirunError, match="refusing to bind-mount .*is not a regular file"):
        etcfiles.check_mount_source(str(directory / "hosts"))
    etcfiles.write(str(directory / "hosts"), "127.0.0.1\tlocalhost\n")
    assert secret.read_text() == "root only"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    etcfiles.check_mount_source(str(directory / "hosts"))  # now the file cnirun wrote


def test_a_mount_source_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "x.etc"
    etcfiles.write(str(directory / "hosts"), "x")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    (directory / "hosts").chmod(0o666)
    with pytest.raises(CnirunError, match="writable by group or others"):
        etcfiles.check_mount_source(str(directory / "hosts"))

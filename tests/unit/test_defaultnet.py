"""Unit tests of cnirun.defaultnet (and priv-net-run's planning, which uses it); no root needed.

Plugins are tiny shell scripts that answer VERSION with chosen versions and log each call;
host routes and Docker's subnets are replaced by fixed lists, so nothing depends on this host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from cnirun import defaultnet, privnet
from cnirun.cni.api import CNIConfig
from cnirun.errors import ConfigError, NetworkNotFoundError, NoConfigsFoundError, UsageError

ALL = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
STANDARD = {
    "bridge": ALL,
    "host-local": ALL,
    "portmap": ALL,
    "firewall": ["0.4.0", "1.0.0"],
    "tuning": ALL,
    "ptp": ALL,
    "macvlan": ALL,
    "ipvlan": ALL,
}


def install_plugins(directory: Path, log: Path, versions: dict[str, list[str]]) -> None:
    """Shell plugins that answer VERSION with `versions[name]` and fail anything else."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, supported in versions.items():
        answer = json.dumps({"cniVersion": "1.0.0", "supportedVersions": supported})
        path = directory / name
        path.write_text(
            "#!/bin/sh\n"
            f'echo "$CNI_COMMAND {name}" >> "{log}"\n'
            "cat > /dev/null\n"
            f"if [ \"$CNI_COMMAND\" = VERSION ]; then echo '{answer}'; exit 0; fi\n"
            'echo \'{"code":100,"msg":"fake: VERSION only"}\'; exit 1\n'
        )
        path.chmod(0o755)


class Lab:
    """A config dir, plugin dir, cache dir and the plugin call log."""

    def __init__(self, tmp: Path) -> None:
        self.netconf = tmp / "net.d"
        self.bin = tmp / "bin"
        self.cache = tmp / "cache"
        self.log = tmp / "calls.log"
        self.netconf.mkdir()

    def cni(self) -> CNIConfig:
        return CNIConfig([str(self.bin)], str(self.cache), timeout=10)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def write(self, name: str, content: object) -> Path:
        path = self.netconf / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    lab = Lab(tmp_path)
    install_plugins(lab.bin, lab.log, STANDARD)
    monkeypatch.setattr(defaultnet, "host_routes", lambda: [])
    monkeypatch.setattr(defaultnet, "docker_subnets", lambda timeout=3.0: [])
    monkeypatch.setattr(defaultnet, "_noticed", set())
    for var in (
        defaultnet.ENV_DEFAULT_NAME,
        defaultnet.ENV_DEFAULT_BRIDGE,
        defaultnet.ENV_DEFAULT_SUBNET,
        "NETCONFPATH",
        "CNI_PATH",
    ):
        monkeypatch.delenv(var, raising=False)
    return lab


def net(text: str) -> defaultnet.IPNetwork:
    return ipaddress.ip_network(text)


# -- host routes ----------------------------------------------------------------------------

PROC_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""

PROC_IPV6_ROUTE = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000400 00000001 00000000 00200200       lo
"""


def test_proc_route_gives_non_default_routes_with_their_interface() -> None:
    assert defaultnet.parse_proc_route(PROC_ROUTE) == [
        ("docker0", net("172.17.0.0/16")),
        ("eth0", net("192.0.2.0/24")),
    ]


def test_ipv6_routes_skip_default_link_local_and_lo() -> None:
    assert defaultnet.parse_proc_ipv6_route(PROC_IPV6_ROUTE) == [("eth0", net("fd00::/64"))]


def test_used_subnets_collects_configs_routes_and_docker(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab.write(
        "10-a.conflist",
        {
            "name": "a",
            "plugins": [{"type": "bridge", "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}]]}}],
        },
    )
    lab.write("20-b.conf", {"name": "b", "type": "ptp", "ipam": {"subnet": "10.2.0.0/24"}})
    lab.write("30-broken.conflist", "{not json")
    monkeypatch.setattr(defaultnet, "docker_subnets", lambda timeout=3.0: [net("172.18.0.0/16")])
    used = defaultnet.used_subnets(str(lab.netconf), routes=[("eth0", net("192.0.2.0/24"))])
    assert [(str(u.net), u.where.split(" ")[0]) for u in used] == [
        ("10.1.0.0/24", "network"),
        ("10.2.0.0/24", "network"),
        ("192.0.2.0/24", "route"),
        ("172.18.0.0/16", "a"),
    ]


def test_parse_subnet_refuses_host_bits_and_tiny_subnets() -> None:
    assert defaultnet.parse_subnet("10.9.0.0/24") == net("10.9.0.0/24")
    with pytest.raises(ConfigError, match=r"host bits set \(did you mean 10.9.0.0/24\?\)"):
        defaultnet.parse_subnet("10.9.0.7/24")
    with pytest.raises(ConfigError, match="too small"):
        defaultnet.parse_subnet("10.9.0.0/31")
    with pytest.raises(ConfigError, match="invalid --subnet 'nope'"):
        defaultnet.parse_subnet("nope")


# -- the built-in default -------------------------------------------------------------------


def test_default_network_is_generated_once_and_then_loaded(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(defaultnet, "host_routes", lambda: [("eth0", net("10.77.0.0/16"))])
    monkeypatch.setattr(defaultnet, "docker_subnets", lambda timeout=3.0: [net("10.76.0.0/16")])
    first = defaultnet.default_network(str(lab.netconf), lab.cni())

    path = lab.netconf / defaultnet.DEFAULT_FILE
    assert first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    raw = json.loads(path.read_text())
    assert raw["name"] == "cnirun"
    assert raw["cniVersion"] == "1.0.0"  # firewall stops at 1.0.0
    assert raw["cnirun"]["default"] is True and raw["cnirun"]["driver"] == "bridge"
    assert [p["type"] for p in raw["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    bridge = raw["plugins"][0]
    assert bridge["bridge"] == "cnirun0"
    assert (bridge["isGateway"], bridge["ipMasq"], bridge["hairpinMode"]) == (True, True, True)
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.75.0.0/16", "gateway": "10.75.0.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert raw["plugins"][1]["capabilities"] == {"portMappings": True}
    assert sorted(lab.calls()) == sorted(
        f"VERSION {p}" for p in ("bridge", "host-local", "portmap", "firewall", "tuning")
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert 'using the built-in default network "cnirun"' in err
    assert f"saved as {path}" in err and f"adding a network config to {lab.netconf}" in err

    # Later calls load the file: same subnet even though the host changed, no plugin calls.
    lab.log.unlink()
    monkeypatch.setattr(defaultnet, "host_routes", lambda: [("eth0", net("10.75.0.0/16"))])
    again = defaultnet.default_network(str(lab.netconf), lab.cni())
    assert again.bytes == first.bytes
    assert lab.calls() == []
    assert capsys.readouterr().err == ""
    assert sorted(os.listdir(lab.netconf)) == [".cnirun.lock", defaultnet.DEFAULT_FILE]


def test_default_overrides_from_env(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(defaultnet.ENV_DEFAULT_NAME, "testdef")
    monkeypatch.setenv(defaultnet.ENV_DEFAULT_BRIDGE, "cnrt-x")
    monkeypatch.setenv(defaultnet.ENV_DEFAULT_SUBNET, "10.210.9.0/24")
    got = defaultnet.default_network(str(lab.netconf), lab.cni(), notify=False)
    assert got.name == "testdef"
    assert got.plugins[0].raw["bridge"] == "cnrt-x"
    assert defaultnet.subnets_of(got.raw) == [net("10.210.9.0/24")]


def test_default_reuses_the_subnet_its_bridge_already_has(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = [("cnirun0", net("10.71.0.0/16")), ("eth0", net("192.0.2.0/24"))]
    monkeypatch.setattr(defaultnet, "host_routes", lambda: routes)
    got = defaultnet.default_network(str(lab.netconf), lab.cni(), notify=False)
    assert defaultnet.subnets_of(got.raw) == [net("10.71.0.0/16")]


def test_default_fails_when_every_candidate_is_taken(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaultnet, "host_routes", lambda: [("eth0", net("10.64.0.0/12"))])
    with pytest.raises(ConfigError, match="no free subnet for the default network"):
        defaultnet.default_network(str(lab.netconf), lab.cni())
    assert os.listdir(lab.netconf) == [".cnirun.lock"]


def test_default_uses_the_newest_version_all_plugins_share(lab: Lab) -> None:
    install_plugins(
        lab.bin,
        lab.log,
        {**STANDARD, "tuning": ["0.3.1", "0.4.0"], "bridge": [*ALL, "1.1.0", "9.0.0"]},
    )
    got = defaultnet.default_network(str(lab.netconf), lab.cni(), notify=False)
    assert got.cni_version == "0.4.0"


def test_missing_optional_plugins_are_left_out_with_a_warning(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    (lab.bin / "firewall").unlink()
    (lab.bin / "portmap").unlink()
    got = defaultnet.default_network(str(lab.netconf), lab.cni(), notify=False)
    assert [p.type for p in got.plugins] == ["bridge", "tuning"]
    assert capsys.readouterr().err == (
        f"cnirun: warning: plugin(s) portmap, firewall not found in {lab.bin}; "
        "the network is created without them\n"
    )


def test_missing_bridge_or_host_local_is_an_error(lab: Lab) -> None:
    (lab.bin / "host-local").unlink()
    with pytest.raises(ConfigError, match=r"plugin\(s\) host-local not found in"):
        defaultnet.default_network(str(lab.netconf), lab.cni())


def test_plugins_without_a_common_version_are_an_error(lab: Lab) -> None:
    install_plugins(lab.bin, lab.log, {**STANDARD, "portmap": ["0.2.0"]})
    with pytest.raises(ConfigError, match="share no CNI version"):
        defaultnet.default_network(str(lab.netconf), lab.cni())


def test_unwritable_config_dir_uses_the_default_from_memory(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(directory: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(defaultnet, "config_dir_lock", refuse)
    got = defaultnet.default_network(str(lab.netconf), lab.cni())
    assert got.source == "<built-in>" and got.name == "cnirun"
    assert "not saved" in capsys.readouterr().err
    assert os.listdir(lab.netconf) == []


def test_a_broken_saved_default_is_never_overwritten(lab: Lab) -> None:
    path = lab.write(defaultnet.DEFAULT_FILE, '{"name": "cnirun", "plugins": [')
    with pytest.raises(ConfigError, match=f"{path} does not load .*; fix or remove it"):
        defaultnet.default_network(str(lab.netconf), lab.cni())
    assert path.read_text() == '{"name": "cnirun", "plugins": ['


def test_concurrent_first_uses_write_one_file(lab: Lab) -> None:
    results: list[bytes] = []

    def use() -> None:
        results.append(defaultnet.default_network(str(lab.netconf), lab.cni()).bytes)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert sorted(os.listdir(lab.netconf)) == [".cnirun.lock", defaultnet.DEFAULT_FILE]


# -- choosing the default -------------------------------------------------------------------


def user_net(name: str, subnet: str = "10.5.0.0/24") -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local", "subnet": subnet}}],
    }


def test_resolve_generates_the_builtin_only_for_an_empty_dir(lab: Lab) -> None:
    got = defaultnet.resolve_default_network(str(lab.netconf), lab.cni())
    assert defaultnet.is_builtin_default(got)
    # A user's network added afterwards wins, even though it sorts after cnirun's file.
    lab.write("zzz-mine.conflist", user_net("mine"))
    assert defaultnet.resolve_default_network(str(lab.netconf), lab.cni()).name == "mine"
    os.unlink(lab.netconf / "zzz-mine.conflist")
    again = defaultnet.resolve_default_network(str(lab.netconf), lab.cni())
    assert again.bytes == got.bytes


def test_resolve_takes_the_first_loadable_user_network(lab: Lab) -> None:
    lab.write("05-loopback.conf", {"cniVersion": "1.0.0", "type": "loopback"})  # no name
    lab.write("10-b.conflist", user_net("b"))
    lab.write("20-a.conflist", user_net("a"))
    assert defaultnet.resolve_default_network(str(lab.netconf), lab.cni()).name == "b"
    assert not (lab.netconf / defaultnet.DEFAULT_FILE).exists()


def test_resolve_refuses_to_replace_a_broken_config_by_the_builtin(lab: Lab) -> None:
    path = lab.write("10-typo.conflist", '{"name": "x", "plugins": [')
    with pytest.raises(ConfigError, match=f"no usable network in {lab.netconf}: {path}"):
        defaultnet.resolve_default_network(str(lab.netconf), lab.cni())
    assert not (lab.netconf / defaultnet.DEFAULT_FILE).exists()


def test_the_default_name_works_before_the_file_exists(lab: Lab) -> None:
    got = defaultnet.load_network_or_default(str(lab.netconf), "cnirun", lab.cni())
    assert defaultnet.is_builtin_default(got)
    with pytest.raises(NetworkNotFoundError):
        defaultnet.load_network_or_default(str(lab.netconf), "other", lab.cni())
    empty = lab.netconf / "empty"
    empty.mkdir()
    with pytest.raises(NoConfigsFoundError):
        defaultnet.load_network_or_default(str(empty), "other", lab.cni())


def test_write_conflist_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "x.conflist"
    path.write_text("old")
    defaultnet.write_conflist(str(path), {"name": "x"})
    assert json.loads(path.read_text()) == {"name": "x"}
    assert os.listdir(tmp_path) == ["x.conflist"]


# -- priv-net-run's plan (no namespace is created) ------------------------------------------


def options(lab: Lab, **kwargs: object) -> privnet.PrivNetOptions:
    base: dict[str, object] = {
        "netconf_dir": str(lab.netconf),
        "cni_path": str(lab.bin),
        "cache_dir": str(lab.cache),
    }
    base.update(kwargs)
    return privnet.PrivNetOptions(**base)  # type: ignore[arg-type]


def test_plan_uses_the_default_network_and_a_unique_valid_id(lab: Lab) -> None:
    first = privnet.make_plan(options(lab))
    second = privnet.make_plan(options(lab))
    assert [n.name for n in first.networks] == ["cnirun"]
    assert first.name.startswith("cnirun-privnet-") and first.name != second.name
    assert first.cni.timeout == privnet.DEFAULT_TIMEOUT


def test_plan_loads_named_networks_in_order(lab: Lab) -> None:
    lab.write("10-a.conflist", user_net("a"))
    lab.write("20-b.conflist", user_net("b", "10.6.0.0/24"))
    plan = privnet.make_plan(options(lab, networks=("b", "a"), cni_args=("K=V",), timeout=5.0))
    assert [n.name for n in plan.networks] == ["b", "a"]
    assert plan.cni_args == (("K", "V"),)
    assert plan.cni.timeout == 5.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"networks": ("a", "a")}, UsageError, "network a is given twice"),
        ({"cni_args": ("novalue",)}, UsageError, 'invalid CNI_ARGS pair "novalue"'),
        ({"timeout": 0.0}, UsageError, "--cni-timeout must be positive"),
        ({"networks": ("nope",)}, NetworkNotFoundError, 'no net configuration with name "nope"'),
        ({"networks": ("ghost",)}, Exception, 'network ghost .*failed to find plugin "ghost"'),
    ],
)
def test_plan_errors_name_what_is_wrong(
    lab: Lab, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    lab.write("10-a.conflist", user_net("a"))
    ghost = {"cniVersion": "1.0.0", "name": "ghost", "plugins": [{"type": "ghost"}]}
    lab.write("20-ghost.conflist", ghost)
    with pytest.raises(error, match=message):
        privnet.make_plan(options(lab, **kwargs))


def test_priv_net_run_needs_a_command(lab: Lab) -> None:
    with pytest.raises(UsageError, match="needs a command"):
        privnet.priv_net_run([], options(lab))

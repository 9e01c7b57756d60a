"""cnirun.netconf.builtin: the built-in default network, generated once, then loaded; no root.

Plugins are the in-process fake under the reference plugins' names, answering VERSION with
chosen versions; host routes and Docker's subnets are fixed lists (see tests.unit.netconf.lab).
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator

import pytest

from cnirun.cni.config import NetworkConfigList
from cnirun.errors import ConfigError
from cnirun.netconf import builtin, generate
from cnirun.netconf.subnets import subnets_of
from cnirun.testhooks import ENV_DEFAULT_BRIDGE, ENV_DEFAULT_NAME, ENV_DEFAULT_SUBNET
from tests.unit.conftest import CniEnv
from tests.unit.netconf.lab import ALL, STANDARD, Lab, lab_on, net


@pytest.fixture
def lab(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    with lab_on(cni_env, monkeypatch) as lab:
        yield lab


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The notice that the built-in default is used was given already (once per process)."""
    monkeypatch.setattr(builtin, "_noticed", {"cnirun"})


def ensure(lab: Lab, docker_subnets: list[str] | None = None) -> NetworkConfigList:
    return builtin.ensure(lab.configs(docker_subnets or []))


def test_default_network_is_generated_once_and_then_loaded(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.routes([("eth0", net("10.77.0.0/16"))])
    first = ensure(lab, ["10.76.0.0/16"])

    path = lab.netconf / builtin.DEFAULT_FILE
    assert first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    raw = json.loads(path.read_text())
    assert raw["name"] == "cnirun"
    assert raw["cniVersion"] == "1.0.0"  # firewall stops at 1.0.0
    assert raw["cnirun"]["default"] is True and raw["cnirun"]["driver"] == "bridge"
    assert [p["type"] for p in raw["plugins"]] == [
        "bridge", "portmap", "firewall", "tuning", "bandwidth"
    ]  # fmt: skip
    bridge = raw["plugins"][0]
    assert bridge["bridge"] == builtin.DEFAULT_BRIDGE == "cnirun0"
    assert (bridge["isGateway"], bridge["ipMasq"], bridge["hairpinMode"]) == (True, True, True)
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.75.0.0/16", "gateway": "10.75.0.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert raw["plugins"][1]["capabilities"] == {"portMappings": True}
    assert raw["plugins"][4] == {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    assert sorted(lab.calls()) == sorted(
        f"VERSION {p}"
        for p in ("bridge", "host-local", "portmap", "firewall", "tuning", "bandwidth")
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert 'using the built-in default network "cnirun"' in err
    assert f"saved as {path}" in err and f"adding a network config to {lab.netconf}" in err

    # Later calls load the file: same subnet even though the host changed, no plugin calls.
    lab.clear()
    lab.routes([("eth0", net("10.75.0.0/16"))])
    again = ensure(lab)
    assert again.bytes == first.bytes
    assert lab.calls() == []
    assert capsys.readouterr().err == ""
    assert sorted(os.listdir(lab.netconf)) == [".cnirun.lock", builtin.DEFAULT_FILE]


def test_default_overrides_from_env(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DEFAULT_NAME, "testdef")
    monkeypatch.setenv(ENV_DEFAULT_BRIDGE, "cnrt-x")
    monkeypatch.setenv(ENV_DEFAULT_SUBNET, "10.210.9.0/24")
    got = ensure(lab)
    assert got.name == "testdef"
    assert got.plugins[0].raw["bridge"] == "cnrt-x"
    assert subnets_of(got.raw) == [net("10.210.9.0/24")]


def test_default_reuses_the_subnet_its_bridge_already_has(lab: Lab) -> None:
    lab.routes([("cnirun0", net("10.71.0.0/16")), ("eth0", net("192.0.2.0/24"))])
    got = ensure(lab)
    assert subnets_of(got.raw) == [net("10.71.0.0/16")]


def test_default_fails_when_every_candidate_is_taken(lab: Lab) -> None:
    lab.routes([("eth0", net("10.64.0.0/12"))])
    with pytest.raises(ConfigError, match="no free subnet for the default network"):
        ensure(lab)
    assert os.listdir(lab.netconf) == [".cnirun.lock"]


def test_default_uses_the_newest_version_all_plugins_share(lab: Lab) -> None:
    lab.install({**STANDARD, "tuning": ["0.3.1", "0.4.0"], "bridge": [*ALL, "1.1.0", "9.0.0"]})
    got = ensure(lab)
    assert got.cni_version == "0.4.0"


def test_missing_optional_plugins_are_left_out_with_a_warning(
    lab: Lab, quiet: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.uninstall("firewall")
    lab.uninstall("portmap")
    got = ensure(lab)
    assert [p.type for p in got.plugins] == ["bridge", "tuning", "bandwidth"]
    assert capsys.readouterr().err == (
        f"cnirun: warning: plugin(s) portmap, firewall not found in {lab.bin}; "
        "the network is created without them\n"
    )


def test_missing_bridge_or_host_local_is_an_error(lab: Lab) -> None:
    lab.uninstall("host-local")
    with pytest.raises(ConfigError, match=r"plugin\(s\) host-local not found in"):
        ensure(lab)


def test_plugins_without_a_common_version_are_an_error(lab: Lab) -> None:
    lab.install({**STANDARD, "portmap": ["0.2.0"]})
    with pytest.raises(ConfigError, match="share no CNI version"):
        ensure(lab)


def test_unwritable_config_dir_uses_the_default_from_memory(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(directory: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(generate, "config_dir_lock", refuse)
    got = ensure(lab)
    assert got.source == "<built-in>" and got.name == "cnirun"
    assert "not saved" in capsys.readouterr().err
    assert os.listdir(lab.netconf) == []


def test_a_broken_saved_default_is_never_overwritten(lab: Lab) -> None:
    path = lab.write(builtin.DEFAULT_FILE, '{"name": "cnirun", "plugins": [')
    with pytest.raises(ConfigError, match=f"{path} does not load .*; fix or remove it"):
        ensure(lab)
    assert path.read_text() == '{"name": "cnirun", "plugins": ['


def test_concurrent_first_uses_write_one_file(lab: Lab) -> None:
    results: list[bytes] = []

    def use() -> None:
        results.append(ensure(lab).bytes)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert sorted(os.listdir(lab.netconf)) == [".cnirun.lock", builtin.DEFAULT_FILE]

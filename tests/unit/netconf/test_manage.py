"""cnirun.netconf.manage: what `network create|ls|inspect|rm` do to the config dir; no root.

Plugins are the in-process fake under the reference plugins' names (VERSION only matters),
host routes and Docker's subnets are fixed lists, and the config, cache and host-local dirs
are temporary, so only conflist files and cache entries are involved. What the commands
print is tests/unit/cli/test_network.py's.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni.config import list_from_file
from cnirun.errors import ConfigError, NetworkNotFoundError, NoConfigsFoundError
from cnirun.host import links
from cnirun.netconf import builtin, generate, manage
from cnirun.netconf.generate import IPRange, NetworkSpec
from cnirun.netconf.manage import CreateRequest
from cnirun.netconf.select import Configs
from tests.unit.conftest import CniEnv
from tests.unit.netconf.lab import Lab, assert_internal, attach, conflist, lab_on, net

DOCKER_SUBNETS = ["172.17.0.0/16"]


class ManageLab(Lab):
    deleted_bridges: list[str]

    def configs(  # type: ignore[override]
        self, docker_subnets: list[str] | None = None, directory: Path | None = None
    ) -> Configs:
        subnets = DOCKER_SUBNETS if docker_subnets is None else docker_subnets
        return super().configs(subnets, directory)

    def create(self, name: str, **options: Any) -> str:
        return manage.create_network(self.configs(), CreateRequest(name, **options))

    def remove(self, name: str, force: bool = False) -> str:
        return manage.remove_network(self.configs(), name, force)


@pytest.fixture
def lab(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ManageLab]:
    with lab_on(cni_env, monkeypatch, routes=[("eth0", net("192.0.2.0/24"))]):
        lab = ManageLab(cni_env, monkeypatch)
        # `rm` cleans host state; keep it away from the real host-local dir and links.
        lab.deleted_bridges = []
        monkeypatch.setattr(manage, "DEFAULT_IPAM_DIR", str(tmp_path / "ipam-default"))
        monkeypatch.setattr(links, "delete_idle_bridge", lab.deleted_bridges.append)
        yield lab


def usable(lab: Lab, name: str) -> set[str]:
    """What CNIConfig.validate_network_list checked before it left the core: the file loads,
    every plugin of its chain (and host-local) is found and supports its cniVersion. Returns
    the capabilities its plugins enable."""
    loaded = list_from_file(str(lab.netconf / f"{name}.conflist"))
    cni = lab.cni()
    cni.find_plugins(loaded)
    generate.check_version(cni, [p.type for p in loaded.plugins], loaded.cni_version)
    return {cap for p in loaded.plugins for cap, on in p.capabilities.items() if on}


# -- create ---------------------------------------------------------------------------------


def test_create_bridge_picks_free_subnets_and_marks_the_file(
    lab: ManageLab, capsys: pytest.CaptureFixture[str]
) -> None:
    path = lab.create("one", labels=["team=x", "solo"])
    assert path == str(lab.netconf / "one.conflist")
    assert capsys.readouterr().err == ""  # no warning: every plugin is there
    raw = conflist(lab, "one")
    assert raw["cniVersion"] == "1.0.0" and raw["name"] == "one"
    assert raw["cnirun"]["labels"] == {"team": "x", "solo": ""}
    assert raw["cnirun"]["driver"] == "bridge" and "default" not in raw["cnirun"]
    bridge = raw["plugins"][0]
    assert bridge["bridge"] == generate.bridge_name_for("one")
    assert len(bridge["bridge"]) <= 15
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.78.0.0/24", "gateway": "10.78.0.1"}]]
    assert [p["type"] for p in raw["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    # The next network skips the first one's subnet and a host route.
    lab.routes([("x", net("10.78.1.0/24"))])
    lab.create("two")
    assert conflist(lab, "two")["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "10.78.2.0/24"
    # The file loads with the CNI core and validates against the plugins.
    assert usable(lab, "two") == {"ips", "portMappings", "mac"}


def test_create_without_subnet_avoids_dockers_networks(lab: ManageLab) -> None:
    manage.create_network(lab.configs(["10.78.0.0/23"]), CreateRequest("d"))
    assert conflist(lab, "d")["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "10.78.2.0/24"


def test_create_with_subnet_gateway_and_ip_range(
    lab: ManageLab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.create(
        "ranged",
        subnets=["10.210.40.0/24", "fd42::/64"],
        gateways=["10.210.40.254"],
        ip_ranges=["10.210.40.128/25"],
        bridge="cnrt-ranged",
    )
    assert capsys.readouterr().err == ""
    ipam = conflist(lab, "ranged")["plugins"][0]["ipam"]
    assert ipam["ranges"] == [
        [
            {
                "subnet": "10.210.40.0/24",
                "rangeStart": "10.210.40.128",
                "rangeEnd": "10.210.40.254",
                "gateway": "10.210.40.254",
            }
        ],
        [{"subnet": "fd42::/64", "gateway": "fd42::1"}],
    ]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert conflist(lab, "ranged")["plugins"][0]["bridge"] == "cnrt-ranged"


def test_create_internal_has_no_gateway_masquerade_route_or_portmap(lab: ManageLab) -> None:
    lab.create("quiet", internal=True)
    assert_internal(conflist(lab, "quiet"))


@pytest.mark.parametrize(
    ("driver", "parent", "main_fields", "chain"),
    [
        ("ptp", None, {"ipMasq": True}, ["ptp", "portmap", "firewall", "tuning"]),
        ("macvlan", "lo", {"master": "lo", "mode": "bridge"}, ["macvlan", "tuning"]),
        ("ipvlan", "lo", {"master": "lo", "mode": "l2"}, ["ipvlan", "tuning"]),
    ],
)
def test_create_other_drivers(
    lab: ManageLab,
    capsys: pytest.CaptureFixture[str],
    driver: str,
    parent: str | None,
    main_fields: dict[str, Any],
    chain: list[str],
) -> None:
    lab.create(f"n-{driver}", driver=driver, parent=parent, subnets=["10.210.41.0/24"])
    assert capsys.readouterr().err == ""
    raw = conflist(lab, f"n-{driver}")
    assert [p["type"] for p in raw["plugins"]] == chain
    first = raw["plugins"][0]
    assert {k: first[k] for k in main_fields} == main_fields
    assert "bridge" not in first
    assert first["ipam"]["ranges"] == [[{"subnet": "10.210.41.0/24", "gateway": "10.210.41.1"}]]
    usable(lab, f"n-{driver}")  # every plugin there, at the chosen version


def test_create_with_an_explicit_cni_version(lab: ManageLab) -> None:
    lab.create("old", cni_version="0.4.0")
    assert conflist(lab, "old")["cniVersion"] == "0.4.0"
    message = "cniVersion 0.3.1 is not supported by plugin(s) firewall"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        lab.create("older", cni_version="0.3.1")
    assert not (lab.netconf / "older.conflist").exists()


def test_create_refuses_taken_names_and_subnets(lab: ManageLab) -> None:
    hand = {"type": "bridge", "ipam": {"subnet": "10.210.43.0/24"}}
    lab.write("10-hand.conflist", {"name": "hand", "plugins": [hand]})
    lab.write("20-broken.conflist", '{"name": "broken", ')
    with pytest.raises(ConfigError, match="already exists in"):
        lab.create("hand")
    with pytest.raises(
        ConfigError, match="subnet 10.210.43.128/25 overlaps 10.210.43.0/24 of network hand"
    ):
        lab.create("y", subnets=["10.210.43.128/25"])
    (lab.netconf / "dup.conflist").write_text("{}")
    with pytest.raises(ConfigError, match=r"dup\.conflist already exists"):
        lab.create("dup")


def test_create_warns_when_a_bridge_subnet_shadows_a_host_route(
    lab: ManageLab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab.create("lan", subnets=["192.0.2.0/24"])
    assert "subnet 192.0.2.0/24 overlaps the host's route eth0" in capsys.readouterr().err
    # macvlan is expected to sit on the parent's subnet: no warning.
    lab.remove("lan")
    lab.create("lan2", driver="macvlan", parent="lo", subnets=["192.0.2.0/24"])
    assert capsys.readouterr().err == ""


# -- ls and inspect -------------------------------------------------------------------------


def test_list_networks_marks_the_default_and_reports_broken_files(lab: ManageLab) -> None:
    lab.create("b", subnets=["10.210.44.0/24"])
    lab.write("10-a.conflist", {"cniVersion": "0.4.0", "name": "a", "plugins": [{"type": "ptp"}]})
    bad = lab.write("30-bad.conflist", '{"name": ')
    rows, problems = manage.list_networks(lab.configs())
    assert [(r["name"], r["default"], r["createdByCnirun"]) for r in rows] == [
        ("a", True, False),
        ("b", False, True),
    ]
    assert rows[1]["subnets"] == ["10.210.44.0/24"] and rows[1]["driver"] == "bridge"
    assert rows[0]["subnets"] == [] and rows[0]["cniVersion"] == "0.4.0"
    assert len(problems) == 1 and str(bad) in problems[0]


def test_inspect_shows_plugins_versions_and_attachments(lab: ManageLab, tmp_path: Path) -> None:
    lab.create("i", subnets=["10.210.45.0/24"])
    attach(lab, "i", "cnirun-abc", "10.210.45.2/24", netns=str(tmp_path))
    info = manage.inspect_network(lab.configs(), "i")
    assert info["name"] == "i" and info["createdByCnirun"] is True
    assert info["config"] == conflist(lab, "i")
    roles = [(p["type"], p["role"]) for p in info["plugins"]]
    assert roles == [
        ("bridge", "main"),
        ("host-local", "ipam of bridge"),
        ("portmap", "chained"),
        ("firewall", "chained"),
        ("tuning", "chained"),
    ]
    assert info["plugins"][3]["supportedVersions"] == ["0.4.0", "1.0.0"]
    assert info["attachments"] == [
        {
            "containerId": "cnirun-abc",
            "ifname": "eth0",
            "netns": str(tmp_path),
            "netnsExists": True,
            "addresses": ["10.210.45.2/24"],
        }
    ]
    missing = re.escape(f'no net configuration with name "nope" in {lab.netconf}')
    with pytest.raises(NetworkNotFoundError, match=missing):
        manage.inspect_network(lab.configs(), "nope")


def test_inspect_reports_a_missing_plugin_instead_of_failing(lab: ManageLab) -> None:
    lab.write("m.conflist", {"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "gone"}]})
    [plugin] = manage.inspect_network(lab.configs(), "m")["plugins"]
    assert plugin["type"] == "gone" and 'failed to find plugin "gone"' in plugin["error"]


# -- rm -------------------------------------------------------------------------------------


def test_rm_removes_what_cnirun_created(lab: ManageLab) -> None:
    lab.create("r1", subnets=["10.210.46.0/24"])
    lab.create("r2", subnets=["10.210.47.0/24"])
    assert lab.remove("r1") == str(lab.netconf / "r1.conflist")
    missing = re.escape(f'no net configuration with name "r1" in {lab.netconf}')
    with pytest.raises(NetworkNotFoundError, match=missing):
        lab.remove("r1")
    assert lab.remove("r2") == str(lab.netconf / "r2.conflist")
    assert os.listdir(lab.netconf) == [".cnirun.lock"]
    assert lab.deleted_bridges == [generate.bridge_name_for(n) for n in ("r1", "r2")]
    # Nothing left at all: libcni's words for an empty directory, after the name.
    empty = re.escape(f'no network named "r1": no net configurations found in {lab.netconf}')
    with pytest.raises(NoConfigsFoundError, match=empty):
        lab.remove("r1")


def test_rm_keeps_a_bridge_another_config_still_uses(lab: ManageLab) -> None:
    lab.create("s1", bridge="cnrt-shared", subnets=["10.210.50.0/24"])
    lab.create("s2", bridge="cnrt-shared", subnets=["10.210.51.0/24"])
    lab.remove("s1")
    assert lab.deleted_bridges == []
    lab.remove("s2")
    assert lab.deleted_bridges == ["cnrt-shared"]


def test_rm_refuses_files_cnirun_did_not_create_unless_forced(lab: ManageLab) -> None:
    path = lab.write("10-hand.conflist", {"name": "hand", "plugins": [{"type": "bridge"}]})
    message = f"{path} was not created by cnirun; refusing to remove it (use --force)"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        lab.remove("hand")
    assert path.exists()
    assert lab.remove("hand", force=True) == str(path)
    assert not path.exists()
    assert lab.deleted_bridges == []  # not cnirun's: its host state is not cnirun's either


def test_rm_refuses_networks_with_attachments_unless_forced(lab: ManageLab) -> None:
    lab.create("busy", subnets=["10.210.48.0/24"])
    for index in range(5):
        attach(lab, "busy", f"cnirun-{index}", f"10.210.48.{index + 2}/24")
    message = 'network "busy" still has 5 attachment(s) (cnirun-0, cnirun-1, cnirun-2, ...)'
    with pytest.raises(ConfigError, match=re.escape(message)):
        lab.remove("busy")
    assert (lab.netconf / "busy.conflist").exists()
    lab.remove("busy", force=True)
    assert not (lab.netconf / "busy.conflist").exists()


def test_rm_cleans_only_empty_host_local_state(lab: ManageLab, tmp_path: Path) -> None:
    data = tmp_path / "ipam"
    for name, files in (("idle", ["lock", "last_reserved_ip.0"]), ("held", ["10.210.49.2"])):
        conf = generate.build_conflist(
            NetworkSpec(name, "bridge", [IPRange(net("10.210.49.0/24"))], "1.0.0"), ["bridge"]
        )
        conf["plugins"][0]["ipam"]["dataDir"] = str(data)
        generate.write_conflist(str(lab.netconf / f"{name}.conflist"), conf)
        (data / name).mkdir(parents=True)
        for file in files:
            (data / name / file).write_text("x")
        lab.remove(name)
    assert sorted(os.listdir(data)) == ["held"]


def test_rm_of_the_default_name_before_its_file_exists_does_not_hang(lab: ManageLab) -> None:
    mine = {"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "x"}]}
    lab.write("10-mine.conflist", mine)
    outcome: list[object] = []

    def remove() -> None:
        try:
            outcome.append(lab.remove("cnirun"))
        except Exception as e:  # the answer may well be an error; hanging is not
            outcome.append(e)

    worker = threading.Thread(target=remove, daemon=True)  # left blocked if the bug is there
    worker.start()
    worker.join(timeout=1)
    assert outcome, "network rm cnirun is still waiting for the config dir lock"
    # Nothing to remove, and `rm` does not create the built-in default to remove it.
    [error] = outcome
    missing = f'no net configuration with name "cnirun" in {lab.netconf}'
    assert isinstance(error, NetworkNotFoundError) and str(error).startswith(missing)
    assert not (lab.netconf / builtin.DEFAULT_FILE).exists()

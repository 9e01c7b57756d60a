"""`cnirun network create|ls|inspect|rm` through the real CLI (cnirun.cli.main): flags reach
the request, names and tables go to stdout, warnings and one-line errors to stderr; no root.

The work itself is tests/unit/netconf/test_manage.py's. Plugins run in-process, host routes
and Docker's subnets are fixed lists, and every dir is temporary (no Docker daemon is asked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnirun.cli import main
from cnirun.cni import api as cni_api
from cnirun.cni.api import CNIConfig
from cnirun.docker.runtime import Docker
from cnirun.host import links
from cnirun.netconf import generate, manage
from tests.unit.conftest import CniEnv
from tests.unit.netconf.lab import Lab, assert_internal, attach, conflist, in_process, lab_on, net


class CliLab(Lab):
    deleted_bridges: list[str]


@pytest.fixture
def lab(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliLab]:
    with lab_on(cni_env, monkeypatch, routes=[("eth0", net("192.0.2.0/24"))]):
        lab = CliLab(cni_env, monkeypatch)
        lab.deleted_bridges = []
        # The configs of the network commands (cnirun.cli.lists imports the class on use).
        monkeypatch.setattr(cni_api, "CNIConfig", in_process(CNIConfig))
        monkeypatch.setattr(Docker, "network_subnets", lambda self: ["172.17.0.0/16"])
        # `rm` cleans host state; keep it away from the real host-local dir and links.
        monkeypatch.setattr(manage, "DEFAULT_IPAM_DIR", str(tmp_path / "ipam-default"))
        monkeypatch.setattr(links, "delete_idle_bridge", lab.deleted_bridges.append)
        monkeypatch.setenv("NETCONFPATH", str(lab.netconf))
        monkeypatch.setenv("CNI_PATH", str(lab.bin))
        monkeypatch.setenv("CNIRUN_CACHE_DIR", str(lab.cache))
        monkeypatch.setenv("CNIRUN_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
        yield lab


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- create ---------------------------------------------------------------------------------


def test_create_prints_the_name_and_takes_labels(
    lab: CliLab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Docker, "network_subnets", lambda self: ["10.78.0.0/24"])
    assert cli(capsys, "network", "create", "one", "--label", "team=x", "--label", "solo") == (
        0,
        "one\n",
        "",
    )
    raw = conflist(lab, "one")
    assert raw["cnirun"]["labels"] == {"team": "x", "solo": ""}
    assert raw["plugins"][0]["bridge"] == generate.bridge_name_for("one")
    # Docker's own networks are avoided (the CLI asks the engine it connects to).
    assert raw["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.78.1.0/24", "gateway": "10.78.1.1"}]
    ]


def test_create_with_subnet_gateway_and_ip_range(
    lab: CliLab, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        capsys,
        "network", "create", "ranged",
        "--subnet", "10.210.40.0/24", "--gateway", "10.210.40.254",
        "--ip-range", "10.210.40.128/25",
        "--subnet", "fd42::/64",
        "--bridge", "cnrt-ranged",
    )  # fmt: skip
    assert (code, err) == (0, "")
    # Every flag reached the request (what the request makes is test_manage's business).
    main = conflist(lab, "ranged")["plugins"][0]
    first, second = main["ipam"]["ranges"]
    assert (first[0]["gateway"], first[0]["rangeStart"]) == ("10.210.40.254", "10.210.40.128")
    assert (second[0]["subnet"], main["bridge"]) == ("fd42::/64", "cnrt-ranged")


def test_create_internal(lab: CliLab, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "network", "create", "quiet", "--internal") == (0, "quiet\n", "")
    assert_internal(conflist(lab, "quiet"))


@pytest.mark.parametrize(
    ("driver", "extra", "main_fields", "chain"),
    [
        ("ptp", [], {"ipMasq": True}, ["ptp", "portmap", "firewall", "tuning"]),
        ("macvlan", ["--parent", "lo"], {"master": "lo", "mode": "bridge"}, ["macvlan", "tuning"]),
        ("ipvlan", ["--parent", "lo"], {"master": "lo", "mode": "l2"}, ["ipvlan", "tuning"]),
    ],
)
def test_create_other_drivers(
    lab: CliLab,
    capsys: pytest.CaptureFixture[str],
    driver: str,
    extra: list[str],
    main_fields: dict[str, Any],
    chain: list[str],
) -> None:
    args = ["network", "create", f"n-{driver}", "--driver", driver, *extra]
    assert cli(capsys, *args, "--subnet", "10.210.41.0/24") == (0, f"n-{driver}\n", "")
    raw = conflist(lab, f"n-{driver}")
    assert [p["type"] for p in raw["plugins"]] == chain
    first = raw["plugins"][0]
    assert {k: first[k] for k in main_fields} == main_fields
    assert "bridge" not in first
    assert first["ipam"]["ranges"] == [[{"subnet": "10.210.41.0/24", "gateway": "10.210.41.1"}]]


@pytest.mark.parametrize("driver", ["bridge", "ptp"])
def test_create_bandwidth_ends_the_chain_with_the_capability(
    lab: CliLab, capsys: pytest.CaptureFixture[str], driver: str
) -> None:
    args = ["network", "create", "slow", "--bandwidth", "--driver", driver]
    assert cli(capsys, *args) == (0, "slow\n", "")
    raw = conflist(lab, "slow")
    assert [p["type"] for p in raw["plugins"]] == [driver, "portmap", "firewall", "tuning",
                                                    "bandwidth"]  # fmt: skip
    assert raw["plugins"][-1] == {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    assert raw["cniVersion"] == "1.0.0"  # the newest the bandwidth plugin speaks, too
    assert "bandwidth" not in json.dumps(conflist_of(lab, "plain", capsys))  # only when asked


def conflist_of(lab: CliLab, name: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli(capsys, "network", "create", name)[0] == 0
    return conflist(lab, name)


def test_create_bandwidth_needs_a_veth_and_the_plugin(
    lab: CliLab, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["network", "create", "m", "--bandwidth", "--driver", "macvlan", "--parent", "lo"]
    code, out, err = cli(capsys, *args)
    assert (code, out) == (125, "")
    assert err.splitlines()[0] == (
        "cnirun: error: --bandwidth needs a veth on the host (the bridge or ptp driver),"
        " not macvlan"
    )
    lab.uninstall("bandwidth")
    code, out, err = cli(capsys, "network", "create", "b", "--bandwidth")
    assert (code, out) == (125, "")
    assert err.startswith("cnirun: error: CNI plugin(s) bandwidth not found in ")
    assert not (lab.netconf / "b.conflist").exists() and not (lab.netconf / "m.conflist").exists()


def test_create_with_an_explicit_cni_version(
    lab: CliLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "network", "create", "old", "--cni-version", "0.4.0")[0] == 0
    assert conflist(lab, "old")["cniVersion"] == "0.4.0"
    code, _, err = cli(capsys, "network", "create", "older", "--cni-version", "0.3.1")
    assert code == 125
    assert err == "cnirun: error: cniVersion 0.3.1 is not supported by plugin(s) firewall\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad/name"], 'invalid network name "bad/name"'),
        (["x", "--driver", "vlan"], 'unknown --driver "vlan"'),
        (["x", "--driver", "macvlan"], "--driver macvlan needs --parent IFACE"),
        (["x", "-d", "ipvlan", "--parent", "nosuch0"], '--parent "nosuch0": no such host'),
        (["x", "--parent", "lo"], "--parent applies to macvlan and ipvlan, not bridge"),
        (["x", "-d", "ptp", "--bridge", "br9"], "--bridge applies to the bridge driver"),
        (["x", "--gateway", "10.1.1.1"], "--gateway and --ip-range need --subnet"),
        (["x", "--subnet", "10.210.42.9/24"], "host bits set (did you mean 10.210.42.0/24?)"),
        (["x", "--subnet", "10.210.42.0/24", "--gateway", "10.9.9.9"], "is not inside any"),
        (["x", "--subnet", "10.210.42.0/24", "--gateway", "10.210.42.0"], "not a usable"),
        (["x", "--subnet", "10.210.42.0/24", "--ip-range", "10.210.0.0/16"], "not inside"),
        (["x", "--subnet", "10.210.42.0/24", "--subnet", "10.210.42.0/25"], "overlaps --subnet"),
        (["x", "--label", "=v"], 'invalid --label "=v"'),
        (["x", "--cni-version", "1.x"], "invalid --cni-version '1.x'"),
        (["x", "--cni-version", "2.0.0"], "newer than cnirun supports"),
    ],
)
def test_create_refuses_bad_options_with_one_line(
    lab: CliLab, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = cli(capsys, "network", "create", *args)
    assert (code, out) == (125, "")
    assert err.startswith("cnirun: error: ") and err.count("\n") == 1
    assert message in err
    assert sorted(os.listdir(lab.netconf)) in ([], [".cnirun.lock"])


def test_create_warns_when_a_bridge_subnet_shadows_a_host_route(
    lab: CliLab, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "network", "create", "lan", "--subnet", "192.0.2.0/24")
    assert code == 0
    assert "cnirun: warning: subnet 192.0.2.0/24 overlaps the host's route eth0" in err
    # macvlan is expected to sit on the parent's subnet: no warning.
    assert cli(capsys, "network", "rm", "lan")[0] == 0
    args = ["network", "create", "lan2", "-d", "macvlan", "--parent", "lo"]
    assert cli(capsys, *args, "--subnet", "192.0.2.0/24") == (0, "lan2\n", "")


# -- ls and inspect -------------------------------------------------------------------------


def test_ls_lists_networks_and_reports_broken_files(
    lab: CliLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "network", "create", "b", "--subnet", "10.210.44.0/24")[0] == 0
    lab.write("10-a.conflist", {"cniVersion": "0.4.0", "name": "a", "plugins": [{"type": "ptp"}]})
    lab.write("30-bad.conflist", '{"name": ')
    code, out, err = cli(capsys, "network", "ls", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["name"], r["default"], r["createdByCnirun"]) for r in rows] == [
        ("a", True, False),
        ("b", False, True),
    ]
    assert rows[1]["subnets"] == ["10.210.44.0/24"] and rows[1]["driver"] == "bridge"
    assert err.startswith("cnirun: warning: ") and "30-bad.conflist" in err
    code, out, _ = cli(capsys, "network", "ls")
    lines = out.splitlines()
    header = ["NAME", "DRIVER", "SUBNETS", "CNIVERSION", "DEFAULT", "CREATED", "BY", "FILE"]
    assert lines[0].split() == header
    assert lines[1].split()[:5] == ["a", "ptp", "-", "0.4.0", "*"]
    assert lines[2].split()[:5] == ["b", "bridge", "10.210.44.0/24", "1.0.0", "cnirun"]
    assert cli(capsys, "network", "ls", "--format", "yaml")[0] == 125


def test_inspect_prints_a_json_list_and_names_a_missing_network(
    lab: CliLab, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli(capsys, "network", "create", "i", "--subnet", "10.210.45.0/24")[0] == 0
    attach(lab, "i", "cnirun-abc", "10.210.45.2/24", netns=str(tmp_path))
    code, out, _ = cli(capsys, "network", "inspect", "i")
    assert code == 0
    [info] = json.loads(out)
    assert info["name"] == "i" and info["createdByCnirun"] is True
    assert info["config"] == conflist(lab, "i")
    assert [p["type"] for p in info["plugins"]] == [
        "bridge", "host-local", "portmap", "firewall", "tuning"
    ]  # fmt: skip
    assert [a["containerId"] for a in info["attachments"]] == ["cnirun-abc"]
    code, out, err = cli(capsys, "network", "inspect", "i", "nope")
    assert (code, out) == (125, "")
    assert err == (
        f'cnirun: error: no net configuration with name "nope" in {lab.netconf}'
        " (networks: i); see `cnirun network ls`\n"
    )


# -- rm -------------------------------------------------------------------------------------


def test_rm_removes_what_cnirun_created(lab: CliLab, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "network", "create", "r1", "--subnet", "10.210.46.0/24")[0] == 0
    assert cli(capsys, "network", "create", "r2", "--subnet", "10.210.47.0/24")[0] == 0
    lab.deleted_bridges.clear()
    assert cli(capsys, "network", "rm", "r1", "r2") == (0, "r1\nr2\n", "")
    assert os.listdir(lab.netconf) == [".cnirun.lock"]
    assert lab.deleted_bridges == [generate.bridge_name_for(n) for n in ("r1", "r2")]
    # The directory is empty now: libcni's words for that, after the name.
    code, _, err = cli(capsys, "network", "rm", "r1")
    assert code == 125
    assert err == (
        f'cnirun: error: no network named "r1": no net configurations found in {lab.netconf}\n'
    )


def test_rm_of_a_missing_name_says_so(lab: CliLab, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "network", "create", "r1", "--subnet", "10.210.46.0/24")[0] == 0
    code, out, err = cli(capsys, "network", "rm", "nope")
    assert (code, out) == (125, "")
    assert err == (
        f'cnirun: error: no net configuration with name "nope" in {lab.netconf}'
        " (networks: r1); see `cnirun network ls`\n"
    )
    # A typo gets the closest name; Docker's network names get what cnirun's networks are.
    code, out, err = cli(capsys, "network", "rm", "r1x")
    assert err.endswith(' (did you mean "r1"? networks: r1); see `cnirun network ls`\n'), err
    code, out, err = cli(capsys, "network", "inspect", "bridge")
    assert code == 125 and "cnirun's networks are CNI configs, not Docker networks" in err
    assert "`cnirun network ls`" in err and len(err.splitlines()) == 1


def test_rm_refuses_files_cnirun_did_not_create_unless_forced(
    lab: CliLab, capsys: pytest.CaptureFixture[str]
) -> None:
    path = lab.write("10-hand.conflist", {"name": "hand", "plugins": [{"type": "bridge"}]})
    code, _, err = cli(capsys, "network", "rm", "hand")
    assert code == 125
    assert err == (
        f"cnirun: error: {path} was not created by cnirun; refusing to remove it (use --force)\n"
    )
    assert path.exists()
    assert cli(capsys, "network", "rm", "--force", "hand") == (0, "hand\n", "")
    assert not path.exists()


def test_rm_refuses_networks_with_attachments_unless_forced(
    lab: CliLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "network", "create", "busy", "--subnet", "10.210.48.0/24")[0] == 0
    for index in range(5):
        attach(lab, "busy", f"cnirun-{index}", f"10.210.48.{index + 2}/24")
    code, _, err = cli(capsys, "network", "rm", "busy")
    assert code == 125
    assert 'network "busy" still has 5 attachment(s) (cnirun-0, cnirun-1, cnirun-2, ...)' in err
    assert (lab.netconf / "busy.conflist").exists()
    assert cli(capsys, "network", "rm", "-f", "busy") == (0, "busy\n", "")
    assert not (lab.netconf / "busy.conflist").exists()


# -- create --dns ---------------------------------------------------------------------------


def dnsmasq_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, present: bool) -> None:
    """Where `--dns` looks for dnsmasq: a dir of the test's, with or without it."""
    where = tmp_path / ("with-dnsmasq" if present else "without-dnsmasq")
    where.mkdir()
    if present:
        (where / "dnsmasq").write_text("#!/bin/sh\n")
        (where / "dnsmasq").chmod(0o755)
    monkeypatch.setattr(manage, "DNSMASQ_PATH", str(where))


def test_create_dns_adds_dnsname_after_tuning_with_the_aliases_capability(
    lab: CliLab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    lab.install({"dnsname": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
    dnsmasq_on(monkeypatch, tmp_path, present=True)
    assert cli(capsys, "network", "create", "ci", "--dns", "--bandwidth") == (0, "ci\n", "")
    raw = conflist(lab, "ci")
    assert [p["type"] for p in raw["plugins"]] == ["bridge", "portmap", "firewall", "tuning",
                                                    "dnsname", "bandwidth"]  # fmt: skip
    assert raw["plugins"][4] == {
        "type": "dnsname", "domainName": generate.DNS_DOMAIN, "capabilities": {"aliases": True}
    }  # fmt: skip
    code, out, _ = cli(capsys, "network", "inspect", "ci")
    assert code == 0
    assert json.loads(out)[0]["dns"] == {"plugin": "dnsname", "domain": "dns.cnirun"}
    assert "dnsname" not in json.dumps(conflist_of(lab, "plain", capsys))  # only when asked
    code, out, _ = cli(capsys, "network", "inspect", "plain")
    assert "dns" not in json.loads(out)[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--driver", "ptp"], "--dns needs the bridge driver (dnsmasq listens on the bridge),"
                              " not ptp"),
        (["--internal"], "--dns and --internal exclude each other: an internal bridge has no"
                         " address for dnsmasq to listen on"),
    ],
)  # fmt: skip
def test_create_dns_refuses_what_cannot_answer(
    lab: CliLab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, args: list[str], message: str,
) -> None:  # fmt: skip
    lab.install({"dnsname": ["1.0.0"]})
    dnsmasq_on(monkeypatch, tmp_path, present=True)
    assert cli(capsys, "network", "create", "n", "--dns", *args) == (
        125, "", f"cnirun: error: {message}\n"
    )  # fmt: skip
    assert not (lab.netconf / "n.conflist").exists()


def test_create_dns_needs_the_plugin_and_dnsmasq(
    lab: CliLab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    dnsmasq_on(monkeypatch, tmp_path, present=False)
    code, out, err = cli(capsys, "network", "create", "n", "--dns")
    assert (code, out) == (125, "")
    assert err.startswith("cnirun: error: --dns: the dnsname plugin runs dnsmasq, which is not")
    assert err.endswith("(install Debian's dnsmasq-base)\n")
    dnsmasq_on(monkeypatch, tmp_path, present=True)
    code, out, err = cli(capsys, "network", "create", "n", "--dns")
    assert (code, out) == (125, "")
    assert err.startswith("cnirun: error: CNI plugin(s) dnsname not found in ")
    assert "golang-github-containernetworking-plugin-dnsname" in err
    assert not (lab.netconf / "n.conflist").exists()


def test_rm_drops_the_dns_rule_with_the_bridge_of_a_dns_network_only(
    lab: CliLab, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    lab.install({"dnsname": ["1.0.0"]})
    dnsmasq_on(monkeypatch, tmp_path, present=True)
    dropped: list[str] = []
    monkeypatch.setattr(
        links, "delete_idle_bridge", lambda b: lab.deleted_bridges.append(b) or True
    )
    monkeypatch.setattr(links, "drop_dns_rule", dropped.append)
    for args in (["ci", "--dns", "--bridge", "brdns"], ["plain", "--bridge", "brplain"]):
        assert cli(capsys, "network", "create", *args)[0] == 0
    assert cli(capsys, "network", "rm", "ci", "plain")[0] == 0
    assert (lab.deleted_bridges, dropped) == (["brdns", "brplain"], ["brdns"])

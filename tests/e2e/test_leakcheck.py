"""Self-test of tests/leakcheck.py: real leftovers are reported, and none once removed.

Every resource made here carries the harness's tag, and is removed again by this test.
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import E2E_IMAGE
from tests.e2e.harness import Harness
from tests.leakcheck import DEFAULT_IPAM_DIR, assert_no_leaks, find_leaks

pytestmark = pytest.mark.e2e


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def _quiet(*args: str) -> None:
    subprocess.run(args, capture_output=True, check=False)


def test_every_kind_of_leftover_is_reported_until_removed(rig: Harness) -> None:
    suffix = rig.tag
    cache_dir = rig.cache_dir
    cid = f"e2e-test-{suffix}-cid"  # stands in for a container ID
    bridge, veth, peer = f"ctb{suffix}", f"ctv{suffix}", f"ctp{suffix}"
    netns_by_id, netns_by_name = f"{cid}-ns", f"e2e-test-ns-{suffix}"
    chain = f"CNIRUN-TEST-{suffix}"
    net_dir = Path(DEFAULT_IPAM_DIR) / f"e2e-test-net-{suffix}"

    def leaks() -> list[str]:
        return find_leaks(
            [cid],
            bridges=[bridge, f"ctn{suffix}"],  # the second bridge does not exist
            netns_names=[netns_by_name],
            cache_dir=cache_dir,
            links=[bridge],
        )

    assert leaks() == []

    with ExitStack() as undo:
        # Only a label names the ID: the container's own name and ID do not.
        container = _run(
            "docker", "create", "--label", f"cnirun.test.leakcheck={cid}",
            "--name", f"e2e-test-{suffix}", E2E_IMAGE, "true",
        )  # fmt: skip
        undo.callback(_quiet, "docker", "rm", "-f", container)

        net_dir.mkdir(parents=True)
        undo.callback(shutil.rmtree, net_dir, True)
        (net_dir / "10.255.0.7").write_text(f"{cid}\r\neth0")
        (net_dir / "last_reserved_ip.0").write_text("10.255.0.7")

        (cache_dir / "results").mkdir()
        cache_file = cache_dir / "results" / f"testnet-{cid}-eth0"
        cache_file.write_text("{}")
        undo.callback(cache_file.unlink, True)

        for name in (netns_by_id, netns_by_name):
            _run("ip", "netns", "add", name)
            undo.callback(_quiet, "ip", "netns", "delete", name)

        _run("iptables", "-t", "filter", "-N", chain)
        undo.callback(_quiet, "iptables", "-t", "filter", "-X", chain)
        comment = f'name: "testnet" id: "{cid}"'
        _run("iptables", "-t", "filter", "-A", chain, "-m", "comment", "--comment", comment)
        undo.callback(_quiet, "iptables", "-t", "filter", "-F", chain)

        _run("ip", "link", "add", bridge, "type", "bridge")
        undo.callback(_quiet, "ip", "link", "delete", bridge)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        undo.callback(_quiet, "ip", "link", "delete", veth)
        _run("ip", "link", "set", veth, "master", bridge)

        found = "\n".join(leaks())
        expected = [
            f"docker container e2e-test-{suffix} ({container[:12]}",
            f"{net_dir}/10.255.0.7 held by",
            f"{cache_dir}/results/testnet-{cid}-eth0",
            f"/run/netns/{netns_by_id} ",
            f"/run/netns/{netns_by_name} ",
            f"iptables-save -t filter: -A {chain} ",
            f"interface {veth} is still a port of bridge {bridge}",
            f"interface {bridge} still exists",
        ]
        for text in expected:
            assert text in found
        assert "last_reserved_ip" not in found
        assert f"ctn{suffix}" not in found
        with pytest.raises(AssertionError, match="resources left behind"):
            assert_no_leaks([cid], netns_names=[netns_by_name], cache_dir=cache_dir)

    assert leaks() == []


def test_a_bare_string_is_one_id_not_its_characters(rig: Harness) -> None:
    # Were "e2e-test-…" split into characters, "-" alone would match nearly every rule.
    cache_dir = rig.cache_dir
    cid = f"e2e-test-{rig.tag}-cid"
    (cache_dir / "results").mkdir()
    other = cache_dir / "results" / "net-other-eth0"
    other.write_text("{}")
    rig.planted.append(other)  # not the test's own attachment
    assert find_leaks(cid, cache_dir=cache_dir) == []
    leftover = cache_dir / "results" / f"net-{cid}-eth0"
    leftover.write_text("{}")
    assert find_leaks(cid, cache_dir=cache_dir) == [f"CNI cache file {leftover} names {cid!r}"]
    leftover.unlink()
    assert_no_leaks([cid], cache_dir=cache_dir)

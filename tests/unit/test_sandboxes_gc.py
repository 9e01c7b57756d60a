"""`cnirun gc` and CNI attachments: only cnirun's dead ones are DELeted (with the cached
config), and a 1.1.0 network then gets a CNI GC whose valid set is every attachment left."""

from __future__ import annotations

import pytest

from cnirun import sandboxes
from tests.unit.conftest import CniEnv


@pytest.mark.parametrize("dry_run", [False, True])
def test_gc_dels_dead_cnirun_attachments_then_runs_cni_gc(
    cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    monkeypatch.setenv("CNI_PATH", str(cni_env.bin_a))
    net = cni_env.network(version="1.1.0")
    cni = cni_env.cni()
    for cid in ("cnirun-dead", "cnirun-live", "other"):
        cni.add_network_list(net, cni_env.rt(cid=cid))
    # The conflist changes after ADD: gc must still use what was cached.
    (cni_env.netconf / "50-net.conflist").unlink()
    cni_env.clear()

    report = sandboxes.GcReport()
    sandboxes._gc_attachments(report, {"live"}, set(), dry_run, str(cni_env.cache))

    assert report.failures == []
    if dry_run:
        assert cni_env.calls() == []
        assert report.actions == ["attachment net/cnirun-dead/eth0: deleted"]
        return
    assert cni_env.trace() == [("fake", "DEL"), ("fake", "GC")]
    deleted, collected = cni_env.calls()
    assert deleted["env"]["CNI_CONTAINERID"] == "cnirun-dead"
    valid = [
        {"containerID": "cnirun-live", "ifname": "eth0"},
        {"containerID": "other", "ifname": "eth0"},
    ]
    assert collected["stdin"]["cni.dev/valid-attachments"] == valid
    assert not cni_env.cache_file(cid="cnirun-dead").exists()
    assert cni_env.cache_file(cid="cnirun-live").exists()
    assert cni_env.cache_file(cid="other").exists()


def test_gc_leaves_1_0_networks_without_cni_gc(
    cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNI_PATH", str(cni_env.bin_a))
    net = cni_env.network(version="1.0.0")
    cni_env.cni().add_network_list(net, cni_env.rt(cid="cnirun-dead"))
    cni_env.clear()
    report = sandboxes.GcReport()
    sandboxes._gc_attachments(report, set(), set(), False, str(cni_env.cache))
    assert cni_env.trace() == [("fake", "DEL")]

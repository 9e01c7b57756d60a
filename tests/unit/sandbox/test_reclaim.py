"""`cnirun gc` and CNI attachments (cnirun.sandbox.reclaim): only cnirun's dead ones are DELeted
(with the cached config), and a 1.1.0 network then gets a CNI GC whose valid set is every
attachment left. Docker answers with no containers; plugins run as real processes, as gc's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cnirun import privnet
from cnirun.host import netns
from cnirun.sandbox import reclaim
from cnirun.sandbox.records import RecordStore, SandboxRecord
from cnirun.settings import Settings
from tests.unit.conftest import CniEnv

LIVE = "11" * 16


class NoContainers:
    """A Docker engine with no container at all (gc must not need more of it here)."""

    def containers(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"gc asked Docker for {name}")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordStore:
    """The state dir, with one live sandbox (LIVE: its owner is this very process)."""
    # Keep gc away from this host's held namespaces and priv-net-run sessions.
    monkeypatch.setattr(netns, "list_held", lambda prefix: [])
    monkeypatch.setattr(privnet, "LOCK_DIR", str(tmp_path / "privnet"))
    store = RecordStore(str(tmp_path / "state"))
    store.save(
        SandboxRecord(
            id=LIVE,
            infra_name=f"cnirun-infra-{LIVE}",
            netns_name=f"cnirun-{LIVE}",
            cache_dir=str(tmp_path / "cache"),
            plugin_dirs=[],
            cni_timeout=10.0,
        )
    )
    return store


def settings(cni_env: CniEnv, store: RecordStore) -> Settings:
    return Settings.load(
        {
            "CNI_PATH": str(cni_env.bin_a),
            "CNIRUN_CACHE_DIR": str(cni_env.cache),
            "CNIRUN_STATE_DIR": store.state_dir,
        }
    )


def gc(cni_env: CniEnv, store: RecordStore, dry_run: bool = False) -> reclaim.GcReport:
    return reclaim.gc(NoContainers(), store, settings(cni_env, store), dry_run)  # type: ignore[arg-type]


@pytest.mark.parametrize("dry_run", [False, True])
def test_gc_dels_dead_cnirun_attachments_then_runs_cni_gc(
    cni_env: CniEnv, store: RecordStore, dry_run: bool
) -> None:
    net = cni_env.network(version="1.1.0")
    cni = cni_env.cni()
    for cid in ("cnirun-dead", f"cnirun-{LIVE}", "other"):
        cni.add_network_list(net, cni_env.rt(cid=cid))
    # The conflist changes after ADD: gc must still use what was cached.
    (cni_env.netconf / "50-net.conflist").unlink()
    cni_env.clear()

    report = gc(cni_env, store, dry_run)

    assert report.failures == []
    if dry_run:
        assert cni_env.calls() == []
        assert report.actions == ["attachment net/cnirun-dead/eth0: deleted"]
        assert cni_env.cache_file(cid="cnirun-dead").exists()
        return
    assert report.actions == [
        "attachment net/cnirun-dead/eth0: deleted",
        "network net: CNI GC with 2 valid attachments",
    ]
    assert cni_env.trace() == [("fake", "DEL"), ("fake", "GC")]
    deleted, collected = cni_env.calls()
    assert deleted["env"]["CNI_CONTAINERID"] == "cnirun-dead"
    valid = [
        {"containerID": f"cnirun-{LIVE}", "ifname": "eth0"},
        {"containerID": "other", "ifname": "eth0"},
    ]
    assert collected["stdin"]["cni.dev/valid-attachments"] == valid
    assert not cni_env.cache_file(cid="cnirun-dead").exists()
    assert cni_env.cache_file(cid=f"cnirun-{LIVE}").exists()
    assert cni_env.cache_file(cid="other").exists()
    assert store.ids() == [LIVE]  # the live sandbox itself is left alone


def test_gc_leaves_1_0_networks_without_cni_gc(cni_env: CniEnv, store: RecordStore) -> None:
    net = cni_env.network(version="1.0.0")
    cni_env.cni().add_network_list(net, cni_env.rt(cid="cnirun-dead"))
    cni_env.clear()
    report = gc(cni_env, store)
    assert report.failures == []
    assert cni_env.trace() == [("fake", "DEL")]


def test_gc_keeps_an_attachment_whose_namespace_a_process_still_lives_in(
    cni_env: CniEnv, store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No record says whose it is: a process in its netns says it is somebody's."""
    net = cni_env.network(version="1.0.0")
    rt = cni_env.rt(cid="cnirun-dead")
    cni_env.cni().add_network_list(net, rt)
    cni_env.clear()
    monkeypatch.setattr(netns, "processes_in", lambda path: [4242] if path == rt.netns else [])
    report = gc(cni_env, store)
    assert report.actions == [] and cni_env.trace() == []
    assert cni_env.cache_file(cid="cnirun-dead").exists()


def test_gc_dels_an_interrupted_connect_of_a_live_sandbox_and_keeps_the_sandbox(
    cni_env: CniEnv, store: RecordStore
) -> None:
    from cnirun.sandbox import joins

    net = cni_env.network(version="1.0.0")
    record = store.load(LIVE)
    record.cache_dir, record.plugin_dirs = str(cni_env.cache), [str(cni_env.bin_a)]
    record.netns_path = f"/run/netns/cnirun-{LIVE}"
    rt = cni_env.rt(cid=record.cni_container_id, ifname="eth1", netns=record.netns_path)
    cni_env.cni().add_network_list(net, rt)  # the ADD went through; then its cnirun died
    dead = joins._attachment_record(net, rt)._replace(pending=f"{2**22 + 1}:1")
    record.attachments = [dead]
    store.save(record)
    cni_env.clear()
    assert reclaim.reclaimable(NoContainers(), store, settings(cni_env, store)) == [  # type: ignore[arg-type]
        f"sandbox {LIVE}: network net (eth1): its connect or disconnect was interrupted, deleting"
    ]

    report = gc(cni_env, store)

    assert report.failures == [], report.failures
    assert cni_env.trace() == [("fake", "DEL")]
    assert store.load(LIVE).attachments == []  # dropped from the sandbox, which stays
    assert not cni_env.cache_file(cid=record.cni_container_id, ifname="eth1").exists()

"""Sandbox records are not taken on trust (issue 13 items 1 and 3): the state dir is private
whatever the umask and must be root's alone, a record's identity is its file name, every
field is checked, and a bad record is reported once, skipped, listed and removed by gc, and
removed by `rm -f <its id>`; nothing it says is ever acted on."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cnirun.errors import CnirunError
from cnirun.host import netns
from cnirun.sandbox import reclaim, registry
from cnirun.sandbox.records import (
    AttachmentRecord,
    RecordError,
    RecordStore,
    SandboxRecord,
    process_start,
)
from cnirun.settings import Settings

SID = "ab" * 16
DEAD_PID = 2**22 + 1  # above pid_max's default: no such process


class NoContainers:
    def containers(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def remove(self, container: str) -> None:
        raise AssertionError(f"an invalid record made cnirun remove container {container}")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"asked Docker for {name}")


def good_record(sandbox_id: str = SID, **fields: Any) -> SandboxRecord:
    config = b'{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"evil"}]}'
    record = SandboxRecord(
        id=sandbox_id,
        infra_name=f"cnirun-infra-{sandbox_id}",
        netns_name=f"cnirun-{sandbox_id}",
        cache_dir="/var/lib/cni",
        plugin_dirs=["/usr/lib/cni"],
        cni_timeout=10.0,
        infra_id="cd" * 32,
        netns_path=f"/run/netns/cnirun-{sandbox_id}",
        detach=True,
        owner_pid=DEAD_PID,
        owner_start="",
        attachments=[
            AttachmentRecord(
                network="n",
                ifname="eth0",
                config_b64=base64.b64encode(config).decode(),
                source="/etc/cni/net.d/n.conflist",
                cni_args=[["K", "V"]],
                capability_args={},
            )
        ],
    )
    for key, value in fields.items():
        setattr(record, key, value)
    return record


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    return RecordStore(str(tmp_path / "state"))


def plant(store: RecordStore, name: str, data: Any) -> Path:
    store.ensure()
    path = Path(store.directory) / f"{name}.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    path.chmod(0o600)
    return path


def test_a_valid_record_round_trips(store: RecordStore) -> None:
    record = good_record()
    store.save(record)
    assert store.load(SID).to_json() == record.to_json()


def test_the_del_timeout_is_recorded_and_an_older_record_uses_cni_timeout(
    store: RecordStore,
) -> None:
    record = good_record(cni_del_timeout=3.0)
    store.save(record)
    loaded = store.load(SID)
    assert (loaded.cni_del_timeout, loaded.cni().timeout, loaded.cni().del_timeout) == (3, 10, 3)
    older = good_record()  # written before records had it: the key is absent
    assert "cni_del_timeout" not in older.to_json()
    store.save(older)
    assert store.load(SID).cni().del_timeout == 10.0


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("cni_del_timeout", 0, "cni_del_timeout: not positive"),
        ("id", "../../etc/x", "id: not " + SID),
        ("infra_name", "victim", "infra_name: not cnirun-infra-"),
        ("netns_name", "cnirun-other", "netns_name: not cnirun-"),
        ("infra_id", "x\r\nPOST /containers/victim/kill", "infra_id: not 64 hex digits"),
        ("infra_id", "g" * 64, "infra_id: not 64 hex digits"),
        ("netns_path", "/run/netns/elsewhere", "netns_path: not /run/netns/cnirun-"),
        ("netns_path", "/proc/1/ns/net", "netns_path: not /run/netns/cnirun-"),
        ("plugin_dirs", ["plugins"], "plugin_dirs[0]: not an absolute, normalized path"),
        ("plugin_dirs", ["/tmp/../home/x"], "plugin_dirs[0]: not an absolute, normalized"),
        ("plugin_dirs", "/usr/lib/cni", "plugin_dirs: not a list"),
        ("cache_dir", "cache", "cache_dir: not an absolute, normalized path"),
        ("cni_timeout", True, "cni_timeout: not a number"),
        ("cni_timeout", 0, "cni_timeout: not positive"),
        ("detach", "yes", "detach: not true or false"),
        ("owner_pid", "1", "owner_pid: not a process ID"),
        ("owner_start", "1; rm", "owner_start: not a process start time"),
        ("results", [], "results: not an object"),
        ("ports", [1], "ports[0]: not an object"),
        ("hostname", "x" * 5000, "hostname: too long"),
        ("planted", 1, "planted: not a field of a sandbox record"),
    ],
)
def test_every_field_is_checked(store: RecordStore, field: str, value: Any, why: str) -> None:
    raw = good_record().to_json()
    raw[field] = value
    plant(store, SID, raw)
    with pytest.raises(RecordError) as caught:
        store.load(SID)
    assert f"invalid sandbox state {store.path(SID)}: {why}" in str(caught.value)


@pytest.mark.parametrize(
    ("attachment", "why"),
    [
        ({"cni_args": [["x"]]}, "cni_args[0]: not a [key, value] pair"),  # broke every command
        ({"cni_args": [[1, 2]]}, "cni_args[0][0]: not a string"),
        ({"capability_args": []}, "capability_args: not an object"),
        ({"config_b64": "***"}, "config_b64: not base64"),
        ({"network": "../x"}, "network: invalid characters found in network name"),
        ({"ifname": "a/b"}, "ifname: interface name contains"),
        ({"extra": 1}, "needs exactly the keys"),
    ],
)
def test_every_attachment_field_is_checked(
    store: RecordStore, attachment: dict[str, Any], why: str
) -> None:
    raw = good_record().to_json()
    raw["attachments"][0].update(attachment)
    plant(store, SID, raw)
    with pytest.raises(RecordError, match=r"attachments\[0\]") as caught:
        store.load(SID)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [b"[" * 5000, b'{"infra_name": NaN}', b"\xef\xbb\xbf{}", b"null", b"x" * 100],
)
def test_undecodable_records_are_record_errors(store: RecordStore, data: bytes) -> None:
    plant(store, SID, data)
    with pytest.raises(RecordError, match="invalid sandbox state"):
        store.load(SID)


def test_the_identity_is_the_file_name(store: RecordStore) -> None:
    plant(store, "not-a-sandbox-id", good_record().to_json())
    assert store.ids() == ["not-a-sandbox-id"]
    with pytest.raises(RecordError, match="the file name is not <32 hex digits>.json"):
        store.load("not-a-sandbox-id")
    other = "cd" * 16
    plant(store, other, good_record().to_json())  # says it is SID
    with pytest.raises(RecordError, match="id: not " + other):
        store.load(other)


def test_unsafe_record_files_are_refused(store: RecordStore, tmp_path: Path) -> None:
    path = plant(store, SID, good_record().to_json())
    path.chmod(0o666)
    with pytest.raises(RecordError, match="is writable by group or others"):
        store.load(SID)
    path.unlink()
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps(good_record().to_json()))
    path.symlink_to(elsewhere)
    with pytest.raises(RecordError, match="is a symbolic link"):
        store.load(SID)


def test_the_state_dir_is_private_whatever_the_umask(store: RecordStore) -> None:
    old = os.umask(0)
    try:
        store.save(good_record())
        with store.lock(SID):
            pass
    finally:
        os.umask(old)
    for directory in (store.state_dir, store.directory):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path(SID)).st_mode) == 0o600


def test_a_state_dir_others_can_write_is_refused(store: RecordStore) -> None:
    store.save(good_record())
    os.chmod(store.state_dir, 0o777)
    message = f"{store.state_dir} is writable by group or others (mode 0777): `chmod go-w"
    for attempt in (
        lambda: store.save(good_record()),
        store.ids,
        lambda: store.lock(SID).__enter__(),
    ):
        with pytest.raises(CnirunError, match=message.replace("(", r"\(").replace(")", r"\)")):
            attempt()


def test_an_invalid_record_is_reported_once_and_never_acted_on(
    store: RecordStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_reported", set())
    # The planted `detached, owner dead` record that made `cnirun ps` run code as root.
    marker = tmp_path / "ran-as-root"
    evil = tmp_path / "plugins"
    evil.mkdir()
    (evil / "evil").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (evil / "evil").chmod(0o755)
    raw = good_record().to_json()
    raw["plugin_dirs"] = ["plugins"]  # relative: invalid
    plant(store, SID, raw)
    store.save(
        good_record(
            "cd" * 16,
            plugin_dirs=[str(evil)],
            detach=False,
            owner_pid=os.getpid(),
            owner_start=process_start(os.getpid()),
        )
    )
    docker: Any = NoContainers()
    warned: list[str] = []
    monkeypatch.setattr(registry.log, "warning", lambda text, *args: warned.append(text % args))
    registry.reconcile(docker, store)
    registry.load_all(docker, store)
    sandboxes, broken = registry.load_all(docker, store)
    assert broken == [SID]
    assert [s.record.id for s in sandboxes] == ["cd" * 16]  # the others still work
    assert len(warned) == 1 and SID in warned[0] and "plugin_dirs[0]" in warned[0]
    assert not marker.exists()


def test_gc_lists_and_removes_an_invalid_record(
    store: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netns, "list_held", lambda prefix: [])
    plant(store, "zz-planted", {"cni_args": [["x"]]})
    os.mkdir(store.files_dir("zz-planted"))
    settings = Settings.load(
        {"CNIRUN_STATE_DIR": store.state_dir, "CNIRUN_CACHE_DIR": str(tmp_path / "cache")}
    )
    docker: Any = NoContainers()
    assert reclaim.reclaimable(docker, store, settings) == [
        "sandbox zz-planted: invalid record removed"
    ]
    report = reclaim.gc(docker, store, settings)
    assert report.failures == []
    assert sorted(os.listdir(store.directory)) == []


def test_rm_force_of_an_invalid_record_removes_it(store: RecordStore) -> None:
    raw = good_record().to_json()
    raw["infra_id"] = "victim"
    plant(store, SID, raw)
    docker: Any = NoContainers()
    assert not registry.discard_invalid(docker, store, "ffff")
    assert registry.discard_invalid(docker, store, SID[:8])
    assert os.listdir(store.directory) == []


def test_deleting_a_record_drops_what_an_interrupted_save_left(tmp_path: Path) -> None:
    """A signal between write_atomic's temporary file and its cleanup (the fault campaign
    caught one: SIGINT 0.29 s into a run) must not outlive the record."""
    store = RecordStore(str(tmp_path))
    store.ensure()
    sandbox_id = "ab" * 16
    left = Path(store.directory) / f".{sandbox_id}.json.{os.getpid()}.tmp"
    left.write_text("{")
    store.delete(sandbox_id)
    assert not left.exists()

"""cnirun.sandbox.update's planner: which attachment and which of its plugins an update
re-applies, the new capability args and ports, and what it refuses before any plugin runs;
and the record's `updating` field as the schema takes it."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from cnirun.dockerargs import parse_port_spec
from cnirun.errors import CnirunError, UsageError
from cnirun.host.ports import PortInUseError
from cnirun.sandbox import update
from cnirun.sandbox.records import AttachmentRecord, RecordError, RecordStore, SandboxRecord

SID = "7c" * 16
BW = {"ingressRate": 8_000_000, "ingressBurst": 524288}
CHAIN = {"cniVersion": "1.0.0", "name": "web", "plugins": [
    {"type": "bridge", "bridge": "b0"},
    {"type": "portmap", "capabilities": {"portMappings": True}},
    {"type": "firewall"},
    {"type": "bandwidth", "capabilities": {"bandwidth": True}},
]}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record(caps: dict[str, Any], chain: dict[str, Any] = CHAIN, **extra: Any) -> SandboxRecord:
    ports = caps.get("portMappings", [])
    attachment = AttachmentRecord(
        network=str(chain["name"]),
        ifname="eth0",
        config_b64=base64.b64encode(json.dumps(chain).encode()).decode(),
        source="/etc/cni/net.d/web.conflist",
        cni_args=[],
        capability_args=caps,
    )
    return SandboxRecord(
        id=SID, infra_name=f"cnirun-infra-{SID}", netns_name=f"cnirun-{SID}",
        netns_path=f"/run/netns/cnirun-{SID}", cache_dir="/var/lib/cni", plugin_dirs=[],
        cni_timeout=1.0, attachments=[attachment], ports=list(ports), **extra,
    )  # fmt: skip


def plan(tmp_path: Path, rec: SandboxRecord, **request: Any) -> Any:
    store = RecordStore(str(tmp_path / "state"))
    return update.plan(rec, update.Request(**request), store, str(tmp_path / "cache"))


def test_a_bandwidth_change_reapplies_the_bandwidth_plugin_only(tmp_path: Path) -> None:
    mapping = {"hostPort": free_port(), "containerPort": 80, "protocol": "tcp"}
    rec = record({"bandwidth": BW, "portMappings": [mapping]})
    steps, ports = plan(tmp_path, rec, bandwidth={"egressRate": 1000, "egressBurst": 16384})
    assert steps == [
        update.Step(0, rec.attachments[0].capability_args,
                    {"bandwidth": {"egressRate": 1000, "egressBurst": 16384},
                     "portMappings": [mapping]}, (3,))
    ]  # fmt: skip
    assert ports == [mapping]
    steps, _ = plan(tmp_path, rec, bandwidth={})  # --bandwidth none
    assert steps[0].new == {"portMappings": [mapping]} and steps[0].plugins == (3,)
    assert plan(tmp_path, rec, bandwidth=BW) == ([], [mapping])  # the same: nothing to do


def test_publish_and_unpublish_reapply_portmap_only(tmp_path: Path) -> None:
    kept, dropped, new = free_port(), free_port(), free_port()
    held = [{"hostPort": kept, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": dropped, "containerPort": 81, "protocol": "tcp"}]  # fmt: skip
    rec = record({"portMappings": held})
    steps, ports = plan(
        tmp_path, rec, publish=parse_port_spec(f"127.0.0.1:{new}:90/udp"),
        unpublish=parse_port_spec(f"{dropped}:81"),
    )  # fmt: skip
    added = {"hostPort": new, "containerPort": 90, "protocol": "udp", "hostIP": "127.0.0.1"}
    assert ports == [held[0], added]
    assert [(s.plugins, s.new) for s in steps] == [((1,), {"portMappings": [held[0], added]})]
    steps, ports = plan(tmp_path, rec, unpublish=parse_port_spec("80") + parse_port_spec("81"))
    assert ports == [] and steps[0].new == {} and steps[0].plugins == (1,)


def test_what_is_refused_before_any_plugin_runs(tmp_path: Path) -> None:
    port = free_port()
    rec = record({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]})
    with pytest.raises(UsageError, match="does not publish it"):
        plan(tmp_path, rec, unpublish=parse_port_spec("8080:80"))
    with pytest.raises(PortInUseError, match=f"Bind for 0.0.0.0:{port} failed"):
        plan(tmp_path, rec, publish=parse_port_spec(f"{port}:81"))
    unsafe = {**CHAIN, "plugins": [CHAIN["plugins"][0],
              {"type": "tuning", "capabilities": {"bandwidth": True}}]}  # fmt: skip
    with pytest.raises(CnirunError, match='re-applying plugin type="tuning" is not known'):
        plan(tmp_path, record({}, unsafe), bandwidth=BW)
    no_portmap = {**CHAIN, "plugins": [CHAIN["plugins"][0], CHAIN["plugins"][3]]}
    with pytest.raises(UsageError, match="--publish needs a network whose plugins accept"):
        plan(tmp_path, record({}, no_portmap), publish=parse_port_spec("80"))


def test_the_updating_field_round_trips_and_is_checked(tmp_path: Path) -> None:
    store = RecordStore(str(tmp_path / "state"))
    updating = {"pid": 1, "start": "5", "ports": [], "steps": [
        {"attachment": 0, "from": {"bandwidth": BW}, "to": {}}]}  # fmt: skip
    store.save(record({"bandwidth": BW}, updating=updating))
    loaded = store.load(SID)
    assert loaded.updating == updating
    assert update.interrupted(loaded)  # pid 1 did not start at tick 5: that process is gone
    path = Path(store.path(SID))
    raw = json.loads(path.read_text())
    raw["updating"]["steps"][0]["attachment"] = "0; rm -rf /"
    path.write_text(json.dumps(raw))
    with pytest.raises(RecordError, match=r"updating.steps\[0\].attachment"):
        store.load(SID)
    store.save(record({"bandwidth": BW}))
    assert "updating" not in json.loads(path.read_text())

"""`network connect` / `disconnect` (cnirun.sandbox.joins): the pieces that need no engine —
the interface chosen, the refusals, the pending mark on a record, and the sandbox's own
/etc files once an address came or went. The real thing is tests/e2e/test_connect.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnirun.errors import UsageError
from cnirun.host import etcfiles
from cnirun.sandbox import joins, names
from cnirun.sandbox.records import RecordError, RecordStore, SandboxRecord, process_start
from tests.unit.conftest import CniEnv
from tests.unit.sandbox.test_records import DEAD_PID, SID, good_record, plant


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    return RecordStore(str(tmp_path / "state"))


@pytest.mark.parametrize(
    ("used", "chosen"),
    [([], "eth0"), (["eth0"], "eth1"), (["eth0", "eth1"], "eth2"), (["eth0", "eth2"], "eth1"),
     (["eth1"], "eth0")],
)  # fmt: skip
def test_the_next_free_interface_is_chosen(used: list[str], chosen: str) -> None:
    assert joins.next_ifname(used) == chosen


def test_connect_refuses_a_network_the_sandbox_is_on() -> None:
    with pytest.raises(UsageError, match=f"^sandbox {SID[:12]} is already on network n$"):
        joins.check_connect(good_record(), "n", [])
    with pytest.raises(UsageError, match="invalid --alias 'a b': not a container name"):
        joins.check_connect(good_record(), "other", ["a b"])
    joins.check_connect(good_record(), "other", ["api"])  # no refusal


def test_disconnect_refuses_an_unknown_network_and_the_last_one_without_force() -> None:
    record = good_record()
    with pytest.raises(UsageError, match=r"is not on network x \(its networks: n\)$"):
        joins.check_disconnect(record, "x", force=False)
    with pytest.raises(UsageError, match="is the last network of sandbox .* -f` to leave it"):
        joins.check_disconnect(record, "n", force=False)
    assert joins.check_disconnect(record, "n", force=True) is record.attachments[0]
    record.attachments.append(record.attachments[0]._replace(network="m", ifname="eth1"))
    assert joins.check_disconnect(record, "n", force=False).ifname == "eth0"


def test_a_pending_attachment_round_trips_and_tells_a_dead_connect(store: RecordStore) -> None:
    record = good_record()
    me = f"{os.getpid()}:{process_start(os.getpid())}"
    record.attachments.append(record.attachments[0]._replace(ifname="eth1", pending=me))
    record.attachments.append(
        record.attachments[0]._replace(ifname="eth2", pending=f"{DEAD_PID}:123")
    )
    record.network_aliases = {"n": ["api"]}
    store.save(record)
    loaded = store.load(SID)
    assert loaded.to_json() == record.to_json()
    assert [a.is_interrupted() for a in loaded.attachments] == [False, False, True]
    assert "pending" not in loaded.to_json()["attachments"][0]  # an older cnirun reads it


@pytest.mark.parametrize(
    ("field", "value"),
    [("pending", "12"), ("pending", "0:1"), ("pending", 12), ("pending", "1:2\n")],
)
def test_a_bad_pending_mark_makes_the_record_invalid(
    store: RecordStore, field: str, value: object
) -> None:
    raw = good_record().to_json()
    raw["attachments"][0][field] = value
    plant(store, SID, raw)
    with pytest.raises(RecordError, match=r"attachments\[0\].pending: not PID:START"):
        store.load(SID)


@pytest.mark.parametrize("aliases", [{"n": ["a\nb"]}, {"n": "api"}, {"bad name!": ["api"]}])
def test_bad_network_aliases_make_the_record_invalid(
    store: RecordStore, aliases: object
) -> None:
    raw = good_record().to_json()
    raw["network_aliases"] = aliases
    plant(store, SID, raw)
    with pytest.raises(RecordError, match="network_aliases"):
        store.load(SID)


def _on(sandbox_id: str, network: str, **fields: object) -> SandboxRecord:
    record = good_record(sandbox_id, **fields)
    record.attachments = [record.attachments[0]._replace(network=network)]
    return record


def test_an_alias_given_on_one_network_is_known_and_taken_there_only(
    store: RecordStore,
) -> None:
    other = _on("cd" * 16, "back", workload="db", network_aliases={"back": ["api"]})
    store.save(other)
    assert names.own_names(other, network="back") == ["db", "api"]
    assert names.own_names(other, network="front") == ["db"]
    with pytest.raises(UsageError, match="'api' is taken on network back by sandbox cdcd"):
        names.check_free(store, ["back"], ["web", "api"], SID, "--alias")
    names.check_free(store, ["front"], ["api"], SID, "--alias")  # another network: free
    with pytest.raises(UsageError, match="choose another --alias$"):
        names.check_free(store, ["back"], ["db"], SID, "--alias")


HOSTS = etcfiles.hosts("web", "", ["10.1.0.5/24"], [("gw", "10.9.9.9")], ["web1", "www"])


def test_a_connected_address_gets_the_names_of_the_sandboxs_other_address() -> None:
    text = etcfiles.with_own_addresses(HOSTS, ["10.2.0.7/24"], [], ["10.1.0.5"], ["api"])
    lines = text.splitlines()
    assert lines[6:] == ["10.1.0.5\tweb web1 www", "10.2.0.7\tweb web1 www api", "10.9.9.9\tgw"]
    back = etcfiles.with_own_addresses(text, [], ["10.2.0.7/24"], ["10.1.0.5"], [])
    assert back == HOSTS
    # Its last address gone, and one coming back: under the names given, before --add-host.
    bare = etcfiles.with_own_addresses(HOSTS, [], ["10.1.0.5"], [], [])
    assert bare.splitlines()[6:] == ["10.9.9.9\tgw"]
    again = etcfiles.with_own_addresses(bare, ["10.3.0.2/24"], [], [], ["web", "web1"])
    assert again.splitlines()[6:] == ["10.3.0.2\tweb web1", "10.9.9.9\tgw"]


def test_the_dns_of_a_connected_network_comes_first_and_goes_with_it() -> None:
    resolv = "nameserver 10.0.0.2\nsearch example\n"
    added = etcfiles.with_dns(resolv, ["10.5.0.1"], [])
    assert added == "nameserver 10.5.0.1\nnameserver 10.0.0.2\nsearch example\n"
    assert etcfiles.with_dns(added, ["10.5.0.1"], []) == added  # no server twice
    assert etcfiles.with_dns(added, [], ["10.5.0.1"]) == resolv
    only = "nameserver 10.5.0.1\n"
    assert etcfiles.with_dns(only, [], ["10.5.0.1"]) == only  # never none at all
    searching = etcfiles.with_dns(resolv, ["10.5.0.1"], [], ["dns.cnirun"])
    assert searching == "nameserver 10.5.0.1\nnameserver 10.0.0.2\nsearch dns.cnirun example\n"
    assert etcfiles.with_dns(searching, [], ["10.5.0.1"], [], ["dns.cnirun"]) == resolv



def test_connect_ip_is_checked_as_the_runs_ip(cni_env: CniEnv) -> None:
    net = cni_env.network(
        [{"type": "fake", "capabilities": {"ips": True},
          "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}]
    )  # fmt: skip
    assert joins.capability_args(net, "eth1", ["10.9.0.7"]) == {"ips": ["10.9.0.7"]}
    assert joins.capability_args(net, "eth1", []) == {}
    with pytest.raises(UsageError, match="--ip 10.8.0.7 is outside the address range of"):
        joins.capability_args(net, "eth1", ["10.8.0.7"])
    with pytest.raises(UsageError, match="invalid --ip 'x': not an IP address"):
        joins.capability_args(net, "eth1", ["x"])
    with pytest.raises(UsageError, match="one IPv4 and one IPv6 address at most"):
        joins.capability_args(net, "eth1", ["10.9.0.7", "10.9.0.8"])
    plain = cni_env.network([{"type": "fake"}], name="plain")
    with pytest.raises(UsageError, match="--ip needs a network whose plugins accept the 'ips'"):
        joins.capability_args(plain, "eth1", ["10.9.0.7"])


def test_teardown_follows_the_record_on_disk_not_the_runs_memory(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A foreground run's record in memory knows nothing of what `network connect` and
    `disconnect` did while it ran: its teardown reads the file again, under the lock."""
    from cnirun.sandbox import teardown

    memory = good_record()  # eth0 on n, as the run set it up
    on_disk = good_record()
    on_disk.attachments = [memory.attachments[0]._replace(network="m", ifname="eth1")]
    store.save(on_disk)  # eth0 was disconnected, eth1 connected
    torn: list[list[str]] = []
    monkeypatch.setattr(
        teardown,
        "_teardown",
        lambda record, *_: torn.append([a.ifname for a in record.attachments]) or [],
    )
    assert teardown.teardown(memory, store, None, owner=True) == []  # type: ignore[arg-type]
    assert teardown.teardown(memory, store, None, True, reread=False) == []  # type: ignore[arg-type]
    assert torn == [["eth1"], ["eth0"]]  # setting up, its memory may be ahead: it is used


def test_connect_and_disconnect_wait_for_an_update_under_way() -> None:
    record = good_record(updating={"pid": DEAD_PID, "start": "1", "steps": [], "ports": []})
    with pytest.raises(UsageError, match="has a `cnirun update` under way"):
        joins.check_connect(record, "other", [])
    with pytest.raises(UsageError, match="`cnirun gc` rolls it back"):
        joins.check_disconnect(record, "n", force=True)

"""`cnirun network connect` / `disconnect`: one more network for a running sandbox, or one
less (cnirun.sandbox.joins), for detached and foreground sandboxes, with names, refusals,
kill -9 midway, and many sandboxes joining and leaving at once.

Real Docker and real plugins; traffic is a real connection (busybox `nc` to a busybox
`httpd`) between the test's own containers.
"""

from __future__ import annotations

import ipaddress
import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import leakcheck
from tests.e2e.harness import IMAGE, Harness, bridge_ports, sh, wait_for
from tests.e2e.test_names import answers, detached, peers_in, server
from tests.leakcheck import DEFAULT_IPAM_DIR

pytestmark = pytest.mark.e2e


def has_link(container: str, ifname: str) -> bool:
    shown = sh("docker", "exec", container, "ip", "link", "show", ifname, check=False)
    return shown.returncode == 0


def address_of(container: str, ifname: str) -> ipaddress.IPv4Interface:
    out = sh("docker", "exec", container, "ip", "-4", "-o", "addr", "show", ifname).stdout
    return ipaddress.IPv4Interface(out.split()[3])


def ps_row(rig: Harness, name: str) -> str:
    shown = rig.run("ps", "--format", "{{.Names}} {{.Networks}} {{.Addresses}}")
    assert shown.returncode == 0, shown.explain()
    rows = [line for line in shown.stdout.splitlines() if line.split()[0] == name]
    assert len(rows) == 1, shown.stdout
    return rows[0]


def inspected(rig: Harness, name: str) -> dict[str, object]:
    shown = rig.run("inspect", name)
    assert shown.returncode == 0, shown.explain()
    data: dict[str, object] = json.loads(shown.stdout)[0]
    return data


def networks_of(rig: Harness, name: str) -> dict[str, dict[str, object]]:
    settings = inspected(rig, name)["NetworkSettings"]
    assert isinstance(settings, dict)
    found: dict[str, dict[str, object]] = settings["Networks"]
    return found


def test_connect_then_traffic_over_eth1_then_disconnect(rig: Harness) -> None:
    first, second = rig.network(), rig.network()
    peer = server(rig, "--network", second.name)
    box = detached(rig, "--network", first.name, IMAGE, "sleep", "600")
    assert not answers(box, peer)  # not on its network yet

    connected = rig.run("network", "connect", "--alias", f"api{rig.tag}", second.name, box)
    assert connected.returncode == 0 and connected.stdout == "", connected.explain()
    eth1 = address_of(box, "eth1")
    assert eth1 in second.subnet and address_of(box, "eth0") in first.subnet
    # ps and inspect show it at once, with its address and its alias on that network.
    assert ps_row(rig, box).split()[1:] == [
        f"{first.name},{second.name}",
        f"{address_of(box, 'eth0')},{eth1}",
    ]
    shown = networks_of(rig, box)
    assert sorted(shown) == sorted([first.name, second.name])
    assert shown[second.name]["IPAddress"] == str(eth1.ip)
    assert f"api{rig.tag}" in shown[second.name]["Aliases"]  # type: ignore[operator]
    assert f"api{rig.tag}" not in shown[first.name]["Aliases"]  # type: ignore[operator]
    # Traffic over eth1, both ways, by name: the peer knows it, it knows the peer.
    assert answers(box, peer)
    assert box in peers_in(peer) and f"api{rig.tag}" in peers_in(peer)
    hosts = sh("docker", "exec", box, "cat", "/etc/hosts").stdout
    assert f"{eth1.ip}\t" in hosts  # its own name answers on its new address too
    pinged = sh("docker", "exec", peer, "ping", "-c", "1", "-W", "2", box, check=False)
    assert pinged.returncode == 0 and str(eth1.ip) in pinged.stdout, pinged.stdout

    # A restart keeps it, as it keeps the sandbox's other networks (the netns stays held).
    assert rig.run("restart", "-t", "0", box).returncode == 0
    wait_for(lambda: has_link(box, "eth1"), 30, "the restarted workload")
    assert address_of(box, "eth1") == eth1 and answers(box, peer)

    disconnected = rig.run("network", "disconnect", second.name, box)
    assert disconnected.returncode == 0 and disconnected.stdout == "", disconnected.explain()
    assert not has_link(box, "eth1") and has_link(box, "eth0")
    assert box not in peers_in(peer) and f"api{rig.tag}" not in peers_in(peer)
    assert not answers(box, peer)
    assert str(eth1.ip) not in sh("docker", "exec", box, "cat", "/etc/hosts").stdout
    assert ps_row(rig, box).split()[1] == first.name
    assert sorted(networks_of(rig, box)) == [first.name]
    [sandbox] = [s for s in rig.records() if rig.workload_sandbox(box) == s]
    # Nothing of the eth1 attachment is left while the sandbox still runs.
    assert not rig.cache_file(second.name, f"cnirun-{sandbox}", "eth1").exists()
    assert not (Path(DEFAULT_IPAM_DIR) / second.name / str(eth1.ip)).exists()
    assert len(bridge_ports(second.bridge)) == 1  # the peer's veth alone
    for name in (box, peer):
        assert rig.run("rm", "-f", name).returncode == 0
    rig.assert_clean()


def test_a_foreground_sandbox_tears_down_what_was_connected_not_what_left(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    fake = [{"type": "fake"}]  # passes its prevResult on, and logs every call
    first, second = rig.network(extra=fake), rig.network(extra=fake)
    env = rig.env(CNI_PATH=cni_path)
    name = rig.name()
    until_told = "until [ -e /tmp/done ]; do sleep 0.1; done"  # ends when the test says so
    proc = rig.start("--rm", "--name", name, *rig.label, "--network", first.name, IMAGE,
                     "sh", "-c", until_told, env=env)  # fmt: skip
    wait_for(lambda: rig.containers(running=True), 30, "the workload to run")
    connected = rig.run("network", "connect", second.name, name, env=env)
    assert connected.returncode == 0, connected.explain()
    assert has_link(name, "eth1")
    disconnected = rig.run("network", "disconnect", first.name, name, env=env)
    assert disconnected.returncode == 0, disconnected.explain()
    assert not has_link(name, "eth0") and has_link(name, "eth1")

    sh("docker", "exec", name, "touch", "/tmp/done")
    run = rig.finish(proc, timeout=60)
    assert run.returncode == 0, run.explain()
    dels = [c["ifname"] for c in rig.fake_calls() if c["cmd"] == "DEL"]
    assert sorted(dels) == ["eth0", "eth1"], dels  # each DELeted once: eth0 by disconnect
    rig.assert_clean()


def test_connect_and_disconnect_refuse_what_cannot_work(rig: Harness) -> None:
    first, second = rig.network(), rig.network()
    taken = server(rig, "--network", second.name)
    box = detached(rig, "--network", first.name, IMAGE, "sleep", "600")
    [taker] = [s for s in rig.records() if rig.workload_sandbox(taken) == s]

    def refused(*args: str) -> str:
        done = rig.run("network", *args)
        assert done.returncode == 125 and done.stdout == "", done.explain()
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("cnirun: error: "), done.explain()
        return lines[0].removeprefix("cnirun: error: ")

    sandbox = rig.workload_sandbox(box)[:12]
    assert refused("connect", first.name, box) == (
        f"sandbox {sandbox} is already on network {first.name}"
    )
    assert refused("connect", "--alias", taken, second.name, box) == (
        f"the name '{taken}' is taken on network {second.name} by sandbox {taker[:12]}:"
        " choose another --alias"
    )
    missing = refused("connect", f"{second.name}x", box)
    assert f'no net configuration with name "{second.name}x"' in missing, missing
    assert f'did you mean "{second.name}"' in missing, missing
    assert refused("disconnect", second.name, box).startswith(
        f"sandbox {sandbox} is not on network {second.name} (its networks: {first.name})"
    )
    assert refused("disconnect", first.name, box) == (
        f"network {first.name} is the last network of sandbox {sandbox}: use"
        " `cnirun network disconnect -f` to leave it with only lo"
    )
    assert rig.run("stop", "-t", "0", box).returncode == 0
    assert refused("connect", second.name, box) == (
        f"sandbox {sandbox} is exited: only a running sandbox can be connected"
        " (`cnirun start` it first)"
    )
    assert rig.run("start", box).returncode == 0
    assert has_link(box, "eth0")  # none of it touched the sandbox

    forced = rig.run("network", "disconnect", "-f", first.name, box)
    assert forced.returncode == 0, forced.explain()
    links = sh("docker", "exec", box, "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    assert ps_row(rig, box).split()[1:] == []  # no networks, no addresses; still running
    again = rig.run("network", "connect", first.name, box)  # and it may come back: eth0
    assert again.returncode == 0 and has_link(box, "eth0"), again.explain()
    for name in (box, taken):
        assert rig.run("rm", "-f", name).returncode == 0
    rig.assert_clean()


KILL_POINTS = [
    "connect, before the ADD",
    "connect, between plugins",
    "connect, after the ADD",
    "disconnect, before the DEL",
    "disconnect, after the DEL",
]


@pytest.mark.parametrize("finisher", ["gc", "rm -f"])
@pytest.mark.parametrize("when", KILL_POINTS)
def test_kill_9_during_connect_or_disconnect_is_finished_by_gc_or_rm_f(
    rig: Harness, when: str, finisher: str
) -> None:
    cni_path = rig.fake_plugin()
    env = rig.env(CNI_PATH=cni_path)
    first = rig.network()
    extra: list[dict[str, object]] = [{"type": "firewall"}]
    if when == "connect, between plugins":  # after bridge's ADD, before firewall's
        extra.insert(0, {"type": "fake", "fake": {"ADD": {"kill_parent": True}}})
    second = rig.network(extra=extra)
    box = rig.name()  # started with the fake plugin's dir: a sandbox keeps its plugin dirs
    started = rig.run("-d", "--name", box, *rig.label, "--network", first.name, IMAGE,
                      "sleep", "600", env=env)  # fmt: skip
    assert started.returncode == 0, started.explain()
    sandbox = rig.workload_sandbox(box)
    verb, _, point = when.partition(", ")
    kill = {"after the ADD": "add", "after the DEL": "teardown"}.get(point)
    if point.startswith("before"):
        kill = "join"
    if verb == "disconnect":
        assert rig.run("network", "connect", second.name, box, env=env).returncode == 0
    kill_env = rig.env(CNI_PATH=cni_path, CNIRUN_TEST_KILL_AT=kill)
    killed = rig.run("network", verb, second.name, box, env=kill_env)
    assert killed.returncode == -9, killed.explain()
    # What its plugins had done: nothing yet, or all of the ADD, or all of the DEL.
    assert has_link(box, "eth1") == (point != "before the ADD" and point != "after the DEL")
    assert second.name in ps_row(rig, box)  # recorded before the ADD, and until the DEL ends

    if finisher == "gc":
        gc = rig.run("gc", env=env)
        assert gc.returncode == 0, gc.explain()
        assert (
            f"reclaimed: sandbox {sandbox}: network {second.name} (eth1): its connect or"
            " disconnect was interrupted, deleting"
        ) in gc.stdout, gc.explain()
        assert not has_link(box, "eth1") and has_link(box, "eth0")
        assert ps_row(rig, box).split()[1] == first.name
        assert not rig.cache_file(second.name, f"cnirun-{sandbox}", "eth1").exists()
        assert rig.run("gc", env=env).stdout == "nothing to reclaim\n"
        assert rig.containers(running=True)  # the sandbox itself lives on
    removed = rig.run("rm", "-f", box, env=env)
    assert removed.returncode == 0, removed.explain()
    rig.assert_clean([sandbox])


def test_twenty_sandboxes_joining_and_leaving_at_once_keep_every_hosts_file_exact(
    rig: Harness,
) -> None:
    rig.network()
    rig.timeout = 180
    with ThreadPoolExecutor(20) as pool:
        boxes = list(pool.map(lambda _: detached(rig, IMAGE, "sleep", "600"), range(20)))
    stopped_first, removed, stopping, staying = boxes[:4], boxes[4:10], boxes[10:15], boxes[15:]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda n: rig.run("stop", "-t", "0", n).returncode,
                             stopped_first)) == [0] * 4  # fmt: skip
    actions = [("rm", "-f", n) for n in removed] + [("stop", "-t", "0", n) for n in stopping]
    actions += [("start", n) for n in stopped_first]
    with ThreadPoolExecutor(len(actions)) as pool:
        codes = list(pool.map(lambda argv: (argv, rig.run(*argv).returncode), actions))
    assert all(code == 0 for _, code in codes), codes

    live = staying + stopped_first
    address = {n: str(address_of(n, "eth0").ip) for n in live}
    for name in live:
        hosts = sh("docker", "exec", name, "cat", "/etc/hosts").stdout
        _, _, peers = hosts.partition("# cnirun:")
        listed = {
            word: line.split()[0]
            for line in peers.splitlines()[1:]
            for word in line.split()[1:]
            if word.startswith("cnirun-test-")
        }
        assert listed == {n: address[n] for n in live if n != name}, (name, hosts)
    with ThreadPoolExecutor(20) as pool:
        done = list(pool.map(lambda n: rig.run("rm", "-f", n).returncode, live + stopping))
    assert done == [0] * len(live + stopping)
    rig.assert_clean()


def test_disconnect_of_a_network_a_peer_shares_drops_only_that_networks_names(
    rig: Harness,
) -> None:
    first, second = rig.network(), rig.network()
    on_both = detached(rig, "--network", first.name, "--network", second.name, IMAGE,
                       "sleep", "600")  # fmt: skip
    on_first = server(rig, "--network", first.name)
    on_second = server(rig, "--network", second.name)
    assert answers(on_both, on_first) and answers(on_both, on_second)
    assert rig.run("network", "disconnect", second.name, on_both).returncode == 0
    assert on_second not in peers_in(on_both) and on_first in peers_in(on_both)
    assert on_both not in peers_in(on_second) and on_both in peers_in(on_first)
    assert answers(on_both, on_first) and not answers(on_both, on_second)
    for name in (on_both, on_first, on_second):
        assert rig.run("rm", "-f", name).returncode == 0
    rig.assert_clean()


def test_connect_ip_asks_for_the_address_within_the_networks_range(rig: Harness) -> None:
    first, second = rig.network(), rig.network()
    conf = json.loads(second.path.read_text())
    conf["plugins"][0]["capabilities"] = {"ips": True}
    second.path.write_text(json.dumps(conf))
    box = detached(rig, "--network", first.name, IMAGE, "sleep", "600")
    outside = str(first.subnet[20])
    refused = rig.run("network", "connect", "--ip", outside, second.name, box)
    assert refused.returncode == 125, refused.explain()
    assert refused.stderr == (
        f"cnirun: error: --ip {outside} is outside the address range of network"
        f" {second.name}: {second.subnet}\n"
    )
    assert not has_link(box, "eth1")
    wanted = second.subnet[20]
    connected = rig.run("network", "connect", "--ip", str(wanted), second.name, box)
    assert connected.returncode == 0, connected.explain()
    assert address_of(box, "eth1").ip == wanted
    assert networks_of(rig, box)[second.name]["IPAddress"] == str(wanted)
    assert rig.run("rm", "-f", box).returncode == 0
    rig.assert_clean()


def test_the_dns_of_a_connected_network_is_in_resolv_conf_while_it_is_attached(
    rig: Harness,
) -> None:
    cni_path = rig.fake_plugin()
    env = rig.env(CNI_PATH=cni_path)
    first = rig.network()
    server_ip = "10.254.53.53"  # never asked: only written
    second = rig.network(
        extra=[{"type": "fake", "fake": {"ADD": {"result": "inject-dns", "dns": [server_ip]}}}]
    )
    box = rig.name()
    started = rig.run("-d", "--name", box, *rig.label, "--network", first.name,
                      "--dns", "10.254.0.1", IMAGE, "sleep", "600", env=env)  # fmt: skip
    assert started.returncode == 0, started.explain()

    def servers() -> list[str]:
        text = sh("docker", "exec", box, "cat", "/etc/resolv.conf").stdout
        return [ln.split()[1] for ln in text.splitlines() if ln.startswith("nameserver ")]

    assert servers() == ["10.254.0.1"]
    assert rig.run("network", "connect", second.name, box, env=env).returncode == 0
    assert servers() == [server_ip, "10.254.0.1"]  # the network's first, --dns kept
    assert rig.run("network", "disconnect", second.name, box, env=env).returncode == 0
    assert servers() == ["10.254.0.1"]
    assert rig.run("rm", "-f", box, env=env).returncode == 0
    rig.assert_clean()


def test_a_failed_add_leaves_nothing_and_a_failed_del_stays_attached(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    env = rig.env(CNI_PATH=cni_path)
    first = rig.network()
    failing_add = rig.network(extra=[{"type": "fake", "fake": {"ADD": {"fail": "no luck"}}}])
    flag = rig.tmp / "del-fails"
    failing_del = rig.network(extra=[{"type": "fake", "fake": {"DEL": {"fail_while": str(flag)}}}])
    box = rig.name()
    started = rig.run("-d", "--name", box, *rig.label, "--network", first.name, IMAGE,
                      "sleep", "600", env=env)  # fmt: skip
    assert started.returncode == 0, started.explain()
    sandbox = rig.workload_sandbox(box)

    failed = rig.run("network", "connect", failing_add.name, box, env=env)
    assert failed.returncode == 125 and "no luck" in failed.stderr, failed.explain()
    assert len(failed.stderr.splitlines()) == 1, failed.explain()
    assert not has_link(box, "eth1") and ps_row(rig, box).split()[1] == first.name
    assert not rig.cache_file(failing_add.name, f"cnirun-{sandbox}", "eth1").exists()

    assert rig.run("network", "connect", failing_del.name, box, env=env).returncode == 0
    flag.touch()
    kept = rig.run("network", "disconnect", failing_del.name, box, env=env)
    assert kept.returncode == 125, kept.explain()
    assert "it stays attached: fix the cause and retry" in kept.stderr, kept.explain()
    assert failing_del.name in ps_row(rig, box)
    assert rig.run("gc", env=env).stdout == "nothing to reclaim\n"  # not interrupted: kept
    flag.unlink()
    retried = rig.run("network", "disconnect", failing_del.name, box, env=env)
    assert retried.returncode == 0, retried.explain()
    assert not has_link(box, "eth1") and ps_row(rig, box).split()[1] == first.name
    assert rig.run("rm", "-f", box, env=env).returncode == 0
    rig.assert_clean([sandbox])


def test_connect_to_a_dns_network_registers_its_name_and_alias_with_dnsmasq(
    rig: Harness,
) -> None:
    from tests.e2e.test_dns import DOMAIN, answers, create_dns_network, eth0_address

    first = rig.network()
    network, _, gateway = create_dns_network(rig)
    keeper = detached(rig, "--network", network, IMAGE, "sleep", "600")  # dnsmasq stays up
    box = detached(rig, "--network", first.name, IMAGE, "sleep", "600")
    alias = f"alias{rig.tag}"
    connected = rig.run("network", "connect", "--alias", alias, network, box)
    assert connected.returncode == 0, connected.explain()
    eth1 = str(address_of(box, "eth1").ip)
    hosts_file = f"{leakcheck.DNSNAME_DIR}/{network}/addnhosts"
    with open(hosts_file) as f:
        assert f"{eth1}\t{box}\t{alias}" in f.read().splitlines()
    out = sh("docker", "exec", keeper, "nslookup", box, gateway, check=False).stdout
    assert answers(out, box) == [eth1], out
    out = sh("docker", "exec", keeper, "nslookup", alias, gateway, check=False).stdout
    assert answers(out, alias) == [eth1], out
    resolv = sh("docker", "exec", box, "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines()[0] == f"nameserver {gateway}", resolv  # the network's dnsmasq
    assert f"search {DOMAIN}" in resolv.splitlines(), resolv
    out = sh("docker", "exec", box, "nslookup", keeper, check=False).stdout  # through it
    assert answers(out, keeper) == [eth0_address(keeper)], out

    assert rig.run("network", "disconnect", network, box).returncode == 0
    with open(hosts_file) as f:
        assert box not in f.read()
    out = sh("docker", "exec", keeper, "nslookup", box, gateway, check=False).stdout
    assert answers(out, box) == [], out
    resolv = sh("docker", "exec", box, "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {gateway}" not in resolv and DOMAIN not in resolv, resolv
    for name in (box, keeper):
        assert rig.run("rm", "-f", name).returncode == 0
    assert rig.run("network", "rm", network).returncode == 0
    rig.assert_clean()


def peer_lines(container: str) -> set[tuple[str, str]]:
    """(address, name) of each container name in the peers part of `container`'s hosts."""
    hosts = sh("docker", "exec", container, "cat", "/etc/hosts").stdout
    _, _, peers = hosts.partition("# cnirun:")
    return {
        (line.split()[0], word)
        for line in peers.splitlines()[1:]
        for word in line.split()[1:]
        if word.startswith("cnirun-test-")
    }


def test_concurrent_connects_and_disconnects_keep_every_hosts_file_exact(rig: Harness) -> None:
    first, second, third, fourth = (rig.network() for _ in range(4))
    rig.timeout = 180
    with ThreadPoolExecutor(8) as pool:
        boxes = list(pool.map(
            lambda _: detached(rig, "--network", first.name, IMAGE, "sleep", "600"), range(8)
        ))  # fmt: skip
        # One sandbox joins three networks at once: one interface each, eth1 to eth3.
        one = boxes[0]
        joined = pool.map(lambda n: rig.run("network", "connect", n, one).returncode,
                          [second.name, third.name, fourth.name])  # fmt: skip
        assert list(joined) == [0, 0, 0]
        # The others join `second` at once, then half of them leave it at once.
        codes = pool.map(lambda b: rig.run("network", "connect", second.name, b).returncode,
                         boxes[1:])  # fmt: skip
        assert list(codes) == [0] * 7
        leaving = boxes[1:4]
        codes = pool.map(lambda b: rig.run("network", "disconnect", second.name, b).returncode,
                         leaving)  # fmt: skip
        assert list(codes) == [0] * 3
    assert sorted(networks_of(rig, one)) == sorted(n.name for n in (first, second, third, fourth))
    assert {str(address_of(one, f"eth{i}").ip) for i in (1, 2, 3)} == {
        str(networks_of(rig, one)[n.name]["IPAddress"]) for n in (second, third, fourth)
    }
    on_second = [b for b in boxes if b not in leaving]
    eth0 = {b: str(address_of(b, "eth0").ip) for b in boxes}
    # On `second`: eth1, except for `one`, which joined three networks in any order.
    eth1 = {b: str(networks_of(rig, b)[second.name]["IPAddress"]) for b in on_second}
    for box in boxes:
        expected = {(eth0[b], b) for b in boxes if b != box}
        if box in on_second:
            expected |= {(eth1[b], b) for b in on_second if b != box}
        assert peer_lines(box) == expected, box
        if box != one:
            assert has_link(box, "eth1") == (box in on_second)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda b: rig.run("rm", "-f", b).returncode, boxes)) == [0] * 8
    rig.assert_clean()


def test_ctrl_c_during_connect_undoes_it(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    env = rig.env(CNI_PATH=cni_path)
    first = rig.network()
    slow = rig.network(extra=[{"type": "fake", "fake": {"ADD": {"sleep": 2}}}])
    box = rig.name()
    started = rig.run("-d", "--name", box, *rig.label, "--network", first.name, IMAGE,
                      "sleep", "600", env=env)  # fmt: skip
    assert started.returncode == 0, started.explain()
    proc = rig.start("network", "connect", slow.name, box, env=env)
    wait_for(lambda: any(c["cmd"] == "ADD" for c in rig.fake_calls()), 30, "the slow ADD")
    proc.send_signal(signal.SIGINT)  # the ADD is let finish, then undone
    done = rig.finish(proc, timeout=60)
    assert done.returncode == 130, done.explain()
    assert done.stderr.splitlines() == [
        "cnirun: SIGINT received: stopping after the current ADD (again: at once)",
        "cnirun: error: connect interrupted: nothing of it is left",
    ], done.explain()
    assert not has_link(box, "eth1") and ps_row(rig, box).split()[1] == first.name
    assert [c["cmd"] for c in rig.fake_calls()] == ["ADD", "DEL"]
    assert rig.run("gc", env=env).stdout == "nothing to reclaim\n"
    assert rig.run("rm", "-f", box, env=env).returncode == 0
    rig.assert_clean()

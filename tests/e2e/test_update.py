"""`cnirun update` (issue 16): a running sandbox's bandwidth limits and published ports change
in place. The rate measured over TCP between this host and the test's container follows
each update while a connection opened before it stays up and the address and MAC stay; a
port published by `update` answers on 127.0.0.1 and is gone (with its DNAT rules) after
`--unpublish`; a plugin failing mid-update leaves the old policy in place; a kill -9 at each
point of an update is rolled back by `gc` (or by the next update); and the DEL after several
updates leaves no qdisc, ifb device, DNAT or firewall rule. Traffic stays between this host
and the test's own containers."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import IMAGE, Harness, Net, free_port, iptables_lines, link_exists, sh
from tests.e2e.test_bandwidth import (
    ACCEPT_TIMEOUT,
    BANDWIDTH,
    TOLERANCE,
    host_devices,
    ifb_devices,
    ifb_name,
    inspect,
    measured,
    server,
    transfer,
)
from tests.e2e.test_ports import answers

pytestmark = pytest.mark.e2e

ECHO = "nc -ll -p 7000 -e cat & echo {token} > /tmp/index.html; httpd -p 80 -h /tmp; exec sleep 600"


def sandbox(rig: Harness, name: str, *flags: str) -> dict[str, Any]:
    """A detached sandbox NAME serving an echo on 7000 and HTTP on 80; its inspect JSON."""
    command = ECHO.format(token=name)
    run = rig.run("-d", *rig.label, "--name", name, *flags, IMAGE, "sh", "-c", command)
    assert run.returncode == 0, run.explain()
    return inspect(rig, name)


def address(data: dict[str, Any], net: Net) -> str:
    return str(data["NetworkSettings"]["Networks"][net.name]["IPAddress"])


def mac_inside(rig: Harness, name: str) -> str:
    run = rig.run("exec", name, "cat", "/sys/class/net/eth0/address")
    assert run.returncode == 0, run.explain()
    return run.stdout.strip()


def echo(conn: socket.socket, text: str) -> None:
    """One round trip over the long-lived connection."""
    conn.sendall(f"{text}\n".encode())
    got = b""
    while not got.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, f"the connection closed before {text!r} came back"
        got += chunk
    assert got == f"{text}\n".encode()


def update(rig: Harness, *argv: str, env: dict[str, str] | None = None) -> None:
    run = rig.run("update", *argv, env=env)
    assert run.returncode == 0, run.explain()


def bounds(rate: int) -> tuple[float, float]:
    return rate * (1 - TOLERANCE), rate * (1 + TOLERANCE)


def record_of(rig: Harness, sandbox_id: str) -> dict[str, Any]:
    data = json.loads((rig.state_dir / "sandboxes" / f"{sandbox_id}.json").read_text())
    assert isinstance(data, dict)
    return data


def cached_caps(rig: Harness, net: Net, sandbox_id: str) -> Any:
    entry = json.loads(rig.cache_file(net.name, f"cnirun-{sandbox_id}").read_text())
    return entry.get("capabilityArgs")


def dnat_lines(port: int) -> list[str]:
    """The nat rules that map host port `port`."""
    nat = sh("iptables-save", "-t", "nat").stdout.splitlines()
    return [line for line in nat if f"--dport {port} " in f"{line} "]


def test_update_bandwidth_changes_the_rate_and_keeps_connection_address_and_mac(
    rig: Harness,
) -> None:
    net = rig.network(portmap=True, firewall=True, extra=[BANDWIDTH])
    ifbs_before = ifb_devices()
    name = rig.name()
    data = sandbox(rig, name, "--bandwidth", "ingress=8mbit,egress=8mbit")
    ip, mac = address(data, net), mac_inside(rig, name)
    listener = server(net)
    rig.debris.append(listener.close)

    def rate(way: str, limit: int) -> float:
        low, high = bounds(limit)
        return measured(lambda: transfer(rig, net, listener, ["exec", name], way), low, high)

    rates = {"8mbit in": rate("in", 8_000_000), "8mbit out": rate("out", 8_000_000)}
    conn = socket.create_connection((ip, 7000), timeout=ACCEPT_TIMEOUT)
    rig.debris.append(conn.close)
    echo(conn, "before the update")

    update(rig, name, "--bandwidth", "ingress=3mbit,egress=3mbit")
    echo(conn, "after the first update")
    rates |= {"3mbit in": rate("in", 3_000_000), "3mbit out": rate("out", 3_000_000)}
    echo(conn, "after the measurements")
    veth, ifb = host_devices(inspect(rig, name), net)
    assert "rate 3Mbit" in sh("tc", "qdisc", "show", "dev", veth).stdout
    assert "rate 3Mbit" in sh("tc", "qdisc", "show", "dev", ifb).stdout
    listed = rig.run("ps", "--format", "{{.Bandwidth}}")
    assert listed.stdout.split() == [
        "ingress=3mbit,ingress-burst=64kb,egress=3mbit,egress-burst=64kb"
    ]

    update(rig, name, "--bandwidth", "none")
    echo(conn, "after the limit is lifted")
    rates |= {"unlimited in": transfer(rig, net, listener, ["exec", name], "in")}
    rates |= {"unlimited out": transfer(rig, net, listener, ["exec", name], "out")}
    print("measured rates (mbit/s):", {k: round(v / 1e6, 2) for k, v in rates.items()})
    for key, limit in (("8mbit", 8_000_000), ("3mbit", 3_000_000)):
        for way in ("in", "out"):
            low, high = bounds(limit)
            assert low <= rates[f"{key} {way}"] <= high, rates
    assert rates["unlimited in"] >= 3 * 8_000_000 and rates["unlimited out"] >= 3 * 8_000_000
    qdiscs = sh("tc", "qdisc", "show", "dev", veth).stdout
    assert "tbf" not in qdiscs and "ingress" not in qdiscs, qdiscs
    assert not link_exists(ifb)
    after = inspect(rig, name)
    assert after["bandwidth"] is None and cached_caps(rig, net, after["sandbox"]) is None
    assert address(after, net) == ip and mac_inside(rig, name) == mac
    assert after["results"][net.name]["interfaces"] == [
        i for i in data["results"][net.name]["interfaces"] if i["name"] != ifb
    ]  # the same bridge, veth and eth0 (MAC too); only the ifb device is gone
    echo(conn, "at the end")
    conn.close()

    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    assert not link_exists(veth)
    assert not (ifb_devices() - ifbs_before) & {ifb_name(net.name, after["sandbox"])}
    rig.assert_clean()


def test_update_publishes_and_unpublishes_a_port(rig: Harness) -> None:
    net = rig.network(portmap=True, firewall=True)
    name, other = rig.name(), rig.name()
    data = sandbox(rig, name)
    sandbox(rig, other)
    port, taken = free_port(), free_port()
    update(rig, other, "-p", f"{taken}:80")
    ip = address(data, net)
    conn = socket.create_connection((ip, 7000), timeout=ACCEPT_TIMEOUT)
    rig.debris.append(conn.close)
    echo(conn, "before")

    assert not answers(port, name)
    update(rig, name, "--publish", f"127.0.0.1:{port}:80")
    assert answers(port, name), "the port published by update does not answer"
    assert answers(taken, other)
    assert dnat_lines(port), sh("iptables-save", "-t", "nat").stdout
    shown = rig.run("port", name)
    assert shown.stdout.splitlines() == [f"80/tcp -> 127.0.0.1:{port}"]
    echo(conn, "after publishing")

    busy = rig.run("update", name, "-p", f"{taken}:80")
    assert busy.returncode == 125, busy.explain()
    assert f"Bind for 0.0.0.0:{taken} failed: port is already allocated" in busy.stderr
    assert answers(port, name) and answers(taken, other)

    update(rig, name, "--unpublish", "80")
    assert not answers(port, name)
    assert dnat_lines(port) == []
    assert rig.run("port", name).stdout == ""
    sandbox_id = data["sandbox"]
    assert not [line for line in iptables_lines(f"cnirun-{sandbox_id}") if "DNAT" in line]
    echo(conn, "after unpublishing")
    assert address(inspect(rig, name), net) == ip
    conn.close()
    removed = rig.run("rm", "-f", name, other)
    assert removed.returncode == 0, removed.explain()
    assert not answers(taken, other) and dnat_lines(taken) == []
    rig.assert_clean()


def failing_bandwidth(rig: Harness, marker: str) -> str:
    """A plugin dir whose `bandwidth` fails an ADD asking for `marker` (the real one for
    everything else); returns the CNI_PATH that finds it first."""
    rig.plugin_dir.mkdir(exist_ok=True)
    shim = rig.plugin_dir / "bandwidth"
    shim.write_text(
        "#!/bin/sh\n"
        "input=$(cat)\n"
        f'case "$CNI_COMMAND:$input" in ADD:*{marker}*)\n'
        '  echo \'{"cniVersion":"1.0.0","code":999,"msg":"injected failure"}\'; exit 1;;\n'
        "esac\n"
        "printf '%s' \"$input\" | exec /usr/lib/cni/bandwidth\n"
    )
    shim.chmod(0o755)
    return f"{rig.plugin_dir}:/usr/lib/cni"


def test_a_failing_plugin_restores_the_old_policy(rig: Harness) -> None:
    net = rig.network(portmap=True, firewall=True, extra=[BANDWIDTH])
    rig.overrides["CNI_PATH"] = failing_bandwidth(rig, "3000000")
    name, port = rig.name(), free_port()
    data = sandbox(rig, name, "--bandwidth", "ingress=8mbit,egress=8mbit", "-p", f"{port}:80")
    sandbox_id = data["sandbox"]
    before = (data["bandwidth"], cached_caps(rig, net, sandbox_id))
    other = free_port()
    run = rig.run("update", name, "--bandwidth", "ingress=3mbit", "-p", f"{other}:80")
    assert run.returncode == 125, run.explain()
    assert run.stderr.splitlines() == [
        'cnirun: error: update failed, previous policy restored: plugin type="bandwidth"'
        " failed (add): injected failure"
    ], run.explain()
    after = inspect(rig, name)
    assert (after["bandwidth"], cached_caps(rig, net, sandbox_id)) == before
    assert after["ports"] == data["ports"] and "updating" not in record_of(rig, sandbox_id)
    veth, ifb = host_devices(after, net)
    assert "rate 8Mbit" in sh("tc", "qdisc", "show", "dev", veth).stdout
    assert "rate 8Mbit" in sh("tc", "qdisc", "show", "dev", ifb).stdout
    assert answers(port, name) and not answers(other, name) and dnat_lines(other) == []
    assert address(after, net) == address(data, net)
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    assert not link_exists(ifb) and dnat_lines(port) == []
    rig.assert_clean()


@pytest.mark.parametrize("point", ["update-recorded", "update-deleted", "update-applied"])
@pytest.mark.parametrize("finish", ["gc", "update"])
def test_a_killed_update_is_rolled_back(rig: Harness, point: str, finish: str) -> None:
    net = rig.network(portmap=True, firewall=True, extra=[BANDWIDTH])
    name, port, new = rig.name(), free_port(), free_port()
    data = sandbox(rig, name, "--bandwidth", "ingress=8mbit", "-p", f"{port}:80")
    sandbox_id, veth = data["sandbox"], host_devices(data, net)[0]
    killed = rig.run(
        "update", name, "--bandwidth", "ingress=3mbit,egress=3mbit", "-p", f"{new}:80",
        env=rig.env(CNIRUN_TEST_KILL_AT=point),
    )  # fmt: skip
    assert killed.returncode == -9, killed.explain()
    assert "updating" in record_of(rig, sandbox_id)
    if finish == "gc":
        gc = rig.run("gc")
        assert gc.returncode == 0, gc.explain()
        assert f"sandbox {sandbox_id}: interrupted update rolled back" in gc.stdout
        state = inspect(rig, name)
        assert state["bandwidth"] == data["bandwidth"] and state["ports"] == data["ports"]
        assert cached_caps(rig, net, sandbox_id) == data["attachments"][0]["capabilityArgs"]
        assert "rate 8Mbit" in sh("tc", "qdisc", "show", "dev", veth).stdout
        assert not link_exists(ifb_name(net.name, sandbox_id))
        assert answers(port, name) and dnat_lines(new) == []
    update(rig, name, "--bandwidth", "ingress=3mbit,egress=3mbit", "-p", f"{new}:80")
    state = inspect(rig, name)
    assert "updating" not in record_of(rig, sandbox_id)
    assert state["bandwidth"]["ingressRate"] == 3_000_000
    assert "rate 3Mbit" in sh("tc", "qdisc", "show", "dev", veth).stdout
    assert answers(port, name) and answers(new, name)
    assert address(state, net) == address(data, net)
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    assert not link_exists(ifb_name(net.name, sandbox_id))
    assert dnat_lines(port) == [] and dnat_lines(new) == []
    rig.assert_clean()


def test_the_del_of_a_foreground_run_after_several_updates_leaves_nothing(rig: Harness) -> None:
    net = rig.network(portmap=True, firewall=True, extra=[BANDWIDTH])
    ifbs_before = ifb_devices()
    name = rig.name()
    command = ECHO.format(token=name)
    proc = rig.start("--rm", *rig.label, "--name", name, IMAGE, "sh", "-c", command)
    rig.workload_sandbox(name)
    first, second = free_port(), free_port()
    update(rig, name, "-p", f"{first}:80")
    update(rig, name, "--bandwidth", "ingress=4mbit,egress=4mbit")
    update(rig, name, "-p", f"127.0.0.1:{second}:80", "--unpublish", f"{first}:80")
    update(rig, name, "--bandwidth", "egress=6mbit", "-p", f"{first}:80")
    data = inspect(rig, name)
    sandbox_id = data["sandbox"]
    assert answers(first, name) and answers(second, name)
    assert data["bandwidth"] == {"egressRate": 6_000_000, "egressBurst": 65536 * 8}
    veth, ifb = host_devices(data, net)
    assert "rate 6Mbit" in sh("tc", "qdisc", "show", "dev", ifb).stdout
    assert "tbf" not in sh("tc", "qdisc", "show", "dev", veth).stdout
    assert cached_caps(rig, net, sandbox_id) == data["attachments"][0]["capabilityArgs"]
    killed = rig.run("kill", name)
    assert killed.returncode == 0, killed.explain()
    done = rig.finish(proc, timeout=60)
    assert done.returncode == 137, done.explain()
    assert not link_exists(veth) and not link_exists(ifb)
    assert not (ifb_devices() - ifbs_before) & {ifb}
    assert dnat_lines(first) == [] and dnat_lines(second) == []
    assert iptables_lines(f"cnirun-{sandbox_id}") == []
    rig.assert_clean()


def test_update_is_refused_for_a_plugin_not_known_to_be_safe(rig: Harness) -> None:
    tuning = {"type": "tuning", "capabilities": {"mac": True, "bandwidth": True}}
    rig.network(portmap=True, extra=[tuning])
    name = rig.name()
    sandbox(rig, name)
    run = rig.run("update", name, "--bandwidth", "ingress=3mbit")
    assert run.returncode == 125, run.explain()
    assert len(run.stderr.splitlines()) == 1, run.explain()
    assert 're-applying plugin type="tuning" is not known to be safe' in run.stderr
    nothing = rig.run("update", name)
    assert nothing.returncode == 125 and "nothing to update" in nothing.stderr
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    rig.assert_clean()


def test_isolated_networks_drop_traffic_between_them_but_not_within(rig: Harness) -> None:
    names = [rig.netname(), rig.netname()]
    for network in names:
        created = rig.run("network", "create", network, "--isolation", "same-bridge",
                          "--subnet", str(rig.subnet()))  # fmt: skip
        assert created.returncode == 0, created.explain()
    confs = [json.loads((rig.netconf_dir / f"{n}.conflist").read_text()) for n in names]
    bridges = [c["plugins"][0]["bridge"] for c in confs]
    rig.bridges += bridges
    for conf in confs:
        assert {"type": "firewall", "ingressPolicy": "same-bridge"} in conf["plugins"]
    a, a2, b = rig.name(), rig.name(), rig.name()
    ips = {}
    for box, network in ((a, names[0]), (a2, names[0]), (b, names[1])):
        data = sandbox(rig, box, "--network", network)
        ips[box] = data["NetworkSettings"]["Networks"][network]["IPAddress"]
        assert data["ingressPolicy"] == {network: "same-bridge"}
    listed = rig.run("ps", "--format", "{{.Names}} {{.IngressPolicy}}")
    assert sorted(listed.stdout.splitlines()) == sorted(
        [
            f"{a} {names[0]}=same-bridge",
            f"{a2} {names[0]}=same-bridge",
            f"{b} {names[1]}=same-bridge",
        ]
    )

    def reaches(source: str, target: str) -> bool:
        """Whether a TCP round trip from `source` to the echo of `target` comes back."""
        probe = f"echo hi | nc -w 3 {ips[target]} 7000"
        run = rig.run("exec", source, "sh", "-c", probe)
        return run.stdout.strip() == "hi"

    assert reaches(a2, a) and reaches(a, a2), "traffic within an isolated network is dropped"
    assert not reaches(a, b) and not reaches(b, a), "traffic between isolated networks passes"
    removed = rig.run("rm", "-f", a, a2, b)
    assert removed.returncode == 0, removed.explain()
    for network in names:
        gone = rig.run("network", "rm", network)
        assert gone.returncode == 0, gone.explain()
    rules = sh("iptables-save", "-t", "filter").stdout
    assert not [line for line in rules.splitlines() if any(b in line for b in bridges)], rules
    rig.assert_clean()


def test_isolation_is_refused_where_it_cannot_apply(rig: Harness, tmp_path: Path) -> None:
    bad = rig.run("network", "create", rig.netname(), "--isolation", "other")
    assert bad.returncode == 125 and 'invalid --isolation "other"' in bad.stderr
    ptp = rig.run("network", "create", rig.netname(), "--driver", "ptp", "--isolation",
                  "same-bridge")  # fmt: skip
    assert ptp.returncode == 125 and "needs the bridge driver" in ptp.stderr
    plugins = tmp_path / "old-plugins"
    plugins.mkdir()
    for plugin in ("bridge", "host-local", "portmap", "tuning"):
        (plugins / plugin).symlink_to(f"/usr/lib/cni/{plugin}")
    (plugins / "firewall").write_text("#!/bin/sh\nexit 1\n")  # a firewall without ingressPolicy
    (plugins / "firewall").chmod(0o755)
    old = rig.run("network", "create", rig.netname(), "--isolation", "same-bridge",
                  "--subnet", str(rig.subnet()), "--cni-version", "1.0.0",
                  env=rig.env(CNI_PATH=str(plugins)))  # fmt: skip
    assert old.returncode == 125, old.explain()
    assert "needs a firewall plugin with ingressPolicy" in old.stderr
    assert list(rig.netconf_dir.iterdir()) == []
    rig.assert_clean()


def test_cnirun_net_del_after_updates_undoes_what_is_in_place(rig: Harness) -> None:
    net = rig.network(portmap=True, firewall=True, extra=[BANDWIDTH])
    name, first, second = rig.name(), free_port(), free_port()
    data = sandbox(rig, name, "--bandwidth", "ingress=8mbit")  # no port: portmap's DEL
    sandbox_id = data["sandbox"]  # would do nothing with the args it was added with
    update(rig, name, "-p", f"{first}:80", "--bandwidth", "ingress=6mbit")
    update(rig, name, "--unpublish", "80")
    update(rig, name, "-p", f"{second}:80", "--bandwidth", "egress=4mbit")
    veth, ifb = host_devices(inspect(rig, name), net)
    assert answers(second, name) and dnat_lines(first) == []
    # libcni's way: no capability args given, so the cache's are used (cnitool does the same)
    deleted = rig.net("del", net.name, data["netns"], "--container-id", f"cnirun-{sandbox_id}")
    assert deleted.returncode == 0, deleted.explain()
    assert dnat_lines(second) == [] and not link_exists(ifb) and not link_exists(veth)
    assert iptables_lines(f"cnirun-{sandbox_id}") == []
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    rig.assert_clean()

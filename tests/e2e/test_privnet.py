"""End-to-end tests of `cnirun priv-net-run` with the real plugins (root, no Docker needed).

Each test gets a private config dir and cache dir, bridges and subnets of its own
(tests/e2e/harness.py). After every test, nothing of it is left: no netns, lock, cache entry,
reservation, iptables rule or bridge port, and after cleanup no bridge either.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnirun import privnet
from tests.e2e.harness import (
    NETNS_DIR,
    PLUGIN_DIR,
    PRIVNET_RE,
    Harness,
    one_error_line,
    read_line,
)

pytestmark = pytest.mark.e2e


def bridge_net(rig: Harness, **ipam: object) -> tuple[str, ipaddress.IPv4Network]:
    """A bridge network (with masquerade and firewall) in the config dir."""
    net = rig.network(firewall=True, ipam=ipam or None)
    return net.name, net.subnet


# -- the default network --------------------------------------------------------------------


def test_default_network_on_an_empty_config_dir(rig: Harness) -> None:
    name, bridge, subnet = rig.netname(), rig.bridge(), rig.subnet()
    rig.overrides.update(
        CNIRUN_DEFAULT_NETWORK=name, CNIRUN_DEFAULT_BRIDGE=bridge, CNIRUN_DEFAULT_SUBNET=str(subnet)
    )
    gateway = str(subnet.network_address + 1)
    script = f"ip netns identify; busybox ping -c1 -W3 {gateway}"
    res = rig.run("priv-net-run", "--", "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    assert "1 packets received" in res.stdout
    assert res.stderr == (
        f'cnirun: using the built-in default network "{name}" (bridge {bridge}, subnet {subnet}), '
        f"saved as {rig.netconf_dir}/zz-cnirun-default.conflist; choose another with --network "
        f"NAME or by adding a network config to {rig.netconf_dir}\n"
    )
    saved = json.loads((rig.netconf_dir / "zz-cnirun-default.conflist").read_text())
    assert saved["cnirun"]["default"] is True
    assert [p["type"] for p in saved["plugins"]] == [
        "bridge", "portmap", "firewall", "tuning", "bandwidth"
    ]  # fmt: skip
    assert saved["cniVersion"] == "1.0.0"  # the newest Debian's plugins all support

    # The second run reuses it quietly; inspect shows it, and it is removable.
    res = rig.run("priv-net-run", "busybox", "ping", "-c1", "-W3", gateway)
    assert (res.returncode, res.stderr) == (0, "")
    res = rig.run("network", "inspect", name)
    assert res.returncode == 0, res.stderr
    [info] = json.loads(res.stdout)
    assert info["builtinDefault"] and info["default"] and info["attachments"] == []
    assert all("error" not in p for p in info["plugins"])
    res = rig.run("network", "rm", name)
    assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.stderr
    assert os.listdir(rig.netconf_dir) == [".cnirun.lock"]
    assert not os.path.exists(f"/sys/class/net/{bridge}")  # idle, so removed with it


# -- addresses and exit codes ---------------------------------------------------------------


def test_priv_net_run_shows_the_cni_addresses_of_each_network(rig: Harness) -> None:
    first, net1 = bridge_net(rig)
    second, net2 = bridge_net(rig)
    script = "ip netns identify; ip -4 -o addr show; ip route"
    res = rig.run("priv-net-run", "--network", first, "--network", second, "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert PRIVNET_RE.fullmatch(lines[0])
    addrs = {f[1]: ipaddress.ip_interface(f[3]) for f in (ln.split() for ln in lines if ": " in ln)}
    assert addrs["eth0"] in net1 and addrs["eth0"].network == net1
    assert addrs["eth1"] in net2 and addrs["eth1"].network == net2
    assert str(addrs["lo"]) == "127.0.0.1/8"
    assert f"default via {net1.network_address + 1} dev eth0" in res.stdout


@pytest.mark.parametrize(
    ("argv", "code", "stderr"),
    [
        (["sh", "-c", "exit 7"], 7, ""),
        (["sh", "-c", "echo oops >&2; exit 0"], 0, "oops\n"),
        (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM, ""),
        (["/nonexistent/cmd"], 127, "cnirun: /nonexistent/cmd: command not found\n"),
        (["{tmp}/noexec"], 126, "cnirun: {tmp}/noexec: permission denied\n"),
        (["{tmp}/garbage"], 126, "cnirun: {tmp}/garbage: Exec format error\n"),
    ],
)
def test_the_command_status_is_passed_through(
    rig: Harness, argv: list[str], code: int, stderr: str
) -> None:
    (rig.tmp / "noexec").write_text("#!/bin/sh\n")
    (rig.tmp / "garbage").write_bytes(b"\x00\x01 not a program")
    (rig.tmp / "garbage").chmod(0o755)
    name, _ = bridge_net(rig)
    argv = [a.format(tmp=rig.tmp) for a in argv]
    res = rig.run("priv-net-run", "--network", name, "--", *argv)
    assert (res.returncode, res.stderr) == (code, stderr.format(tmp=rig.tmp))


def test_stdin_is_the_callers(rig: Harness) -> None:
    name, _ = bridge_net(rig)
    res = rig.run("priv-net-run", "--network", name, "cat", input="hello from stdin\n")
    assert (res.returncode, res.stdout) == (0, "hello from stdin\n"), res.stderr


# -- teardown on signals and failures -------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_is_forwarded_and_everything_torn_down(rig: Harness, signum: int) -> None:
    name, _ = bridge_net(rig)
    script = 'echo "ready $(ip netns identify)"; exec sleep 30'
    proc = rig.start("priv-net-run", "--network", name, "sh", "-c", script)
    try:
        ready, netns = read_line(proc).split()
        rig.privnet_ids.add(netns)
        assert ready == "ready"
        assert privnet.is_live(netns)
        assert os.path.exists(f"{NETNS_DIR}/{netns}")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert err == ""
    assert not os.path.exists(f"{NETNS_DIR}/{netns}")
    assert not privnet.is_live(netns)


def test_more_signals_during_teardown_do_not_abort_it(rig: Harness) -> None:
    name, _ = bridge_net(rig)
    other, _ = bridge_net(rig)
    script = "echo ready; exec sleep 30"
    proc = rig.start("priv-net-run", "--network", name, "--network", other, "sh", "-c", script)
    try:
        assert read_line(proc) == "ready"
        proc.send_signal(signal.SIGTERM)
        for _ in range(15):  # an impatient user hammering Ctrl-C while it cleans up
            time.sleep(0.02)
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert all("finishing teardown first" in line for line in err.splitlines()), err


def slow_plugin(rig: Harness, delay: float) -> tuple[Path, Path]:
    """A chained plugin whose ADD signals it started, sleeps, then passes prevResult on."""
    bindir = rig.tmp / "bin"
    bindir.mkdir(exist_ok=True)
    marker = rig.tmp / "add-started"
    ended = rig.tmp / "add-ended"  # only a plugin that is not killed during its sleep gets here
    slow = bindir / "slow"
    slow.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "conf = json.load(sys.stdin)\n"
        "if os.environ['CNI_COMMAND'] == 'ADD':\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        f"    time.sleep({delay})\n"
        f"    open({str(ended)!r}, 'w').close()\n"
        "    print(json.dumps(conf['prevResult']))\n"
    )
    slow.chmod(0o755)
    return bindir, marker


def start_during_slow_add(rig: Harness, plugins: list[str], delay: float) -> subprocess.Popen[str]:
    """Start priv-net-run on bridge + `plugins` and return once the slow ADD is running."""
    bindir, marker = slow_plugin(rig, delay)
    net = rig.network(firewall=True)
    name, conf_path = net.name, net.path
    conf = json.loads(conf_path.read_text())
    conf["plugins"] = [conf["plugins"][0]] + [{"type": p} for p in plugins]
    conf_path.write_text(json.dumps(conf))
    proc = rig.start(
        "--debug", "priv-net-run", "--cni-path", f"{bindir}:{PLUGIN_DIR}", "--network", name, "true"
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"the slow ADD never started: {proc.communicate()}")
        time.sleep(0.02)
    return proc


def finish(rig: Harness, proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    names = set(PRIVNET_RE.findall(err))
    rig.privnet_ids.update(names)
    assert names, "the netns name is in the debug log"
    return proc.returncode, err


def test_a_signal_during_setup_lets_the_add_finish_then_tears_down(rig: Harness) -> None:
    # firewall before the slow plugin: its rules can only be deleted with a cached result.
    proc = start_during_slow_add(rig, ["firewall", "slow"], delay=2)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(rig, proc)
    assert code == 128 + signal.SIGTERM
    assert "cnirun: SIGTERM received: stopping after the current ADD (again: at once)" in err
    assert "finishing teardown first" not in err


def test_a_second_signal_during_setup_aborts_the_add_at_once(rig: Harness) -> None:
    proc = start_during_slow_add(rig, ["slow"], delay=30)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    code, err = finish(rig, proc)
    assert code == 128 + signal.SIGINT
    assert not (rig.tmp / "add-ended").exists(), "the hanging plugin was not killed"


def test_a_failed_add_tears_down_the_networks_before_it(rig: Harness) -> None:
    good, _ = bridge_net(rig)
    exhausted = rig.subnet()
    only = str(exhausted.network_address + 1)  # the gateway is never handed out
    full, _ = bridge_net(
        rig, ranges=[[{"subnet": str(exhausted), "rangeStart": only, "rangeEnd": only}]]
    )
    res = rig.run("priv-net-run", "--network", good, "--network", full, "true")
    assert res.returncode == 125
    assert one_error_line(res.stderr) == (
        f'cnirun: error: network {full}: plugin type="bridge" failed (add): failed to allocate '
        f"for range 0: no IP addresses available in range set: {only}-{only}"
    )
    assert res.stdout == ""


def test_a_missing_plugin_is_refused_before_anything_is_created(rig: Harness) -> None:
    name = rig.netname()
    conf = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "no-such-plugin"}]}
    (rig.netconf_dir / f"{name}.conflist").write_text(json.dumps(conf))
    res = rig.run("priv-net-run", "--network", name, "true")
    assert res.returncode == 125
    line = one_error_line(res.stderr)
    assert f"network {name} ({rig.netconf_dir}/{name}.conflist)" in line
    assert 'failed to find plugin "no-such-plugin"' in line


def test_usage_errors_exit_125_with_one_line(rig: Harness) -> None:
    res = rig.run("priv-net-run", "--network", "nope", "true")
    assert res.returncode == 125 and "nope" in one_error_line(res.stderr)
    res = rig.run("priv-net-run", "--cni-timeout", "0", "true")
    assert res.returncode == 125 and "--cni-timeout" in one_error_line(res.stderr)
    res = rig.run("priv-net-run")
    assert res.returncode == 125 and "Missing argument" in res.stderr

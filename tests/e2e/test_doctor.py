"""End-to-end tests of `cnirun doctor` on this host (root, real plugins and Docker).

The config dir is a private temporary one (via NETCONFPATH), so "healthy" and "broken" are
both under the test's control; the host-wide checks (Docker, plugins, forwarding, iptables)
read the real host. Stale state is staged with names of this test's own and removed after.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cnirun.cni.cache import ResultCache
from cnirun.cni.types import Result, RuntimeConf
from cnirun.host import netns
from tests.e2e.harness import Harness, read_line
from tests.leakcheck import assert_no_leaks

pytestmark = pytest.mark.e2e

Report = list[tuple[str, str, str]]


def doctor(rig: Harness, *args: str, **env: str) -> tuple[int, Report, str]:
    """Run `cnirun doctor`; return its status and its lines as (verdict, subject, detail)."""
    res = rig.run("doctor", *args, env=rig.env(**env))
    report = []
    for line in res.stdout.splitlines():
        verdict, rest = line.split(None, 1)
        subject, _, detail = rest.partition(": ")
        assert verdict in ("ok", "warn", "FAIL"), line
        report.append((verdict, subject, detail))
    return res.returncode, report, res.stderr


def lines(report: Report, subject: str) -> list[tuple[str, str]]:
    return [(v, d) for v, s, d in report if s == subject]


def forward_policy() -> str:
    out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split()[2]


def test_doctor_on_a_healthy_host(rig: Harness) -> None:
    net = rig.network(firewall=True)  # bridge + host-local + firewall, cniVersion 1.0.0
    name = net.name
    code, report, stderr = doctor(rig)
    assert (code, stderr) == (0, "")
    assert not [r for r in report if r[0] == "FAIL"], report
    [(verdict, detail)] = lines(report, "docker")
    assert verdict == "ok" and detail.startswith("engine ") and "(API " in detail
    assert lines(report, "docker CLI")[0][0] == "ok"
    installed = [p for p in Path("/usr/lib/cni").iterdir() if p.is_file() and os.access(p, os.X_OK)]
    assert lines(report, "plugin dirs") == [("ok", f"{len(installed)} plugins in /usr/lib/cni")]
    assert lines(report, "plugin firewall") == [("ok", "0.4.0, 1.0.0 (/usr/lib/cni/firewall)")]
    [(verdict, detail)] = lines(report, "config")
    assert verdict == "ok"
    assert detail == f'{net.path}: network "{name}" (bridge -> firewall, 1.0.0)'
    assert lines(report, "default network") == [("ok", f'"{name}" ({net.path})')]
    assert lines(report, "net.ipv4.ip_forward")[0][0] in ("ok", "warn")
    [(verdict, detail)] = lines(report, "iptables FORWARD")
    assert verdict == "ok" and detail.startswith(f"policy {forward_policy()}")
    assert len(lines(report, "stale state")) == 1


def test_doctor_on_an_empty_config_dir_writes_nothing(rig: Harness) -> None:
    code, report, _ = doctor(rig)
    assert code == 0
    [(verdict, detail)] = lines(report, "default network")
    assert verdict == "ok"
    assert detail == (
        f'no network config in {rig.netconf_dir}; the built-in default network "cnirun" '
        "will be created there on first use"
    )
    assert list(rig.netconf_dir.iterdir()) == []


def test_doctor_on_a_broken_config_dir(rig: Harness) -> None:
    bad = rig.write("10-bad.conflist", '{"cniVersion": "1.0.0", "name": "bad", "plugins": [')
    ghost = rig.write(
        "20-ghost.conflist",
        {"cniVersion": "1.0.0", "name": "ghost", "plugins": [{"type": "ghostplug"}]},
    )
    old = rig.write(
        "30-old.conflist",
        {"cniVersion": "0.3.1", "name": "old", "plugins": [{"type": "firewall"}]},
    )
    exposed = rig.netname()
    rig.write(
        "40-exposed.conflist",
        {
            "cniVersion": "1.0.0",
            "name": exposed,
            "plugins": [{"type": "bridge", "bridge": rig.bridge(), "ipam": {"type": "host-local"}}],
        },
    )
    code, report, _ = doctor(rig)
    assert code == 1
    configs = lines(report, "config")
    assert configs[:3] == [
        ("FAIL", f"{bad}: error parsing configuration list: unexpected end of JSON input"),
        ("FAIL", f'{ghost}: plugin "ghostplug" not found in /usr/lib/cni'),
        ("FAIL", f"{old}: plugin firewall does not support cniVersion 0.3.1"),
    ]
    assert configs[3][0] == "ok"
    [(verdict, detail)] = lines(report, "iptables FORWARD")
    if forward_policy() == "DROP":
        assert verdict == "warn"
        assert f'traffic of "{exposed}" is dropped beyond the host' in detail
    else:
        assert verdict == "ok"


def test_doctor_fails_without_docker_or_plugins(rig: Harness) -> None:
    code, report, _ = doctor(rig, DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert code == 1
    [(verdict, detail)] = lines(report, "docker")
    assert verdict == "FAIL"
    assert detail.startswith("engine not reachable at unix:///nonexistent/docker.sock: ")
    assert lines(report, "stale state") == [("warn", "cannot tell without Docker (see above)")]

    code, report, _ = doctor(rig, "--cni-path", "/nonexistent/cni")
    assert code == 1
    assert lines(report, "plugin dirs") == [
        ("FAIL", "none of /nonexistent/cni exists (set --cni-path)")
    ]
    assert lines(report, "default network")[0][0] == "FAIL"


def test_doctor_reports_stale_state_but_not_live_sessions(rig: Harness) -> None:
    tag = rig.tag
    stale_ns = f"cnirun-privnet-{tag}00000000"  # no session holds its lock
    stale_cid = f"cnirun-{tag}"
    container = f"cnirun-test-{tag}-doctor"
    rig.privnet_ids.add(stale_ns)
    rig.container_ids.append(stale_cid)
    rig.names.append(container)
    name = rig.network(firewall=True).name
    live = rig.start(
        "priv-net-run", "--network", name, "sh", "-c", 'echo "$(ip netns identify)"; exec sleep 30'
    )
    try:
        live_ns = read_line(live)
        rig.privnet_ids.add(live_ns)
        netns.create_netns(stale_ns)
        result = Result.decode({"ips": [{"address": "10.252.0.9/24"}]}, "1.0.0")
        rt = RuntimeConf(stale_cid, f"/run/netns/{stale_cid}", "eth0")
        ResultCache(str(rig.cache_dir)).write("gone", b"{}", rt, result)
        subprocess.run(
            ["docker", "run", "--name", container, "--network", "none", "--label",
             f"io.cnirun.sandbox=test-{tag}", "busybox:latest", "true"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip

        code, report, _ = doctor(rig)
        assert code == 0
        # gc's own selection: the holder and the attachment, never the live session, nor an
        # exited container (gc never touches those; doctor used to list them).
        [(verdict, detail)] = lines(report, "stale state")
        assert verdict == "warn" and detail.startswith("gc would reclaim ")
        assert f"netns /run/netns/{stale_ns}: released" in detail
        assert f"attachment gone/{stale_cid}/eth0: deleted" in detail
        assert live_ns not in detail and container not in detail
    finally:
        live.terminate()
        live.communicate(timeout=30)
        netns.release_netns(stale_ns)
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        (rig.cache_dir / "results" / f"gone-{stale_cid}-eth0").unlink(missing_ok=True)
    assert_no_leaks(
        [stale_ns, stale_cid, container], netns_names=[stale_ns], cache_dir=rig.cache_dir
    )

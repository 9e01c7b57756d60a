"""End-to-end: the localhost guard (issue 13 item 8, the CVE-2020-8558 class). Once portmap
has set route_localnet=1 on a bridge, a container routing 127.0.0.1 via its gateway reached
the host's 127.0.0.1-only services; cnirun installs kube-proxy's filter rule before attaching
a chain with portmap, so the demo is blocked. The rule is permanent by design; this test
removes it again when the host did not have it before."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from cnirun.host import localnet
from tests.e2e.harness import Harness, free_port

pytestmark = pytest.mark.e2e


def passed(tag: str) -> int:
    """Packets counted by this test's probe rule in the security table."""
    listing = subprocess.run(
        ["iptables", "-w", "-t", "security", "-L", "INPUT", "-v", "-n", "-x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[0]) for line in listing.splitlines() if f"cnirun-e2e-{tag}" in line)


def test_a_container_cannot_reach_the_hosts_localhost_only_services(rig: Harness) -> None:
    had_guard = localnet.present()
    net = rig.network(portmap=True)
    reached: list[str] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))  # the host service bound to 127.0.0.1 only
    server.listen()
    server.settimeout(30)
    port = server.getsockname()[1]

    def accept() -> None:
        try:
            conn, peer = server.accept()
        except OSError:
            return
        reached.append(peer[0])
        conn.close()

    waiter = threading.Thread(target=accept, daemon=True)
    waiter.start()
    # The security table's INPUT comes after the filter table's: this counts what got past
    # the guard (the handshake need not complete for the hole to be there).
    probe = ["INPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(port),
             "-m", "comment", "--comment", f"cnirun-e2e-{rig.tag}"]  # fmt: skip
    subprocess.run(["iptables", "-w", "-t", "security", "-I", *probe], check=True)
    # The container makes 127.0.0.1 leave through eth0 (it needs NET_ADMIN and a writable
    # /proc/sys for that); `-p` makes portmap set route_localnet on the bridge.
    script = (
        "ip route del local 127.0.0.0/8 dev lo table local; "
        "ip route del local 127.0.0.1 dev lo table local; "
        f"ip route add 127.0.0.1/32 via {net.gateway} dev eth0; "
        "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet; "
        f"nc -w 3 127.0.0.1 {port} </dev/null && echo REACHED"
    )
    try:
        res = rig.run(
            "--rm", *rig.label, "--cap-add", "NET_ADMIN",
            "--security-opt", "systempaths=unconfined",
            "-p", f"{free_port()}:80", "busybox", "sh", "-c", script,
        )  # fmt: skip
        assert res.returncode in (0, 1), res.explain()
        bridge_flag = Path(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet").read_text()
        assert bridge_flag.strip() == "1"  # the precondition of the attack held
        assert passed(rig.tag) == 0, "packets to the host's 127.0.0.1 got past the guard"
        assert "REACHED" not in res.stdout and reached == [], res.explain()
        assert localnet.present()
        doctor = rig.run("doctor")
        assert any(
            line.startswith("ok") and "localhost guard: in place" in line
            for line in doctor.stdout.splitlines()
        ), doctor.stdout
    finally:
        subprocess.run(["iptables", "-w", "-t", "security", "-D", *probe], capture_output=True)
        server.close()
        waiter.join(timeout=5)
        if not had_guard:
            subprocess.run(["iptables", "-w", "-D", *localnet.RULE], capture_output=True)
    rig.assert_clean()

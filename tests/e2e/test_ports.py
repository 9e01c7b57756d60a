"""`-p` refuses a busy host port as Docker does (exit 125, Docker's words, nothing created): one
a host socket holds, one another sandbox published; the port is free again once that sandbox
is removed. Also Docker's refusals cnirun now shares: `--uts host` with a hostname, and labels
of cnirun's own (a `--label-file` cannot override them). Traffic stays between this host and
the tests' own containers."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest

from tests.e2e.harness import (
    IMAGE,
    Harness,
    docker_inspect,
    free_port,
    http_get,
    wait_for,
)

pytestmark = pytest.mark.e2e

SERVE = "echo {token} > /tmp/index.html; exec httpd -f -p 80 -h /tmp"


def answers(port: int, token: str) -> bool:
    with contextlib.suppress(OSError):
        return http_get("127.0.0.1", port) == f"{token}\n"
    return False


def refused(rig: Harness, *argv: str) -> list[str]:
    """Run cnirun ARGV, which must be refused with 125 before creating anything; its stderr
    lines (the error, then cnirun's advice)."""
    run = rig.run(*argv)
    assert run.returncode == 125, run.explain()
    lines = run.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("cnirun: error: "), run.explain()
    assert rig.records() == [], run.explain()
    rig.assert_nothing_created(run)
    return lines


def test_a_port_a_host_service_listens_on_is_refused(rig: Harness) -> None:
    rig.network(portmap=True)
    with socket.socket() as service:
        service.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = free_port()
        service.bind(("127.0.0.1", port))
        service.listen()
        for spec, shown in ((f"127.0.0.1:{port}:80", "127.0.0.1"), (f"{port}:80", "0.0.0.0")):
            error, hint = refused(rig, "-d", *rig.label, "-p", spec, IMAGE, "httpd", "-f")
            assert error == (
                "cnirun: error: Error starting userland proxy: listen tcp4"
                f" {shown}:{port}: bind: address already in use"
            )
            assert "publish another host port" in hint
        # The service still gets its own traffic (no DNAT was set up in front of it).
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            conn, _ = service.accept()
            conn.sendall(b"mine")
            assert client.recv(4) == b"mine"
            conn.close()


def test_a_udp_port_bound_on_the_host_is_refused(rig: Harness) -> None:
    rig.network(portmap=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as service:
        service.bind(("127.0.0.1", 0))
        port = service.getsockname()[1]
        error, _ = refused(rig, "-d", *rig.label, "-p", f"{port}:53/udp", IMAGE, "true")
        assert error == (
            f"cnirun: error: Error starting userland proxy: listen udp4 0.0.0.0:{port}:"
            " bind: address already in use"
        )


def test_a_port_another_sandbox_published_is_refused_until_it_is_removed(rig: Harness) -> None:
    rig.network(portmap=True)
    port = free_port()
    first = rig.name()
    started = rig.run(
        "-d", "--name", first, *rig.label, "-p", f"{port}:80", IMAGE,
        "sh", "-c", SERVE.format(token="first"),
    )  # fmt: skip
    assert started.returncode == 0, started.explain()
    [sandbox_id] = rig.records()
    wait_for(lambda: answers(port, "first"), 20, "the first sandbox to answer")

    for spec in (f"{port}:80", f"127.0.0.1:{port}:81"):
        run = rig.run("-d", *rig.label, "-p", spec, IMAGE, "httpd", "-f")
        assert run.returncode == 125, run.explain()
        error, hint = run.stderr.splitlines()
        shown = "127.0.0.1" if spec.startswith("127.") else "0.0.0.0"
        assert error == f"cnirun: error: Bind for {shown}:{port} failed: port is already allocated"
        assert f"sandbox {sandbox_id[:12]} publishes 0.0.0.0:{port}/tcp" in hint
        assert "cnirun ps" in hint and f"cnirun rm -f {sandbox_id[:12]}" in hint
        assert run.sandbox_ids == [] and rig.records() == [sandbox_id], run.explain()
    assert answers(port, "first")  # the first sandbox kept its port and its traffic

    removed = rig.run("rm", "-f", first)
    assert removed.returncode == 0, removed.explain()
    again = rig.name()
    started = rig.run(
        "-d", "--name", again, *rig.label, "-p", f"{port}:80", IMAGE,
        "sh", "-c", SERVE.format(token="again"),
    )  # fmt: skip
    assert started.returncode == 0, started.explain()
    wait_for(lambda: answers(port, "again"), 20, "the second sandbox to answer")
    assert rig.run("rm", "-f", again).returncode == 0
    rig.assert_clean()


def test_uts_host_with_a_hostname_is_refused(rig: Harness) -> None:
    rig.network()
    run = rig.run("--rm", "--uts", "host", "-h", "web", IMAGE, "true")
    assert run.returncode == 125, run.explain()
    assert run.stderr.splitlines() == [
        "cnirun: error: conflicting options: hostname and the UTS mode",
        "See 'cnirun run --help'.",
    ]
    rig.assert_nothing_created(run)


def test_a_label_of_cnirun_is_refused(rig: Harness) -> None:
    rig.network()
    run = rig.run("--rm", "-l", "io.cnirun.sandbox=x", IMAGE, "true")
    assert run.returncode == 125, run.explain()
    assert run.stderr.splitlines() == [
        "cnirun: error: -l io.cnirun.sandbox: labels starting with io.cnirun. are reserved for"
        " cnirun (it marks its sandboxes' containers with them)",
        "See 'cnirun run --help'.",
    ]
    rig.assert_nothing_created(run)


def test_a_label_file_cannot_override_cnirun_labels(rig: Harness) -> None:
    rig.network()
    labels = rig.tmp / "labels"
    labels.write_text("io.cnirun.sandbox=x\nio.cnirun.role=infra\nmine=1\n")
    name = rig.name()
    started = rig.run(
        "-d", "--name", name, *rig.label, "--label-file", str(labels), IMAGE, "sleep", "60"
    )
    assert started.returncode == 0, started.explain()
    [sandbox_id] = rig.records()
    found = docker_inspect(name)["Config"]["Labels"]
    assert found["io.cnirun.sandbox"] == sandbox_id, found
    assert found["io.cnirun.role"] == "workload" and found["mine"] == "1", found
    [row] = json.loads(rig.run("ps", "--format", "json").stdout)
    assert row["name"] == name, row
    removed = rig.run("rm", "-f", name)
    assert removed.returncode == 0, removed.explain()
    assert rig.run("ps", "-aq").stdout == ""
    rig.assert_clean([sandbox_id])

"""Listings as Docker's (issue 14, item 5): `ps` columns with PORTS, -q, --no-trunc,
--filter, --format templates, RFC 3339 times in JSON; `inspect -f`; `network ls -q/--format`.
Real Docker and plugins; nothing of the test's is left."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.harness import Harness, free_port

pytestmark = pytest.mark.e2e

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_ps_and_inspect_like_docker(rig: Harness) -> None:
    net = rig.network(portmap=True)
    name = rig.name()
    port = free_port()
    started = rig.run(
        "-d", "--rm", "--name", name, "-p", f"{port}:80", *rig.label, "busybox", "sleep", "60"
    )
    assert started.returncode == 0, started.explain()
    workload_id = started.stdout.strip()
    [sandbox_id] = rig.records()

    table = rig.run("ps").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0]) == [
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES", "NETWORKS",
        "ADDRESSES",
    ]  # fmt: skip
    [line] = table[1:]
    assert line.startswith(workload_id[:12] + " ")
    assert '"sleep 60"' in line and "Up " in line and name in line and net.name in line
    assert f"0.0.0.0:{port}->80/tcp" in line

    assert rig.run("ps", "-q").stdout == workload_id[:12] + "\n"
    assert rig.run("ps", "-q", "--no-trunc").stdout == workload_id + "\n"
    assert rig.run("ps", "-q", "--filter", f"name={name}").stdout == workload_id[:12] + "\n"
    assert rig.run("ps", "-q", "--filter", f"network={net.name}", "-f", "status=running").stdout
    assert rig.run("ps", "-q", "--filter", "network=elsewhere").stdout == ""
    assert rig.run("ps", "-aq", "--filter", "status=exited").stdout == ""
    assert rig.run("ps", "-q", "--filter", f"label=test.cnirun.tag={rig.tag}").stdout
    bad = rig.run("ps", "--filter", "colour=red")
    assert bad.returncode == 125 and "use KEY=VALUE" in bad.stderr

    templated = rig.run("ps", "--format", "{{.Names}} {{.Ports}} {{.State}}")
    assert templated.stdout == f"{name} 0.0.0.0:{port}->80/tcp running\n", templated.explain()
    aligned = rig.run("ps", "--format", "table {{.Names}}\\t{{.Networks}}").stdout.splitlines()
    assert re.split(r"\s{2,}", aligned[0]) == ["NAMES", "NETWORKS"]
    assert aligned[1].split() == [name, net.name]

    [row] = json.loads(rig.run("ps", "--format", "json").stdout)
    assert RFC3339.fullmatch(row["created"]), row
    assert row["name"] == name and row["ports"][0]["hostPort"] == port
    [details] = json.loads(rig.run("inspect", name).stdout)
    assert details["created"] == row["created"]  # one time format in all JSON

    netns = rig.run("inspect", "-f", "{{.netns}}", name)
    assert netns.stdout == f"/run/netns/cnirun-{sandbox_id}\n", netns.explain()
    ids = rig.run("inspect", "--format", "{{.workloadId}} {{json .networks}}", name)
    assert ids.stdout == f'{workload_id} ["{net.name}"]\n'

    assert rig.run("rm", "-f", name).returncode == 0
    rig.assert_clean([sandbox_id])


def test_network_ls_quiet_and_templates(rig: Harness) -> None:
    first, second = rig.network(), rig.network()
    listed = rig.run("network", "ls", "-q")
    assert sorted(listed.stdout.split()) == sorted([first.name, second.name]), listed.explain()
    templated = rig.run("network", "ls", "--format", "{{.Name}}={{join .subnets \" \"}}")
    assert f"{first.name}={first.subnet}" in templated.stdout.splitlines(), templated.explain()
    header = rig.run("network", "ls", "--format", "table {{.name}}\\t{{.driver}}").stdout
    assert header.splitlines()[0].split() == ["NAME", "DRIVER"]
    [row] = [r for r in json.loads(rig.run("network", "ls", "--format", "json").stdout)
             if r["name"] == first.name]  # fmt: skip
    assert row["driver"] == "bridge"
    rig.assert_clean()

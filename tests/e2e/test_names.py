"""Sandboxes on one CNI network reach each other by name, alias and short ID, as on a Docker
user-defined network; stopped ones drop out and come back (cnirun.sandbox.names).

Real Docker and real plugins; every name is checked with a real connection (busybox `nc`
to a busybox `httpd`), from a fresh client and from a long-lived one whose /etc/hosts cnirun
rewrites in place.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.harness import IMAGE, Harness, Net, sh, wait_for

pytestmark = pytest.mark.e2e

GET = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 {} 80'


def answers(container: str, target: str) -> bool:
    """Whether `target`, as `container` resolves it, serves HTTP on port 80."""
    done = subprocess.run(
        ["docker", "exec", container, "sh", "-c", GET.format(target)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout.startswith("HTTP/1.")


def peers_in(container: str) -> set[str]:
    """The names in the peers part of `container`'s /etc/hosts."""
    hosts = sh("docker", "exec", container, "cat", "/etc/hosts").stdout
    _, _, peers = hosts.partition("# cnirun:")
    return {name for line in peers.splitlines()[1:] for name in line.split()[1:]}


def short_id(name: str) -> str:
    return sh("docker", "inspect", "-f", "{{.Id}}", name).stdout.strip()[:12]


def detached(rig: Harness, *args: str) -> str:
    name = rig.name()
    started = rig.run("-d", "--name", name, *rig.label, *args)
    assert started.returncode == 0, started.explain()
    return name


def server(rig: Harness, *flags: str) -> str:
    return detached(rig, *flags, IMAGE, "httpd", "-f", "-p", "80")


def test_peers_reach_each_other_by_name_alias_and_short_id(rig: Harness) -> None:
    rig.network()
    alias = f"db{rig.tag}"
    srv = server(rig, "--network-alias", alias)
    # A fresh client knows it from the start.
    script = f"{GET.format(srv)} | head -1; {GET.format(alias)} | head -1"
    fresh = rig.run("--rm", *rig.label, IMAGE, "sh", "-c", script)
    assert fresh.returncode == 0 and fresh.stdout.count("HTTP/1.") == 2, fresh.explain()

    client = detached(rig, IMAGE, "sleep", "600")
    for target in (srv, alias, short_id(srv)):
        assert answers(client, target), target
    assert answers(srv, srv) and answers(srv, alias)  # its own names are its own address
    address = json.loads(rig.run("inspect", srv).stdout)[0]["addresses"][0].split("/")[0]
    shown = rig.run("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    srv)  # fmt: skip
    assert shown.stdout.strip() == address, shown.explain()

    assert rig.run("stop", "-t", "0", srv).returncode == 0
    assert srv not in peers_in(client) and not answers(client, srv)
    assert rig.run("start", srv).returncode == 0
    wait_for(lambda: answers(client, srv), 30, "the restarted server to answer by name")
    for name in (srv, client):
        assert rig.run("rm", "-f", name).returncode == 0
    rig.assert_clean()


def test_a_sandbox_on_two_networks_sees_the_peers_of_each(rig: Harness) -> None:
    first, second = rig.network(), rig.network()
    on_first = server(rig, "--network", first.name)
    on_second = server(rig, "--network", second.name)
    both = detached(rig, "--network", first.name, "--network", second.name, IMAGE, "sleep", "600")
    assert answers(both, on_first) and answers(both, on_second)
    assert both in peers_in(on_first) and on_second not in peers_in(on_first)
    assert both in peers_in(on_second) and on_first not in peers_in(on_second)
    for name in (on_first, on_second, both):
        assert rig.run("rm", "-f", name).returncode == 0
    rig.assert_clean()


def test_a_name_taken_on_the_network_is_refused(rig: Harness, ) -> None:
    net: Net = rig.network()
    alias = f"db{rig.tag}"
    srv = server(rig, "--network-alias", alias)
    [sandbox] = rig.records()
    refused = rig.run("-d", *rig.label, "--network-alias", alias, IMAGE, "true")
    assert refused.returncode == 125, refused.explain()
    assert refused.stderr == (
        f"cnirun: error: the name '{alias}' is taken on network {net.name} by sandbox"
        f" {sandbox[:12]}: choose another --name or --network-alias\n"
    )
    assert rig.records() == [sandbox]
    assert rig.run("rm", "-f", srv).returncode == 0
    rig.assert_clean()


def test_concurrent_joins_and_leaves_leave_every_hosts_file_consistent(rig: Harness) -> None:
    rig.network()
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda _: detached(rig, IMAGE, "sleep", "600"), range(8)))
        leaving, staying = first[:4], first[4:]
        removed = pool.map(lambda name: rig.run("rm", "-f", name).returncode, leaving)
        joined = list(pool.map(lambda _: detached(rig, IMAGE, "sleep", "600"), range(4)))
        assert list(removed) == [0] * 4
    live = staying + joined
    for name in live:
        assert peers_in(name) >= set(live) - {name}, name
        assert not peers_in(name) & set(leaving), name
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda name: rig.run("rm", "-f", name).returncode, live)) == [0] * 8
    rig.assert_clean()

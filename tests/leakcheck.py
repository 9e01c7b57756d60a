"""Leak checks for e2e tests: prove that a test left none of its own resources behind.

Looks for Docker containers, CNI result-cache files, host-local IP reservations, iptables
rules, /run/netns entries and bridge ports that still name a test's container IDs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_IPAM_DIR = "/var/lib/cni/networks"
NETNS_DIR = "/run/netns"
IPTABLES_TABLES = ("nat", "filter")


class LeakCheckError(RuntimeError):
    """Raised when a leak check itself cannot run (a tool is missing or fails)."""


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except OSError as e:
        raise LeakCheckError(f"cannot run {args[0]}: {e}") from e


def _as_list(values: Iterable[str]) -> list[str]:
    # A bare string would otherwise be iterated as single characters that match everything.
    return [values] if isinstance(values, str) else list(values)


def _mentions(text: str, ids: list[str]) -> str | None:
    return next((i for i in ids if i in text), None)


def docker_leaks(ids: list[str]) -> list[str]:
    """Containers in any state whose ID, name or labels contain one of `ids`."""
    fmt = "{{.ID}}\t{{.Names}}\t{{.Status}}\t{{.Labels}}"
    res = _run(["docker", "ps", "-a", "--no-trunc", "--format", fmt])
    if res.returncode != 0:
        raise LeakCheckError(f"docker ps failed: {res.stderr.strip()}")
    leaks = []
    for line in res.stdout.splitlines():
        hit = _mentions(line, ids)
        if hit is not None:
            cid, name, status = (line.split("\t") + ["", ""])[:3]
            leaks.append(f"docker container {name} ({cid[:12]}, {status}) matches {hit!r}")
    return leaks


def cache_leaks(ids: list[str], cache_dirs: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Result-cache files `<cache_dir>/results/<net>-<id>-<ifname>`."""
    leaks = []
    for cache_dir in cache_dirs:
        results = Path(cache_dir) / "results"
        if not results.is_dir():
            continue
        for entry in sorted(results.iterdir()):
            hit = next((i for i in ids if f"-{i}-" in entry.name), None)
            if hit is not None:
                leaks.append(f"CNI cache file {entry} names {hit!r}")
    return leaks


def reservation_leaks(ids: list[str], ipam_dirs: Iterable[str | os.PathLike[str]]) -> list[str]:
    """host-local reservations (`<ipam_dir>/<net>/<ip>`, first line the container ID)."""
    leaks = []
    for ipam_dir in ipam_dirs:
        base = Path(ipam_dir)
        if not base.is_dir():
            continue
        for net in sorted(base.iterdir()):
            if not net.is_dir():
                continue
            for entry in sorted(net.iterdir()):
                try:
                    text = entry.read_text(errors="replace") if entry.is_file() else ""
                except OSError:  # released by a concurrent DEL between listing and reading
                    continue
                hit = _mentions(text, ids)
                if hit is not None:
                    leaks.append(f"host-local reservation {entry} held by {hit!r}")
    return leaks


def iptables_leaks(ids: list[str], tables: Iterable[str] = IPTABLES_TABLES) -> list[str]:
    """iptables (and ip6tables, when present) rules in `tables` (default nat and filter)
    naming an ID."""
    leaks = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool) is None:
            if tool == "iptables-save":
                raise LeakCheckError("iptables-save not found on PATH")
            continue
        for table in tables:
            res = _run([tool, "-t", table])
            if res.returncode != 0:
                if tool == "iptables-save":
                    raise LeakCheckError(f"{tool} -t {table} failed: {res.stderr.strip()}")
                continue  # IPv6 tables may be unavailable on this kernel
            for line in res.stdout.splitlines():
                hit = _mentions(line, ids)
                if hit is not None:
                    leaks.append(f"{tool} -t {table}: {line.strip()}")
    return leaks


def netns_leaks(ids: list[str], names: Iterable[str]) -> list[str]:
    """Entries of /run/netns that contain an ID or are one of `names`."""
    try:
        entries = sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []
    wanted = set(names)
    return [
        f"network namespace {NETNS_DIR}/{e} is still there"
        for e in entries
        if e in wanted or _mentions(e, ids) is not None
    ]


def bridge_port_leaks(bridges: Iterable[str]) -> list[str]:
    """Ports (veths, in practice) still enslaved to one of `bridges`; missing bridges are fine."""
    leaks = []
    for bridge in bridges:
        if not os.path.exists(f"/sys/class/net/{bridge}"):
            continue
        res = _run(["ip", "-o", "link", "show", "master", bridge])
        if res.returncode != 0:
            if not os.path.exists(f"/sys/class/net/{bridge}"):
                continue  # deleted meanwhile
            raise LeakCheckError(f"ip link show master {bridge} failed: {res.stderr.strip()}")
        for line in res.stdout.splitlines():
            # "7: veth1234@if2: <BROADCAST,...> ... master cni0 ..."
            fields = line.split(":", 2)
            if len(fields) == 3:
                port = fields[1].strip().split("@")[0]
                leaks.append(f"interface {port} is still a port of bridge {bridge}")
    return leaks


def link_leaks(links: Iterable[str]) -> list[str]:
    """Host interfaces that should be gone (e.g. a bridge the test created and removed)."""
    return [f"interface {n} still exists" for n in links if os.path.exists(f"/sys/class/net/{n}")]


DNSNAME_DIR = "/run/containers/cni/dnsname"


def dnsmasq_processes() -> list[tuple[int, str]]:
    """(pid, command line) of every live dnsmasq (zombies have no command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"dnsmasq":
            found.append((int(entry), b" ".join(argv).decode(errors="replace").strip()))
    return found


def dnsname_leaks(networks: Iterable[str], bridges: Iterable[str]) -> list[str]:
    """What the dnsname plugin keeps per network: its dnsmasq, its state dir (config, hosts
    file, pid file), and the INPUT rule it inserts for port 53 on the bridge."""
    networks, bridges = _as_list(networks), _as_list(bridges)
    leaks = [
        f"dnsname state dir {DNSNAME_DIR}/{n} is still there"
        for n in networks
        if os.path.lexists(f"{DNSNAME_DIR}/{n}")
    ]
    for pid, cmdline in dnsmasq_processes():
        hit = next((n for n in networks if f"{DNSNAME_DIR}/{n}/" in cmdline), None)
        if hit is not None:
            leaks.append(f"dnsmasq {pid} of network {hit} still runs: {cmdline}")
    if bridges:
        res = _run(["iptables-save", "-t", "filter"])
        for line in res.stdout.splitlines():
            if "--dport 53" in line and any(f"-i {b} " in line for b in bridges):
                leaks.append(f"iptables -t filter: {line.strip()}")
    return leaks


def find_leaks(
    container_ids: Iterable[str],
    bridges: Iterable[str] = (),
    netns_names: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    *,
    ipam_dirs: Iterable[str | os.PathLike[str]] = (DEFAULT_IPAM_DIR,),
    links: Iterable[str] = (),
) -> list[str]:
    """Describe, one line each, every resource still naming one of `container_ids`.

    `container_ids` may be full IDs, names or unique random suffixes: any substring match
    counts. The default cache dir is always searched as well as `cache_dir`.
    """
    ids = sorted({i for i in _as_list(container_ids) if i})
    cache_dirs = list(dict.fromkeys([os.fspath(cache_dir), DEFAULT_CACHE_DIR]))
    if isinstance(ipam_dirs, str | os.PathLike):
        ipam_dirs = [ipam_dirs]
    leaks: list[str] = []
    if ids:
        leaks += docker_leaks(ids)
        leaks += cache_leaks(ids, cache_dirs)
        leaks += reservation_leaks(ids, ipam_dirs)
        leaks += iptables_leaks(ids)
    leaks += netns_leaks(ids, _as_list(netns_names))
    leaks += bridge_port_leaks(_as_list(bridges))
    leaks += link_leaks(_as_list(links))
    return leaks


def assert_no_leaks(
    container_ids: Iterable[str],
    bridges: Iterable[str] = (),
    netns_names: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    *,
    ipam_dirs: Iterable[str | os.PathLike[str]] = (DEFAULT_IPAM_DIR,),
    links: Iterable[str] = (),
) -> None:
    """Fail the test with the list of leaks when `find_leaks` finds any."""
    leaks = find_leaks(
        container_ids, bridges, netns_names, cache_dir, ipam_dirs=ipam_dirs, links=links
    )
    assert not leaks, "resources left behind:\n  " + "\n  ".join(leaks)

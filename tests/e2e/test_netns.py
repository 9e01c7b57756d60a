"""End-to-end tests of cnirun.netns against the real kernel (root): hold, create, enter, release.

Every name is the harness's (unique to the test); the `names` fixture proves that nothing of a
test's own is left in /run/netns or in the mount table afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from cnirun.errors import NetnsError
from cnirun.host.netns import (
    NETNS_DIR,
    create_netns,
    hold_netns,
    list_held,
    netns_exists,
    netns_path,
    release_netns,
    run_in_netns,
)
from tests.e2e.harness import Harness
from tests.netinfo import interface_addresses

pytestmark = pytest.mark.e2e


def _mounts(pid: int | str = "self") -> dict[str, list[str]]:
    """Mount point -> optional fields (e.g. ["shared:7"]) from /proc/<pid>/mountinfo."""
    mounts: dict[str, list[str]] = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            mounts[fields[4]] = fields[6 : fields.index("-")]
    return mounts


def _wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _host_link_exists(ifname: str) -> bool:
    return os.path.exists(f"/sys/class/net/{ifname}")


@pytest.fixture
def names(rig: Harness) -> Iterator[Callable[[], str]]:
    """Hand out unique netns names; afterwards release them and assert nothing is left."""
    made = rig.held_names
    yield rig.netns_name
    for name in made:
        release_netns(name)
    mounts = _mounts()
    for name in made:
        assert list_held(name) == []
        assert netns_path(name) not in mounts


@pytest.fixture
def netns_proc() -> Iterator[subprocess.Popen[bytes]]:
    """A process alone in a new netns (unshare execs sleep, so the pid is the sleeper's)."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    own = os.stat("/proc/self/ns/net").st_ino
    try:
        _wait_until(
            lambda: os.stat(f"/proc/{proc.pid}/ns/net").st_ino != own, "unshare to enter its netns"
        )
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_held_netns_outlives_its_process(
    names: Callable[[], str], netns_proc: subprocess.Popen[bytes]
) -> None:
    name = names()
    source = f"/proc/{netns_proc.pid}/ns/net"
    path = hold_netns(source, name)

    assert path == netns_path(name) == f"{NETNS_DIR}/{name}"
    assert list_held(name) == [name]
    assert os.stat(path).st_ino == os.stat(source).st_ino
    # A /proc path works for listing as well as the held one.
    assert interface_addresses(source) == interface_addresses(path) == {"lo": []}

    netns_proc.kill()
    netns_proc.wait()
    assert not os.path.exists(source)
    assert netns_exists(path)
    assert interface_addresses(path) == {"lo": []}

    release_netns(name)
    assert not netns_exists(path)
    assert list_held(name) == []


def test_hold_is_idempotent_but_refuses_another_namespace(
    names: Callable[[], str], netns_proc: subprocess.Popen[bytes]
) -> None:
    name = names()
    source = f"/proc/{netns_proc.pid}/ns/net"
    path = hold_netns(source, name)

    assert hold_netns(source, name) == path
    assert hold_netns(path, name) == path  # the held file is the same namespace
    with pytest.raises(NetnsError, match="already holds a different network namespace"):
        hold_netns("/proc/self/ns/net", name)
    assert os.stat(path).st_ino == os.stat(source).st_ino
    # Held once, so one mount, however often hold was called.
    with open("/proc/self/mountinfo") as f:
        assert sum(line.split()[4] == path for line in f) == 1


def test_release_is_idempotent(names: Callable[[], str]) -> None:
    never_held = names()
    release_netns(never_held)

    name = names()
    path = create_netns(name)
    release_netns(name)
    release_netns(name)
    assert not os.path.exists(path)


def test_hold_of_a_bad_source_fails_and_creates_nothing(names: Callable[[], str]) -> None:
    with open("/proc/sys/kernel/pid_max") as f:
        dead_pid = int(f.read())  # pids are always below pid_max
    missing = netns_path(names())
    sources = {
        f"/proc/{dead_pid}/ns/net": "No such file or directory",
        missing: "No such file or directory",
        "/etc/hostname": "is not a network namespace",
        "/proc/self/ns/mnt": "is not a network namespace",
    }
    for source, message in sources.items():
        name = names()
        with pytest.raises(NetnsError, match=message):
            hold_netns(source, name)
        assert not os.path.lexists(netns_path(name))
    assert not os.path.lexists(missing)


def test_create_netns_has_only_lo_up(
    names: Callable[[], str], capfd: pytest.CaptureFixture[str]
) -> None:
    name = names()
    path = create_netns(name)
    assert netns_exists(path)
    with pytest.raises(NetnsError, match="already exists"):
        create_netns(name)

    proc = run_in_netns(path, ["ip", "-o", "addr"])
    assert proc.wait(timeout=10) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines
    assert all(line.split()[1] == "lo" for line in lines), lines
    assert any(" inet 127.0.0.1/8 " in line for line in lines), lines

    addresses = interface_addresses(path)
    assert list(addresses) == ["lo"]
    assert "127.0.0.1/8" in addresses["lo"]


def test_run_in_netns_runs_in_the_netns_not_ours(names: Callable[[], str]) -> None:
    path = create_netns(names())
    proc = run_in_netns(path, ["sleep", "5"])
    try:
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat(path).st_ino
        assert os.stat("/proc/self/ns/net").st_ino != os.stat(path).st_ino
    finally:
        proc.kill()
        proc.wait()


def test_run_in_netns_of_a_missing_path_creates_nothing(names: Callable[[], str]) -> None:
    path = netns_path(names())
    with pytest.raises(NetnsError, match="No such file or directory"):
        run_in_netns(path, ["true"])
    assert not os.path.lexists(path)
    with pytest.raises(NetnsError, match="is not a network namespace"):
        run_in_netns("/etc/hostname", ["true"])


def test_veth_moved_into_netns_shows_in_interface_addresses(
    names: Callable[[], str], rig: Harness
) -> None:
    name = names()
    path = create_netns(name)
    host_end, ns_end = f"e2h{rig.tag}", f"e2n{rig.tag}"
    rig.links.append(host_end)
    # A test address on a link that exists only inside the test netns; no traffic is sent.
    address = f"{rig.subnet().network_address + 2}/24"
    try:
        subprocess.run(
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", name],
            check=True,
        )
        subprocess.run(["ip", "-n", name, "addr", "add", address, "dev", ns_end], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", ns_end, "up"], check=True)

        addresses = interface_addresses(path)
        assert set(addresses) == {"lo", ns_end}
        assert address in addresses[ns_end]
        assert host_end not in addresses

        release_netns(name)
        # The namespace dies with its last reference and takes the veth pair with it.
        _wait_until(lambda: not _host_link_exists(host_end), f"{host_end} to disappear")
    finally:
        if _host_link_exists(host_end):
            subprocess.run(["ip", "link", "del", host_end], check=False)
    assert not _host_link_exists(host_end)


def test_release_unmounts_in_other_mount_namespaces_too(
    names: Callable[[], str], netns_proc: subprocess.Popen[bytes]
) -> None:
    name = names()
    path = hold_netns(f"/proc/{netns_proc.pid}/ns/net", name)
    # A mount namespace made while the netns is held gets its own copy of the mount.
    other = subprocess.Popen(["unshare", "--mount", "--propagation", "unchanged", "sleep", "30"])
    try:
        own_mnt = os.stat("/proc/self/ns/mnt").st_ino
        _wait_until(
            lambda: os.stat(f"/proc/{other.pid}/ns/mnt").st_ino != own_mnt,
            "unshare to enter its mount namespace",
        )
        ours, theirs = _mounts()[path], _mounts(other.pid).get(path)
        shared = [tag for tag in ours if tag.startswith("shared:")]
        assert shared, ours  # the held mount is in a peer group ...
        assert theirs is not None and set(shared) <= set(theirs)  # ... and the copy is a peer

        release_netns(name)
        assert path not in _mounts()
        assert path not in _mounts(other.pid)
    finally:
        other.kill()
        other.wait()


def test_hold_and_release_do_not_import_pyroute2(
    names: Callable[[], str], netns_proc: subprocess.Popen[bytes]
) -> None:
    code = (
        "import sys\n"
        "from cnirun.host.netns import hold_netns, release_netns\n"
        "hold_netns(sys.argv[1], sys.argv[2])\n"
        "release_netns(sys.argv[2])\n"
        "assert 'pyroute2' not in sys.modules\n"
    )
    name = names()
    source = f"/proc/{netns_proc.pid}/ns/net"
    proc = subprocess.run(
        [sys.executable, "-c", code, source, name], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert list_held(name) == []

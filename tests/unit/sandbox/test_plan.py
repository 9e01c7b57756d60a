"""cnirun.sandbox.plan.check_workload: what Docker would refuse the workload for is found
before anything exists (issue 14, item 4)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cnirun.dockerargs import parse_run_args
from cnirun.errors import UsageError
from cnirun.sandbox import plan


class FakeDocker:
    def __init__(self, containers: dict[str, str], images: set[str]) -> None:
        self.containers = containers
        self.images = images
        self.asked: list[str] = []

    def container_id(self, name: str) -> str | None:
        self.asked.append(f"container {name}")
        return self.containers.get(name)

    def image_exists(self, ref: str) -> bool:
        self.asked.append(f"image {ref}")
        return ref in self.images


def check(argv: list[str], docker: FakeDocker) -> None:
    plan.check_workload(parse_run_args(argv), docker, {})  # type: ignore[arg-type]


def test_a_name_in_use_is_dockers_conflict() -> None:
    docker = FakeDocker({"web": "c0ffee"}, {"busybox"})
    with pytest.raises(UsageError) as info:
        check(["--name", "web", "busybox"], docker)
    assert str(info.value).startswith(
        'Conflict. The container name "/web" is already in use by container "c0ffee".'
    )
    check(["--name", "db", "busybox"], docker)


@pytest.mark.parametrize("pull", ["--pull=never", "--pull=missing", "--pull=always", None])
def test_a_missing_image_is_refused_only_when_it_may_not_be_pulled(pull: Any) -> None:
    docker = FakeDocker({}, {"busybox"})
    argv = [pull] if pull else []
    if pull == "--pull=never":
        with pytest.raises(UsageError, match=r"^No such image: nope:1 \(and --pull=never"):
            check([*argv, "nope:1"], docker)
    else:
        check([*argv, "nope:1"], docker)  # docker run pulls it, with its own display
    check([*argv, "busybox"], docker)


def test_nothing_is_asked_without_a_name_or_pull_never() -> None:
    docker = FakeDocker({}, set())
    check(["--rm", "busybox", "true"], docker)
    assert docker.asked == []


def network(ipam: dict[str, Any]) -> Any:
    import json

    from cnirun.cni.config import list_from_bytes

    conf = {"cniVersion": "1.0.0", "name": "n1", "plugins": [
        {"type": "bridge", "ipam": ipam, "capabilities": {"ips": True}}]}  # fmt: skip
    return list_from_bytes(json.dumps(conf).encode())


@pytest.mark.parametrize(
    ("ipam", "ip", "fits"),
    [
        ({"type": "host-local", "subnet": "10.9.0.0/24"}, "10.9.0.7", True),
        ({"type": "host-local", "subnet": "10.9.0.0/24"}, "10.9.1.7", False),
        ({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.100",
                                             "rangeEnd": "10.9.0.150"}]]}, "10.9.0.7", False),
        ({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00::/64"}]]},
         "fd00::5", True),
        ({"type": "host-local", "ranges": [[{"subnet": "fd00::/64"}]]}, "10.1.1.1", True),  # no v4
        ({"type": "dhcp"}, "10.1.1.1", True),  # ranges unknown: the plugin decides
    ],
)  # fmt: skip
def test_ip_must_fit_the_host_local_ranges(ipam: dict[str, Any], ip: str, fits: bool) -> None:
    net = network(ipam)
    if fits:
        plan.check_ips(net, [ip])
    else:
        with pytest.raises(UsageError, match=rf"^--ip {ip} is outside the address range of"):
            plan.check_ips(net, [ip])


@pytest.mark.parametrize(
    ("argv", "client", "api", "message"),
    [
        (["-q", "busybox"], "20.10.24", "1.41",
         "unknown flag: --quiet: the installed docker client (20.10.24)"),
        (["--annotation", "a=b", "busybox"], "28.2.2", "1.41",
         "--annotation needs Docker engine API 1.43; the engine speaks 1.41"),
        (["--health-start-interval", "1s", "busybox"], "24.0.7", "1.43", "docker 25.0 added it"),
        (["--use-api-socket", "busybox"], "28.0.4", "1.48", "docker 28.1 added it"),
        (["-q", "--annotation", "a=b", "busybox"], "28.2.2", "1.50", None),
        (["-dq", "busybox"], "23.0.0", "1.42", None),
    ],
)  # fmt: skip
def test_flags_newer_than_the_client_or_engine(
    argv: list[str], client: str, api: str, message: str | None
) -> None:
    from cnirun.docker import workload
    from cnirun.errors import CnirunError

    flags = parse_run_args(argv).docker_flags
    if message is None:
        workload.check_flags(flags, lambda: client, lambda: api)
    else:
        with pytest.raises(CnirunError, match=re.escape(message)):
            workload.check_flags(flags, lambda: client, lambda: api)


def test_the_client_is_asked_only_for_newer_flags() -> None:
    from cnirun.docker import workload

    def never() -> str:
        raise AssertionError("asked")

    workload.check_flags(parse_run_args(["--rm", "-it", "busybox"]).docker_flags, never, never)


# --- --bandwidth: the first network whose chain takes the capability gets it (issue 16) ---

NOOP_VERSION = '{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}'


def bandwidth_plan(tmp_path: Any, argv: list[str]) -> plan.Plan:
    import json

    from cnirun.settings import Settings

    netconf, plugins = tmp_path / "net.d", tmp_path / "bin"
    netconf.mkdir(parents=True)
    plugins.mkdir()
    noop = plugins / "noop"
    noop.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{NOOP_VERSION}'\n")
    noop.chmod(0o755)
    shaped = [{"type": "noop"}, {"type": "noop", "capabilities": {"bandwidth": True}}]
    for name, chain in (("plain", [{"type": "noop"}]), ("shaped", shaped)):
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": chain}
        (netconf / f"10-{name}.conflist").write_text(json.dumps(conf))
    settings = Settings.load({}, netconf_dir=str(netconf), cni_path=str(plugins))
    return plan.make_plan(parse_run_args(argv), settings, FakeDocker({}, set()))  # type: ignore[arg-type]


def test_bandwidth_goes_to_the_first_network_that_takes_it(tmp_path: Any) -> None:
    argv = ["--network", "plain", "--network", "shaped", "--bandwidth", "egress=4mbit", "busybox"]
    made = bandwidth_plan(tmp_path, argv)
    assert [n.capability_args for n in made.networks] == [
        {},
        {"bandwidth": {"egressRate": 4_000_000, "egressBurst": 64 * 1024 * 8}},
    ]
    unlimited = bandwidth_plan(tmp_path / "again", ["--network", "shaped", "busybox"])
    assert unlimited.networks[0].capability_args == {}


def test_bandwidth_without_the_capability_is_refused_with_the_way_to_add_it(
    tmp_path: Any,
) -> None:
    with pytest.raises(UsageError) as info:
        bandwidth_plan(tmp_path, ["--network", "plain", "--bandwidth", "ingress=1mbit", "busybox"])
    assert str(info.value) == (
        "--bandwidth needs a network whose plugins accept the 'bandwidth' capability, and plain"
        ' has none: add "capabilities": {"bandwidth": true} to a {"type": "bandwidth"} plugin'
        " at the end of the chain in its config, or choose another --network;"
        " `cnirun network create --bandwidth NAME` makes a network with it"
    )

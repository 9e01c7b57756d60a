"""A lab for the network-config tests: the `cni_env` sandbox with the reference plugins' names.

Each plugin (bridge, host-local, portmap, ...) is the fake plugin under that name, answering
VERSION with chosen versions (its sidecar); it runs in-process (tests.unit.fakes), so
generating a network costs no process. Host routes and Docker's subnets are fixed lists, and
cnirun's log is shown on stderr as the CLI shows it, so nothing depends on this host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cnirun.cli.output import setup_logging
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import ResultCache
from cnirun.cni.types import Result, RuntimeConf
from cnirun.netconf import builtin, select, subnets
from cnirun.netconf.select import Configs
from cnirun.netconf.subnets import IPNetwork
from cnirun.testhooks import ENV_DEFAULT_BRIDGE, ENV_DEFAULT_NAME, ENV_DEFAULT_SUBNET
from tests.unit.conftest import CniEnv

ALL = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
STANDARD = {
    "bridge": ALL,
    "host-local": ALL,
    "portmap": ALL,
    "firewall": ["0.4.0", "1.0.0"],
    "tuning": ALL,
    "bandwidth": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
    "ptp": ALL,
    "macvlan": ALL,
    "ipvlan": ALL,
}

Routes = list[tuple[str, IPNetwork]]


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def user_net(name: str, subnet: str = "10.5.0.0/24") -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local", "subnet": subnet}}],
    }


class Lab:
    """The config dir, plugin dir and cache dir of `cni_env`, and the plugin call log."""

    def __init__(self, env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        self.env = env
        self.netconf = env.netconf
        self.bin = env.bin_a
        self.cache = env.cache
        self._monkeypatch = monkeypatch

    def install(self, versions: dict[str, list[str]]) -> None:
        """Plugins that answer VERSION with `versions[name]` (replacing earlier answers)."""
        for name, supported in versions.items():
            if not (self.bin / name).exists():
                self.env.plugin(name)
            answer = {"cniVersion": "1.0.0", "supportedVersions": supported}
            self.env.sidecar(name, {"VERSION": {"result": answer}})

    def uninstall(self, name: str) -> None:
        (self.bin / name).unlink()
        (self.bin / f"{name}.fake.json").unlink()

    def cni(self) -> CNIConfig:
        """A CNIConfig on the plugin dir alone, running the plugins in-process."""
        return self.env.cni(timeout=10, plugin_dirs=[str(self.bin)])

    def configs(self, docker_subnets: Sequence[str] = (), directory: Path | None = None) -> Configs:
        return Configs(str(directory or self.netconf), self.cni(), lambda: list(docker_subnets))

    def routes(self, routes: Routes) -> None:
        """What the host's routing table holds, for every subnet choice."""
        self._monkeypatch.setattr(builtin, "host_routes", lambda: list(routes))
        self._monkeypatch.setattr(subnets, "host_routes", lambda: list(routes))

    def calls(self) -> list[str]:
        """`COMMAND plugin` of every plugin call so far."""
        return [f"{command} {argv0}" for argv0, command in self.env.trace()]

    def clear(self) -> None:
        self.env.clear()

    def write(self, name: str, content: Any) -> Path:
        """A config file: dicts as JSON, text verbatim."""
        return self.env.write(name, content)


@contextlib.contextmanager
def cnirun_log_on_stderr() -> Iterator[None]:
    """cnirun's notices and warnings on stderr, as the CLI shows them; the `cnirun` logger is
    put back as it was afterwards (setup_logging stops its propagation for good)."""
    logger = logging.getLogger("cnirun")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    setup_logging(False)
    try:
        yield
    finally:
        logger.handlers[:] = saved[0]
        logger.propagate = saved[1]
        logger.setLevel(saved[2])


@contextlib.contextmanager
def lab_on(
    env: CniEnv, monkeypatch: pytest.MonkeyPatch, routes: Routes | None = None
) -> Iterator[Lab]:
    """The lab with the STANDARD plugins, `routes` as the host's routes (none by default),
    no notice or warning given yet in this process, and no override in the environment."""
    lab = Lab(env, monkeypatch)
    lab.install(STANDARD)
    lab.routes(routes or [])
    monkeypatch.setattr(builtin, "_noticed", set())
    monkeypatch.setattr(select, "_warned", set())
    for var in (ENV_DEFAULT_NAME, ENV_DEFAULT_BRIDGE, ENV_DEFAULT_SUBNET):
        monkeypatch.delenv(var, raising=False)
    for var in ("NETCONFPATH", "CNI_PATH", "CNIRUN_CACHE_DIR", "CNIRUN_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    with cnirun_log_on_stderr():
        yield lab


def in_process(cni: Callable[..., CNIConfig]) -> Callable[..., CNIConfig]:
    """A CNIConfig factory like `cni` whose plugins run in-process (for code that builds its
    own CNIConfig: the CLI, priv-net-run's plan)."""
    from tests.unit.fakes import FakePluginExec

    def build(*args: object, **kwargs: object) -> CNIConfig:
        kwargs.setdefault("exec", FakePluginExec())
        return cni(*args, **kwargs)

    return build


def conflist(lab: Lab, name: str) -> dict[str, Any]:
    """The parsed `<name>.conflist` of the lab's config dir."""
    data: dict[str, Any] = json.loads((lab.netconf / f"{name}.conflist").read_text())
    return data


def attach(lab: Lab, network: str, cid: str, address: str, netns: str = "") -> None:
    """A cached attachment of `network` (as a successful ADD leaves one), without plugins."""
    raw = (lab.netconf / f"{network}.conflist").read_bytes()
    result = Result.decode({"ips": [{"address": address}]}, "1.0.0")
    ResultCache(str(lab.cache)).write(network, raw, RuntimeConf(cid, netns, "eth0"), result)


def assert_internal(raw: dict[str, Any]) -> None:
    """An `--internal` bridge network: no gateway, masquerade, default route or portmap."""
    bridge = raw["plugins"][0]
    assert (bridge["isGateway"], bridge["ipMasq"]) == (False, False)
    assert "routes" not in bridge["ipam"]
    assert [p["type"] for p in raw["plugins"]] == ["bridge", "firewall", "tuning"]

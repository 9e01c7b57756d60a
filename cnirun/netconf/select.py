"""Which network config a command uses: one scan of the config dir, one rule for a network
by name, one rule for the default network. Every command (run, priv-net-run, net, network,
doctor) goes through `Configs`, so they can never disagree about the same directory.

The scan is lenient: a file that does not load is reported (a warning naming it) and passed
over, never blocking a lookup of another network or the default choice. By name, lists come
before single configs, each in byte order of their paths, as in libcni. The default network
is the first loadable network by file name (single configs without a valid network name,
such as a bare loopback `.conf`, are passed over), not counting cnirun's own built-in
default, which is used — and generated on first use — only when nothing else is there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from cnirun.cni import validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import (
    NetworkConfigList,
    conf_files,
    conf_from_file,
    list_from_file,
    list_from_plugin,
)
from cnirun.errors import (
    CNIError,
    CnirunError,
    ConfigError,
    NetworkNotFoundError,
    NoConfigsFoundError,
    UsageError,
    suggestion,
)
from cnirun.testhooks import default_network_overrides

log = logging.getLogger(__name__)

DEFAULT_NETWORK_NAME = "cnirun"
MARKER_KEY = "cnirun"  # top-level conflist key; libcni and plugins ignore unknown keys
EXTENSIONS = (".conflist", ".conf", ".json")

_warned: set[str] = set()


def marker(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The cnirun marker of a parsed conflist, or None when cnirun did not write it."""
    value = raw.get(MARKER_KEY)
    return value if isinstance(value, dict) else None


def created_by_cnirun(net: NetworkConfigList) -> bool:
    return marker(net.raw) is not None


def is_builtin_default(net: NetworkConfigList) -> bool:
    """True for the file cnirun generated as its built-in default network."""
    mark = marker(net.raw)
    return mark is not None and mark.get("default") is True


def default_network_name() -> str:
    return default_network_overrides()[0] or DEFAULT_NETWORK_NAME


def load_config_file(path: str) -> NetworkConfigList:
    """A `.conflist`, or a `.conf`/`.json` upconverted to a one-plugin list."""
    if path.endswith(".conflist"):
        return list_from_file(path)
    return list_from_plugin(conf_from_file(path), path)


def config_paths(netconf_dir: str) -> list[str]:
    """Every config file of the directory, sorted by file name as default selection does."""
    return sorted(conf_files(netconf_dir, EXTENSIONS), key=os.path.basename)


def _named(net: NetworkConfigList) -> bool:
    try:
        validate.network_name(net.name)
    except CNIError:
        return False
    return True


class Scan(NamedTuple):
    """The config dir as read once: every loadable network (by file name) and every problem."""

    directory: str
    networks: list[NetworkConfigList]
    problems: list[ConfigError]

    def by_name(self, name: str) -> NetworkConfigList | None:
        lists = sorted((n for n in self.networks if n.source.endswith(".conflist")), key=_key)
        singles = sorted((n for n in self.networks if not n.source.endswith(".conflist")), key=_key)
        return next((n for n in lists + singles if n.name == name), None)

    def builtin(self) -> NetworkConfigList | None:
        return next((n for n in self.networks if is_builtin_default(n)), None)

    def default_choice(self) -> NetworkConfigList | None:
        """The default network, if one is in the directory (the built-in one last)."""
        usable = [n for n in self.networks if _named(n)]
        for net in self.networks:
            if net.name and not _named(net) and net.source not in _warned:
                # A bare loopback .conf has no name at all: only a wrong name is worth a word.
                _warned.add(net.source)
                log.warning(
                    "not the default network: %s: network name %r is not valid "
                    "(letters, digits, _ . - only)",
                    net.source,
                    net.name,
                )
        return next((n for n in usable if not is_builtin_default(n)), None) or self.builtin()

    def warn_problems(self) -> None:
        """One warning per file that does not load (once per process and file)."""
        for problem in self.problems:
            if str(problem) not in _warned:
                _warned.add(str(problem))
                log.warning("skipping a config that does not load: %s", problem)


def _key(net: NetworkConfigList) -> bytes:
    return os.fsencode(net.source)  # Go's sort.Strings: byte order, as libcni


def scan(netconf_dir: str) -> Scan:
    """Read every config file of the directory (a missing directory is an empty scan).

    Raises:
        ConfigError: the directory itself cannot be read.
    """
    networks: list[NetworkConfigList] = []
    problems: list[ConfigError] = []
    for path in config_paths(netconf_dir):
        try:
            networks.append(load_config_file(path))
        except ConfigError as e:
            problems.append(e)
    return Scan(netconf_dir, networks, problems)


# Docker's own network names that are no CNI network (host and none are Docker's own modes).
DOCKER_NETWORK_NAMES = frozenset({"bridge", "default"})


def _not_found_hint(name: str, known: Sequence[str]) -> str:
    """What to do about a network that is not there: the closest name and what exists, and
    for a Docker network name, that cnirun's networks are CNI configs."""
    listing = suggestion(name, known, "networks") if known else ""
    if name in DOCKER_NETWORK_NAMES:
        return (
            f"{listing}: cnirun's networks are CNI configs, not Docker networks; see"
            " `cnirun network ls` (`--network host` and `none` mean Docker's own)"
        )
    return listing + ("; see `cnirun network ls`" if known else "")


class Configs:
    """The network configs of one directory, as every command sees them.

    `docker_subnets` lists the subnets of Docker's own networks, for generating a network
    that misses them (an empty list where Docker is not involved or cannot be asked).
    """

    def __init__(
        self,
        directory: str,
        cni: CNIConfig,
        docker_subnets: Callable[[], Sequence[str]] = lambda: (),
    ) -> None:
        self.directory = directory
        self.cni = cni
        self.docker_subnets = docker_subnets

    def scan(self) -> Scan:
        return scan(self.directory)

    def find(self, name: str, generate: bool = True) -> NetworkConfigList:
        """The network called `name`; the built-in default's name works before it exists
        (unless `generate` is False: `network rm` must not create what it removes).

        Raises:
            ConfigError: not found while a file does not load (that file's error), or
                NetworkNotFoundError / NoConfigsFoundError naming the directory.
        """
        found = self.scan()
        net = found.by_name(name)
        if net is not None:
            found.warn_problems()
            return net
        builtin_missing = found.builtin() is None and not found.problems
        if generate and name == default_network_name() and builtin_missing:
            return self._builtin()
        if found.problems:
            # The network may well be in a file that does not load: that file's error says
            # why it was not found (as libcni says it); the other problems are warnings.
            Scan(found.directory, [], found.problems[1:]).warn_problems()
            raise found.problems[0]
        hint = _not_found_hint(name, [n.name for n in found.networks if n.name])
        if not found.networks:
            raise NoConfigsFoundError(
                f'no network named "{name}": no net configurations found in {self.directory}' + hint
            )
        raise NetworkNotFoundError(
            f'no net configuration with name "{name}" in {self.directory}' + hint
        )

    def default(self) -> NetworkConfigList:
        """The network used when none is named (generating the built-in default if needed).

        Raises:
            ConfigError: config files are there but none loads (the first problem is named,
                so a typo is not silently replaced by the built-in default).
        """
        found = self.scan()
        found.warn_problems()
        chosen = found.default_choice()
        if chosen is not None:
            return chosen
        if found.problems:
            raise ConfigError(
                f"no usable network in {self.directory}: {found.problems[0]}; "
                "fix the file or choose a network with --network"
            )
        return self._builtin()

    def resolve(self, names: Sequence[str]) -> list[NetworkConfigList]:
        """The networks named (the default one when none is), each with all its plugins found.

        Raises:
            CnirunError: a network is missing, named twice, or lacks a plugin.
        """
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise UsageError(f"network {twice} is given twice")
        nets = [self.find(n) for n in names] if names else [self.default()]
        for net in nets:
            try:
                self.cni.find_plugins(net)
            except CnirunError as e:
                where = net.source or self.directory
                raise CnirunError(f"network {net.name} ({where}): {e}") from None
        return nets

    def _builtin(self) -> NetworkConfigList:
        from cnirun.netconf import builtin  # generating costs imports only the first run pays

        return builtin.ensure(self)

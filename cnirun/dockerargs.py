"""Parse cnirun's command line: `cnirun [OPTIONS] IMAGE [COMMAND [ARG...]]`.

Owns the table of `docker run` flags, tokenises them with pflag's rules (as the docker CLI does),
takes out cnirun's own options, re-homes the flags Docker refuses with `--net=container:` (ports,
addresses, hostname, DNS, hosts) and keeps everything else verbatim for the workload. Stdlib only.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from cnirun.bandwidth import Bandwidth, parse_bandwidth
from cnirun.errors import UsageError

__all__ = [
    "CNIRUN_OPTIONS",
    "DOCKER_RUN_FLAGS",
    "DOCKER_RUN_SHORTHANDS",
    "HelpRequested",
    "PortMapping",
    "RunArgs",
    "parse_port_spec",
    "parse_run_args",
]

USAGE = "cnirun [OPTIONS] IMAGE [COMMAND] [ARG...]"

# Every `docker run` flag of docker CLI 28.2.2 (cli/command/container/{run,opts}.go), long name ->
# whether it takes a value. Includes the hidden aliases (dns-opt, net, net-alias), the API-gated
# ones (annotation, health-start-interval) and the Windows-only ones, which `--help` hides.
DOCKER_RUN_FLAGS: dict[str, bool] = {
    "add-host": True,
    "annotation": True,
    "attach": True,
    "blkio-weight": True,
    "blkio-weight-device": True,
    "cap-add": True,
    "cap-drop": True,
    "cgroup-parent": True,
    "cgroupns": True,
    "cidfile": True,
    "cpu-count": True,
    "cpu-percent": True,
    "cpu-period": True,
    "cpu-quota": True,
    "cpu-rt-period": True,
    "cpu-rt-runtime": True,
    "cpu-shares": True,
    "cpus": True,
    "cpuset-cpus": True,
    "cpuset-mems": True,
    "detach": False,
    "detach-keys": True,
    "device": True,
    "device-cgroup-rule": True,
    "device-read-bps": True,
    "device-read-iops": True,
    "device-write-bps": True,
    "device-write-iops": True,
    "disable-content-trust": False,
    "dns": True,
    "dns-opt": True,
    "dns-option": True,
    "dns-search": True,
    "domainname": True,
    "entrypoint": True,
    "env": True,
    "env-file": True,
    "expose": True,
    "gpus": True,
    "group-add": True,
    "health-cmd": True,
    "health-interval": True,
    "health-retries": True,
    "health-start-interval": True,
    "health-start-period": True,
    "health-timeout": True,
    "help": False,
    "hostname": True,
    "init": False,
    "interactive": False,
    "io-maxbandwidth": True,
    "io-maxiops": True,
    "ip": True,
    "ip6": True,
    "ipc": True,
    "isolation": True,
    "kernel-memory": True,
    "label": True,
    "label-file": True,
    "link": True,
    "link-local-ip": True,
    "log-driver": True,
    "log-opt": True,
    "mac-address": True,
    "memory": True,
    "memory-reservation": True,
    "memory-swap": True,
    "memory-swappiness": True,
    "mount": True,
    "name": True,
    "net": True,
    "net-alias": True,
    "network": True,
    "network-alias": True,
    "no-healthcheck": False,
    "oom-kill-disable": False,
    "oom-score-adj": True,
    "pid": True,
    "pids-limit": True,
    "platform": True,
    "privileged": False,
    "publish": True,
    "publish-all": False,
    "pull": True,
    "quiet": False,
    "read-only": False,
    "restart": True,
    "rm": False,
    "runtime": True,
    "security-opt": True,
    "shm-size": True,
    "sig-proxy": False,
    "stop-signal": True,
    "stop-timeout": True,
    "storage-opt": True,
    "sysctl": True,
    "tmpfs": True,
    "tty": False,
    "ulimit": True,
    "use-api-socket": False,
    "user": True,
    "userns": True,
    "uts": True,
    "volume": True,
    "volume-driver": True,
    "volumes-from": True,
    "workdir": True,
}

# One-letter shorthand -> long name. There is no `-h` for help: docker gives it to --hostname.
DOCKER_RUN_SHORTHANDS: dict[str, str] = {
    "a": "attach",
    "c": "cpu-shares",
    "d": "detach",
    "e": "env",
    "h": "hostname",
    "i": "interactive",
    "l": "label",
    "m": "memory",
    "p": "publish",
    "P": "publish-all",
    "q": "quiet",
    "t": "tty",
    "u": "user",
    "v": "volume",
    "w": "workdir",
}

# cnirun's own options (long only), name -> takes a value. `network`/`net` shadow docker's.
CNIRUN_OPTIONS: dict[str, bool] = {
    "network": True,
    "net": True,
    "netconf-dir": True,
    "cni-path": True,
    "infra-image": True,
    "cni-args": True,
    "cni-timeout": True,
    "bandwidth": True,
    "debug": False,
}

# Docker's hidden aliases, folded onto the flag they alias.
_ALIASES = {"dns-opt": "dns-option", "net": "network", "net-alias": "network-alias"}


class _Kind(enum.Enum):
    FORWARD = "forward"  # docker's business: forwarded untouched
    RECORD = "record"  # forwarded, and also recorded in RunArgs
    INFRA = "infra"  # set on the infra container instead (hostname, DNS, hosts)
    PUBLISH = "publish"  # becomes CNI portMappings
    ADDRESS = "address"  # becomes the CNI `ips` capability
    MAC = "mac"  # becomes the CNI `mac` capability
    REJECT = "reject"  # cannot work with a CNI-provided network
    NETWORK = "network"  # --network/--net: cnirun's
    OWN = "own"  # cnirun's own option, never forwarded
    HELP = "help"


_KINDS: dict[str, _Kind] = {
    **dict.fromkeys(
        ("detach", "rm", "interactive", "tty", "name", "pull", "platform", "quiet"), _Kind.RECORD
    ),
    # Recorded so that cnirun's own /etc/hosts and /etc/resolv.conf mounts give way to the
    # user's and are read-only under --read-only, as Docker's are.
    **dict.fromkeys(("read-only", "volume", "mount"), _Kind.RECORD),
    # Recorded because they decide whether the sandbox outlives the docker CLI.
    **dict.fromkeys(("restart", "sig-proxy"), _Kind.RECORD),
    **dict.fromkeys(
        ("hostname", "domainname", "dns", "dns-search", "dns-option", "add-host"), _Kind.INFRA
    ),
    "publish": _Kind.PUBLISH,
    "ip": _Kind.ADDRESS,
    "ip6": _Kind.ADDRESS,
    "mac-address": _Kind.MAC,
    **dict.fromkeys(("publish-all", "expose", "link", "link-local-ip"), _Kind.REJECT),
    "network": _Kind.NETWORK,
    **dict.fromkeys(
        (
            "netconf-dir",
            "cni-path",
            "infra-image",
            "cni-args",
            "cni-timeout",
            "debug",
            "network-alias",
        ),
        _Kind.OWN,
    ),
    "bandwidth": _Kind.OWN,
    "help": _Kind.HELP,
}

_REJECTIONS: dict[str, str] = {
    "publish-all": "publish ports explicitly with -p HOSTPORT:PORT",
    "expose": "the container's ports are reachable on its CNI address without it;"
    " publish them on the host with -p HOSTPORT:PORT",
    "link": "legacy links need Docker's own networking; put both containers on the same"
    " CNI network: they reach each other by --name and --network-alias",
    "link-local-ip": "CNI plugins assign the addresses; request one with --ip or --ip6",
}

# Go's strconv.ParseBool, which pflag uses for `--flag=value` on booleans.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

_CNI_NETWORK_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_CONTAINER_NAME = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# A name other sandboxes may know one by: one /etc/hosts word, nothing that adds a line.
HOSTS_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_DNS_LABEL = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?")
_MAC = re.compile(
    r"(?P<o>[0-9a-fA-F]{2})(?P<s>[:-])(?:[0-9a-fA-F]{2}(?P=s)){4}[0-9a-fA-F]{2}"
    r"|[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}"
)
_PORT_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_SECONDS = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_PULL_POLICIES = ("always", "missing", "never", "")
_PROTOCOLS = ("tcp", "udp", "sctp")

# Builds the UsageError for one -p value from a reason.
_Fail = Callable[[str], UsageError]


class HelpRequested(UsageError):
    """Raised when `--help` appears among the options; the CLI should print its usage."""


class PortMapping(NamedTuple):
    """One published port, in the shape of the portmap plugin's `portMappings` entries."""

    host_ip: str  # "" = every address
    host_port: int  # 0 = cnirun picks a free port
    container_port: int
    protocol: str  # "tcp" or "udp"

    def to_cni(self) -> dict[str, object]:
        """Return the `runtimeConfig.portMappings` entry (`hostIP` only when set)."""
        entry: dict[str, object] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


class RunArgs(NamedTuple):
    """Everything `cnirun [OPTIONS] IMAGE [COMMAND...]` asked for, sorted by who handles it.

    With `docker_network` set ("host"/"none") no CNI is involved: `workload_flags` then also
    keeps the `--network` token and the re-homed flags, since plain Docker handles them itself.
    """

    image: str
    networks: tuple[str, ...] = ()
    docker_network: str | None = None
    netconf_dir: str | None = None
    cni_path: str | None = None
    infra_image: str | None = None
    cni_args: tuple[tuple[str, str], ...] = ()
    cni_timeout: float | None = None
    debug: bool = False
    hostname: str | None = None
    domainname: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()
    publish: tuple[PortMapping, ...] = ()
    ips: tuple[str, ...] = ()
    mac: str | None = None
    bandwidth: Bandwidth | None = None  # --bandwidth: the CNI `bandwidth` capability
    detach: bool = False
    remove: bool = False
    interactive: bool = False
    tty: bool = False
    name: str | None = None
    pull: str | None = None
    quiet: bool = False
    platform: str | None = None
    read_only: bool = False
    restart: str = "no"  # the restart policy's name (no, always, unless-stopped, on-failure)
    sig_proxy: bool = True
    mount_targets: tuple[str, ...] = ()  # container paths of -v/--mount, normalised
    aliases: tuple[str, ...] = ()  # --network-alias: more names peers on its networks know it by
    workload_flags: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    docker_flags: frozenset[str] = frozenset()  # every docker run flag given (long names)


class _Occurrence(NamedTuple):
    """One flag as parsed: canonical long name, value, and how the user spelled it."""

    name: str
    value: str
    display: str  # "--publish", "--net" or "-p": used in messages
    explicit: bool  # a bool given a value with "=" (kept when a short group is split up)
    short: str | None = None


class _Group(NamedTuple):
    """The argv tokens one flag, or one group of short flags, was read from."""

    tokens: tuple[str, ...]
    occurrences: list[_Occurrence]


class _State:
    """Mutable accumulator behind the immutable RunArgs."""

    docker_network: str | None = None
    netconf_dir: str | None = None
    cni_path: str | None = None
    infra_image: str | None = None
    cni_timeout: float | None = None
    debug: bool = False
    hostname: str | None = None
    domainname: str | None = None
    ip4: str | None = None
    ip6: str | None = None
    mac: str | None = None
    bandwidth: Bandwidth | None = None
    detach: bool = False
    remove: bool = False
    interactive: bool = False
    tty: bool = False
    name: str | None = None
    pull: str | None = None
    quiet: bool = False
    platform: str | None = None
    read_only: bool = False
    restart: str = "no"
    sig_proxy: bool = True

    def __init__(self) -> None:
        self.networks: list[str] = []
        self.cni_args: list[tuple[str, str]] = []
        self.dns: list[str] = []
        self.dns_search: list[str] = []
        self.dns_options: list[str] = []
        self.add_hosts: list[tuple[str, str]] = []
        self.publish: list[PortMapping] = []
        self.aliases: list[str] = []
        self.mount_targets: list[str] = []


def parse_run_args(argv: Sequence[str]) -> RunArgs:
    """Parse `[OPTIONS] IMAGE [COMMAND [ARG...]]` (no program name, no leading "run").

    Raises UsageError (HelpRequested for `--help`) with a one-line message.
    """
    groups, image, command = _tokenize(list(argv))
    occurrences = [occ for group in groups for occ in group.occurrences]
    for occ in occurrences:
        if occ.name == "help" and _parse_bool(occ):
            raise HelpRequested(f"usage: {USAGE}")
    if image is None:
        raise UsageError(f"requires at least 1 argument: IMAGE (usage: {USAGE})")
    if not image or image.startswith("-"):
        raise UsageError(f"invalid IMAGE {image!r}: not an image reference")

    state = _State()
    for occ in occurrences:
        _apply(state, occ)
    if state.docker_network is not None and state.networks:
        raise UsageError(
            f"--network {state.docker_network} cannot be combined with CNI networks"
            f" ({', '.join(state.networks)})"
        )
    if state.docker_network is not None and state.bandwidth is not None:
        raise UsageError(f"--bandwidth needs a CNI network, not --network {state.docker_network}")
    _check_docker_conflicts(state, occurrences)

    workload: list[str] = []
    for group in groups:
        workload.extend(_forwarded_tokens(group, docker_mode=state.docker_network is not None))

    # Every field the state tracks under the same name (lists frozen), then the derived ones.
    values: dict[str, Any] = {}
    for field in RunArgs._fields:
        if hasattr(state, field):
            value = getattr(state, field)
            values[field] = tuple(value) if isinstance(value, list) else value
    values["ips"] = tuple(ip for ip in (state.ip4, state.ip6) if ip is not None)
    values["docker_flags"] = frozenset(o.name for o in occurrences if o.name in DOCKER_RUN_FLAGS)
    return RunArgs(**values, workload_flags=tuple(workload), image=image, command=tuple(command))


# cnirun's own labels (io.cnirun.sandbox, .role, ...): a user's would get the workload taken
# for another sandbox's, or for no sandbox at all, and reclaimed.
RESERVED_LABEL_PREFIX = "io.cnirun."


def _check_docker_conflicts(state: _State, occurrences: Sequence[_Occurrence]) -> None:
    """What Docker refuses among flags cnirun passes on or re-homes, and labels of cnirun's."""
    uts = [occ.value for occ in occurrences if occ.name == "uts"]
    if uts and uts[-1] == "host" and state.hostname:
        raise UsageError("conflicting options: hostname and the UTS mode")  # Docker's words
    for occ in occurrences:
        key = occ.value.partition("=")[0].strip()
        if occ.name == "label" and key.startswith(RESERVED_LABEL_PREFIX):
            raise UsageError(
                f"{occ.display} {key}: labels starting with {RESERVED_LABEL_PREFIX} are"
                " reserved for cnirun (it marks its sandboxes' containers with them)"
            )


# --- tokenising (pflag's grammar, with interspersed arguments off as in `docker run`) ---


def _tokenize(argv: list[str]) -> tuple[list[_Group], str | None, list[str]]:
    """Split argv into flag groups, IMAGE (None if absent) and the verbatim command."""
    groups: list[_Group] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if len(token) < 2 or token[0] != "-":
            # The first non-flag ends the options; what follows is never looked at.
            return groups, token, argv[i:]
        if token == "--":
            if i < len(argv):
                return groups, argv[i], argv[i + 1 :]
            return groups, None, []
        if token.startswith("--"):
            group, i = _long_flag(token, argv, i)
        else:
            group, i = _short_group(token, argv, i)
        groups.append(group)
    return groups, None, []


def _long_flag(token: str, argv: list[str], i: int) -> tuple[_Group, int]:
    body = token[2:]
    if body[0] in "-=":
        raise UsageError(f"bad flag syntax: {token}")
    name, has_value, value = body.partition("=")
    takes_value = CNIRUN_OPTIONS.get(name, DOCKER_RUN_FLAGS.get(name))
    if takes_value is None:
        raise UsageError(f"unknown flag: --{name} (neither a docker run flag nor a cnirun option)")
    tokens: tuple[str, ...] = (token,)
    if has_value:
        pass
    elif not takes_value:
        value = "true"
    elif i < len(argv):
        # Like pflag, the next argument is the value even when it starts with "-".
        value = argv[i]
        tokens = (token, value)
        i += 1
    else:
        raise UsageError(f"flag needs an argument: --{name}")
    occ = _Occurrence(
        _ALIASES.get(name, name), value, f"--{name}", explicit=bool(has_value), short=None
    )
    return _Group(tokens, [occ]), i


def _short_group(token: str, argv: list[str], i: int) -> tuple[_Group, int]:
    letters = token[1:]
    if letters.startswith("test."):
        # pflag silently ignores "-test.*" (a Go testing leftover); docker will too.
        return _Group((token,), []), i
    occurrences: list[_Occurrence] = []
    tokens: tuple[str, ...] = (token,)
    while letters:
        c = letters[0]
        name = DOCKER_RUN_SHORTHANDS.get(c)
        if name is None:
            raise UsageError(f"unknown shorthand flag: {c!r} in {token}")
        explicit = False
        if len(letters) > 2 and letters[1] == "=":
            value, letters, explicit = letters[2:], "", True  # -e=VALUE, -t=false
        elif not DOCKER_RUN_FLAGS[name]:
            value, letters = "true", letters[1:]  # bool: the group goes on (-dit)
        elif len(letters) > 1:
            value, letters = letters[1:], ""  # -eVALUE, and -itpVALUE
        elif i < len(argv):
            value, letters = argv[i], ""  # -e VALUE, and -itp VALUE
            tokens = (token, value)
            i += 1
        else:
            raise UsageError(f"flag needs an argument: {c!r} in {token}")
        occurrences.append(_Occurrence(name, value, f"-{c}", explicit=explicit, short=c))
    return _Group(tokens, occurrences), i


def _forwarded_tokens(group: _Group, docker_mode: bool) -> list[str]:
    """The tokens of `group` the workload gets: verbatim, or rebuilt when a group is split."""
    kept = [occ for occ in group.occurrences if _is_forwarded(occ, docker_mode)]
    if len(kept) == len(group.occurrences):
        return list(group.tokens)
    out: list[str] = []
    for occ in kept:
        # Only short groups can be partly kept; rebuild each kept letter on its own.
        if not DOCKER_RUN_FLAGS[occ.name]:
            out.append(f"-{occ.short}={occ.value}" if occ.explicit else f"-{occ.short}")
        else:
            out.extend((f"-{occ.short}", occ.value))
    return out


def _is_forwarded(occ: _Occurrence, docker_mode: bool) -> bool:
    kind = _KINDS.get(occ.name, _Kind.FORWARD)
    if kind in (_Kind.FORWARD, _Kind.RECORD):
        return True
    if kind in (_Kind.INFRA, _Kind.PUBLISH, _Kind.ADDRESS, _Kind.MAC, _Kind.NETWORK):
        return docker_mode
    return False  # OWN, HELP, and a REJECT bool that was set to false


# --- meaning of each flag ---


def _apply(state: _State, occ: _Occurrence) -> None:
    kind = _KINDS.get(occ.name, _Kind.FORWARD)
    is_bool = DOCKER_RUN_FLAGS.get(occ.name) is False
    # Every bool's value is checked, as docker would, even when only docker uses it.
    if is_bool and not _parse_bool(occ) and kind is _Kind.REJECT:
        return  # e.g. -P=false asks for nothing
    if kind is _Kind.FORWARD or kind is _Kind.HELP:
        return
    if kind is _Kind.REJECT:
        raise UsageError(f"{occ.display} is not supported by cnirun: {_REJECTIONS[occ.name]}")
    if kind is _Kind.NETWORK:
        _apply_network(state, occ)
    elif kind is _Kind.OWN:
        _apply_own(state, occ)
    elif kind is _Kind.RECORD:
        _apply_record(state, occ)
    elif kind is _Kind.INFRA:
        _apply_infra(state, occ)
    elif kind is _Kind.PUBLISH:
        state.publish.extend(parse_port_spec(occ.value))
    elif kind is _Kind.ADDRESS:
        _apply_address(state, occ)
    elif kind is _Kind.MAC:
        state.mac = _parse_mac(occ)


def _parse_bool(occ: _Occurrence) -> bool:
    if occ.value in _GO_TRUE:
        return True
    if occ.value in _GO_FALSE:
        return False
    raise UsageError(f"invalid boolean value {occ.value!r} for {occ.display} (use true or false)")


def _apply_network(state: _State, occ: _Occurrence) -> None:
    value = occ.value
    if value in ("host", "none"):
        if state.docker_network is not None:
            raise UsageError(f"{occ.display} {value}: only one of host/none can be given")
        state.docker_network = value
    elif value.startswith("container:"):
        raise UsageError(
            f"{occ.display} {value} is not supported: cnirun gives the container its own CNI"
            " network namespace; use plain docker run to join another container's network"
        )
    elif not _CNI_NETWORK_NAME.fullmatch(value):
        hint = (
            " (docker's advanced --network syntax is not supported)"
            if "=" in value or "," in value
            else ""
        )
        raise UsageError(
            f"invalid network name {value!r} for {occ.display}: CNI network names use"
            f" letters, digits, '_', '.' and '-'{hint}"
        )
    elif value in state.networks:
        raise UsageError(f"network {value!r} is given twice")
    else:
        state.networks.append(value)


def _apply_own(state: _State, occ: _Occurrence) -> None:
    value = occ.value
    if occ.name == "network-alias":
        if not HOSTS_NAME.fullmatch(value):
            raise UsageError(
                f"invalid {occ.display} {value!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* is allowed"
            )
        if value not in state.aliases:
            state.aliases.append(value)
    elif occ.name == "debug":
        state.debug = _parse_bool(occ)
        return
    if occ.name == "cni-args":
        state.cni_args.extend(_parse_cni_args(value))
        return
    if occ.name == "bandwidth":
        state.bandwidth = parse_bandwidth(value, state.bandwidth)
        return
    if not value:
        raise UsageError(f"{occ.display} needs a non-empty value")
    if occ.name == "cni-timeout":
        seconds = float(value) if _SECONDS.fullmatch(value) else math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise UsageError(f"invalid {occ.display} {value!r}: want a positive number of seconds")
        state.cni_timeout = seconds
    elif occ.name == "netconf-dir":
        state.netconf_dir = value
    elif occ.name == "cni-path":
        state.cni_path = value
    elif occ.name == "infra-image":
        state.infra_image = value


def _parse_cni_args(value: str) -> list[tuple[str, str]]:
    # Several pairs may share one option with CNI_ARGS' own ";" separator.
    pairs: list[tuple[str, str]] = []
    for pair in value.split(";"):
        key, sep, val = pair.partition("=")
        if not sep or not key or not val or "=" in val:
            raise UsageError(f'invalid CNI_ARGS pair "{pair}" (expected KEY=VALUE)')
        pairs.append((key, val))
    return pairs


def _apply_record(state: _State, occ: _Occurrence) -> None:
    name, value = occ.name, occ.value
    if name == "detach":
        state.detach = _parse_bool(occ)
    elif name == "rm":
        state.remove = _parse_bool(occ)
    elif name == "interactive":
        state.interactive = _parse_bool(occ)
    elif name == "tty":
        state.tty = _parse_bool(occ)
    elif name == "quiet":
        state.quiet = _parse_bool(occ)
    elif name == "name":
        # cnirun names the infra container after this, before docker would check it.
        if value and not _CONTAINER_NAME.fullmatch(value):
            raise UsageError(
                f"invalid container name {value!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ is allowed"
            )
        state.name = value or None
    elif name == "pull":
        if value not in _PULL_POLICIES:
            raise UsageError(
                f"invalid {occ.display} {value!r}: must be one of always, missing or never"
            )
        state.pull = value
    elif name == "platform":
        state.platform = value
    elif name == "read-only":
        state.read_only = _parse_bool(occ)
    elif name == "restart":
        state.restart = value.partition(":")[0] or "no"  # docker checks the rest
    elif name == "sig-proxy":
        state.sig_proxy = _parse_bool(occ)
    elif name == "volume":
        state.mount_targets.append(_volume_target(value))
    elif name == "mount":
        target = _mount_target(value)
        if target:
            state.mount_targets.append(target)


# The modes `-v SRC:DST:MODE` accepts (docker's linux parser); `-v DST:MODE` is a volume.
_VOLUME_MODES = frozenset(
    "rw ro z Z nocopy shared rshared slave rslave private rprivate".split()
    + "delegated cached consistent".split()
)


def _volume_target(spec: str) -> str:
    """The container path of a `-v [SRC:]DST[:MODE]` value (docker checks the rest)."""
    parts = spec.split(":")
    if len(parts) == 2 and all(m in _VOLUME_MODES for m in parts[1].split(",")):
        return _clean_path(parts[0])
    return _clean_path(parts[1] if len(parts) > 1 else parts[0])


def _mount_target(spec: str) -> str:
    """The container path of a `--mount type=...,target=DST,...` value ("" if none)."""
    import csv  # only when --mount is used

    for row in csv.reader([spec]):
        for item in row:
            key, _, value = item.partition("=")
            if key.strip() in ("target", "dst", "destination"):
                return _clean_path(value.strip())
    return ""


def _clean_path(path: str) -> str:
    # "/etc//hosts/" and "/etc/./hosts" name /etc/hosts too.
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def _apply_infra(state: _State, occ: _Occurrence) -> None:
    name, value = occ.name, occ.value
    if name == "hostname":
        # Linux's HOST_NAME_MAX; whitespace would also break the /etc/hosts line.
        if len(value) > 64 or any(ch.isspace() for ch in value):
            raise UsageError(f"invalid hostname {value!r}: at most 64 characters, no spaces")
        state.hostname = value or None
    elif name == "domainname":
        if any(ch.isspace() for ch in value):
            raise UsageError(f"invalid domain name {value!r}: no spaces allowed")
        state.domainname = value or None
    elif name == "dns":
        ip = _parse_ip(value.strip())
        if ip is None:
            raise UsageError(f"invalid {occ.display} {value!r}: not an IP address")
        state.dns.append(str(ip))
    elif name == "dns-search":
        state.dns_search.append(_parse_dns_search(occ))
    elif name == "dns-option":
        state.dns_options.append(value)
    elif name == "add-host":
        state.add_hosts.append(_parse_add_host(occ))


def _parse_dns_search(occ: _Occurrence) -> str:
    value = occ.value.strip(" ")
    if value == ".":
        return value  # docker's way to say "no search domains"
    domain = value[:-1] if value.endswith(".") else value
    labels = domain.split(".")
    if (
        len(domain) >= 255
        or not any(ch.isalpha() for ch in domain)
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
    ):
        raise UsageError(f"invalid {occ.display} {occ.value!r}: not a valid domain")
    return domain


def _parse_add_host(occ: _Occurrence) -> tuple[str, str]:
    value = occ.value
    # Docker's rule: split at the first "=", else at the first ":" (the IP may be IPv6).
    host, sep, ip = value.partition("=")
    if not sep:
        host, sep, ip = value.partition(":")
    if not sep or not host or ":" in host or any(ch.isspace() for ch in host):
        raise UsageError(
            f"invalid {occ.display} {value!r}: expected HOST:IP or HOST=IP (IP may be host-gateway)"
        )
    if ip != "host-gateway":
        if len(ip) > 2 and ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        if _parse_ip(ip) is None:
            raise UsageError(f"invalid {occ.display} {value!r}: {ip!r} is not an IP address")
    return host, ip


def _apply_address(state: _State, occ: _Occurrence) -> None:
    ip = _parse_ip(occ.value)
    want = 4 if occ.name == "ip" else 6
    if ip is None or ip.version != want:
        other = " (use --ip6 for IPv6)" if want == 4 and ip is not None else ""
        raise UsageError(f"invalid {occ.display} {occ.value!r}: not an IPv{want} address{other}")
    if want == 4:
        state.ip4 = str(ip)
    else:
        state.ip6 = str(ip)


def _parse_mac(occ: _Occurrence) -> str:
    value = occ.value
    if not _MAC.fullmatch(value):
        raise UsageError(
            f"invalid {occ.display} {value!r}: expected six hex octets like 92:d0:c6:0a:29:33"
        )
    digits = re.sub(r"[:.\-]", "", value).lower()
    octets = [digits[k : k + 2] for k in range(0, 12, 2)]
    if int(octets[0], 16) & 1:
        raise UsageError(f"invalid {occ.display} {value!r}: a multicast address (odd first octet)")
    if digits == "0" * 12:
        raise UsageError(f"invalid {occ.display} {value!r}: the all-zero address")
    return ":".join(octets)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IPv4/IPv6 address, or None. Zones (`%eth0`) are refused, as Go's ParseIP does."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return None
    return ip


# --- -p/--publish ---


def parse_port_spec(spec: str) -> tuple[PortMapping, ...]:
    """Parse one `-p` value into mappings (a range gives one mapping per port).

    Syntax as docker run: `[HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]`, ports may be ranges of
    equal length, HOSTIP may be IPv6 in brackets, and the `published=,target=,protocol=` form.
    A missing host port is 0 ("cnirun picks one"). Unlike Docker, a host port range for a
    single container port is refused: portmap takes one host port per mapping.
    """
    text = _standard_notation(spec) if "=" in spec else spec

    def fail(reason: str) -> UsageError:
        return UsageError(f'invalid port spec "{spec}": {reason}')

    parts = text.split(":")
    container = parts[-1]
    host_ip = ":".join(parts[:-2])  # more than 3 parts: an unbracketed IPv6 address
    host = parts[-2] if len(parts) > 1 else ""

    port_text, _, protocol = container.partition("/")
    if "/" in protocol:
        raise fail(f"bad protocol {protocol!r}")
    protocol = protocol.lower() or "tcp"
    if protocol not in _PROTOCOLS:
        raise fail(f"unknown protocol {protocol!r} (want tcp or udp)")
    if protocol == "sctp":
        raise fail("sctp cannot be published: the portmap plugin handles only tcp and udp")

    if host_ip:
        if host_ip.startswith("[") and host_ip.endswith("]"):
            host_ip = host_ip[1:-1]
        ip = _parse_ip(host_ip)
        if ip is None:
            raise fail(f"{host_ip!r} is not an IP address")
        host_ip = str(ip)

    if not port_text:
        raise fail("no container port")
    c_start, c_end = _port_range(port_text, "container port", fail)
    if c_start == 0:
        raise fail("container port 0 is not a port")
    if not host or host == "0":
        h_start = h_end = 0
    else:
        h_start, h_end = _port_range(host, "host port", fail)
        if h_start == 0:
            raise fail("host port 0 can only stand alone (it means: pick a free port)")
    if h_end - h_start != c_end - c_start and h_start:
        if c_start == c_end:
            raise fail(
                "a host port range for one container port is not supported;"
                " give one host port, or none to let cnirun pick one"
            )
        raise fail(f"host range {host} and container range {port_text} differ in length")
    return tuple(
        PortMapping(host_ip, h_start + k if h_start else 0, c_start + k, protocol)
        for k in range(c_end - c_start + 1)
    )


def _standard_notation(spec: str) -> str:
    """Docker's `published=8080,target=80,protocol=udp` form, as `8080:80/udp`."""
    params: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in ("published", "target", "protocol"):
            raise UsageError(
                f'invalid port spec "{spec}": {item!r} is not published=, target= or protocol='
            )
        params[key] = value
    if not params.get("target"):
        raise UsageError(f'invalid port spec "{spec}": no target (container port)')
    return f"{params.get('published', '')}:{params['target']}/{params.get('protocol', 'tcp')}"


def _port_range(text: str, what: str, fail: _Fail) -> tuple[int, int]:
    match = _PORT_RANGE.fullmatch(text)
    if match is None:
        raise fail(f"{what} {text!r} is not a port or a START-END range")
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) is not None else start
    if start > 65535 or end > 65535:
        raise fail(f"{what} {text!r} is above 65535")
    if end < start:
        raise fail(f"{what} range {text!r} ends before it starts")
    return start, end

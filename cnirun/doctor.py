"""`cnirun doctor`: check the host for what cnirun needs, one verdict (ok/warn/FAIL) per line.

Docker, the plugins (versions, and whether others could replace them), the state and cache
dirs (root's alone), the config dir, IP forwarding, the kernel's ifb and tc support that the
bandwidth plugin needs, the iptables FORWARD
policy and what `cnirun gc` would reclaim. Read-only: it never changes anything. It judges
with the rules the commands use (the one config scan, the one Docker endpoint, gc's own
selection), so it cannot disagree with them.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from cnirun.cni import invoke, validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import NetworkConfigList
from cnirun.errors import CNIError, CnirunError, ConfigError, ExitCode
from cnirun.files import check_owned
from cnirun.netconf import select
from cnirun.settings import VERSION_TIMEOUT, Settings

if TYPE_CHECKING:
    from cnirun.docker.endpoint import Endpoint
    from cnirun.docker.runtime import Docker

OK, WARN, FAIL = "ok", "warn", "FAIL"
# Plugins whose traffic crosses the host's FORWARD chain, so a DROP policy matters.
FORWARDING_TYPES = ("bridge", "ptp")


class Check(NamedTuple):
    """One line of the report."""

    verdict: str
    subject: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.subject}: {self.detail}"


class Doctor:
    """Runs the checks against one config dir, plugin path and cache dir."""

    def __init__(self, settings: Settings, cni: CNIConfig) -> None:
        self.settings = settings
        self.cni = cni
        self.checks: list[Check] = []
        self.versions: dict[str, tuple[str, ...]] = {}
        self.version_errors: dict[str, str] = {}
        self.networks: list[NetworkConfigList] = []
        self.docker: Docker | None = None

    def add(self, verdict: str, subject: str, detail: str) -> None:
        self.checks.append(Check(verdict, subject, detail))

    def run(self, emit: Callable[[Check], None] | None = None) -> list[Check]:
        """Run every check; `emit` sees each line as soon as it is known."""
        steps = (
            self.check_user,
            self.check_docker,
            self.check_plugins,
            self.check_state_dirs,
            self.check_configs,
            self.check_ip_forward,
            self.check_bandwidth_kernel,
            self.check_forward_policy,
            self.check_localhost_guard,
            self.check_stale,
        )
        for step in steps:
            start = len(self.checks)
            step()
            if emit is not None:
                for check in self.checks[start:]:
                    emit(check)
        return self.checks

    # -- the checks --------------------------------------------------------------------------

    def check_user(self) -> None:
        if os.geteuid() == 0:
            self.add(OK, "user", "running as root")
        else:
            self.add(WARN, "user", "not root: runs and several checks below need root")

    def check_docker(self) -> None:
        from cnirun.docker.endpoint import resolve

        try:
            endpoint = resolve(self.settings.environ)
        except CnirunError as e:
            self.add(FAIL, "docker", _one_line(e))
        else:
            self._check_engine(endpoint)
        cli = shutil.which("docker")
        if cli is None:
            self.add(FAIL, "docker CLI", "no `docker` in PATH (cnirun runs workloads with it)")
        else:
            self.add(OK, "docker CLI", cli)

    def _check_engine(self, endpoint: Endpoint) -> None:
        from cnirun.docker.runtime import Docker

        docker = Docker(endpoint)
        try:
            info = docker.version()
        except CnirunError as e:
            where = endpoint.describe()
            self.add(FAIL, "docker", f"engine not reachable at {where}: {_one_line(e)}")
            return
        self.docker = docker
        version, api = info.get("Version", "?"), info.get("ApiVersion", "?")
        self.add(OK, "docker", f"engine {version} (API {api}) at {endpoint.describe()}")

    def check_plugins(self) -> None:
        dirs = self.cni.plugin_dirs
        present, found = find_plugins(dirs)
        if not present:
            self.add(FAIL, "plugin dirs", f"none of {':'.join(dirs)} exists (set --cni-path)")
            return
        if not found:
            self.add(FAIL, "plugin dirs", f"no executable plugin in {':'.join(present)}")
            return
        self.add(OK, "plugin dirs", f"{len(found)} plugins in {':'.join(present)}")
        for name, path in found.items():
            try:
                invoke.check_plugin_file(os.path.dirname(path), path)  # as every run does
            except CnirunError as e:
                self.version_errors[name] = _one_line(e)
                self.add(FAIL, f"plugin {name}", _one_line(e))
                continue
            try:
                supported = self.cni.version_info(name).supported_versions
            except CnirunError as e:
                self.version_errors[name] = _one_line(e)
                self.add(WARN, f"plugin {name}", f"VERSION failed: {_one_line(e)} ({path})")
                continue
            self.versions[name] = supported
            self.add(OK, f"plugin {name}", f"{', '.join(supported)} ({path})")

    def check_state_dirs(self) -> None:
        """The state and cache dirs: root's alone, or cnirun refuses them (cnirun.files)."""
        for subject, directory in (
            ("state dir", self.settings.state_dir),
            ("cache dir", self.settings.cache_dir),
        ):
            try:
                st = os.stat(directory)
            except FileNotFoundError:
                self.add(OK, subject, f"{directory} (created 0700 on first use)")
                continue
            except OSError as e:
                self.add(FAIL, subject, f"{directory}: {e.strerror or e}")
                continue
            try:
                check_owned(st, directory)
            except OSError as e:
                self.add(FAIL, subject, _one_line(e.strerror or e))
                continue
            self.add(OK, subject, f"{directory} (mode {stat.S_IMODE(st.st_mode):04o})")

    def check_configs(self) -> None:
        directory = self.settings.netconf_dir
        if not os.path.isdir(directory):
            self._builtin_default_check(f"{directory} does not exist")
            return
        try:
            found = select.scan(directory)
        except ConfigError as e:
            self.add(FAIL, "config", _one_line(e))
            return
        for problem in found.problems:
            self.add(FAIL, "config", _one_line(problem))
        names: dict[str, str] = {}
        for net in found.networks:
            path = net.source
            try:
                validate.network_name(net.name)
            except CNIError:
                self.add(WARN, "config", f"{path}: not usable as a network (no valid name)")
                continue
            if net.name in names:
                shadow = f'{path}: network "{net.name}" is shadowed by {names[net.name]}'
                self.add(WARN, "config", shadow)
                continue
            names[net.name] = path
            self.networks.append(net)
            problems = self._chain_problems(net)
            if problems:
                self.add(FAIL, "config", f"{path}: " + "; ".join(problems))
            else:
                chain = " -> ".join(p.type for p in net.plugins)
                self.add(OK, "config", f'{path}: network "{net.name}" ({chain}, {net.cni_version})')
        chosen = found.default_choice()
        if chosen is not None:
            self.add(OK, "default network", f'"{chosen.name}" ({chosen.source})')
        elif not found.networks and not found.problems:
            self._builtin_default_check(f"no network config in {directory}")
        else:
            self.add(FAIL, "default network", f"no usable network in {directory}")

    def _builtin_default_check(self, why: str) -> None:
        needed = ["bridge", "host-local", "portmap", "firewall", "tuning"]
        missing = [p for p in needed if p not in self.versions]
        detail = (
            f"{why}; the built-in default network "
            f'"{select.default_network_name()}" '
            "will be created there on first use"
        )
        if "bridge" in missing or "host-local" in missing:
            self.add(FAIL, "default network", f"{detail}, but it needs bridge and host-local")
        elif missing:
            self.add(WARN, "default network", f"{detail}, without {', '.join(missing)}")
        else:
            self.add(OK, "default network", detail)

    def _chain_problems(self, net: NetworkConfigList) -> list[str]:
        wanted = net.cni_version or "0.1.0"
        problems = []
        types = []
        for plugin in net.plugins:
            types.append(plugin.type)
            ipam = plugin.raw.get("ipam")
            if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
                types.append(ipam["type"])
        for plugin_type in dict.fromkeys(types):
            if plugin_type in self.version_errors:
                problems.append(f"plugin {plugin_type}: {self.version_errors[plugin_type]}")
            elif plugin_type not in self.versions:
                dirs = ":".join(self.cni.plugin_dirs)
                problems.append(f'plugin "{plugin_type}" not found in {dirs}')
            elif wanted not in self.versions[plugin_type]:
                problems.append(f"plugin {plugin_type} does not support cniVersion {wanted}")
        return problems

    def check_ip_forward(self) -> None:
        try:
            with open("/proc/sys/net/ipv4/ip_forward") as handle:
                value = handle.read().strip()
        except OSError as e:
            self.add(WARN, "net.ipv4.ip_forward", f"cannot read: {e.strerror}")
            return
        if value == "1":
            self.add(OK, "net.ipv4.ip_forward", "1")
        else:
            self.add(
                WARN,
                "net.ipv4.ip_forward",
                f"{value}: containers cannot reach beyond this host (a bridge plugin with "
                "isGateway turns it on at its first ADD)",
            )

    def check_bandwidth_kernel(self) -> None:
        """What the bandwidth plugin (`run --bandwidth`) needs of the kernel, from files alone."""
        from cnirun.host import kernel

        found = kernel.features(kernel.BANDWIDTH_FEATURES)
        subject = "kernel for --bandwidth"
        missing = [n for n, state in found.items() if state == kernel.MISSING]
        unknown = [n for n, state in found.items() if state == kernel.UNKNOWN]
        if missing:
            options = ", ".join(f"{n} ({kernel.BANDWIDTH_FEATURES[n][0]})" for n in missing)
            self.add(WARN, subject, f"missing {options}: the bandwidth plugin fails here")
        elif unknown:
            self.add(
                WARN,
                subject,
                f"cannot tell whether it has {', '.join(unknown)} (no kernel config in"
                " /proc/config.gz or /boot, no module lists in /lib/modules)",
            )
        else:
            self.add(OK, subject, ", ".join(f"{n} {state}" for n, state in found.items()))

    def check_forward_policy(self) -> None:
        if shutil.which("iptables") is None:
            self.add(WARN, "iptables FORWARD", "no `iptables` in PATH; cannot check the policy")
            return
        try:
            res = subprocess.run(
                ["iptables", "-S", "FORWARD"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            self.add(WARN, "iptables FORWARD", f"cannot run iptables: {e}")
            return
        if res.returncode != 0:
            self.add(WARN, "iptables FORWARD", f"iptables -S FORWARD: {_one_line(res.stderr)}")
            return
        policy = next(
            (ln.split()[2] for ln in res.stdout.splitlines() if ln.startswith("-P FORWARD")), "?"
        )
        if policy != "DROP":
            self.add(OK, "iptables FORWARD", f"policy {policy}")
            return
        exposed = [
            n.name
            for n in self.networks
            if n.plugins[0].type in FORWARDING_TYPES
            and all(p.type != "firewall" for p in n.plugins)
        ]
        if exposed:
            self.add(
                WARN,
                "iptables FORWARD",
                "policy DROP (Docker sets it): traffic of "
                + ", ".join(f'"{n}"' for n in exposed)
                + " is dropped beyond the host; add the firewall plugin to their chains",
            )
        else:
            self.add(
                OK,
                "iptables FORWARD",
                "policy DROP (Docker sets it); bridge/ptp networks here have the firewall plugin",
            )

    def check_localhost_guard(self) -> None:
        """The filter rule cnirun installs before a portmap chain (cnirun.host.localnet)."""
        from cnirun.host import localnet

        try:
            present = localnet.present()
        except CnirunError as e:
            self.add(WARN, "localhost guard", _one_line(e))
            return
        if present:
            self.add(OK, "localhost guard", "in place (non-DNAT packets to 127.0.0.0/8 dropped)")
            return
        users = [f'"{n.name}"' for n in self.networks if localnet.needed(p.type for p in n.plugins)]
        if users:
            self.add(
                WARN,
                "localhost guard",
                "missing: containers on " + ", ".join(users) + " could reach the host's "
                "127.0.0.1-only services once portmap sets route_localnet; the next run "
                "with portmap installs it",
            )
        else:
            self.add(OK, "localhost guard", "not installed (no network here uses portmap)")

    def check_stale(self) -> None:
        """What `cnirun gc` would reclaim: gc's own selection, so the two always agree."""
        if self.docker is None:
            self.add(WARN, "stale state", "cannot tell without Docker (see above)")
            return
        from cnirun.sandbox.reclaim import reclaimable
        from cnirun.sandbox.records import RecordStore

        try:
            items = reclaimable(self.docker, RecordStore(self.settings.state_dir), self.settings)
        except CnirunError as e:
            self.add(WARN, "stale state", f"cannot tell: {_one_line(e)}")
            return
        if not items:
            self.add(OK, "stale state", "none")
            return
        shown = ", ".join(items[:5]) + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")
        self.add(WARN, "stale state", f"gc would reclaim {len(items)}: {shown} (run `cnirun gc`)")


def find_plugins(dirs: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The plugin dirs that exist, and each plugin name's executable (the first dir wins)."""
    found: dict[str, str] = {}
    present = []
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        present.append(directory)
        for name in names:
            path = os.path.join(directory, name)
            if name not in found and os.path.isfile(path) and os.access(path, os.X_OK):
                found[name] = path
    return present, found


def _one_line(error: object) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def doctor(settings: Settings, emit: Callable[[Check], None]) -> int:
    """Run every check, emitting lines as they come; 1 if any check failed, else 0."""
    cni = CNIConfig(settings.plugin_dirs, settings.cache_dir, timeout=VERSION_TIMEOUT)
    checks = Doctor(settings, cni).run(emit)
    return ExitCode.FAILURE if any(c.verdict == FAIL for c in checks) else ExitCode.SUCCESS

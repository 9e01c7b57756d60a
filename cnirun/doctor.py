"""`cnirun doctor`: check the host for what cnirun needs, one verdict (ok/warn/FAIL) per line.

Docker, the plugins and their versions, the config dir, IP forwarding, the iptables FORWARD
policy and stale cnirun state. Read-only: it never changes anything. Docker is imported lazily.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any, NamedTuple

import typer

from cnirun import defaultnet, netns, privnet
from cnirun.cni import validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.cache import cache_dir_from_env
from cnirun.cni.config import NetworkConfigList, netconf_dir_from_env
from cnirun.cni.invoke import plugin_dirs
from cnirun.errors import CNIError, CnirunError, ConfigError

OK, WARN, FAIL = "ok", "warn", "FAIL"
LABEL_SANDBOX = "io.cnirun.sandbox"  # as cnirun.docker_runtime labels its containers
STALE_PREFIX = "cnirun-"
DOCKER_TIMEOUT = 5.0
VERSION_TIMEOUT = 10.0
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

    def __init__(self, netconf_dir: str, cni: CNIConfig) -> None:
        self.netconf_dir = netconf_dir
        self.cni = cni
        self.checks: list[Check] = []
        self.versions: dict[str, tuple[str, ...]] = {}
        self.version_errors: dict[str, str] = {}
        self.networks: list[NetworkConfigList] = []
        self.docker_client: Any = None

    def add(self, verdict: str, subject: str, detail: str) -> None:
        self.checks.append(Check(verdict, subject, detail))

    def run(self, emit: Callable[[Check], None] | None = None) -> list[Check]:
        """Run every check; `emit` sees each line as soon as it is known."""
        steps = (
            self.check_user,
            self.check_docker,
            self.check_plugins,
            self.check_configs,
            self.check_ip_forward,
            self.check_forward_policy,
            self.check_stale,
        )
        for step in steps:
            start = len(self.checks)
            step()
            if emit is not None:
                for check in self.checks[start:]:
                    emit(check)
        if self.docker_client is not None:
            with contextlib.suppress(Exception):
                self.docker_client.close()
        return self.checks

    # -- the checks --------------------------------------------------------------------------

    def check_user(self) -> None:
        if os.geteuid() == 0:
            self.add(OK, "user", "running as root")
        else:
            self.add(WARN, "user", "not root: runs and several checks below need root")

    def check_docker(self) -> None:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            import docker

            client = docker.from_env(timeout=DOCKER_TIMEOUT)
            info = client.version()
        except Exception as e:  # the SDK raises many types (DockerException, requests, OSError)
            self.add(FAIL, "docker", f"engine not reachable at {where}: {_one_line(e)}")
        else:
            self.docker_client = client
            self.add(
                OK,
                "docker",
                f"engine {info.get('Version', '?')} (API {info.get('ApiVersion', '?')}) at {where}",
            )
        cli = shutil.which("docker")
        if cli is None:
            self.add(FAIL, "docker CLI", "no `docker` in PATH (cnirun runs workloads with it)")
        else:
            self.add(OK, "docker CLI", cli)

    def check_plugins(self) -> None:
        dirs = self.cni.plugin_dirs
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
        if not present:
            self.add(FAIL, "plugin dirs", f"none of {':'.join(dirs)} exists (set --cni-path)")
            return
        if not found:
            self.add(FAIL, "plugin dirs", f"no executable plugin in {':'.join(present)}")
            return
        self.add(OK, "plugin dirs", f"{len(found)} plugins in {':'.join(present)}")
        for name, path in found.items():
            try:
                supported = self.cni.version_info(name).supported_versions
            except CnirunError as e:
                self.version_errors[name] = _one_line(e)
                self.add(WARN, f"plugin {name}", f"VERSION failed: {_one_line(e)} ({path})")
                continue
            self.versions[name] = supported
            self.add(OK, f"plugin {name}", f"{', '.join(supported)} ({path})")

    def check_configs(self) -> None:
        directory = self.netconf_dir
        if not os.path.isdir(directory):
            self._builtin_default_check(f"{directory} does not exist")
            return
        names: dict[str, str] = {}
        paths = defaultnet.config_paths(directory)
        for path in paths:
            try:
                net = defaultnet.load_config_file(path)
            except ConfigError as e:
                self.add(FAIL, "config", _one_line(e))
                continue
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
        chosen = self._default_choice()
        if chosen is not None:
            self.add(OK, "default network", f'"{chosen.name}" ({chosen.source})')
        elif not self.networks and not [c for c in self.checks if c.subject == "config"]:
            self._builtin_default_check(f"no network config in {directory}")
        elif not self.networks:
            self.add(FAIL, "default network", f"no usable network in {directory}")

    def _default_choice(self) -> NetworkConfigList | None:
        builtin = None
        for net in self.networks:
            if not defaultnet.is_builtin_default(net):
                return net
            builtin = builtin or net
        return builtin

    def _builtin_default_check(self, why: str) -> None:
        needed = ["bridge", "host-local", "portmap", "firewall", "tuning"]
        missing = [p for p in needed if p not in self.versions]
        detail = (
            f"{why}; the built-in default network "
            f'"{os.environ.get(defaultnet.ENV_DEFAULT_NAME) or defaultnet.DEFAULT_NETWORK_NAME}" '
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

    def check_stale(self) -> None:
        in_use = _netns_in_use()
        stale_ns = []
        for name in netns.list_held(STALE_PREFIX):
            if name.startswith(privnet.NETNS_PREFIX):
                if not privnet.is_live(name):
                    stale_ns.append(name)
                continue
            # A sandbox's netns holds its infra container's process while the sandbox lives.
            try:
                st = os.stat(netns.netns_path(name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in in_use:
                stale_ns.append(name)
        self._stale("stale netns", "netns holder(s) with no process", stale_ns)

        if self.docker_client is not None:
            try:
                rows = self.docker_client.api.containers(
                    all=True, filters={"label": LABEL_SANDBOX, "status": ["exited", "dead"]}
                )
                names = [(r.get("Names") or [r.get("Id", "?")[:12]])[0].lstrip("/") for r in rows]
                self._stale("stale containers", "exited cnirun container(s)", names)
            except Exception as e:  # the SDK's errors
                self.add(WARN, "stale containers", f"cannot list containers: {_one_line(e)}")

        try:
            entries = self.cni.cache.attachments()
        except CnirunError as e:
            self.add(WARN, "stale cache", _one_line(e))
            return
        stale_cache = []
        for entry in entries:
            ours = entry.container_id.startswith(STALE_PREFIX) or os.path.basename(
                entry.netns
            ).startswith(STALE_PREFIX)
            if not ours:
                continue
            alive = bool(entry.netns) and netns.netns_exists(entry.netns)
            if not alive or os.path.basename(entry.netns) in stale_ns:
                stale_cache.append(f"{entry.network_name}/{entry.container_id}/{entry.ifname}")
        what = f"cached attachment(s) in {self.cni.cache.results_dir} with no live netns"
        self._stale("stale cache", what, stale_cache)

    def _stale(self, subject: str, what: str, items: list[str]) -> None:
        if not items:
            self.add(OK, subject, "none")
            return
        shown = ", ".join(items[:5]) + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")
        self.add(WARN, subject, f"gc would reclaim {len(items)} {what}: {shown}")


def _netns_in_use() -> set[tuple[int, int]]:
    """(dev, inode) of every network namespace some process is in."""
    used: set[tuple[int, int]] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}/ns/net")
            used.add((st.st_dev, st.st_ino))
    return used


def _one_line(error: object) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def doctor(netconf_dir: str | None, cni_path: str | None, emit: Callable[[Check], None]) -> int:
    """Run every check, emitting lines as they come; 1 if any check failed, else 0."""
    cni = CNIConfig(plugin_dirs(cni_path), cache_dir_from_env(), timeout=VERSION_TIMEOUT)
    checks = Doctor(netconf_dir_from_env(netconf_dir), cni).run(emit)
    return 1 if any(c.verdict == FAIL for c in checks) else 0


NETCONF_DIR = typer.Option(None, "--netconf-dir", help="Config dir [env NETCONFPATH].")
CNI_PATH = typer.Option(None, "--cni-path", help="Plugin dirs, colon-separated [env CNI_PATH].")


def command(netconf_dir: str | None = NETCONF_DIR, cni_path: str | None = CNI_PATH) -> None:
    """Check Docker, the CNI plugins and configs, forwarding and stale state; exit 1 on FAIL.

    \b
    Example:
      cnirun doctor --netconf-dir /etc/cni/net.d
    """
    from cnirun.cli import guarded  # here: cnirun.cli imports this module at start-up

    code = guarded(lambda: doctor(netconf_dir, cni_path, lambda c: print(c.line(), flush=True)))
    raise typer.Exit(code)

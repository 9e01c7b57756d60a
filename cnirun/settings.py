"""Every setting cnirun takes from its environment and flags, resolved and validated once.

The CLI builds one Settings per command and passes it down; no other module reads cnirun's
environment variables (test hooks excepted: see cnirun.testhooks). A bad value is one
SettingsError line naming the variable, never a traceback halfway through a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from cnirun.errors import SettingsError

DEFAULT_NETCONF_DIR = "/etc/cni/net.d"
# Searched in this order when CNI_PATH is unset (where the reference plugins usually live).
DEFAULT_PLUGIN_DIRS = ("/opt/cni/bin", "/usr/libexec/cni", "/usr/lib/cni")
DEFAULT_CACHE_DIR = "/var/lib/cni"  # libcni's, so cnitool and cnirun share attachments
DEFAULT_STATE_DIR = "/var/lib/cnirun"
# How long a workload gets to stop after SIGTERM/SIGHUP before it is killed (as `docker stop`).
DEFAULT_STOP_TIMEOUT = 10.0
# Seconds a plugin call may take when the caller does not say (cri-dockerd allows 220).
DEFAULT_CNI_TIMEOUT = 120.0
# Seconds a DEL may take when the caller does not say: a DEL only undoes, and a hung one
# holds its network's lock, `rm -f`, `stop` and `gc`; --cni-timeout sets both.
DEFAULT_CNI_DEL_TIMEOUT = 30.0
# Started, network-less infra containers kept ready for the next run (CNIRUN_INFRA_POOL).
DEFAULT_INFRA_POOL = 1
MAX_INFRA_POOL = 8
# Seconds a plugin gets to answer VERSION where cnirun only asks (doctor, network, version).
VERSION_TIMEOUT = 10.0

_FALSE = ("", "0", "false", "no")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() not in _FALSE


def seconds(text: str, where: str, *, positive: bool = False) -> float:
    """A number of seconds given as text (a flag or a variable); `where` names it in errors."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf") or (positive and value == 0):
        need = "a positive" if positive else "a non-negative"
        raise SettingsError(f"{where}: {text!r} is not {need} number of seconds")
    return value


def _pool_size(text: str) -> int:
    if not text.strip():
        return DEFAULT_INFRA_POOL
    if not text.strip().isdigit() or int(text) > MAX_INFRA_POOL:
        raise SettingsError(
            f"CNIRUN_INFRA_POOL: {text!r} is not a number of containers from 0 (no pool)"
            f" to {MAX_INFRA_POOL}"
        )
    return int(text)


def plugin_dir_list(text: str) -> tuple[str, ...]:
    """`a:b` as absolute directories (a record that outlives the cwd must not change meaning)."""
    return tuple(os.path.abspath(d) for d in text.split(":") if d)


class Settings:
    """What one cnirun command runs with. Build it with `Settings.load`."""

    __slots__ = (
        "environ",
        "netconf_dir",
        "plugin_dirs",
        "cache_dir",
        "state_dir",
        "debug",
        "stop_timeout",
        "cni_timeout",
        "cni_del_timeout",
        "infra_pool",
    )

    def __init__(
        self,
        *,
        environ: Mapping[str, str],
        netconf_dir: str,
        plugin_dirs: Sequence[str],
        cache_dir: str,
        state_dir: str,
        debug: bool = False,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        cni_timeout: float = DEFAULT_CNI_TIMEOUT,
        cni_del_timeout: float = DEFAULT_CNI_DEL_TIMEOUT,
        infra_pool: int = 0,
    ) -> None:
        self.environ = environ
        self.netconf_dir = netconf_dir
        self.plugin_dirs = tuple(plugin_dirs)
        self.cache_dir = cache_dir
        self.state_dir = state_dir
        self.debug = debug
        self.stop_timeout = stop_timeout
        self.cni_timeout = cni_timeout
        self.cni_del_timeout = cni_del_timeout
        self.infra_pool = infra_pool

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        netconf_dir: str | None = None,
        cni_path: str | None = None,
        cache_dir: str | None = None,
        cni_timeout: float | None = None,
        debug: bool = False,
    ) -> Settings:
        """Flags first, then the environment, then the defaults. `cni_timeout` (the flag)
        sets the DEL timeout too; else CNIRUN_CNI_DEL_TIMEOUT, else DEFAULT_CNI_DEL_TIMEOUT.

        Raises:
            SettingsError: a variable or flag has a value cnirun cannot use.
        """
        env = os.environ if environ is None else environ
        timeout = DEFAULT_CNI_TIMEOUT if cni_timeout is None else cni_timeout
        if not timeout > 0:
            raise SettingsError(f"--cni-timeout must be positive, got {timeout:g}")
        stop = env.get("CNIRUN_STOP_TIMEOUT", "")
        del_timeout = DEFAULT_CNI_DEL_TIMEOUT if cni_timeout is None else cni_timeout
        if cni_timeout is None and env.get("CNIRUN_CNI_DEL_TIMEOUT"):
            del_timeout = seconds(
                env["CNIRUN_CNI_DEL_TIMEOUT"], "CNIRUN_CNI_DEL_TIMEOUT", positive=True
            )
        return cls(
            environ=env,
            netconf_dir=netconf_dir or env.get("NETCONFPATH") or DEFAULT_NETCONF_DIR,
            plugin_dirs=plugin_dir_list(cni_path or env.get("CNI_PATH", "")) or DEFAULT_PLUGIN_DIRS,
            # Absolute, as the plugin dirs: sandbox records keep them beyond this cwd.
            cache_dir=os.path.abspath(
                cache_dir or env.get("CNIRUN_CACHE_DIR") or DEFAULT_CACHE_DIR
            ),
            state_dir=os.path.abspath(env.get("CNIRUN_STATE_DIR") or DEFAULT_STATE_DIR),
            debug=debug or _flag(env.get("CNIRUN_DEBUG")),
            stop_timeout=seconds(stop, "CNIRUN_STOP_TIMEOUT") if stop else DEFAULT_STOP_TIMEOUT,
            cni_timeout=timeout,
            cni_del_timeout=del_timeout,
            infra_pool=_pool_size(env.get("CNIRUN_INFRA_POOL", "")),
        )

    def get(self, name: str, default: str = "") -> str:
        """A variable cnitool reads (CNI_ARGS, CAP_ARGS, CNI_IFNAME) or Docker's (DOCKER_*)."""
        return self.environ.get(name, default)

    def with_flags(
        self,
        *,
        netconf_dir: str | None = None,
        cni_path: str | None = None,
        cache_dir: str | None = None,
        cni_timeout: float | None = None,
    ) -> Settings:
        """These settings, with a command's own flags on top (themselves when none is given)."""
        if netconf_dir is None and cni_path is None and cache_dir is None and cni_timeout is None:
            return self
        settings = Settings.load(
            self.environ,
            netconf_dir=netconf_dir or self.netconf_dir,
            cni_path=cni_path or ":".join(self.plugin_dirs),
            cache_dir=cache_dir or self.cache_dir,
            cni_timeout=cni_timeout,
            debug=self.debug,
        )
        if cni_timeout is None:  # ours stand, the DEL timeout apart from the other
            settings.cni_timeout, settings.cni_del_timeout = self.cni_timeout, self.cni_del_timeout
        return settings

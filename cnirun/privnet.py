"""`cnirun priv-net-run`: run a host command in a fresh network namespace set up by CNI.

Owns the session: netns creation, ADD of each network (eth0, eth1, ...), the child with the
caller's stdio, signal forwarding, and teardown (DEL in reverse order, netns release) on every
exit path. No Docker involved.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NamedTuple

import typer

from cnirun import defaultnet, netns
from cnirun.cni import validate
from cnirun.cni.api import DEFAULT_TIMEOUT, CNIConfig
from cnirun.cni.cache import cache_dir_from_env
from cnirun.cni.config import NetworkConfigList, netconf_dir_from_env
from cnirun.cni.invoke import plugin_dirs
from cnirun.cni.types import RuntimeConf
from cnirun.errors import CnirunError, ExitCode, NetnsError, TeardownError, UsageError
from cnirun.interrupts import HANDLED_SIGNALS, Interrupted, in_foreground

log = logging.getLogger(__name__)

NETNS_PREFIX = "cnirun-privnet-"
# A session holds an flock on LOCK_DIR/<netns name>.lock from before its netns exists until
# its teardown ends, so gc and doctor can tell a live session from a leftover (is_live).
LOCK_DIR = "/run/cnirun/privnet"


class PrivNetOptions(NamedTuple):
    """Everything `priv-net-run` takes besides the command."""

    networks: tuple[str, ...] = ()
    netconf_dir: str | None = None
    cni_path: str | None = None
    cni_args: tuple[str, ...] = ()
    timeout: float | None = None
    cache_dir: str | None = None


class Plan(NamedTuple):
    """Loaded and checked before anything is created."""

    cni: CNIConfig
    networks: list[NetworkConfigList]
    cni_args: tuple[tuple[str, str], ...]
    name: str  # of the netns, and the CNI container ID


def make_plan(options: PrivNetOptions) -> Plan:
    """Resolve the networks and check their plugins exist; create nothing.

    Raises:
        CnirunError: the first problem, naming the network or flag.
    """
    timeout = options.timeout if options.timeout is not None else DEFAULT_TIMEOUT
    if timeout <= 0:
        raise UsageError(f"--cni-timeout must be positive, got {timeout:g}")
    directory = netconf_dir_from_env(options.netconf_dir)
    cni = CNIConfig(plugin_dirs(options.cni_path), cache_dir_from_env(options.cache_dir), timeout)
    try:
        cni_args = validate.cni_args_pairs(options.cni_args)
    except CnirunError as e:
        raise UsageError(f"--cni-args: {e}") from None
    if options.networks:
        seen = set()
        for name in options.networks:
            if name in seen:
                raise UsageError(f"network {name} is given twice")
            seen.add(name)
        nets = [defaultnet.load_network_or_default(directory, n, cni) for n in options.networks]
    else:
        nets = [defaultnet.resolve_default_network(directory, cni)]
    for net in nets:
        try:
            cni.find_plugins(net)
        except CnirunError as e:
            raise CnirunError(f"network {net.name} ({net.source or directory}): {e}") from None
    return Plan(cni, nets, cni_args, NETNS_PREFIX + secrets.token_hex(8))


def priv_net_run(command: Sequence[str], options: PrivNetOptions, exiting: bool = False) -> int:
    """Run `command` in a new netns attached to the networks; return its exit status.

    Statuses follow `docker run`: the command's own, 128+N when it (or setup) ended by
    signal N, 126/127 when it cannot be executed, 125 for cnirun's own failures.

    `exiting`: the process ends right after (the CLI). The signals stay ignored then, so a
    late Ctrl-C cannot turn the status into a KeyboardInterrupt or a death by signal.

    Raises:
        CnirunError: a problem found before anything was created, or a failed setup or
            teardown (after everything that could be released was released).
    """
    if not command:
        raise UsageError("priv-net-run needs a command to run")
    return Session(make_plan(options), list(command), exiting).run()


def lock_path(name: str) -> str:
    return os.path.join(LOCK_DIR, f"{name}.lock")


def is_live(name: str) -> bool:
    """True while the priv-net-run session that owns netns `name` is running."""
    try:
        fd = os.open(lock_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _take_lock(name: str) -> int:
    try:
        os.makedirs(LOCK_DIR, mode=0o755, exist_ok=True)
        fd = os.open(lock_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise NetnsError(f"cannot create {lock_path(name)}: {e.strerror or e}") from None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _drop_lock(name: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(lock_path(name))  # while still held, so no one sees it unlocked first
    os.close(fd)


class Session:
    """One priv-net-run: setup, the child, teardown; signals handled throughout."""

    def __init__(self, plan: Plan, command: list[str], exiting: bool = False) -> None:
        self.plan = plan
        self.command = command
        self.exiting = exiting
        self.path = netns.netns_path(plan.name)
        self.created = False
        self.attempted: list[tuple[NetworkConfigList, RuntimeConf]] = []
        # What a signal does now: "defer" (record it, or pass it to the child once there is
        # one), "adding" (ADDs run: the first signal lets the current one finish, so its
        # result is cached and DEL can undo all of it; a second aborts it) or "ignore"
        # (teardown runs and must finish).
        self.mode = "defer"
        self.signals: list[int] = []
        self.unforwarded: list[int] = []  # arrived before the child existed
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED_SIGNALS}
        code: int = ExitCode.CNIRUN_ERROR
        error: CnirunError | None = None
        lock: int | None = None
        try:
            lock = _take_lock(self.plan.name)
            self._setup()
            code = self._run_child()
        except Interrupted as e:
            code = 128 + e.signum
        except CnirunError as e:
            error = e
        finally:
            self.mode = "ignore"
            failures = self._teardown()
            if lock is not None:
                _drop_lock(self.plan.name, lock)
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_IGN if self.exiting else handler)
        if error is not None:
            if failures:
                for failure in failures:
                    print(f"cnirun: warning: teardown: {failure}", file=sys.stderr)
            raise error
        if failures:
            raise TeardownError(failures)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        if self.mode == "adding":
            if len(self.signals) > 1:
                self.mode = "ignore"
                raise Interrupted(self.signals[0])
            name = signal.Signals(signum).name
            note = f"cnirun: {name} received: stopping after the current ADD (again: at once)\n"
            os.write(2, note.encode())
            return
        if self.mode == "ignore":
            # os.write, not print: the interrupted code may be inside a write to stderr.
            name = signal.Signals(signum).name
            os.write(2, f"cnirun: {name} received: finishing teardown first\n".encode())
            return
        if self.child is None:
            self.unforwarded.append(signum)
        elif self.child.poll() is None:
            self._forward(self.child, signum)

    def _forward(self, child: subprocess.Popen[bytes], signum: int) -> None:
        # Ctrl-C in a terminal already reached the child: it is in our process group.
        if signum == signal.SIGINT and in_foreground():
            return
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    def _check_signals(self) -> None:
        if self.signals:
            self.mode = "ignore"  # from here on only teardown remains
            raise Interrupted(self.signals[0])

    def _setup(self) -> None:
        plan = self.plan
        # A signal during creation only marks the run; netns creation is never cut in half.
        netns.create_netns(plan.name)
        self.created = True
        self._check_signals()
        log.debug("priv-net-run: netns %s", self.path)
        self.mode = "adding"
        for index, net in enumerate(plan.networks):
            rt = RuntimeConf(
                container_id=plan.name,
                netns=self.path,
                ifname=f"eth{index}",
                cni_args=plan.cni_args,
            )
            self.attempted.append((net, rt))  # before ADD: an interrupted ADD is DELeted too
            try:
                plan.cni.add_network_list(net, rt)
            except CnirunError as e:
                # The core already DELeted the failed network; the ones before it are ours.
                self.attempted.pop()
                raise CnirunError(f"network {net.name}: {e}") from None
            self._check_signals()
        self.mode = "defer"
        self._check_signals()
        self.unforwarded.clear()  # any of these is in self.signals and stops _run_child

    def _run_child(self) -> int:
        self._check_signals()
        try:
            child = netns.run_in_netns(self.path, self.command)
        except FileNotFoundError:
            print(f"cnirun: {self.command[0]}: command not found", file=sys.stderr)
            return ExitCode.NOT_FOUND
        except PermissionError:
            print(f"cnirun: {self.command[0]}: permission denied", file=sys.stderr)
            return ExitCode.CANNOT_INVOKE
        except OSError as e:
            print(f"cnirun: {self.command[0]}: {e.strerror or e}", file=sys.stderr)
            return ExitCode.CANNOT_INVOKE
        self.child = child  # from here on the handler forwards signals itself
        while self.unforwarded:
            self._forward(child, self.unforwarded.pop(0))
        status = child.wait()
        self.mode = "ignore"
        return 128 - status if status < 0 else status

    def _teardown(self) -> list[str]:
        failures: list[str] = []
        for net, rt in reversed(self.attempted):
            try:
                self.plan.cni.del_network_list(net, rt)
            except CnirunError as e:
                failures.append(f"network {net.name} ({rt.ifname}): {e}")
        if self.created:
            try:
                netns.release_netns(self.plan.name)
            except CnirunError as e:
                failures.append(str(e))
        return failures


# -- the typer command ----------------------------------------------------------------------

NETWORK = typer.Option(
    None, "--network", help="Network to attach (repeatable: eth0, eth1, ...) [default: see below]."
)
NETCONF_DIR = typer.Option(None, "--netconf-dir", help="Config dir [env NETCONFPATH].")
CNI_PATH = typer.Option(None, "--cni-path", help="Plugin dirs, colon-separated [env CNI_PATH].")
CNI_ARGS = typer.Option(None, "--cni-args", help="CNI_ARGS pair K=V (repeatable).")
CNI_TIMEOUT = typer.Option(
    None, "--cni-timeout", help=f"Seconds a plugin call may take [default {DEFAULT_TIMEOUT:g}]."
)
COMMAND = typer.Argument(..., help="The command to run inside the namespace, and its arguments.")
CONTEXT = {"allow_interspersed_args": False}


def command(
    command: list[str] = COMMAND,
    network: list[str] | None = NETWORK,
    netconf_dir: str | None = NETCONF_DIR,
    cni_path: str | None = CNI_PATH,
    cni_args: list[str] | None = CNI_ARGS,
    cni_timeout: float | None = CNI_TIMEOUT,
) -> None:
    """Run COMMAND in a private network namespace set up by CNI (no Docker needed).

    The namespace gets one interface per --network (eth0, eth1, ...); without --network, the
    first network of the config dir, or else cnirun's built-in default (created on first use).
    Everything is torn down when COMMAND exits, fails to start, or cnirun gets a signal.
    Exits with COMMAND's status.

    \b
    Examples:
      cnirun priv-net-run ifconfig
      cnirun priv-net-run --network mynet -- ping -c1 10.22.0.1
    """
    options = PrivNetOptions(
        networks=tuple(network or ()),
        netconf_dir=netconf_dir,
        cni_path=cni_path,
        cni_args=tuple(cni_args or ()),
        timeout=cni_timeout,
    )
    from cnirun.cli import guarded  # here: cnirun.cli imports this module at start-up

    code = guarded(lambda: priv_net_run(command, options, exiting=True))
    raise typer.Exit(code)

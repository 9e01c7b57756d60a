"""`cnirun priv-net-run`: run a host command in a fresh network namespace set up by CNI.

Owns the session: netns creation, ADD of each network (eth0, eth1, ...), the child with the
caller's stdio, signal forwarding, and teardown (DEL in reverse order, netns release) on every
exit path. No Docker involved. Never prints: the CLI reports the outcome.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Sequence
from typing import NamedTuple

from cnirun.attach import Attachment, add_all, del_all
from cnirun.cni import validate
from cnirun.cni.api import CNIConfig
from cnirun.cni.types import RuntimeConf
from cnirun.errors import CnirunError, ExitCode, MultiError, NetnsError, UsageError
from cnirun.files import open_lock
from cnirun.host import netns
from cnirun.host.signals import Interrupted, Mode, SignalGuard
from cnirun.netconf.select import Configs
from cnirun.settings import Settings

log = logging.getLogger(__name__)

NETNS_PREFIX = "cnirun-privnet-"
# A session holds an flock on LOCK_DIR/<netns name>.lock from before its netns exists until
# its teardown ends, so gc and doctor can tell a live session from a leftover (is_live).
LOCK_DIR = "/run/cnirun/privnet"


class Plan(NamedTuple):
    """Loaded and checked before anything is created."""

    cni: CNIConfig
    attachments: list[Attachment]
    name: str  # of the netns, and the CNI container ID


def make_plan(settings: Settings, networks: Sequence[str], cni_args: Sequence[str] = ()) -> Plan:
    """Resolve the networks and check their plugins exist; create nothing.

    Raises:
        CnirunError: the first problem, naming the network or flag.
    """
    cni = CNIConfig(
        settings.plugin_dirs,
        settings.cache_dir,
        settings.cni_timeout,
        del_timeout=settings.cni_del_timeout,
    )
    try:
        pairs = validate.cni_args_pairs(cni_args)
    except CnirunError as e:
        raise UsageError(f"--cni-args: {e}") from None
    nets = Configs(settings.netconf_dir, cni).resolve(list(networks))  # as `run` does
    name = NETNS_PREFIX + secrets.token_hex(8)
    path = netns.netns_path(name)
    attachments = [
        Attachment(
            net, RuntimeConf(container_id=name, netns=path, ifname=f"eth{i}", cni_args=pairs)
        )
        for i, net in enumerate(nets)
    ]
    return Plan(cni, attachments, name)


def priv_net_run(command: Sequence[str], plan: Plan, exiting: bool = False) -> int:
    """Run `command` in a new netns attached to the planned networks; return its exit status.

    Statuses follow `docker run`: the command's own, 128+N when it (or setup) ended by
    signal N, 126/127 when it cannot be executed, 125 for cnirun's own failures.

    `exiting`: the process ends right after (the CLI). The signals stay ignored then, so a
    late Ctrl-C cannot turn the status into a KeyboardInterrupt or a death by signal.

    Raises:
        CnirunError: a failed setup or teardown (after everything that could be released
            was released; setup's error carries teardown's failures as warnings in the log).
    """
    if not command:
        raise UsageError("priv-net-run needs a command to run")
    return Session(plan, list(command), exiting).run()


def lock_path(name: str) -> str:
    return os.path.join(LOCK_DIR, f"{name}.lock")


def is_live(name: str) -> bool:
    """True while the priv-net-run session that owns netns `name` is running."""
    if not name.startswith(NETNS_PREFIX):
        return False
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
        fd = open_lock(lock_path(name))  # 0700 dirs, 0600 file: cnirun.files
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
        self.created = False
        self.attempted: list[Attachment] = []
        self.guard = SignalGuard()

    def run(self) -> int:
        self.guard.install()
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
            self.guard.enter(Mode.TEARDOWN)
            failures = self._teardown()
            if lock is not None:
                _drop_lock(self.plan.name, lock)
            self.guard.restore(ignore=self.exiting)
        if error is not None:
            for failure in failures:
                log.warning("teardown: %s", failure)
            raise error
        if failures:
            raise MultiError(failures, "teardown incomplete")
        return code

    def _setup(self) -> None:
        # A signal during creation only marks the run; netns creation is never cut in half.
        self.guard.enter(Mode.DEFER)
        netns.create_netns(self.plan.name)
        self.created = True
        self.guard.checkpoint()
        log.debug("priv-net-run: netns %s", netns.netns_path(self.plan.name))
        add_all(self.plan.cni, self.plan.attachments, self.guard, self.attempted.append)
        self.guard.enter(Mode.FORWARD)
        self.guard.checkpoint()

    def _run_child(self) -> int:
        path = netns.netns_path(self.plan.name)
        try:
            child = netns.run_in_netns(path, self.command)
        except FileNotFoundError:
            raise CommandError(
                ExitCode.NOT_FOUND, f"{self.command[0]}: command not found"
            ) from None
        except PermissionError:
            raise CommandError(
                ExitCode.CANNOT_INVOKE, f"{self.command[0]}: permission denied"
            ) from None
        except OSError as e:
            raise CommandError(
                ExitCode.CANNOT_INVOKE, f"{self.command[0]}: {e.strerror or e}"
            ) from None
        self.guard.set_child(child)  # from here on the handler forwards signals itself
        status = child.wait()
        self.guard.enter(Mode.TEARDOWN)
        return 128 - status if status < 0 else status

    def _teardown(self) -> list[str]:
        failures = del_all(self.plan.cni, self.attempted)
        if self.created:
            try:
                netns.release_netns(self.plan.name)
            except CnirunError as e:
                failures.append(str(e))
        return failures


class CommandError(CnirunError):
    """The command could not be executed (exit 126 or 127, and said as a shell says it)."""

    label = ""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = code

"""The main job: infra container -> held netns -> CNI ADD -> workload -> teardown.

The only module that knows all the pieces. Everything is validated before anything is
created; each step is recorded before it happens, and teardown runs on every exit path
(normal exit, failure, Ctrl-C, SIGTERM, SIGHUP), ignoring further signals while it works.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any, NamedTuple

from cnirun import etcfiles, netns, sandboxes
from cnirun.cni.api import DEFAULT_TIMEOUT, CNIConfig
from cnirun.cni.cache import cache_dir_from_env
from cnirun.cni.config import (
    NetworkConfigList,
    netconf_dir_from_env,
)
from cnirun.cni.invoke import plugin_dirs
from cnirun.cni.types import Result, RuntimeConf
from cnirun.docker_runtime import (
    LABEL_ROLE,
    LABEL_SANDBOX,
    LABEL_STATE_DIR,
    ROLE_WORKLOAD,
    Docker,
    Infra,
    InfraSpec,
    infra_name,
)
from cnirun.dockerargs import PortMapping, RunArgs
from cnirun.engine import EventStream
from cnirun.errors import CnirunError, ExitCode, UsageError
from cnirun.interrupts import HANDLED_SIGNALS, Interrupted, in_foreground
from cnirun.pause import PAUSE_IMAGE
from cnirun.state import AttachmentRecord, SandboxRecord, fault_point, state_dir
from cnirun.teardown import teardown

log = logging.getLogger(__name__)

# How long a workload gets to stop after SIGTERM/SIGHUP before it is killed (as `docker stop`).
STOP_GRACE_SECONDS = float(os.environ.get("CNIRUN_STOP_TIMEOUT", "10"))
# How long a create request sent by a docker CLI that a signal stopped may still land.
LATE_CREATE_SECONDS = 1.0


class NetworkPlan(NamedTuple):
    """One network to attach, with what its plugins will be given."""

    net: NetworkConfigList
    ifname: str
    capability_args: dict[str, Any]  # filled in by make_plan


class Plan(NamedTuple):
    """Everything decided and validated before the first side effect."""

    args: RunArgs
    sandbox_id: str
    networks: list[NetworkPlan]
    cni: CNIConfig
    infra_image: str
    ports: list[PortMapping]


def run(args: RunArgs) -> int:
    """Run one workload networked by CNI and return its exit status."""
    if args.docker_network:
        return _plain_docker(args)
    plan = make_plan(args)
    return Session(plan).run()


def _docker_cli() -> str:
    path = shutil.which("docker")
    if path is None:
        raise CnirunError("the docker command-line client is not installed (no `docker` in PATH)")
    return path


def _plain_docker(args: RunArgs) -> int:
    """`--network host|none`: no CNI at all, just Docker.

    Replaces this process with the docker CLI, so signals and the exit status are Docker's
    own (a child would be orphaned, its container left running, if cnirun were killed).
    """
    argv = [_docker_cli(), "run", *args.workload_flags, args.image, *args.command]
    log.debug("docker: %s", argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        raise CnirunError(f"cannot run {argv[0]}: {e.strerror or e}") from None


# -- planning ---------------------------------------------------------------------------------


def make_plan(args: RunArgs) -> Plan:
    """Load and check every network, plugin and flag; create nothing.

    Raises:
        CnirunError: for the first problem found, naming the network, file or flag.
    """
    directory = netconf_dir_from_env(args.netconf_dir)
    cni = CNIConfig(
        plugin_dirs(args.cni_path),
        cache_dir_from_env(),
        timeout=args.cni_timeout or DEFAULT_TIMEOUT,
    )
    from cnirun import defaultnet

    if args.networks:
        nets = [defaultnet.load_network_or_default(directory, n, cni) for n in args.networks]
    else:
        nets = [defaultnet.resolve_default_network(directory, cni)]
    for net in nets:
        try:
            cni.find_plugins(net)
        except CnirunError as e:
            raise CnirunError(f"network {net.name} ({net.source or directory}): {e}") from None
    plans = [NetworkPlan(net, f"eth{index}", {}) for index, net in enumerate(nets)]
    ports = [_with_host_port(p) for p in args.publish]
    if ports:
        target = _first_with_capability(plans, "portMappings", "-p/--publish", "the portmap plugin")
        target.capability_args["portMappings"] = [p.to_cni() for p in ports]
    if args.ips:
        target = _first_with_capability(plans, "ips", "--ip/--ip6", "an IPAM such as host-local")
        target.capability_args["ips"] = list(args.ips)
    if args.mac:
        target = _first_with_capability(
            plans, "mac", "--mac-address", "the bridge or tuning plugin"
        )
        target.capability_args["mac"] = args.mac
    return Plan(
        args=args,
        sandbox_id=os.urandom(16).hex(),  # as uuid4().hex, without importing uuid
        networks=plans,
        cni=cni,
        infra_image=args.infra_image or PAUSE_IMAGE,
        ports=ports,
    )


def _first_with_capability(plans: list[NetworkPlan], cap: str, flag: str, hint: str) -> NetworkPlan:
    for plan in plans:
        if any(p.capabilities.get(cap) for p in plan.net.plugins):
            return plan
    names = ", ".join(p.net.name for p in plans)
    raise UsageError(
        f"{flag} needs a network whose plugins accept the {cap!r} capability, "
        f'and {names} has none: add "capabilities": {{"{cap}": true}} to {hint} '
        "in its config, or choose another --network"
    )


def _with_host_port(mapping: PortMapping) -> PortMapping:
    """Docker picks a free host port for `-p 80`; so do we (portmap needs a number)."""
    if mapping.host_port:
        return mapping
    kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in mapping.host_ip else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.bind((mapping.host_ip, 0))
        port = probe.getsockname()[1]
    return PortMapping(mapping.host_ip, port, mapping.container_port, mapping.protocol)


# -- the session ------------------------------------------------------------------------------


class Session:
    """One run of the main job, from infra creation to teardown."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.docker = Docker()
        self.record = SandboxRecord(
            id=plan.sandbox_id,
            infra_name=infra_name(plan.sandbox_id),
            netns_name=f"cnirun-{plan.sandbox_id}",
            cache_dir=plan.cni.cache.cache_dir,
            plugin_dirs=list(plan.cni.plugin_dirs),
            cni_timeout=plan.cni.timeout or DEFAULT_TIMEOUT,
            image=plan.args.image,
            detach=plan.args.detach,
            remove=plan.args.remove,
            ports=[p.to_cni() for p in plan.ports],
        )
        self.mode = "abort"  # what a signal does: abort setup, forward, or be ignored
        self.signals: list[int] = []
        self.child: subprocess.Popen[bytes] | None = None
        self.stopper: threading.Timer | None = None  # kills the workload after the grace time
        self.started = False  # set once there may be something to tear down
        self.early_teardown: _EarlyTeardown | None = None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED_SIGNALS}
        code: int = ExitCode.CNIRUN_ERROR
        keep = False
        try:
            infra = self._setup()
            code = self._run_workload(infra)
            keep = self.plan.args.detach and code == 0
        except Interrupted as e:
            code = 128 + e.signum
        except CnirunError as e:
            from cnirun.cli import report

            report(e)
            code = e.exit_code
        finally:
            self.mode = "ignore"
            if self.started and not keep:
                early = self.early_teardown
                if early is not None and early.done:
                    failures = early.failures
                else:
                    failures = teardown(self.record, self.docker)
                for failure in failures:
                    print(f"cnirun: warning: teardown: {failure}", file=sys.stderr)
                if failures:
                    print(
                        f"cnirun: warning: sandbox {self.record.id} was not fully removed; "
                        "run `cnirun gc` to retry",
                        file=sys.stderr,
                    )
            # Exiting now: a late signal must not replace the exit status.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        if self.mode == "abort" or (self.mode == "defer" and len(self.signals) > 1):
            self.mode = "ignore"
            raise Interrupted(signum)
        if self.mode == "defer":
            print(
                f"cnirun: {signal.Signals(signum).name} received: stopping once the "
                "current CNI ADD is done (again to abort it)",
                file=sys.stderr,
            )
            return
        if self.mode == "forward":
            # Before the docker CLI exists, only record: _run_workload forwards it then.
            if self.child is not None:
                self._forward(signum)
            return
        if self.mode == "ignore":
            print(
                f"cnirun: {signal.Signals(signum).name} received: finishing teardown first",
                file=sys.stderr,
            )

    def _setup(self) -> Infra:
        plan, record = self.plan, self.record
        # First contact with Docker: if it is unreachable, nothing has been created yet.
        # A missing --infra-image is pulled here (per --pull, silent with -q): still nothing made.
        self.docker.ensure_infra_image(plan.infra_image, plan.args.pull, quiet=plan.args.quiet)
        sandboxes.reconcile(self.docker)  # cheap: only detached sandboxes whose workload ended
        self.started = True
        record.save()
        fault_point("record")
        args = plan.args
        infra = self.docker.create_infra(
            InfraSpec(
                sandbox_id=plan.sandbox_id,
                image=plan.infra_image,
                hostname=args.hostname,
                domainname=args.domainname,
                labels={LABEL_STATE_DIR: state_dir()},
            )
        )
        fault_point("infra")
        record.infra_id, record.hostname = infra.id, infra.hostname
        record.netns_path = netns.netns_path(record.netns_name)
        record.save()
        netns.hold_netns(f"/proc/{infra.pid}/ns/net", record.netns_name)
        results: list[Result] = []
        for network in plan.networks:
            net = network.net
            effective = {
                "cniVersion": net.cni_version,
                "name": net.name,
                "plugins": [p.raw for p in net.plugins],
            }
            record.attachments.append(
                AttachmentRecord(
                    network=net.name,
                    ifname=network.ifname,
                    config_b64=_b64(json.dumps(effective).encode()),
                    source=net.source,
                    cni_args=[list(pair) for pair in args.cni_args],
                    capability_args=network.capability_args,
                )
            )
            record.save()
            rt = RuntimeConf(
                container_id=record.cni_container_id,
                netns=record.netns_path,
                ifname=network.ifname,
                cni_args=args.cni_args,
                capability_args=network.capability_args,
            )
            # A first signal lets the ADD finish (an ADD cut short leaves state that
            # only its result can undo); a second one aborts at once.
            self.mode = "defer"
            try:
                result = plan.cni.add_network_list(net, rt)
            except CnirunError as e:
                raise CnirunError(f"network {net.name}: {e}") from None
            finally:
                self.mode = "abort"
            record.results[net.name] = result.to_json()
            results.append(result)
            fault_point("add")
            if self.signals:
                raise Interrupted(self.signals[0])
        record.save()
        _write_etc_files(record.files_dir, infra, results, args)
        return infra

    def _run_workload(self, infra: Infra) -> int:
        args = self.plan.args
        argv = [
            _docker_cli(),
            "run",
            f"--network=container:{infra.id}",
            "--label",
            f"{LABEL_SANDBOX}={self.plan.sandbox_id}",
            "--label",
            f"{LABEL_ROLE}={ROLE_WORKLOAD}",
            *_etc_mounts(self.record.files_dir, args),
            *args.workload_flags,
            args.image,
            *args.command,
        ]
        log.debug("docker: %s", " ".join(argv))
        self.mode = "forward"
        if self.signals:  # a signal slipped in between setup and here
            raise Interrupted(self.signals[-1])
        launched = time.time()
        if not args.detach:
            self.early_teardown = _EarlyTeardown(self.record, self.docker)
            self.early_teardown.start()
        try:
            self.child = subprocess.Popen(argv)
            if self.signals:  # arrived while the CLI was being started
                self._forward(self.signals[-1])
            code = self._wait(self.child)
        finally:
            self.mode = "ignore"
            if self.early_teardown is not None:
                self.early_teardown.stop()
        if self.stopper is not None:  # and let a kill in flight finish: it shares our client
            self.stopper.cancel()
            self.stopper.join()
        if self.signals and not args.detach:
            self._stop_workload_after_signal(launched)  # the CLI is gone: so must be its container
        return code

    def _forward(self, signum: int) -> None:
        """Pass a signal to the docker CLI; after SIGTERM/SIGHUP, arm the kill timer."""
        child = self.child
        if child is None or child.poll() is not None:
            return
        # A terminal's Ctrl-C already reached the docker CLI (same process group).
        if not (signum == signal.SIGINT and in_foreground()):
            os.kill(child.pid, signum)
        if signum != signal.SIGINT and self.stopper is None:
            # The main thread sits in waitpid, which a handler cannot shorten: use a timer.
            self.stopper = threading.Timer(STOP_GRACE_SECONDS, self._kill_after_grace)
            self.stopper.daemon = True
            self.stopper.start()

    def _kill_after_grace(self) -> None:
        log.debug("workload did not stop in %ss; killing it", STOP_GRACE_SECONDS)
        try:
            self._stop_workload()
        except CnirunError as e:
            log.debug("cannot kill the workload: %s", e)

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        status = child.wait()
        return 128 - status if status < 0 else status

    def _stop_workload_after_signal(self, launched: float) -> None:
        """Kill or remove the workload once its CLI has exited after a signal.

        A signal can stop the docker CLI while its create request is in flight, and the daemon
        still creates that container afterwards: unless the event log shows the create, wait
        briefly for such a late container (only this rare path pays for it).
        """
        sandbox = self.plan.sandbox_id
        try:
            created = self.docker.created_since(launched, sandbox, ROLE_WORKLOAD)
            self._stop_workload()
            deadline = time.monotonic() + LATE_CREATE_SECONDS
            while not created and time.monotonic() < deadline:
                time.sleep(0.05)
                if self.docker.containers(sandbox, ROLE_WORKLOAD):
                    log.debug("a workload container appeared after its docker CLI had exited")
                    self._stop_workload()
                    return
        except CnirunError as e:  # the workload's exit status still counts; gc can finish this
            print(f"cnirun: warning: cannot stop the workload: {e}", file=sys.stderr)

    def _stop_workload(self) -> None:
        for container in self.docker.containers(self.plan.sandbox_id, ROLE_WORKLOAD):
            state = container.get("State")
            if state == "running":
                self.docker.kill(container["Id"])
            elif state == "created":
                # The CLI was stopped between create and start: nothing will ever start it.
                self.docker.remove(container["Id"])


class _EarlyTeardown(threading.Thread):
    """Tears the sandbox down as soon as its workload container dies.

    The docker CLI exits only after `--rm` has removed the container, 10-20 ms later: starting
    DEL at the `die` event takes that off every run. If the event never comes (the CLI failed,
    or Docker's events cannot be read), the teardown after the CLI exits does it all.
    """

    def __init__(self, record: SandboxRecord, docker: Docker) -> None:
        super().__init__(name="early-teardown", daemon=True)
        self.record, self.docker = record, docker
        self.failures: list[str] = []
        self.done = False
        self._lock = threading.Lock()
        self._stream: EventStream | None = None
        self._stopped = False

    def run(self) -> None:
        try:
            stream = self.docker.watch_for_exit(self.record.id, ROLE_WORKLOAD)
        except CnirunError as e:
            log.debug("no early teardown: %s", e)
            return
        with self._lock:
            if self._stopped:
                stream.close()
                return
            self._stream = stream
        died = b'"die"' in stream.wait()  # the only events asked for; any other is no cue
        with self._lock:
            stream.close()
            self._stream = None
            if not died or self._stopped:
                return
        log.debug("the workload died: tearing down while its docker CLI finishes")
        self.failures = teardown(self.record, self.docker)
        self.done = True

    def stop(self) -> None:
        """Stop watching (a teardown under way is waited for)."""
        with self._lock:
            self._stopped = True
            if self._stream is not None:
                self._stream.close()
        self.join()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write_etc_files(directory: str, infra: Infra, results: list[Result], args: RunArgs) -> None:
    """Write the workload's /etc/hosts and /etc/resolv.conf into the sandbox's own dir."""
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as e:
        raise CnirunError(f"cannot create {directory}: {e.strerror or e}") from None
    addresses = [cidr for result in results for cidr in result.addresses()]
    gateways = [gw for result in results for gw in result.gateways()]
    extra_hosts = etcfiles.resolve_host_gateway(args.add_hosts, gateways)
    hosts = etcfiles.hosts(infra.hostname, infra.domainname, addresses, extra_hosts)
    cni_dns: dict[str, Any] = next((r.data["dns"] for r in results if r.nameservers()), {})
    resolv = etcfiles.resolv_conf(
        etcfiles.host_resolv_conf(),
        cni_dns,
        args.dns,
        args.dns_search,
        args.dns_options,
        ipv6=any(":" in cidr for cidr in addresses),
    )
    etcfiles.write(os.path.join(directory, "hosts"), hosts)
    etcfiles.write(os.path.join(directory, "resolv.conf"), resolv)


def _etc_mounts(directory: str, args: RunArgs) -> list[str]:
    """Bind mounts for those files, except where the user mounts something of their own (as
    Docker does with its own copies); read-only under --read-only, as Docker's are."""
    flags: list[str] = []
    for name, target in etcfiles.ETC_FILES.items():
        if target in args.mount_targets:
            continue
        source = os.path.join(directory, name)
        if ":" not in source:
            # `z`: relabelled on SELinux hosts (as Docker's own copies are), ignored elsewhere.
            flags += ["-v", f"{source}:{target}:{'ro,z' if args.read_only else 'z'}"]
            continue
        # -v cannot carry a path with a colon; --mount can (it cannot relabel, though).
        fields = ["type=bind", f"source={source}", f"target={target}"]
        if args.read_only:
            fields.append("readonly")
        flags += ["--mount", ",".join(_csv_field(f) for f in fields)]
    return flags


def _csv_field(text: str) -> str:
    # --mount is read as one CSV record: quote a field that has a comma or a quote.
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text

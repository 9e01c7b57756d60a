"""The main job: infra container -> held netns -> CNI ADD -> workload -> teardown.

Each step is recorded before it happens, and teardown runs on every exit path (normal exit,
failure, Ctrl-C, SIGTERM, SIGHUP), ignoring further signals while it works. The session never
prints: it returns an Outcome, and the CLI says what happened.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from typing import Any, NamedTuple

from cnirun.attach import Attachment, add_all
from cnirun.cni.types import Result, RuntimeConf
from cnirun.docker import workload
from cnirun.docker.pause import PAUSE_IMAGE
from cnirun.docker.pull import PullDisplay
from cnirun.docker.runtime import (
    LABEL_STATE_DIR,
    ROLE_WORKLOAD,
    Docker,
    Infra,
    InfraSpec,
    infra_name,
)
from cnirun.dockerargs import RunArgs
from cnirun.errors import CnirunError, ExitCode
from cnirun.host import etcfiles, netns
from cnirun.host.signals import Interrupted, Mode, SignalGuard
from cnirun.sandbox import dnsname, names, owners, registry
from cnirun.sandbox.early_teardown import EarlyTeardown
from cnirun.sandbox.plan import Plan
from cnirun.sandbox.pool import Pool
from cnirun.sandbox.records import (
    AttachmentRecord,
    RecordStore,
    SandboxRecord,
    process_runs,
    process_start,
)
from cnirun.sandbox.teardown import teardown
from cnirun.testhooks import fault_point

log = logging.getLogger(__name__)

# How long a create request sent by a docker CLI that a signal stopped may still land.
LATE_CREATE_SECONDS = 1.0


class Outcome(NamedTuple):
    """How a run ended: its exit status, the error that ended it, what teardown left."""

    code: int
    error: CnirunError | None
    sandbox_id: str
    teardown_failures: list[str]


def plain_docker(args: RunArgs, environ: dict[str, str]) -> None:
    """`--network host|none`: no CNI at all, just Docker (the docker CLI replaces cnirun)."""
    workload.exec_cli(["run", *args.workload_flags, args.image, *args.command], environ)


class Session:
    """One run of the main job, from infra creation to teardown."""

    def __init__(
        self, plan: Plan, docker: Docker, store: RecordStore, display: PullDisplay | None
    ) -> None:
        self.plan = plan
        self.docker = docker
        self.store = store
        self.display = display
        self.record = SandboxRecord(
            id=plan.sandbox_id,
            infra_name=infra_name(plan.sandbox_id),
            netns_name=f"cnirun-{plan.sandbox_id}",
            cache_dir=plan.cni.cache.cache_dir,
            plugin_dirs=list(plan.cni.plugin_dirs),
            cni_timeout=plan.settings.cni_timeout,
            cni_del_timeout=plan.settings.cni_del_timeout,
            image=plan.args.image,
            workload=plan.args.name or "",  # its --name: found by it on other engines too
            aliases=list(plan.args.aliases),
            detach=plan.args.detach,
            remove=plan.args.remove,
            ports=[p.to_cni() for p in plan.ports],
        )
        self.guard = SignalGuard(on_forwarded=self._on_forwarded)
        self.stopper: threading.Timer | None = None  # kills the workload after the grace time
        self.started = False  # set once there may be something to tear down
        # Set once setup has recorded everything: from then on the record's file, which
        # `network connect` and `disconnect` change, says what to tear down.
        self.set_up = False
        self.early_teardown: EarlyTeardown | None = None
        # Which engine the sandbox is on, asked while the infra starts (see _learn_engine).
        self.engine_asked = threading.Thread(target=self._learn_engine, daemon=True)
        args = plan.args
        pooled = not (args.hostname or args.domainname) and plan.infra_image == PAUSE_IMAGE
        size = plan.settings.infra_pool if pooled else 0
        self.pool = Pool(docker, store.state_dir, plan.infra_image, size)

    def run(self) -> Outcome:
        self.guard.install()
        code: int = ExitCode.CNIRUN_ERROR
        error: CnirunError | None = None
        failures: list[str] = []
        keep = False
        try:
            infra = self._setup()
            code = self._run_workload(infra)
            keep = self._lives_on(code)
            if keep:  # its peers learn its workload's short ID
                names.tell_peers(self.docker, self.store, self.record)
        except Interrupted as e:
            code = 128 + e.signum
        except CnirunError as e:
            error, code = e, e.exit_code
        finally:
            self.guard.enter(Mode.TEARDOWN)
            if self.started and not keep:
                early = self.early_teardown
                if early is not None and early.done:
                    failures = early.failures
                else:
                    failures = teardown(
                        self.record,
                        self.store,
                        self.docker,
                        True,
                        self._signal_count,
                        reread=self.set_up,
                    )
            self.pool.wait()  # the next run's infra, made while this one's workload ran
            self.guard.restore(ignore=True)  # exiting now: a late signal must not change the code
        return Outcome(code, error, self.record.id, failures)

    def _signal_count(self) -> int:
        return len(self.guard.signals)

    def _save(self) -> None:
        self.store.save(self.record)

    def _learn_engine(self) -> None:
        """Record the engine's ID: a cnirun pointed at another engine then leaves this
        sandbox alone instead of judging it by containers it cannot see."""
        try:
            self.record.engine_id = self.docker.engine_id()
        except CnirunError as e:  # the next request says what is wrong with Docker
            log.debug("cannot ask the engine its ID: %s", e)

    def _lives_on(self, code: int) -> bool:
        """Whether the sandbox outlives this run: `-d` started its workload, or a foreground
        workload still lives after its docker CLI exited (detached with the detach keys, or
        restarted by its restart policy). Such a sandbox is detached from now on: it lives
        while its workload container does. (Under --sig-proxy=false the docker CLI ignores
        SIGTERM and waits on, and so does cnirun.)"""
        args = self.plan.args
        if args.detach:
            return code == 0
        restarts = args.restart in ("always", "unless-stopped") or (
            args.restart == "on-failure" and code != 0
        )
        if not (args.interactive or restarts):
            return False
        if self.early_teardown is not None and self.early_teardown.done:
            return False
        try:
            found = self.docker.containers(self.plan.sandbox_id, ROLE_WORKLOAD)
            # The engine may not have marked an exited workload as such yet: ask the kernel.
            pid = self.docker.pid(found[0]["Id"]) if found and not restarts else None
        except CnirunError as e:
            log.debug("cannot tell whether the workload still lives: %s", e)
            return False
        if not found or not (restarts or (pid is not None and process_runs(pid))):
            return False
        log.debug("the workload lives on: keeping its sandbox, now detached")
        self.record.detach = True
        with self.store.lock(self.record.id) as recorded:
            if recorded:  # as `network connect` and `disconnect` may have left it
                current = self.store.load(self.record.id)
                current.detach = True
                self.store.save(current)
        return True

    def _setup(self) -> Infra:
        plan, record, args = self.plan, self.record, self.plan.args
        # First contact with Docker: if it is unreachable, nothing has been created yet.
        # A missing --infra-image is pulled here (per --pull, shown on display): still nothing made.
        self.docker.ensure_infra_image(plan.infra_image, args.pull, self.display)
        registry.reconcile(self.docker, self.store)  # cheap: only ended detached sandboxes
        self.engine_asked.start()
        # Signals wait until the infra's ID is recorded: a pooled infra must not change hands
        # unrecorded, and a create request in flight would race the remove (the engine may
        # not know the name yet when it comes). Then they stop the run.
        self.guard.enter(Mode.DEFER)
        # A started infra an earlier run left ready, if any: this sandbox takes its ID.
        claimed = self.pool.claim(tuple(record.plugin_dirs)) if self.pool.size else None
        if claimed is not None:
            self._become(claimed[0])
        self.started = True
        self._save()
        owners.claim(record.id, self.store.state_dir, record.plugin_dirs)
        fault_point("record")
        if claimed is not None:
            infra = claimed[1]
            self._record_infra(infra.id)
        else:
            infra = self.docker.create_infra(
                InfraSpec(
                    sandbox_id=plan.sandbox_id,
                    image=plan.infra_image,
                    hostname=args.hostname,
                    domainname=args.domainname,
                    labels={LABEL_STATE_DIR: self.store.state_dir},
                ),
                created=self._record_infra,
            )
        self.guard.enter(Mode.ABORT)
        self.guard.checkpoint()
        fault_point("infra")
        record.infra_id, record.hostname = infra.id, infra.hostname
        record.infra_pid, record.infra_start = infra.pid, process_start(infra.pid)
        record.netns_path = netns.netns_path(record.netns_name)
        self._save()
        netns.hold_netns(f"/proc/{infra.pid}/ns/net", record.netns_name)
        attachments = [
            Attachment(
                network.net,
                RuntimeConf(
                    container_id=record.cni_container_id,
                    netns=record.netns_path,
                    ifname=network.ifname,
                    cni_args=dnsname.cni_args(
                        network.net, args.cni_args, args.name or infra.hostname
                    ),
                    capability_args=network.capability_args,
                ),
            )
            for network in plan.networks
        ]
        results = add_all(
            plan.cni, attachments, self.guard, self._record_attachment, self._record_result
        )
        self.engine_asked.join()
        self._save()
        hosts = _write_etc_files(self.store.files_dir(record.id), infra, results, args)
        names.write_base(self.store, record, hosts)
        self.set_up = True
        names.tell_peers(self.docker, self.store, self.record)
        return infra

    def _become(self, sandbox_id: str) -> None:
        """Take the ID of the pooled infra's sandbox (before anything is recorded)."""
        self.plan = self.plan._replace(sandbox_id=sandbox_id)
        self.record.id = sandbox_id
        self.record.infra_name = infra_name(sandbox_id)
        self.record.netns_name = f"cnirun-{sandbox_id}"

    def _record_infra(self, container_id: str) -> None:
        self.record.infra_id = container_id
        self._save()

    def _record_attachment(self, attachment: Attachment) -> None:
        self.record.attachments.append(AttachmentRecord.of(*attachment))
        self._save()

    def _record_result(self, attachment: Attachment, result: Result) -> None:
        self.record.results[attachment.net.name] = result.to_json()

    def _run_workload(self, infra: Infra) -> int:
        args = self.plan.args
        files = {
            target: os.path.join(self.store.files_dir(self.record.id), name)
            for name, target in etcfiles.ETC_FILES.items()
            if target not in args.mount_targets  # the user's own mount wins, as over Docker's
        }
        for source in files.values():
            etcfiles.check_mount_source(source)
        argv = workload.run_argv(
            infra_id=infra.id,
            sandbox_id=self.plan.sandbox_id,
            files=files,
            read_only=args.read_only,
            flags=args.workload_flags,
            image=args.image,
            command=args.command,
        )
        log.debug("docker: %s", " ".join(argv))
        self.guard.enter(Mode.FORWARD)
        self.guard.checkpoint()  # a signal slipped in between setup and here
        launched = time.time()
        if not args.detach and args.restart == "no":  # a restarting workload needs its network
            self.early_teardown = EarlyTeardown(
                self.record, self.store, self.docker, self._signal_count,
                on_died=self.pool.fill_in_background,
            )  # fmt: skip
            self.early_teardown.start()
        environ = self.docker.endpoint.cli_environ(self.plan.settings.environ)
        try:
            child = subprocess.Popen(argv, env=environ)
            self.guard.set_child(child)
            if self.early_teardown is None:  # else once the workload died: see EarlyTeardown
                self.pool.fill_in_background()
            status = child.wait()
            code = 128 - status if status < 0 else status
        finally:
            self.guard.enter(Mode.TEARDOWN)
            if self.early_teardown is not None:
                self.early_teardown.stop()
        if self.stopper is not None:  # and let a kill in flight finish: it shares our client
            self.stopper.cancel()
            self.stopper.join()
        if self.guard.signals and not args.detach and args.sig_proxy:
            self._stop_workload_after_signal(launched)  # the CLI is gone: so must be its container
        return code

    def _on_forwarded(self, signum: int) -> None:
        """After SIGTERM/SIGHUP reached the docker CLI, arm the kill timer."""
        # Under --sig-proxy=false the workload never got the signal: Docker leaves it running.
        if signum != signal.SIGINT and self.stopper is None and self.plan.args.sig_proxy:
            # The main thread sits in waitpid, which a handler cannot shorten: use a timer.
            grace = self.plan.settings.stop_timeout
            self.stopper = threading.Timer(grace, self._kill_after_grace)
            self.stopper.daemon = True
            self.stopper.start()

    def _kill_after_grace(self) -> None:
        log.debug("workload did not stop in %ss; killing it", self.plan.settings.stop_timeout)
        try:
            self._stop_workload()
        except CnirunError as e:
            log.debug("cannot kill the workload: %s", e)

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
            log.warning("cannot stop the workload: %s", e)

    def _stop_workload(self) -> None:
        for container in self.docker.containers(self.plan.sandbox_id, ROLE_WORKLOAD):
            state = container.get("State")
            if state == "running":
                self.docker.kill(container["Id"])
            elif state == "created":
                # The CLI was stopped between create and start: nothing will ever start it.
                self.docker.remove(container["Id"])


def _write_etc_files(directory: str, infra: Infra, results: list[Result], args: RunArgs) -> str:
    """Write the workload's /etc/hosts and /etc/resolv.conf into the sandbox's own dir;
    return the hosts text."""
    addresses = [cidr for result in results for cidr in result.addresses()]
    gateways = [gw for result in results for gw in result.gateways()]
    extra_hosts = etcfiles.resolve_host_gateway(args.add_hosts, gateways)
    own = [args.name or "", *args.aliases]
    hosts = etcfiles.hosts(infra.hostname, infra.domainname, addresses, extra_hosts, own)
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
    return hosts

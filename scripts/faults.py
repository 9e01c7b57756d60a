#!/usr/bin/env python3
"""A bounded fault campaign against cnirun's sandboxes (root; the second half of `make stress`).

In a private temp world (its own networks, subnets, bridges, plugin, cache and state dirs, as
scripts/stress.py makes them), for about FAULT_SECONDS (default 240) it alternates:

- signal runs: `cnirun --rm -p 127.0.0.1:P:80 --network a --network b busybox sleep 3` (a with
  portmap) sent SIGKILL, SIGTERM, SIGINT or SIGHUP after a uniform 0-1.5 s, bucketed by delay;
- targeted faults: kill -9 after each plugin of a bridge, portmap, firewall, tuning chain and at
  each CNIRUN_TEST_KILL_AT point; a DEL that fails N times (gc retries); a DEL that hangs past
  --cni-timeout; the netns holder unmounted or deleted mid-run; the record deleted or truncated
  mid-run; the state dir made read-only mid-run; gc in each of two state dirs while the other's
  run tears down.

After every case (after `cnirun gc` where the case killed cnirun or cnirun asked for gc) nothing
of it may be left: containers, netns holders, owner files, veths, host-local reservations, CNI
cache files, records, iptables lines in nat, filter and mangle naming its address or CNI
container ID. Also no traceback in any output, no exit status outside the expected ones.
FAULT_RUNS caps the signal runs; FAULT_REPORT gets the figures as JSON. Exits 1 on any leak,
traceback or unexpected exit status.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stress  # noqa: E402
from stress import (  # noqa: E402
    HOST_ENGINE,
    IMAGE,
    IPAM_DIR,
    LABEL_STATE_DIR,
    LABEL_TEST,
    PLUGIN_DIR,
    REPO,
    SANDBOX_ID_RE,
    SCRUBBED,
    TRACEBACK,
    Outcome,
    claim_tag,
    free_subnet,
    prefix_of,
    purge_host,
    run,
)

from tests import leakcheck  # noqa: E402

FAKE_PLUGIN = REPO / "tests" / "fake_plugins" / "fake"
OWNERS_DIR = Path("/run/cnirun/owners")
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
BUCKET = 0.25  # seconds per delay bucket
MAX_DELAY = 1.5
RUN_TIMEOUT = 90.0
WAIT_TIMEOUT = 30.0
GRACE = "1"  # CNIRUN_STOP_TIMEOUT: a workload's seconds between SIGTERM and SIGKILL
CNI_TIMEOUT = "2"  # --cni-timeout of the hanging-DEL case
ID_RE = re.compile(r"^([0-9a-f]{32})\.json")


@dataclass
class Row:
    runs: int = 0
    leaks: int = 0
    unexpected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class Report:
    def __init__(self) -> None:
        self.signals: dict[str, dict[str, Row]] = {
            s.name: {bucket_name(i): Row() for i in range(int(MAX_DELAY / BUCKET))} for s in SIGNALS
        }
        self.cases: dict[str, Row] = {}
        self.leaks: list[str] = []
        self.unexpected: list[str] = []
        self.tracebacks: list[str] = []
        self.startup_interrupts = 0

    def note(self, what: list[str], line: str) -> None:
        what.append(line)
        print(f"faults: {line}", file=sys.stderr, flush=True)


def bucket_name(i: int) -> str:
    return f"{i * BUCKET:.2f}-{(i + 1) * BUCKET:.2f}"


REPORT = Report()


@dataclass
class Live:
    """A cnirun process of the campaign, with the sandbox IDs seen while it ran."""

    proc: subprocess.Popen[str]
    out: Any
    err: Any
    argv: list[str]
    start: float
    ids: set[str]
    watcher: threading.Thread
    stop: threading.Event


class Campaign:
    """The private world: networks a, b (and c, the fault cases' own), dirs, plugins."""

    def __init__(self) -> None:
        self.claims: list[socket.socket] = []
        self.tag = claim_tag(self.claims)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"cnirun-faults-{self.tag}-", dir="/tmp"))
        self.cache_dir = self.tmp / "cni-cache"
        self.state_dir = self.tmp / "state"
        self.other_state = self.tmp / "state-2"
        self.plugin_dir = self.tmp / "plugins"
        self.fake_log = self.tmp / "fake.log"
        self.sidecar = self.plugin_dir / "fakeside.fake.json"
        for d in (self.cache_dir, self.plugin_dir):
            d.mkdir()
        for name in ("fake", "fakeside"):
            shutil.copy(FAKE_PLUGIN, self.plugin_dir / name)
            (self.plugin_dir / name).chmod(0o755)
        self.sidecar.write_text("{}")
        self.subnets = [free_subnet(self.claims) for _ in range(3)]
        self.netnames = [f"f{x}{self.tag}" for x in "abc"]
        self.bridges = [f"cf{x}{self.tag}" for x in "abc"]
        self.ids: set[str] = set()  # every sandbox ID seen, for the final purge
        self.main_dir = self.netconf("main", self.conflist(0, portmap=True), self.conflist(1))

    def conflist(
        self, i: int, portmap: bool = False, extra: Sequence[dict[str, Any]] = ()
    ) -> dict[str, Any]:
        plugins: list[dict[str, Any]] = [
            {
                "type": "bridge",
                "bridge": self.bridges[i],
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "subnet": str(self.subnets[i]),
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        plugins += extra
        return {"cniVersion": "1.0.0", "name": self.netnames[i], "plugins": plugins}

    def netconf(self, name: str, *confs: dict[str, Any]) -> Path:
        """A NETCONFPATH dir of these networks (rewritten if it exists)."""
        d = self.tmp / f"net-{name}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        for n, conf in enumerate(confs):
            (d / f"{10 + n}-{conf['name']}.conflist").write_text(json.dumps(conf, indent=2))
        return d

    def env(self, netconf: Path, state: Path | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(
            NETCONFPATH=str(netconf),
            CNI_PATH=f"{self.plugin_dir}:{PLUGIN_DIR}",
            CNIRUN_CACHE_DIR=str(self.cache_dir),
            CNIRUN_STATE_DIR=str(state or self.state_dir),
            CNIRUN_STOP_TIMEOUT=GRACE,
            CNIRUN_INFRA_POOL="0",  # its kill points are each run's own infra's
            DOCKER_HOST=HOST_ENGINE,
            FAKE_LOG=str(self.fake_log),
        )
        env.update(extra)
        return env

    # -- running cnirun -----------------------------------------------------------------------

    def judge(self, case: str, res: Outcome, allowed: Sequence[int]) -> bool:
        """Whether `res` is as expected; tracebacks and other statuses are recorded."""
        ok = True
        cmd = " ".join(res.argv[2:])
        if TRACEBACK in res.err or TRACEBACK in res.out:
            REPORT.note(REPORT.tracebacks, f"{case}: traceback from {cmd}:\n{res.err[-3000:]}")
            ok = False
        if res.rc not in allowed:
            REPORT.note(
                REPORT.unexpected,
                f"{case}: {cmd} exited {res.rc} (expected {list(allowed)}): {res.err[-800:]}",
            )
            ok = False
        return ok

    def cnirun(
        self, case: str, args: Sequence[str], env: dict[str, str], allowed: Sequence[int] = (0,)
    ) -> tuple[Outcome, bool]:
        # No IDs are learned from these (gc's) outputs: they may name other people's sandboxes,
        # which neither the leak count nor the purge may touch.
        res = run([sys.executable, "-m", "cnirun", *args], env, RUN_TIMEOUT, cwd=REPO)
        return res, self.judge(case, res, allowed)

    def start(self, args: Sequence[str], env: dict[str, str]) -> Live:
        argv = [sys.executable, "-m", "cnirun", *args]
        # Files, not pipes: the docker CLI child outlives a killed cnirun and keeps them open.
        out = tempfile.TemporaryFile("w+")
        err = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        ids: set[str] = set()
        stop = threading.Event()
        records = Path(env["CNIRUN_STATE_DIR"]) / "sandboxes"

        def watch() -> None:  # the records appear before anything else of a sandbox
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    for name in os.listdir(records):
                        m = ID_RE.match(name)
                        if m:
                            ids.add(m.group(1))
                stop.wait(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        return Live(proc, out, err, argv, time.monotonic(), ids, watcher, stop)

    def finish(self, live: Live, timeout: float = RUN_TIMEOUT) -> Outcome:
        try:
            rc: int | None = live.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(live.proc.pid, signal.SIGKILL)
            live.proc.wait()
            rc = None
        live.stop.set()
        live.watcher.join()
        live.out.seek(0)
        live.err.seek(0)
        res = Outcome(
            live.argv, rc, live.out.read(), live.err.read(), time.monotonic() - live.start
        )
        live.out.close()
        live.err.close()
        live.ids |= set(SANDBOX_ID_RE.findall(res.out + res.err))
        self.ids |= live.ids
        return res

    def docker_ids(self, *filters: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env["DOCKER_HOST"] = HOST_ENGINE
        argv = ["docker", "ps", "-aq", "--no-trunc"]
        for f in filters:
            argv += ["--filter", f]
        return run(argv, env, 60).out.split()

    def running_workload(self, ids: set[str]) -> bool:
        """Whether the (only) sandbox of `ids` has its workload running."""
        return len(ids) == 1 and bool(
            self.docker_ids(
                f"label=io.cnirun.sandbox={next(iter(ids))}",
                "label=io.cnirun.role=workload",
                "status=running",
            )
        )

    def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        REPORT.note(REPORT.unexpected, f"timed out waiting for {what}")
        return False

    def wait_workloads_gone(self) -> None:
        """After a kill -9 the docker CLI child lives on until its workload ends: wait."""
        self.wait_for(
            lambda: not self.docker_ids(f"label={LABEL_TEST}={self.tag}", "status=running"),
            "the workload of a killed cnirun to end",
        )

    # -- the leak counter ---------------------------------------------------------------------

    def leaks(self, ids: set[str], states: Sequence[Path]) -> list[str]:
        cids = [f"cnirun-{i}" for i in sorted(ids)]
        found: list[str] = []
        for state in states:
            for cid in self.docker_ids(f"label={LABEL_STATE_DIR}={state}"):
                found.append(f"container {cid[:12]} of state dir {state} left")
            records = state / "sandboxes"
            if records.is_dir():
                found += [f"record {p} left" for p in sorted(records.iterdir())]
            markers = state / "pool"  # the infra pool's (cases that turn it on gc --all)
            if markers.is_dir():
                found += [f"infra pool marker {p} left" for p in sorted(markers.iterdir())]
        found += [
            f"container {c[:12]} left" for c in self.docker_ids(f"label={LABEL_TEST}={self.tag}")
        ]
        found += leakcheck.netns_leaks([], cids)
        found += [
            f"owner file {OWNERS_DIR}/{i}.json left"
            for i in sorted(ids)
            if (OWNERS_DIR / f"{i}.json").exists()
        ]
        results = self.cache_dir / "results"
        if results.is_dir():
            found += [f"CNI cache file {p} left" for p in sorted(results.iterdir())]
        found += leakcheck.cache_leaks(cids, [leakcheck.DEFAULT_CACHE_DIR])
        found += leakcheck.reservation_leaks(cids, [leakcheck.DEFAULT_IPAM_DIR])
        for name in self.netnames:
            ipam = IPAM_DIR / name
            if ipam.is_dir():
                found += [
                    f"host-local reservation {p} left"
                    for p in sorted(ipam.iterdir())
                    if p.name != "lock" and not p.name.startswith("last_reserved_ip")
                ]
        found += leakcheck.bridge_port_leaks(self.bridges)
        needles = [*map(str, self.subnets), *map(prefix_of, self.subnets), *cids]
        found += leakcheck.iptables_leaks(needles, tables=("nat", "filter", "mangle"))
        found += [f"plugin process {pid} left: {cmd}" for pid, cmd in self.plugin_processes()]
        return list(dict.fromkeys(found))

    def del_times(self, ids: set[str]) -> list[str]:
        """When the fake plugin's DELs for these sandboxes began and (log_end) ended."""
        entries = []
        with contextlib.suppress(OSError):
            entries = [json.loads(ln) for ln in self.fake_log.read_text().splitlines()]
        pids = {
            e["pid"]
            for e in entries
            if "env" in e
            and e["env"].get("CNI_COMMAND") == "DEL"
            and any(i in (e["env"].get("CNI_CONTAINERID") or "") for i in ids)
        }
        return [
            f"{'end' if 'end' in e else 'start'} {e['time']:.3f}"
            for e in entries
            if e.get("pid") in pids
        ]

    def plugin_processes(self) -> list[tuple[int, str]]:
        procs = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                if str(self.plugin_dir) in cmd:
                    procs.append((int(pid), cmd.strip()))
        return procs

    def settle(self, case: str, ids: set[str], states: Sequence[Path] | None = None) -> int:
        """Count the case's leaks (0 is the verdict wanted); then clean up whatever there was,
        so that the next case starts from nothing."""
        states = list(states or [self.state_dir])
        found = self.leaks(ids, states)
        for line in found:
            REPORT.note(REPORT.leaks, f"{case}: {line}")
        if found:
            for state in states:
                for _ in range(2):
                    self.sidecar.write_text("{}")
                    for flag in self.tmp.glob("flag-*"):
                        flag.unlink()
                    self.cnirun(
                        f"{case} (cleanup)", ["gc"], self.env(self.main_dir, state), (0, 125)
                    )
            for cid in self.docker_ids(f"label={LABEL_TEST}={self.tag}"):
                run(["docker", "rm", "-f", cid], self.env(self.main_dir), 60)
            for pid, _ in self.plugin_processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.purge(ids)
            for state in states:
                shutil.rmtree(state / "sandboxes", ignore_errors=True)
                shutil.rmtree(state / "pool", ignore_errors=True)
            shutil.rmtree(self.cache_dir / "results", ignore_errors=True)
        return len(found)

    def purge(self, ids: set[str]) -> None:
        purge_host(sorted(ids), self.subnets, self.bridges, self.netnames)

    def release(self) -> None:
        self.purge(self.ids)
        shutil.rmtree(self.tmp, ignore_errors=True)
        for held in self.claims:
            held.close()

    def record(self, case: str, leaks: int, ok: bool, res: Outcome | None = None) -> None:
        row = REPORT.cases.setdefault(case, Row())
        row.runs += 1
        row.leaks += leaks
        row.unexpected += 0 if ok else 1
        if res is not None:
            row.statuses[str(res.rc)] = row.statuses.get(str(res.rc), 0) + 1
        verdict = "ok" if leaks == 0 and ok else f"{leaks} leaks, {'ok' if ok else 'UNEXPECTED'}"
        print(f"faults: {case}: {verdict}", flush=True)

    # -- cases --------------------------------------------------------------------------------

    def workload_args(self, *cmd: str, port: bool = True) -> list[str]:
        args = ["--rm", "--label", f"{LABEL_TEST}={self.tag}"]
        if port:
            args += ["-p", f"127.0.0.1:{free_port()}:80"]
        return [*args, "--network", self.netnames[0], "--network", self.netnames[1], IMAGE, *cmd]

    def signal_run(self, rng: random.Random) -> None:
        sig = rng.choice(SIGNALS)
        delay = rng.uniform(0, MAX_DELAY)
        bucket = bucket_name(min(int(delay / BUCKET), int(MAX_DELAY / BUCKET) - 1))
        live = self.start(self.workload_args("sleep", "3"), self.env(self.main_dir))
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            live.proc.send_signal(sig)  # cnirun alone, as `kill` from another terminal
        res = self.finish(live)
        case = f"{sig.name} after {delay:.2f} s"
        if sig == signal.SIGKILL:
            allowed: tuple[int, ...] = (-signal.SIGKILL,)
        else:
            # 128+N: cnirun stopped on the signal; -N: it came before the handlers were set up;
            # 0: SIGINT reached sleep (PID 1, which ignores it) that then ended; 137: the
            # workload was killed after CNIRUN_STOP_TIMEOUT.
            allowed = (128 + sig, -sig, 0, 137)
        startup = sig == signal.SIGINT and interpreter_startup(res)
        if startup:  # not cnirun's: none of its code had run (its leaks are still counted)
            REPORT.startup_interrupts += 1
            print(f"faults: {case}: SIGINT in the interpreter's own start-up", flush=True)
        ok = startup or self.judge(case, res, allowed)
        if sig == signal.SIGKILL:
            self.wait_workloads_gone()
            _, gc_ok = self.cnirun(f"{case}: gc", ["gc"], self.env(self.main_dir))
            ok = ok and gc_ok
        leaks = self.settle(case, live.ids)
        row = REPORT.signals[sig.name][bucket]
        row.runs += 1
        row.leaks += leaks
        row.unexpected += 0 if ok else 1
        row.statuses[str(res.rc)] = row.statuses.get(str(res.rc), 0) + 1
        if leaks or not ok:
            print(f"faults: {case}: {leaks} leaks, rc {res.rc}", flush=True)

    def case_chain_kill(self, after: int) -> None:
        """kill -9 (by the fake plugin's kill_parent) after plugin `after` of the chain."""
        case = f"kill -9 after chain plugin {after}/4"
        chain: list[dict[str, Any]] = [
            {"type": "firewall"},
            {"type": "tuning"},
        ]
        conf = self.conflist(2, portmap=True, extra=chain)
        conf["plugins"].insert(after, {"type": "fake", "fake": {"ADD": {"kill_parent": True}}})
        netconf = self.netconf("chain", conf)
        args = ["--rm", "--label", f"{LABEL_TEST}={self.tag}", "-p", f"127.0.0.1:{free_port()}:80"]
        args += ["--network", self.netnames[2], IMAGE, "true"]
        live = self.start(args, self.env(netconf))
        res = self.finish(live)
        ok = self.judge(case, res, (-signal.SIGKILL,))
        gc, gc_ok = self.cnirun(f"{case}: gc", ["gc"], self.env(netconf))
        self.record(case, self.settle(case, live.ids), ok and gc_ok, res)

    def case_kill_at(self, point: str) -> None:
        case = f"CNIRUN_TEST_KILL_AT={point}"
        env = self.env(self.main_dir, CNIRUN_TEST_KILL_AT=point)
        live = self.start(self.workload_args("true"), env)
        res = self.finish(live)
        ok = self.judge(case, res, (-signal.SIGKILL,))
        self.wait_workloads_gone()
        _, gc_ok = self.cnirun(f"{case}: gc", ["gc"], self.env(self.main_dir))
        self.record(case, self.settle(case, live.ids), ok and gc_ok, res)

    def case_pool_kill(self, point: str) -> None:
        """kill -9 in the infra pool (on for this case): right after claiming a member, or
        while making the next one (after the workload's die event, beside the DELs); then
        `gc --all` must leave nothing, the pool's markers included."""
        case = f"infra pool, CNIRUN_TEST_KILL_AT={point}"
        pooled = dict(self.env(self.main_dir), CNIRUN_INFRA_POOL="1")
        _, filled = self.cnirun(f"{case}: a run that fills the pool", self.workload_args("true"),
                                pooled)  # fmt: skip
        live = self.start(self.workload_args("true"), dict(pooled, CNIRUN_TEST_KILL_AT=point))
        res = self.finish(live)
        ok = filled and self.judge(case, res, (-signal.SIGKILL,))
        self.wait_workloads_gone()
        _, gc_ok = self.cnirun(f"{case}: gc --all", ["gc", "--all"], pooled)
        self.record(case, self.settle(case, live.ids), ok and gc_ok, res)

    def case_del_fails(self, rng: random.Random) -> None:
        times = rng.randint(1, 3)
        case = "DEL fails N (1-3) times, then gc"
        flag = self.tmp / f"flag-{secrets.token_hex(4)}"
        flag.touch()
        conf = self.conflist(
            2, extra=[{"type": "fake", "fake": {"DEL": {"fail_while": str(flag)}}}]
        )
        env = self.env(self.netconf("del-fails", conf))
        args = ["--rm", "--label", f"{LABEL_TEST}={self.tag}", "--network", self.netnames[2]]
        live = self.start([*args, IMAGE, "true"], env)
        res = self.finish(live)
        ok = self.judge(case, res, (125,))
        if "cnirun gc" not in res.err:
            REPORT.note(
                REPORT.unexpected,
                f"{case}: the run does not say to run `cnirun gc`: {res.err[-500:]}",
            )
            ok = False
        for _ in range(times - 1):  # the run's own DEL was the first failure
            _, gc_ok = self.cnirun(f"{case}: gc while failing", ["gc"], env, (125,))
            ok = ok and gc_ok
        flag.unlink()
        _, gc_ok = self.cnirun(f"{case}: gc", ["gc"], env)
        self.record(case, self.settle(case, live.ids), ok and gc_ok, res)

    def case_del_hangs(self) -> None:
        case = f"DEL hangs past --cni-timeout {CNI_TIMEOUT}, then gc"
        self.sidecar.write_text(json.dumps({"DEL": {"sleep": 60}}))
        env = self.env(self.netconf("del-hangs", self.conflist(2, extra=[{"type": "fakeside"}])))
        args = ["--rm", "--cni-timeout", CNI_TIMEOUT, "--label", f"{LABEL_TEST}={self.tag}"]
        live = self.start([*args, "--network", self.netnames[2], IMAGE, "true"], env)
        res = self.finish(live)
        ok = self.judge(case, res, (125,))
        self.sidecar.write_text("{}")  # the plugin is well again
        _, gc_ok = self.cnirun(f"{case}: gc", ["gc"], env)
        self.record(case, self.settle(case, live.ids), ok and gc_ok, res)

    def mid_run(
        self, case: str, fault: Callable[[str, Path], None], allowed: Sequence[int], gc: bool
    ) -> None:
        """`cnirun --rm ... sleep 3` with `fault(sandbox id, record)` done once it runs."""
        env = self.env(self.main_dir)
        live = self.start(self.workload_args("sleep", "3"), env)
        ok = self.wait_for(lambda: self.running_workload(live.ids), f"{case}: the workload")
        if ok:
            [sid] = sorted(live.ids)
            fault(sid, self.state_dir / "sandboxes" / f"{sid}.json")
        res = self.finish(live)
        ok = self.judge(case, res, allowed) and ok
        if gc:
            _, gc_ok = self.cnirun(f"{case}: gc", ["gc"], env)
            ok = ok and gc_ok
        self.record(case, self.settle(case, live.ids), ok, res)

    def case_holder_umount(self) -> None:
        def fault(sid: str, _: Path) -> None:
            run(["umount", f"/run/netns/cnirun-{sid}"], dict(os.environ), 30)

        self.mid_run("netns holder unmounted mid-run", fault, (0,), gc=False)

    def case_holder_delete(self) -> None:
        def fault(sid: str, _: Path) -> None:
            run(["ip", "netns", "delete", f"cnirun-{sid}"], dict(os.environ), 30)

        self.mid_run("netns holder deleted (ip netns delete) mid-run", fault, (0,), gc=False)

    def case_record_deleted(self) -> None:
        self.mid_run("record deleted mid-run", lambda _, rec: rec.unlink(), (0,), gc=False)

    def case_record_truncated(self) -> None:
        def fault(_: str, rec: Path) -> None:
            os.truncate(rec, rec.stat().st_size // 2)

        self.mid_run("record truncated mid-run", fault, (0,), gc=False)

    def case_read_only(self) -> None:
        case = "state dir read-only mid-run, then rw and gc"
        state = self.tmp / "state-ro"
        state.mkdir(exist_ok=True)
        mounted = run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(state)],
            dict(os.environ),
            30,
        )
        if not mounted.ok:
            REPORT.note(REPORT.unexpected, f"{case}: mount failed: {mounted.brief()}")
            return
        try:
            env = self.env(self.main_dir, state)
            live = self.start(self.workload_args("sleep", "3"), env)
            ok = self.wait_for(lambda: self.running_workload(live.ids), f"{case}: the workload")
            run(["mount", "-o", "remount,ro", str(state)], dict(os.environ), 30)
            res = self.finish(live)
            ok = self.judge(case, res, (125,)) and ok
            run(["mount", "-o", "remount,rw", str(state)], dict(os.environ), 30)
            _, gc_ok = self.cnirun(f"{case}: gc", ["gc"], env)
            self.record(case, self.settle(case, live.ids, [state]), ok and gc_ok, res)
        finally:
            run(["umount", "-l", str(state)], dict(os.environ), 30)

    def case_two_state_dirs(self) -> None:
        """A run in each state dir, its DEL slow; gc in each dir while the other tears down."""
        case = "gc in each of two state dirs during the other's teardown"
        fake = {"DEL": {"sleep": 1.5, "log_end": True}}
        conf = self.conflist(2, extra=[{"type": "fake", "fake": fake}])
        netconf = self.netconf("two", conf)
        states = [self.state_dir, self.other_state]
        envs = [self.env(netconf, s) for s in states]
        args = ["--rm", "--label", f"{LABEL_TEST}={self.tag}", "--network", self.netnames[2]]
        lives = [self.start([*args, IMAGE, "sleep", "1"], e) for e in envs]
        ok = True
        gcs = 0
        while any(lv.proc.poll() is None for lv in lives) and gcs < 40:
            for n, env in enumerate(envs):
                began = time.time()
                gc, gc_ok = self.cnirun(f"{case}: gc", ["gc"], env)
                gcs += 1
                ok = ok and gc_ok
                theirs = lives[1 - n].ids
                if any(i in gc.out + gc.err for i in theirs):
                    REPORT.note(
                        REPORT.unexpected,
                        f"{case}: gc of {states[n]} (from {began:.3f} to {time.time():.3f}) "
                        f"touched the other's sandbox: {gc.out.strip()}; the fake DEL's calls: "
                        f"{self.del_times(theirs)}; the other run still running: "
                        f"{lives[1 - n].proc.poll() is None}",
                    )
                    ok = False
        results = [self.finish(lv) for lv in lives]
        for res in results:
            ok = self.judge(case, res, (0,)) and ok
        ids = set().union(*(lv.ids for lv in lives))
        self.record(case, self.settle(case, ids, states), ok, results[0])


def interpreter_startup(res: Outcome) -> bool:
    """A SIGINT that reached the Python interpreter while it was still importing its own
    `site` module, before the first line of cnirun ran: CPython prints "Fatal Python error:
    init_import_site" and a KeyboardInterrupt traceback (frozen frames, or the code of a .pth
    file of site-packages, never cnirun's), and exits 1.
    Nothing of cnirun's can catch it (cnirun.__main__ turns a later one into exit 130)."""
    frames = [ln for ln in res.err.splitlines() if ln.lstrip().startswith('File "')]
    return (
        res.rc == 1
        and "Fatal Python error: init_import_site" in res.err
        and res.err.rstrip().endswith("KeyboardInterrupt")
        and not any(str(REPO / "cnirun") in ln for ln in frames)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the table, main -------------------------------------------------------------------------------


def figures(seconds: float, camp: Campaign) -> dict[str, Any]:
    def row(r: Row) -> dict[str, Any]:
        return {
            "runs": r.runs,
            "leaks": r.leaks,
            "unexpected": r.unexpected,
            "statuses": r.statuses,
        }

    return {
        "seconds": round(seconds, 1),
        "subnets": [str(s) for s in camp.subnets],
        "signals": {s: {b: row(r) for b, r in rows.items()} for s, rows in REPORT.signals.items()},
        "cases": {c: row(r) for c, r in REPORT.cases.items()},
        "leaks": REPORT.leaks,
        "unexpected_exits": REPORT.unexpected,
        "tracebacks": REPORT.tracebacks,
        "sigint_in_interpreter_startup": REPORT.startup_interrupts,
    }


def print_table(report: dict[str, Any]) -> None:
    buckets = list(next(iter(report["signals"].values())))
    print(f"\nfaults: {report['seconds']} s; signal runs (runs/leaks) by delay bucket (s)")
    print(f"{'signal':8}" + "".join(f"{b:>11}" for b in buckets) + f"{'total':>11}")
    for sig, rows in report["signals"].items():
        cells = [f"{r['runs']}/{r['leaks']}" for r in rows.values()]
        runs = sum(r["runs"] for r in rows.values())
        leaks = sum(r["leaks"] for r in rows.values())
        print(f"{sig:8}" + "".join(f"{c:>11}" for c in cells) + f"{f'{runs}/{leaks}':>11}")
    statuses: dict[str, dict[str, int]] = {}
    for sig, rows in report["signals"].items():
        for r in rows.values():
            for rc, n in r["statuses"].items():
                statuses.setdefault(sig, {})[rc] = statuses.get(sig, {}).get(rc, 0) + n
    for sig, counts in statuses.items():
        print(
            f"    {sig} exit statuses: "
            + ", ".join(f"{rc}: {n}" for rc, n in sorted(counts.items()))
        )
    print(
        "    SIGINT runs that hit the interpreter's own start-up (exit 1, before any cnirun "
        f"code; leak-checked, not failures): {report['sigint_in_interpreter_startup']}"
    )
    print(f"\n{'targeted fault case':62} {'runs':>5} {'leaks':>6} {'unexp':>6}")
    for case, r in report["cases"].items():
        print(f"{case:62} {r['runs']:>5} {r['leaks']:>6} {r['unexpected']:>6}")
    for key in ("leaks", "unexpected_exits", "tracebacks"):
        print(f"{key.replace('_', ' '):62} {len(report[key]):>5}")
        for line in report[key][:20]:
            print(f"    {line[:1500]}")


def main() -> int:
    if os.geteuid() != 0:
        print("faults: must run as root", file=sys.stderr)
        return 2
    seconds = float(os.environ.get("FAULT_SECONDS", "240"))
    max_runs = int(os.environ.get("FAULT_RUNS", "0"))  # 0: as many as the time allows
    seed = int(os.environ.get("FAULT_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    camp = Campaign()
    print(
        f"faults: seed {seed} (FAULT_SEED), tag {camp.tag}, "
        f"subnets {' '.join(map(str, camp.subnets))}, {seconds:.0f} s, dir {camp.tmp}",
        flush=True,
    )
    targeted: list[Callable[[], None]] = [
        *(lambda k=k: camp.case_chain_kill(k) for k in range(1, 5)),
        *(lambda p=p: camp.case_kill_at(p) for p in stress.KILL_POINTS),
        *(lambda p=p: camp.case_pool_kill(p) for p in ("pool-claimed", "pool-marked")),
        lambda: camp.case_del_fails(rng),
        camp.case_del_hangs,
        camp.case_holder_umount,
        camp.case_holder_delete,
        camp.case_record_deleted,
        camp.case_record_truncated,
        camp.case_read_only,
        camp.case_two_state_dirs,
    ]
    began = time.monotonic()
    done_cases = 0
    signal_runs = 0
    try:
        while True:
            late = time.monotonic() - began >= seconds
            if late and done_cases >= len(targeted):
                break
            if done_cases < len(targeted) or not late:
                targeted[done_cases % len(targeted)]()
                done_cases += 1
            for _ in range(2):
                if time.monotonic() - began >= seconds or (max_runs and signal_runs >= max_runs):
                    break
                camp.signal_run(rng)
                signal_runs += 1
    except KeyboardInterrupt:
        print("faults: interrupted; cleaning up", file=sys.stderr)
    finally:
        camp.release()
    report = figures(time.monotonic() - began, camp)
    print_table(report)
    out = os.environ.get("FAULT_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    failed = any(report[k] for k in ("leaks", "unexpected_exits", "tracebacks"))
    print(f"faults: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

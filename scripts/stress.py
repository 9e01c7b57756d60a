#!/usr/bin/env python3
"""A bounded chaos test of cnirun's sandboxes (run as root on a host set up by `make setup`).

For STRESS_SECONDS (default 180), 2-3 worker threads per Docker engine (STRESS_ENGINES, a
space-separated list of DOCKER_HOST values; default the host's engine, plus the engines of
scripts/engines.sh that `status` says run) issue random operations on sandboxes of one shared
private state dir: detached runs (some with `--restart always` and a workload that keeps
exiting), docker pause/unpause/restart/stop/start, cnirun stop/start/rm [-f], foreground runs
killed by SIGKILL (some at a CNIRUN_TEST_KILL_AT point), gc and ps. Meanwhile a checker proves
that no live sandbox loses its network: every running workload's eth0 carries the address
`cnirun inspect` recorded. At the end everything is removed, gc must find nothing left to
reclaim, and nothing of the run may remain (containers, records, netns holders, CNI cache,
host-local reservations, veths, iptables lines). Prints a figures table (JSON to STRESS_REPORT
when set); exits 1 on any violation, traceback, unexpected exit status or leftover.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import leakcheck  # noqa: E402

HOST_ENGINE = "unix:///var/run/docker.sock"
PLUGIN_DIR = "/usr/lib/cni"
IPAM_DIR = Path(leakcheck.DEFAULT_IPAM_DIR)
IMAGE = "busybox:latest"
LABEL_TEST = "test.cnirun.tag"
LABEL_STATE_DIR = "io.cnirun.state-dir"
LABEL_SANDBOX = "io.cnirun.sandbox"
SUBNET_POOL = ipaddress.IPv4Network("10.239.0.0/16")
MAX_SANDBOXES = 6  # per engine, alive at once (a 2-core host)
WORKERS_PER_ENGINE = 3  # 2 each when there are several engines (2 cores)
CLI_TIMEOUT = 90.0
DOCKER_TIMEOUT = 60.0
KILL_POINTS = ("record", "infra", "add", "teardown")
TRACEBACK = "Traceback (most recent call last)"
SANDBOX_ID_RE = re.compile(r"\b(?:cnirun-(?:infra-)?)?([0-9a-f]{32})\b")
# Variables of the caller's environment that must not steer the script's cnirun.
SCRUBBED = (
    "NETCONFPATH", "CNI_PATH", "CNI_ARGS", "CAP_ARGS", "CNI_IFNAME", "CNI_COMMAND",
    "CNI_CONTAINERID", "CNI_NETNS", "CNIRUN_CACHE_DIR", "CNIRUN_STATE_DIR", "CNIRUN_DEBUG",
    "CNIRUN_STOP_TIMEOUT", "CNIRUN_INFRA_POOL", "CNIRUN_DEFAULT_NETWORK", "CNIRUN_DEFAULT_BRIDGE",
    "CNIRUN_DEFAULT_SUBNET", "CNIRUN_TEST_KILL_AT", "DOCKER_HOST", "DOCKER_CONTEXT",
)  # fmt: skip


@dataclass
class Outcome:
    argv: list[str]
    rc: int | None  # None: timed out (killed)
    out: str
    err: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def brief(self) -> str:
        text = (self.err.strip() or self.out.strip()).splitlines()
        return f"rc={self.rc}: {text[-1] if text else ''}"[:300]


@dataclass
class Kind:
    count: int = 0
    failures: int = 0
    seconds: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Sandbox:
    name: str
    engine: str
    restart: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    removed: bool = False


class Stats:
    """Every figure the run reports; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: dict[str, Kind] = {}
        self.checks = 0
        self.checks_skipped = 0
        self.violations: list[str] = []
        self.unexpected: list[str] = []
        self.tracebacks: list[str] = []
        self.leftovers: list[str] = []
        self.sandbox_ids: set[str] = set()

    def op(self, kind: str, outcome: Outcome, failed: bool) -> None:
        with self.lock:
            k = self.kinds.setdefault(kind, Kind())
            k.count += 1
            k.seconds.append(outcome.seconds)
            if failed:
                k.failures += 1
                msg = re.sub(r"[0-9a-f]{12,64}|cnirun-stress-\w+-\d+", "<id>", outcome.brief())
                k.errors[msg] = k.errors.get(msg, 0) + 1

    def note(self, what: list[str], line: str) -> None:
        with self.lock:
            what.append(line)
        print(f"stress: {line}", file=sys.stderr, flush=True)


STATS = Stats()


def run(
    argv: Sequence[str],
    env: dict[str, str],
    timeout: float,
    cwd: Path | None = None,
) -> Outcome:
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        rc = None
    return Outcome(list(argv), rc, out, err, time.monotonic() - start)


class World:
    """The run's private dirs, network, names and engines."""

    def __init__(self, engines: list[str], seconds: float) -> None:
        self.engines = engines
        self.seconds = seconds
        self._claims: list[socket.socket] = []
        self.tag = claim_tag(self._claims)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"cnirun-stress-{self.tag}-", dir="/tmp"))
        self.netconf_dir = self.tmp / "net.d"
        self.cache_dir = self.tmp / "cni-cache"
        self.state_dir = self.tmp / "state"
        self.netconf_dir.mkdir()
        self.cache_dir.mkdir()
        self.netname = f"stress{self.tag}"
        self.bridge = f"cst{self.tag}"
        self.subnet = self._subnet()
        self.counter = 0
        self.counter_lock = threading.Lock()
        conf = {
            "cniVersion": "1.0.0",
            "name": self.netname,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "ipam": {
                        "type": "host-local",
                        "subnet": str(self.subnet),
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (self.netconf_dir / f"10-{self.netname}.conflist").write_text(json.dumps(conf, indent=2))

    def _subnet(self) -> ipaddress.IPv4Network:
        return free_subnet(self._claims)

    def name(self) -> str:
        with self.counter_lock:
            self.counter += 1
            return f"cnirun-stress-{self.tag}-{self.counter}"

    def env(self, engine: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(
            NETCONFPATH=str(self.netconf_dir),
            CNI_PATH=PLUGIN_DIR,
            CNIRUN_CACHE_DIR=str(self.cache_dir),
            CNIRUN_STATE_DIR=str(self.state_dir),
            DOCKER_HOST=engine,
        )
        env.update(extra)
        return env

    def cnirun(
        self,
        engine: str,
        kind: str,
        args: Sequence[str],
        allowed: Sequence[int] = (0, 125),
        timeout: float = CLI_TIMEOUT,
        count: bool = True,
    ) -> Outcome:
        """cnirun ARGS on `engine`: tracebacks and unexpected statuses are recorded."""
        res = run([sys.executable, "-m", "cnirun", *args], self.env(engine), timeout, cwd=REPO)
        self.judge(res, kind, engine, allowed)
        if count:
            STATS.op(kind, res, not res.ok)
        return res

    def judge(self, res: Outcome, kind: str, engine: str, allowed: Sequence[int]) -> None:
        cmd = f"[{engine}] {shlex.join(res.argv[2:])}"
        if TRACEBACK in res.err or TRACEBACK in res.out:
            STATS.note(STATS.tracebacks, f"traceback from {cmd}:\n{res.err[-3000:]}")
        if res.rc not in allowed:
            STATS.note(STATS.unexpected, f"{kind}: {cmd} exited {res.rc}: {res.err[-600:]}")
        if res.argv[3:4] != ["gc"]:  # gc may name other people's sandboxes: never purge those
            STATS_ids(res.out + res.err)

    def docker(
        self, engine: str, kind: str | None, *args: str, timeout: float = DOCKER_TIMEOUT
    ) -> Outcome:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env["DOCKER_HOST"] = engine
        res = run(["docker", *args], env, timeout)
        if kind is not None:
            STATS.op(kind, res, not res.ok)
        return res

    def release(self) -> None:
        for held in self._claims:
            held.close()


def STATS_ids(text: str) -> None:  # noqa: N802
    ids = set(SANDBOX_ID_RE.findall(text))
    if ids:
        with STATS.lock:
            STATS.sandbox_ids |= ids


def claim(key: str) -> socket.socket | None:
    """The e2e harness's host-wide claim (tests/e2e/harness.py `claim`): an abstract socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0cnirun-e2e:{key}")
    except OSError:
        sock.close()
        return None
    return sock


def claim_tag(claims: list[socket.socket]) -> str:
    """A random tag no e2e test or other run holds; its claim is appended to `claims`."""
    while True:
        tag = secrets.token_hex(4)
        held = claim(f"tag:{tag}")
        if held is not None:
            claims.append(held)
            return tag


def free_subnet(claims: list[socket.socket]) -> ipaddress.IPv4Network:
    """A /24 of 10.239.0.0/16 no route, address, iptables rule or e2e test uses; its claim
    (the e2e harness's, host-wide) is appended to `claims` and lasts until they are closed."""
    taken: list[ipaddress.IPv4Network] = []
    for argv in (
        ["ip", "-4", "-o", "route", "show", "table", "all"],
        ["ip", "-4", "-o", "addr"],
    ):
        res = run(argv, dict(os.environ), 30)
        for word in res.out.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit() and "." in word:
                    taken.append(ipaddress.IPv4Network(word, strict=False))
    rules = run(["iptables-save"], dict(os.environ), 30).out
    subnets = list(SUBNET_POOL.subnets(new_prefix=24))
    random.shuffle(subnets)
    for net in subnets:
        if any(net.overlaps(t) for t in taken):
            continue
        if prefix_of(net) in rules:
            continue
        held = claim(f"subnet:{net}")  # the e2e harness's claims: never a test's subnet
        if held is None:
            continue
        claims.append(held)
        return net
    raise SystemExit("stress: no free /24 in 10.239.0.0/16")


def prefix_of(net: ipaddress.IPv4Network) -> str:
    """ "10.x.y." of a /24: how the firewall plugin's rules (which name only addresses) and
    every address of the subnet are found in iptables-save's text."""
    return str(net.network_address).rsplit(".", 1)[0] + "."


@dataclass
class State:
    status: str  # running, paused, restarting, exited, created...
    started: str

    @property
    def live(self) -> bool:
        return self.status == "running"


class Engine:
    """One Docker engine's sandboxes, shared by its workers."""

    def __init__(self, world: World, host: str) -> None:
        self.world = world
        self.host = host
        self.lock = threading.Lock()
        self.sandboxes: dict[str, Sandbox] = {}
        self.slots = 0  # sandboxes alive or being made
        self.foreground: list[str] = []

    def state(self, name: str) -> State | None:
        fmt = "{{.State.Status}} {{.State.Paused}} {{.State.Restarting}} {{.State.StartedAt}}"
        res = self.world.docker(self.host, None, "inspect", "-f", fmt, name)
        if res.rc != 0:
            return None
        status, paused, restarting, started = (res.out.split() + ["", "", "", ""])[:4]
        if paused == "true":
            status = "paused"
        elif restarting == "true":
            status = "restarting"
        return State(status, started)

    def reserve(self) -> bool:
        with self.lock:
            if self.slots >= MAX_SANDBOXES:
                return False
            self.slots += 1
            return True

    def unreserve(self) -> None:
        with self.lock:
            self.slots -= 1

    def track(self, sb: Sandbox) -> None:
        with self.lock:
            self.sandboxes[sb.name] = sb

    def untrack(self, sb: Sandbox) -> None:
        with self.lock:
            if not sb.removed:
                sb.removed = True
                self.sandboxes.pop(sb.name, None)
                self.slots -= 1

    def pick(self) -> Sandbox | None:
        """A tracked sandbox no one else is working on, locked; None when there is none."""
        with self.lock:
            candidates = list(self.sandboxes.values())
        random.shuffle(candidates)
        for sb in candidates:
            if sb.lock.acquire(blocking=False):
                if not sb.removed:
                    return sb
                sb.lock.release()
        return None

    def forget_if_gone(self, sb: Sandbox) -> None:
        if self.state(sb.name) is None:
            self.untrack(sb)


class Worker(threading.Thread):
    def __init__(self, engine: Engine, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.world = engine.world
        self.stop = stop
        self.rng = random.Random(seed)
        self.ops = [
            (self.op_run_sleep, 4.0),
            (self.op_run_restart, 2.0),
            (self.op_pause, 2.0),
            (self.op_docker_restart, 1.5),
            (self.op_docker_stop_start, 2.0),
            (self.op_cnirun_stop_start, 2.0),
            (self.op_rm_f, 1.5),
            (self.op_rm_stopped, 1.0),
            (self.op_foreground, 1.5),
            (self.op_gc, 0.7),
            (self.op_ps, 1.0),
        ]

    def run(self) -> None:
        funcs = [f for f, _ in self.ops]
        weights = [w for _, w in self.ops]
        while not self.stop.is_set():
            op = self.rng.choices(funcs, weights)[0]
            try:
                op()
            except Exception as e:  # the script's own bug: make it loud, keep going
                STATS.note(STATS.unexpected, f"stress script error in {op.__name__}: {e!r}")
            self.stop.wait(self.rng.uniform(0.05, 0.4))

    # -- operations ---------------------------------------------------------------------------

    def _detached(self, kind: str, restart: bool) -> None:
        if not self.engine.reserve():
            self.op_rm_f()
            return
        name = self.world.name()
        sb = Sandbox(name, self.engine.host, restart)
        with sb.lock:
            args = ["-d", "--name", name, "--label", f"{LABEL_TEST}={self.world.tag}"]
            if restart:
                args += ["--restart", "always", IMAGE, "sh", "-c", "sleep 2; exit 1"]
            else:
                args += [IMAGE, "sleep", "600"]
            res = self.world.cnirun(self.engine.host, kind, args)
            if res.ok or self.engine.state(name) is not None:
                self.engine.track(sb)  # a failed run that left its workload: still cleaned up
            else:
                self.engine.unreserve()

    def op_run_sleep(self) -> None:
        self._detached("cnirun run -d", restart=False)

    def op_run_restart(self) -> None:
        self._detached("cnirun run -d --restart always", restart=True)

    def _with_sandbox(self, action: Any) -> None:
        sb = self.engine.pick()
        if sb is None:
            return
        try:
            action(sb)
        finally:
            sb.lock.release()

    def op_pause(self) -> None:
        def act(sb: Sandbox) -> None:
            st = self.engine.state(sb.name)
            if st is None:
                self.engine.untrack(sb)
            elif st.status == "paused":
                self.world.docker(sb.engine, "docker unpause", "unpause", sb.name)
            elif st.status == "running":
                self.world.docker(sb.engine, "docker pause", "pause", sb.name)

        self._with_sandbox(act)

    def op_docker_restart(self) -> None:
        self._with_sandbox(
            lambda sb: self.world.docker(sb.engine, "docker restart", "restart", "-t", "1", sb.name)
        )

    def op_docker_stop_start(self) -> None:
        def act(sb: Sandbox) -> None:
            st = self.engine.state(sb.name)
            if st is None:
                self.engine.untrack(sb)
            elif st.status in ("exited", "created"):
                self.world.docker(sb.engine, "docker start", "start", sb.name)
            else:
                self.world.docker(sb.engine, "docker stop", "stop", "-t", "1", sb.name)

        self._with_sandbox(act)

    def op_cnirun_stop_start(self) -> None:
        def act(sb: Sandbox) -> None:
            st = self.engine.state(sb.name)
            if st is None:
                self.engine.untrack(sb)
            elif st.status in ("exited", "created"):
                self.world.cnirun(sb.engine, "cnirun start", ["start", sb.name])
            else:
                self.world.cnirun(sb.engine, "cnirun stop", ["stop", "-t", "1", sb.name])

        self._with_sandbox(act)

    def op_rm_f(self) -> None:
        def act(sb: Sandbox) -> None:
            res = self.world.cnirun(sb.engine, "cnirun rm -f", ["rm", "-f", sb.name])
            if res.ok:
                self.engine.untrack(sb)
            else:
                self.engine.forget_if_gone(sb)

        self._with_sandbox(act)

    def op_rm_stopped(self) -> None:
        def act(sb: Sandbox) -> None:
            st = self.engine.state(sb.name)
            if st is None:
                self.engine.untrack(sb)
                return
            if st.status not in ("exited", "created"):
                self.world.cnirun(sb.engine, "cnirun stop", ["stop", "-t", "1", sb.name])
            res = self.world.cnirun(sb.engine, "cnirun rm (stopped)", ["rm", sb.name])
            if res.ok:
                self.engine.untrack(sb)
            else:
                self.engine.forget_if_gone(sb)

        self._with_sandbox(act)

    def op_foreground(self) -> None:
        """`cnirun --rm busybox sleep 5` killed by SIGKILL at a random moment or fault point."""
        name = self.world.name()
        with self.engine.lock:
            self.engine.foreground.append(name)
        hook = self.rng.choice(KILL_POINTS) if self.rng.random() < 0.4 else ""
        kind = f"cnirun --rm killed at {hook}" if hook else "cnirun --rm killed"
        extra = {"CNIRUN_TEST_KILL_AT": hook} if hook else {}
        argv = [sys.executable, "-m", "cnirun", "--rm", "--name", name]
        argv += ["--label", f"{LABEL_TEST}={self.world.tag}", IMAGE, "sleep", "5"]
        start = time.monotonic()
        # Files, not pipes: the docker CLI child outlives a killed cnirun and keeps them open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                cwd=REPO,
                env=self.world.env(self.engine.host, **extra),
                start_new_session=True,
            )
            try:
                proc.wait(timeout=CLI_TIMEOUT if hook else self.rng.uniform(0.2, 6.0))
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL, cnirun only (its docker CLI child lives on)
            try:
                rc: int | None = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = None
            out.seek(0)
            err.seek(0)
            res = Outcome(argv, rc, out.read(), err.read(), time.monotonic() - start)
        # 0: sleep 5 ended first; 125: refused; -9: our SIGKILL or the hook's.
        self.world.judge(res, kind, self.engine.host, (0, 125, -signal.SIGKILL))
        STATS.op(kind, res, res.rc not in (0, -signal.SIGKILL))

    def op_gc(self) -> None:
        self.world.cnirun(self.engine.host, "cnirun gc", ["gc"])

    def op_ps(self) -> None:
        self.world.cnirun(self.engine.host, "cnirun ps -a", ["ps", "-a", "--no-trunc"])


class Checker(threading.Thread):
    """Check, over and over, that every live sandbox's eth0 has its recorded address."""

    def __init__(self, world: World, engines: list[Engine], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.engines = engines
        self.stop = stop

    def run(self) -> None:
        while not self.stop.is_set():
            self.scan_ids()
            for engine in self.engines:
                with engine.lock:
                    sandboxes = list(engine.sandboxes.values())
                for sb in sandboxes:
                    if self.stop.is_set():
                        return
                    if not sb.lock.acquire(blocking=False):
                        continue  # an operation is changing it right now
                    try:
                        if not sb.removed:
                            self.check(engine, sb)
                    except Exception as e:
                        STATS.note(STATS.unexpected, f"stress checker error: {e!r}")
                    finally:
                        sb.lock.release()
                    self.stop.wait(0.1)
            self.stop.wait(0.3)

    def scan_ids(self) -> None:
        """Learn sandbox IDs from records and cache files (for the leak checks at the end)."""
        names: list[str] = []
        for d in (self.world.state_dir / "sandboxes", self.world.cache_dir / "results"):
            with contextlib.suppress(OSError):
                names += os.listdir(d)
        STATS_ids(" ".join(n.replace("-", " ").replace(".", " ") for n in names))

    def attempt(self, engine: Engine, sb: Sandbox) -> tuple[State | None, str]:
        """(state, "" if eth0 is right else why not); state None/not live: nothing to judge."""
        st = engine.state(sb.name)
        if st is None or not st.live:
            return st, ""
        res = self.world.cnirun(engine.host, "cnirun inspect", ["inspect", sb.name])
        try:
            addresses = [str(a) for a in json.loads(res.out)[0]["addresses"]]
        except (ValueError, LookupError, TypeError):
            return st, f"cnirun inspect {sb.name} gives no record: {res.brief()}"
        ex = self.world.docker(
            engine.host, None, "exec", sb.name, "ip", "-4", "addr", "show", "eth0"
        )
        if ex.rc != 0 and ("Error response from daemon" in ex.err or "OCI runtime" in ex.err):
            # no process to exec into (mid-restart): not a verdict on the network
            return State("unexecutable", st.started), ""
        missing = [a for a in addresses if f"inet {a} " not in ex.out]
        if not addresses or missing:
            return st, (
                f"eth0 of {sb.name} lacks {missing or 'any address'} (recorded {addresses}); "
                f"docker exec ip: rc={ex.rc} {(ex.out + ex.err).strip()[:300]!r}"
            )
        return st, ""

    def check(self, engine: Engine, sb: Sandbox) -> None:
        st, why = self.attempt(engine, sb)
        if st is None or not st.live:
            with STATS.lock:
                STATS.checks_skipped += 1
            return
        with STATS.lock:
            STATS.checks += 1
        if not why:
            return
        time.sleep(1)
        st2, why2 = self.attempt(engine, sb)
        if st2 is not None and st2.live and why2:
            STATS.note(
                STATS.violations,
                f"[{engine.host}] live sandbox {sb.name} lost its network: {why}; "
                f"1 s later: {why2}",
            )


# -- the end: clean up, then prove nothing is left -----------------------------------------------


def teardown(world: World, engines: list[Engine]) -> None:
    for engine in engines:
        listed = world.cnirun(engine.host, "end: cnirun ps -a -q", ["ps", "-a", "-q"], count=False)
        for cid in listed.out.split():
            world.cnirun(engine.host, "end: cnirun rm -f", ["rm", "-f", cid], count=False)
    for engine in engines:
        res = world.docker(
            engine.host, None, "ps", "-aq", "--filter", f"label={LABEL_TEST}={world.tag}"
        )
        if res.out.split():
            world.docker(engine.host, None, "rm", "-f", *res.out.split())
    for engine in engines:
        # --all: the infra pool's members too (runs here use the default pool).
        world.cnirun(engine.host, "end: cnirun gc --all", ["gc", "--all"], count=False)
    for engine in engines:
        res = world.cnirun(engine.host, "end: second cnirun gc", ["gc", "--all"], count=False)
        if "nothing to reclaim" not in res.out + res.err:
            STATS.note(
                STATS.leftovers,
                f"[{engine.host}] a second `cnirun gc` still reclaimed: "
                f"{(res.out + res.err).strip()[:1000]}",
            )


def leftovers(world: World, engines: list[Engine]) -> list[str]:
    found: list[str] = []
    for engine in engines:
        for label in (f"{LABEL_TEST}={world.tag}", f"{LABEL_STATE_DIR}={world.state_dir}"):
            fmt = "{{.ID}} {{.Names}} {{.Status}} " + f'{{{{.Label "{LABEL_SANDBOX}"}}}}'
            res = world.docker(
                engine.host, None, "ps", "-a", "--filter", f"label={label}", "--format", fmt
            )
            if res.rc != 0:
                found.append(f"[{engine.host}] docker ps failed: {res.brief()}")
            found += [f"[{engine.host}] container left: {ln}" for ln in res.out.splitlines()]
            STATS_ids(res.out)
    ids = sorted(STATS.sandbox_ids)
    found += leakcheck.netns_leaks([], [f"cnirun-{i}" for i in ids])
    found += [
        f"owner file /run/cnirun/owners/{i}.json left"
        for i in ids
        if os.path.exists(f"/run/cnirun/owners/{i}.json")
    ]
    records = world.state_dir / "sandboxes"
    if records.is_dir():
        found += [f"record {p} left" for p in sorted(records.iterdir())]
    results = world.cache_dir / "results"
    if results.is_dir():
        found += [f"CNI cache file {p} left" for p in sorted(results.iterdir())]
    found += leakcheck.cache_leaks([f"cnirun-{i}" for i in ids], [leakcheck.DEFAULT_CACHE_DIR])
    ipam = IPAM_DIR / world.netname
    if ipam.is_dir():
        found += [
            f"host-local reservation {p} left ({p.read_text(errors='replace').split()[:1]})"
            for p in sorted(ipam.iterdir())
            if p.name != "lock" and not p.name.startswith("last_reserved_ip")
        ]
    found += leakcheck.bridge_port_leaks([world.bridge])
    needles = [str(world.subnet), prefix_of(world.subnet), *(f"cnirun-{i}" for i in ids)]
    found += leakcheck.iptables_leaks(needles, tables=("nat", "filter", "mangle"))
    return found


def purge(world: World) -> None:
    """Best effort after the checks: leave the host as we found it, whatever failed."""
    purge_host(sorted(STATS.sandbox_ids), [world.subnet], [world.bridge], [world.netname])
    shutil.rmtree(world.tmp, ignore_errors=True)


def purge_host(
    ids: Sequence[str],
    subnets: Sequence[ipaddress.IPv4Network],
    bridges: Sequence[str],
    netnames: Sequence[str],
) -> None:
    """Remove whatever names one of these sandbox IDs, subnets, bridges or networks: netns
    holders, owner files, iptables lines (nat, filter, mangle), bridges, host-local dirs."""
    for i in ids:
        holder = Path(leakcheck.NETNS_DIR) / f"cnirun-{i}"
        if os.path.lexists(holder):
            run(["umount", "-l", str(holder)], dict(os.environ), 30)
            with contextlib.suppress(OSError):
                holder.unlink()
        with contextlib.suppress(OSError):
            os.unlink(f"/run/cnirun/owners/{i}.json")
    needles = [*(str(n) for n in subnets), *map(prefix_of, subnets)]
    needles += [f"cnirun-{i}" for i in ids]
    for table in ("nat", "filter", "mangle"):
        for line in run(["iptables-save", "-t", table], dict(os.environ), 30).out.splitlines():
            if line.startswith("-A ") and any(n in line for n in needles):
                run(["iptables", "-t", table, "-D", *shlex.split(line)[1:]], dict(os.environ), 30)
    for bridge in bridges:
        if os.path.exists(f"/sys/class/net/{bridge}"):
            run(["ip", "link", "del", bridge], dict(os.environ), 30)
    for name in netnames:
        shutil.rmtree(IPAM_DIR / name, ignore_errors=True)


# -- engines, figures, main ----------------------------------------------------------------------


def discover_engines() -> list[str]:
    listed = os.environ.get("STRESS_ENGINES", "").split()
    if listed:
        return list(dict.fromkeys(listed))
    engines = [HOST_ENGINE]
    script = REPO / "scripts" / "engines.sh"
    if script.exists():
        status = run(["bash", str(script), "status"], dict(os.environ), 60)
        for line in status.out.splitlines():
            m = re.match(r"(\S+): built: .*; running ", line)
            if m:
                host = run(["bash", str(script), "host", m.group(1)], dict(os.environ), 60)
                if host.ok and host.out.strip():
                    engines.append(host.out.strip())
    return list(dict.fromkeys(engines))


def figures(world: World, seconds: float) -> dict[str, Any]:
    ops = {
        kind: {
            "count": k.count,
            "failures": k.failures,
            "median_seconds": round(statistics.median(k.seconds), 3) if k.seconds else None,
            "errors": dict(sorted(k.errors.items(), key=lambda kv: -kv[1])[:5]),
        }
        for kind, k in sorted(STATS.kinds.items())
    }
    return {
        "seconds": round(seconds, 1),
        "engines": world.engines,
        "subnet": str(world.subnet),
        "ops": ops,
        "invariant_checks": STATS.checks,
        "invariant_checks_skipped_not_running": STATS.checks_skipped,
        "violations": STATS.violations,
        "unexpected_exits": STATS.unexpected,
        "tracebacks": STATS.tracebacks,
        "leftovers": STATS.leftovers,
        "sandbox_ids_seen": len(STATS.sandbox_ids),
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"\nstress: {report['seconds']} s of operations on {' '.join(report['engines'])}")
    print(f"{'operation':40} {'count':>6} {'failed':>6} {'median s':>9}")
    for kind, op in report["ops"].items():
        med = "-" if op["median_seconds"] is None else f"{op['median_seconds']:.3f}"
        print(f"{kind:40} {op['count']:>6} {op['failures']:>6} {med:>9}")
        for msg, n in op["errors"].items():
            print(f"    {n:>4} x {msg[:120]}")
    print(f"{'invariant checks (running sandboxes)':40} {report['invariant_checks']:>6}")
    print(f"{'  skipped (not running)':40} {report['invariant_checks_skipped_not_running']:>6}")
    print(f"{'sandbox IDs seen (leak-checked)':40} {report['sandbox_ids_seen']:>6}")
    for key in ("violations", "unexpected_exits", "tracebacks", "leftovers"):
        print(f"{key.replace('_', ' '):40} {len(report[key]):>6}")
        for line in report[key][:20]:
            print(f"    {line[:1500]}")


def main() -> int:
    if os.geteuid() != 0:
        print("stress: must run as root", file=sys.stderr)
        return 2
    seconds = float(os.environ.get("STRESS_SECONDS", "180"))
    world = World(discover_engines(), seconds)
    print(
        f"stress: tag {world.tag}, subnet {world.subnet}, engines {' '.join(world.engines)}, "
        f"{seconds:.0f} s, dir {world.tmp}",
        flush=True,
    )
    engines = [Engine(world, host) for host in world.engines]
    stop = threading.Event()
    workers = [
        Worker(engine, stop, secrets.randbits(32))
        for engine in engines
        for _ in range(WORKERS_PER_ENGINE if len(engines) == 1 else 2)
    ]
    checker = Checker(world, engines, stop)
    began = time.monotonic()
    try:
        for w in workers:
            w.start()
        checker.start()
        stop.wait(seconds)
    except KeyboardInterrupt:
        print("stress: interrupted; cleaning up", file=sys.stderr)
    finally:
        stop.set()
        ran = time.monotonic() - began
        for t in [*workers, checker]:
            t.join(timeout=CLI_TIMEOUT * 3)
            if t.is_alive():
                STATS.note(STATS.unexpected, f"stress thread {t.name} did not stop")
        try:
            teardown(world, engines)
            for line in leftovers(world, engines):
                STATS.note(STATS.leftovers, line)
        finally:
            purge(world)
            world.release()
    report = figures(world, ran)
    print_table(report)
    out = os.environ.get("STRESS_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    failed = any(report[k] for k in ("violations", "unexpected_exits", "tracebacks", "leftovers"))
    print(f"stress: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

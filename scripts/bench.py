#!/usr/bin/env python3
"""Benchmark cnirun against plain Docker and cnitool (run as root on a host set up by `make setup`).

1. Alternates `cnirun --rm busybox true` (on a private bridge network) with
   `docker run --rm --net=none busybox true`, then prints the median wall-time ratio, cnirun's
   own CPU time per run (its process only, not the docker CLI or the plugins).
2. Start-up: the median wall time of `cnirun --help`, `--version`, `ps`, `network ls` and a
   bash completion request, each next to its budget, with `docker ps` / `docker network ls`
   of the same run for scale.
3. `cnirun net add` + `del` against cnitool-ref (scripts/cnitool-ref, libcni driven the way
   cnitool does it, built here against Debian's golang-github-appc-cni-dev) on one 4-plugin
   network (bridge + host-local, portmap, firewall, tuning) in a netns of the bench's own.

Every budget line says PASS or OVER; the bench exits 0 either way (it is a report). Figures are
medians of alternating runs: on a busy host they are noisy, so read them with the `python3 -c
pass` floor it prints. Everything runs in private dirs under one temp dir (configs, cnirun's
state and cache, host-local's data, libcni's cache) and is removed at the end: the netns, the
bridges, and (through `net del` / the run's own teardown) every address and iptables rule.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_STARTUP = 0.150  # seconds, median wall time on a quiet machine
BUDGET_NET_RATIO = 1.5  # `cnirun net add`+`del` over cnitool's, same network and netns
RUN_BRIDGE, NET_BRIDGE, DEFAULT_BRIDGE = "cnibench0", "cnibench1", "cnibench2"
GOCODE = "/usr/share/gocode"
LIBCNI = f"{GOCODE}/src/github.com/containernetworking/cni/libcni"


def run_network(ipam_dir: str) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "cnirunbench",
        "plugins": [
            {
                "type": "bridge",
                "bridge": RUN_BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.250.0.0/24"}]],
                    "dataDir": ipam_dir,
                },
            }
        ],
    }


def net_network(ipam_dir: str) -> dict[str, object]:
    """The 4-plugin chain both `cnirun net` and cnitool-ref set up and tear down."""
    return {
        "cniVersion": "1.0.0",
        "name": "cnirunbenchnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": NET_BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.250.1.0/24"}]],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
            {"type": "tuning"},
        ],
    }


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def interpreter_cpu(env: dict[str, str]) -> float:
    """CPU seconds of a bare interpreter start (site and .pth files included)."""
    probe = (
        "import resource; u = resource.getrusage(resource.RUSAGE_SELF); "
        "print(u.ru_utime + u.ru_stime)"
    )
    samples = [
        float(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                             text=True, check=True).stdout)
        for _ in range(5)
    ]  # fmt: skip
    return statistics.median(samples)


def timed_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU is the process's and its children's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed(argv, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def verdict(value: float, budget: float) -> str:
    return "PASS" if value <= budget else "OVER"


def alternate(cases: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """Each case `runs` times, interleaved so load changes hit them all alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            samples[name].append(case())
    return samples


RUN_GOAL_DEFAULT, RUN_GOAL_README, RUN_GOAL_CPU = 1.30, 1.25, 0.060
DEFAULT_NETWORK, HOST_LOCAL_DIR = "cnirunbenchdef", "/var/lib/cni/networks"


def podman_argv(image: str) -> tuple[list[str] | None, str]:
    """`podman run --rm IMAGE true` on podman's default network, or None and why not."""
    if shutil.which("podman") is None:
        return None, "podman is not installed"
    local = f"localhost/{image}"
    if subprocess.run(["podman", "image", "exists", local], check=False).returncode != 0:
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=False)
        subprocess.run(["podman", "load", "-q"], input=saved.stdout, capture_output=True,
                       check=False)  # fmt: skip
    argv = ["podman", "run", "--rm", local, "true"]
    probe = subprocess.run(argv, capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines() or ["no output"]
        return None, f"podman cannot run a container here: {lines[-1][:200]}"
    return argv, ""


# One `--debug` run's lines, by what they mark (the first line that contains the text).
PHASES = (
    ("python start and imports", "docker: GET "),
    ("infra: pull check, create, start (or claim)", "held netns"),
    ("CNI ADD", "docker: /"),
    ("workload: docker run until its die event", "the workload died"),
    ("teardown after the die event", "released netns"),
)


def timeline(argv: list[str], env: dict[str, str]) -> list[tuple[str, float]]:
    """Milliseconds per phase of one run, from the time each `--debug` line arrives."""
    start = time.perf_counter()
    proc = subprocess.Popen([*argv[:3], "--debug", *argv[3:]], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stderr is not None
    seen: list[tuple[str, float]] = []
    for line in proc.stderr:
        seen.append((line, time.perf_counter() - start))
    proc.wait()
    seen.append(("exit", time.perf_counter() - start))
    phases, last = [], 0.0
    for name, marker in PHASES:
        at = next((t for line, t in seen if marker in line and t >= last), None)
        if at is None:
            continue
        phases.append((name, at - last))
        last = at
    phases.append(("until cnirun exits", seen[-1][1] - last))
    return phases


def bench_run(options: argparse.Namespace, env: dict[str, str], tmp: str) -> None:
    """Issue 17's table: cnirun on the README's network and on the built-in default one
    (with and without the infra pool), against plain `docker run`, podman beside them."""
    rusage = os.path.join(tmp, "rusage")
    default_dir = os.path.join(tmp, "default.d")  # empty: cnirun writes its default there
    os.makedirs(default_dir)
    on_default = dict(
        env, NETCONFPATH=default_dir, CNIRUN_DEFAULT_NETWORK=DEFAULT_NETWORK,
        CNIRUN_DEFAULT_BRIDGE=DEFAULT_BRIDGE, CNIRUN_DEFAULT_SUBNET="10.250.2.0/24",
        CNIRUN_RUSAGE_FILE=rusage,
    )  # fmt: skip
    cnirun = [sys.executable, "-m", "cnirun", "--rm", options.image, "true"]
    cpu: list[float] = []

    def ours(environ: dict[str, str], own_cpu: bool = False) -> Callable[[], float]:
        def one() -> float:
            wall = timed(cnirun, environ)
            if own_cpu:
                with open(rusage) as handle:
                    cpu.append(float(handle.read()))
            return wall

        return one

    docker_case = "docker run --rm --net=none"
    cases: dict[str, Callable[[], float]] = {
        docker_case: lambda: timed(["docker", "run", "--rm", "--net=none", options.image,
                                    "true"], env),  # fmt: skip
        "cnirun, the CNI README's network (bridge, host-local)": ours(env),
        "cnirun, built-in default network": ours(on_default, own_cpu=True),
        "cnirun, built-in default network, CNIRUN_INFRA_POOL=0": ours(
            dict(on_default, CNIRUN_INFRA_POOL="0")
        ),
    }
    podman, why_not = podman_argv(options.image)
    if podman:
        cases["podman run --rm (its default network)"] = lambda: timed(podman, env)
    for case in cases.values():
        case()  # warm-up: the pause image, the default network's config, the pool
        case()
    cpu.clear()
    samples = alternate(cases, options.runs)
    base = statistics.median(samples[docker_case])
    print(f"== run: `IMAGE true`, {options.runs} alternating rounds, medians")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:58} {ms(median):>7}  ratio {median / base:.2f}")
    if not podman:
        print(f"{'podman':58} not measured: {why_not}")
    default = statistics.median(samples["cnirun, built-in default network"]) / base
    readme = statistics.median(samples["cnirun, the CNI README's network (bridge, host-local)"])
    print(f"goal: default network ratio <= {RUN_GOAL_DEFAULT:.2f}: {default:.2f}"
          f"  {verdict(default, RUN_GOAL_DEFAULT)}")  # fmt: skip
    print(f"goal: README network ratio <= {RUN_GOAL_README:.2f}: {readme / base:.2f}"
          f"  {verdict(readme / base, RUN_GOAL_README)}")  # fmt: skip
    own = statistics.median(cpu)
    print(f"goal: cnirun's own CPU per run <= {ms(RUN_GOAL_CPU)}: {ms(own)}"
          f"  {verdict(own, RUN_GOAL_CPU)}"
          f"  (a bare `python3 -c pass` here: {ms(interpreter_cpu(env))})")  # fmt: skip
    print("timeline of one run on the built-in default network (pool on), ms:")
    for name, seconds in timeline(cnirun, on_default):
        print(f"  {name:50} {seconds * 1000:6.0f}")
    # The pool's ready member: documented to stay after a run; the bench removes it.
    for environ in (env, on_default):
        subprocess.run([sys.executable, "-m", "cnirun", "gc", "--all"], env=environ,
                       stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    # host-local's dir of the default network (which names no dataDir): empty by now.
    shutil.rmtree(os.path.join(HOST_LOCAL_DIR, DEFAULT_NETWORK), ignore_errors=True)


def bench_startup(options: argparse.Namespace, env: dict[str, str]) -> None:
    cnirun = [sys.executable, "-m", "cnirun"]
    # `cnirun logs <TAB>`, as bash asks for it (see tests/e2e/test_cli_verbs.py).
    completion = dict(
        env, _CNIRUN_COMPLETE="complete_bash", COMP_WORDS="cnirun logs ", COMP_CWORD="2"
    )
    ours: dict[str, tuple[list[str], dict[str, str]]] = {
        "cnirun --help": ([*cnirun, "--help"], env),
        "cnirun --version": ([*cnirun, "--version"], env),
        "cnirun ps": ([*cnirun, "ps"], env),
        "cnirun network ls": ([*cnirun, "network", "ls"], env),
        "cnirun logs <TAB>": (cnirun, completion),
    }
    theirs: dict[str, tuple[list[str], dict[str, str]]] = {
        "python3 -c pass": ([sys.executable, "-c", "pass"], env),  # every command's floor
        "python3 -S -c pass": ([sys.executable, "-S", "-c", "pass"], env),  # without site/.pth
        "docker ps": (["docker", "ps"], env),
        "docker network ls": (["docker", "network", "ls"], env),
    }
    every = {**ours, **theirs}
    for argv, run_env in every.values():
        timed(argv, run_env)  # warm-up
    cpu: dict[str, list[float]] = {name: [] for name in every}

    def case(name: str) -> Callable[[], float]:
        def one() -> float:
            argv, run_env = every[name]
            wall, used = timed_cpu(argv, run_env)
            cpu[name].append(used)
            return wall

        return one

    samples = alternate({name: case(name) for name in every}, options.quick_runs)
    print(f"== start-up: {options.quick_runs} runs of each, alternating; median wall (CPU)")
    for name in every:
        wall = statistics.median(samples[name])
        figure = f"{name}: {ms(wall)} ({ms(statistics.median(cpu[name]))} CPU)"
        if name in ours:
            budget = f"budget {ms(BUDGET_STARTUP)}  {verdict(wall, BUDGET_STARTUP)}"
            print(f"{figure:<44} {budget}")
        else:
            print(f"{figure:<44} for scale")


def build_cnitool(tmp: str) -> str | None:
    """cnitool-ref built offline against Debian's libcni (GOPATH mode), or None and why."""
    if shutil.which("go") is None or not os.path.isdir(LIBCNI):
        print("cnitool-ref: not built: needs golang-go and golang-github-appc-cni-dev"
              " (sudo make setup installs them)")  # fmt: skip
        return None
    binary = os.path.join(tmp, "cnitool-ref")
    go_env = dict(
        os.environ,
        GO111MODULE="off",
        GOPATH=GOCODE,
        GOCACHE=os.path.join(tmp, "gocache"),
        GOFLAGS="",
        GOPROXY="off",
        CGO_ENABLED="0",
    )
    built = subprocess.run(
        ["go", "build", "-o", binary, "."],
        cwd=os.path.join(REPO, "scripts", "cnitool-ref"),
        env=go_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        print(f"cnitool-ref: not built: {built.stderr.strip()}")
        return None
    return binary


def bench_net(options: argparse.Namespace, env: dict[str, str], tmp: str) -> None:
    cnitool = build_cnitool(tmp)
    netns = f"cnibench-{os.getpid()}"  # not cnirun-*: gc reclaims those
    netns_path = f"/run/netns/{netns}"
    name = "cnirunbenchnet"
    rusage = os.path.join(tmp, "rusage-net")
    env = dict(env, CNI_CACHE_DIR=os.path.join(tmp, "libcni-cache"), CNIRUN_RUSAGE_FILE=rusage)
    cnirun = [sys.executable, "-m", "cnirun", "net"]
    ours = ([*cnirun, "add", name, netns_path], [*cnirun, "del", name, netns_path])
    theirs = (
        ([cnitool, "add", name, netns_path], [cnitool, "del", name, netns_path])
        if cnitool
        else None
    )
    subprocess.run(["ip", "netns", "add", netns], check=True)
    cpu: list[float] = []
    try:

        def pair(argvs: tuple[list[str], list[str]], own: bool) -> Callable[[], float]:
            def one() -> float:
                wall = timed(argvs[0], env)
                if own:
                    with open(rusage) as handle:
                        used = float(handle.read())
                wall += timed(argvs[1], env)
                if own:
                    with open(rusage) as handle:
                        cpu.append(used + float(handle.read()))
                return wall

            return one

        cases = {"cnirun net add+del": pair(ours, True)}
        if theirs:
            cases["cnitool-ref add+del"] = pair(theirs, False)
        for case in cases.values():
            case()  # warm-up
        cpu.clear()
        samples = alternate(cases, options.runs)
    finally:
        for argv in (ours[1], *(theirs[1:] if theirs else ())):  # a failed add may leave state
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False)  # fmt: skip
        subprocess.run(["ip", "netns", "del", netns], check=False)
    print(f"== net: {options.runs} add+del pairs of each, alternating, on bridge+host-local,"
          " portmap, firewall, tuning")  # fmt: skip
    median_ours = statistics.median(samples["cnirun net add+del"])
    print(f"cnirun net add+del: median {ms(median_ours)}"
          f" (cnirun's own CPU {ms(statistics.median(cpu))})")  # fmt: skip
    if not theirs:
        print(f"cnirun net add+del vs cnitool: not measured  budget {BUDGET_NET_RATIO:.1f}x  OVER")
        return
    median_theirs = statistics.median(samples["cnitool-ref add+del"])
    ratio = median_ours / median_theirs
    print(f"cnitool-ref add+del: median {ms(median_theirs)}")
    print(f"cnirun net add+del / cnitool-ref: {ratio:.2f}x  budget {BUDGET_NET_RATIO:.1f}x"
          f"  {verdict(ratio, BUDGET_NET_RATIO)}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each run and net command")
    parser.add_argument("--quick-runs", type=int, default=21, help="runs of each start-up command")
    parser.add_argument("--image", default="busybox:latest")
    parser.add_argument(
        "--only", choices=("run", "startup", "net"), action="append", help="some parts only"
    )
    options = parser.parse_args()
    parts = options.only or ["run", "startup", "net"]

    # Measure an installed cnirun: with bytecode compiled, as pip does for a real install
    # (an editable install under PYTHONDONTWRITEBYTECODE would recompile on every start).
    os.chdir(REPO)  # `python -m cnirun` is this checkout's
    subprocess.run([sys.executable, "-m", "compileall", "-q", "cnirun"], check=True)
    with tempfile.TemporaryDirectory(prefix="cnirun-bench-") as tmp:
        dirs = {d: os.path.join(tmp, d) for d in ("net.d", "netcli.d", "state", "cache", "ipam")}
        for path in dirs.values():
            os.makedirs(path)
        for directory, network in (
            ("net.d", run_network(dirs["ipam"])),  # the only one there: the run's default
            ("netcli.d", net_network(dirs["ipam"])),
        ):
            with open(os.path.join(dirs[directory], "10-bench.conflist"), "w") as handle:
                json.dump(network, handle)
        env = dict(
            os.environ,
            NETCONFPATH=dirs["net.d"],
            CNIRUN_STATE_DIR=dirs["state"],
            CNIRUN_CACHE_DIR=dirs["cache"],
            CNI_PATH=os.environ.get("CNI_PATH", "/usr/lib/cni"),
        )
        try:
            if "run" in parts:
                bench_run(options, env, tmp)
            if "startup" in parts:
                bench_startup(options, env)
            if "net" in parts:
                bench_net(options, dict(env, NETCONFPATH=dirs["netcli.d"]), tmp)
        finally:
            for bridge in (RUN_BRIDGE, NET_BRIDGE, DEFAULT_BRIDGE):
                subprocess.run(["ip", "link", "del", bridge], stderr=subprocess.DEVNULL,
                               check=False)  # fmt: skip
    print(f"a bare `python3 -c pass` on this host: {ms(interpreter_cpu(dict(os.environ)))} CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())

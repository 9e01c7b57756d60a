#!/usr/bin/env python3
"""Benchmark cnirun against plain Docker (run as root on a host set up by `make setup`).

Alternates `cnirun --rm busybox true` (on a private bridge network) with
`docker run --rm --net=none busybox true`, then prints the median wall-time ratio, cnirun's
own CPU time per run (its process only, not the docker CLI or the plugins), and the median
time of `cnirun --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

NETWORK = {
    "cniVersion": "1.0.0",
    "name": "cnirunbench",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cnibench0",
            "isGateway": True,
            "ipMasq": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/24"}]]},
        }
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    parser.add_argument("--image", default="busybox:latest")
    options = parser.parse_args()

    # Measure an installed cnirun: with bytecode compiled, as pip does for a real install
    # (an editable install under PYTHONDONTWRITEBYTECODE would recompile on every start).
    import cnirun as package

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.dirname(package.__file__)], check=True
    )
    with tempfile.TemporaryDirectory(prefix="cnirun-bench-") as tmp:
        confdir = os.path.join(tmp, "net.d")
        os.makedirs(confdir)
        with open(os.path.join(confdir, "10-bench.conflist"), "w") as handle:
            json.dump(NETWORK, handle)
        rusage = os.path.join(tmp, "rusage")
        env = dict(os.environ, NETCONFPATH=confdir, CNIRUN_RUSAGE_FILE=rusage)
        cnirun = [sys.executable, "-m", "cnirun", "--rm", options.image, "true"]
        docker = ["docker", "run", "--rm", "--net=none", options.image, "true"]
        timed(cnirun, env)  # warm-up: builds the pause image once, fills caches
        timed(docker, env)
        ours, theirs, cpu = [], [], []
        for _ in range(options.runs):
            ours.append(timed(cnirun, env))
            with open(rusage) as handle:
                cpu.append(float(handle.read()))
            theirs.append(timed(docker, env))
        helps = [
            timed([sys.executable, "-m", "cnirun", "--help"], env) for _ in range(options.runs)
        ]
        subprocess.run(["ip", "link", "del", "cnibench0"], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree("/var/lib/cni/networks/cnirunbench", ignore_errors=True)

    median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
    median_cpu = statistics.median(cpu)
    startup = interpreter_cpu(env)
    print(f"runs: {options.runs} of each, alternating")
    print(f"docker run --rm --net=none {options.image} true: median {ms(median_theirs)}")
    print(f"cnirun --rm {options.image} true: median {ms(median_ours)}")
    print(f"wall-time ratio (median): {median_ours / median_theirs:.2f}  (goal <= 2.0)")
    print(f"cnirun's own CPU per run (median): {ms(median_cpu)}  (goal <= 150 ms)")
    print(f"  of which a bare `python3 -c pass` on this host: {ms(startup)}")
    print(f"cnirun --help: median {ms(statistics.median(helps))}  (goal <= 250 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    parser.add_argument("--image", default="busybox:latest")
    options = parser.parse_args()

    # Measure an installed cnirun: with bytecode compiled, as pip does for a real install
    # (an editable install under PYTHONDONTWRITEBYTECODE would recompile on every start).
    import cnirun

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.dirname(cnirun.__file__)], check=True
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
        helps = [timed([sys.executable, "-m", "cnirun", "--help"], env) for _ in range(options.runs)]
        subprocess.run(["ip", "link", "del", "cnibench0"], stderr=subprocess.DEVNULL, check=False)

    median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"runs: {options.runs} of each, alternating")
    print(f"docker run --rm --net=none {options.image} true: median {median_theirs * 1000:.0f} ms")
    print(f"cnirun --rm {options.image} true:                 median {median_ours * 1000:.0f} ms")
    print(f"wall-time ratio (median): {median_ours / median_theirs:.2f}  (goal <= 2.0)")
    print(f"cnirun's own CPU per run (median): {statistics.median(cpu) * 1000:.0f} ms  (goal <= 150)")
    print(f"cnirun --help: median {statistics.median(helps) * 1000:.0f} ms  (goal <= 250)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

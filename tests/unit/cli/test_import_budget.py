"""Start-up cost (issue 14, item 7): which heavy modules each quick command loads, checked in a
fresh interpreter per command so the answer is real. `make bench` times the same commands.

Modules the bare interpreter already has (site, .pth files) are not counted. typer is allowed
where typer parses (`--help` and the commands' own help); nowhere else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

PROBE = """
import json, sys
sys.argv = ["cnirun", *json.loads(sys.argv[1])]
from cnirun.__main__ import main
try:
    code = main()
finally:
    sys.stderr.write("LOADED=" + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""
BARE = "import json, sys; print(json.dumps(sorted(sys.modules)))"

# Never wanted on these paths: the Docker SDK and pyroute2 (cnirun needs neither there),
# pydantic (typer's coercion loads it), and the stdlib's heavy network and async stacks.
HEAVY = (
    "docker", "pyroute2", "pydantic", "asyncio", "email", "http.client", "urllib.request",
    "ssl", "uuid", "decimal", "zoneinfo", "concurrent",
)  # fmt: skip
TYPER = ("typer", "click")
# What only a sandbox command needs: the Docker client, the sandbox layer, namespaces (ctypes).
SANDBOX = ("cnirun.sandbox", "cnirun.docker", "cnirun.host.netns", "ctypes", "socket")
# typer's own help path loads uuid (typer.main) and, for a command's help, pydantic and socket.
TYPER_HELP = tuple(n for n in HEAVY if n != "uuid")
COMMAND_HELP = (
    "docker",
    "pyroute2",
    "cnirun.sandbox",
    "cnirun.docker",
    "cnirun.host.netns",
    "ctypes",
)
# Builds classes slowly (the run path's records are NamedTuples for that reason).
SLOW_CLASSES = ("dataclasses", "inspect")


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    netconf = tmp_path / "net.d"
    netconf.mkdir(exist_ok=True)
    conf = {"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}
    (netconf / "10-x.conflist").write_text(json.dumps(conf))
    return dict(
        os.environ,
        CNIRUN_STATE_DIR=str(tmp_path / "state"),
        CNIRUN_CACHE_DIR=str(tmp_path / "cache"),
        NETCONFPATH=str(netconf),
        CNI_PATH=str(tmp_path / "no-plugins"),
        DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock",
        **extra,
    )


def loaded(
    args: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run cnirun in a fresh interpreter: the result, and the modules it added to a bare one."""

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)

    bare = set(json.loads(run([sys.executable, "-c", BARE]).stdout))
    done = run([sys.executable, "-c", PROBE, json.dumps(args)])
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED=")]
    assert marker, done.stderr
    return done, set(json.loads(marker[-1][len("LOADED=") :])) - bare


def present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


COMPLETION = {"_CNIRUN_COMPLETE": "complete_bash", "COMP_WORDS": "cnirun logs ", "COMP_CWORD": "2"}
CASES = {
    "--version": ([], ["--version"], HEAVY + TYPER + SANDBOX + SLOW_CLASSES + ("subprocess",)),
    "--help": ([], ["--help"], TYPER_HELP + SANDBOX),
    "ps --help": ([], ["ps", "--help"], COMMAND_HELP),
    "net add --help": ([], ["net", "add", "--help"], COMMAND_HELP),
    "ps": ([], ["ps"], HEAVY + TYPER + SLOW_CLASSES),
    "network ls": ([], ["network", "ls"], HEAVY + TYPER + SLOW_CLASSES),
    "logs <TAB>": ([COMPLETION], [], HEAVY + TYPER + SLOW_CLASSES),
    "net add": ([], ["net", "add", "x", "/run/netns/cnirun-nosuch"], HEAVY + TYPER + SANDBOX),
    "net del": ([], ["net", "del", "x", "/run/netns/cnirun-nosuch"], HEAVY + TYPER + SANDBOX),
    # The hot path up to its first Docker request (there is no daemon at DOCKER_HOST).
    "--rm busybox true": ([], ["--rm", "busybox", "true"], HEAVY + TYPER + SLOW_CLASSES),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_quick_command_loads_nothing_heavy(case: str, tmp_path: Path) -> None:
    extras, args, unwanted = CASES[case]
    env = environment(tmp_path, **(extras[0] if extras else {}))
    done, modules = loaded(args, env)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 125), done.stderr
    assert present(modules, unwanted) == [], f"{case} loads {present(modules, unwanted)}"


def test_the_probe_sees_what_typer_loads(tmp_path: Path) -> None:
    """The check itself works: a typer command that parses options loads typer (and the
    pydantic behind its coercion), so an empty answer above means something."""
    _, modules = loaded(["network", "ls", "--format", "json", "--bogus"], environment(tmp_path))
    assert present(modules, ("typer",)) == ["typer"]

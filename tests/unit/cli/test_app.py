"""cnirun.cli.app: dispatch, exit codes and start-up cost (which modules a command imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnirun import __version__
from cnirun.cli import app as cli_app

HEAVY = ("docker", "pyroute2")

PROBE = """
import json, sys
sys.argv = ["cnirun", *json.loads(sys.argv[1])]
from cnirun.__main__ import main
try:
    code = main()
finally:
    watched = {"docker", "pyroute2", "typer", "dataclasses"}
    loaded = sorted({m.split(".")[0] for m in sys.modules} & watched)
    sys.stderr.write("LOADED=" + json.dumps(loaded) + "\\n")
sys.exit(code)
"""


def probe(
    args: list[str], tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run cnirun in a subprocess; return the result and the heavy modules it imported."""
    environ = dict(
        os.environ,
        CNIRUN_STATE_DIR=str(tmp_path / "state"),
        NETCONFPATH=str(tmp_path / "net.d"),
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED=")]
    assert marker, done.stderr
    return done, json.loads(marker[-1][len("LOADED=") :])


def test_the_apps_commands_are_the_command_table_and_run() -> None:
    import typer

    group = typer.main.get_command(cli_app.build_app())
    commands = set(getattr(group, "commands", {}))
    assert commands == set(cli_app.COMMANDS) | {"run"}
    assert set(cli_app.SUBCOMMANDS) == commands  # the words that are not a `run`


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["net", "--help"], ["network", "ls"]])
def test_light_commands_do_not_import_docker_or_pyroute2(args: list[str], tmp_path: Path) -> None:
    done, loaded = probe(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not set(loaded) & set(HEAVY), loaded


def test_ps_does_not_import_the_docker_sdk(tmp_path: Path) -> None:
    done, loaded = probe(["ps"], tmp_path, DOCKER_HOST="unix:///nonexistent.sock")
    # No daemon here: a clean one-line error, and still no SDK import.
    assert done.returncode == 125
    assert "Docker daemon" in done.stderr
    assert not set(loaded) & set(HEAVY), loaded


def test_the_run_path_imports_neither_typer_nor_the_docker_sdk(tmp_path: Path) -> None:
    """Nor dataclasses: with `inspect` it costs ~10 ms to import, and each class ~1 ms to
    build, on every run (cnirun's records are NamedTuples and plain classes instead)."""
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-x.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]})
    )
    done, loaded = probe(
        ["--rm", "busybox", "true"],
        tmp_path,
        DOCKER_HOST="unix:///nonexistent.sock",
        CNI_PATH="/usr/lib/cni",
    )
    assert done.returncode == 125
    assert loaded == [], loaded


def test_version_and_help(tmp_path: Path) -> None:
    done, _ = probe(["--version"], tmp_path)
    assert done.stdout.strip() == f"cnirun version {__version__}"
    done, _ = probe(["--help"], tmp_path)
    for word in ("net", "ps", "rm", "gc", "network", "priv-net-run", "doctor"):
        assert word in done.stdout


def test_usage_errors_are_one_line_and_exit_125(tmp_path: Path) -> None:
    done, _ = probe(["net", "add"], tmp_path)
    assert done.returncode == 125
    assert done.stderr.splitlines()[0].startswith("cnirun: error: ")
    assert "Traceback" not in done.stderr


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cnirun", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and __version__ in done.stdout


ENTRY = """
import sys, threading, time
from pathlib import Path
sys.argv = ["cnirun", *sys.argv[2:]]
if sys.argv[1:2] == ["ps"]:  # a late non-daemon thread: the exit must wait for it
    marker = Path(sys.argv.pop())
    threading.Thread(target=lambda: (time.sleep(0.3), marker.touch())).start()
from cnirun.__main__ import entry
entry()
"""


def test_console_entry_flushes_keeps_the_code_and_waits_for_threads(tmp_path: Path) -> None:
    """`entry` skips the interpreter's teardown (os._exit), but output and status survive it,
    and a thread still running makes it exit the normal way."""
    env = dict(os.environ, CNIRUN_STATE_DIR=str(tmp_path / "state"))
    run = [sys.executable, "-c", ENTRY, "-"]
    done = subprocess.run([*run, "--bogus", "busybox"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 125 and done.stderr.startswith("cnirun: error: unknown flag"), done
    done = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"cnirun version {__version__}\n")
    marker = tmp_path / "thread-finished"
    done = subprocess.run([*run, "ps", str(marker)], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("CONTAINER ID"), done
    assert marker.exists()


COMPLETION_ENV = {
    "bash": {"COMP_WORDS": "cnirun ne", "COMP_CWORD": "1"},
    "zsh": {"_TYPER_COMPLETE_ARGS": "cnirun ne"},
    "fish": {"_TYPER_COMPLETE_ARGS": "cnirun ne", "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
}


@pytest.mark.parametrize("shell", sorted(COMPLETION_ENV))
def test_shell_completion(shell: str, tmp_path: Path) -> None:
    from typer._completion_shared import get_completion_script

    script = get_completion_script(prog_name="cnirun", complete_var="_CNIRUN_COMPLETE", shell=shell)
    assert "_CNIRUN_COMPLETE" in script
    # What the installed script asks cnirun at each <TAB>: subcommands are completed.
    done, _ = probe([], tmp_path, _CNIRUN_COMPLETE=f"complete_{shell}", **COMPLETION_ENV[shell])
    assert done.returncode == 0, done.stderr
    assert "net" in done.stdout and "network" in done.stdout


def test_an_error_line_escapes_control_characters(tmp_path: Path) -> None:
    # Issue 13 item 9: a newline in a name made the one error line two.
    done, _ = probe(["net", "add", "a\nb\rc", "/run/netns/none"], tmp_path)
    assert done.returncode == 125
    [line] = [ln for ln in done.stderr.splitlines() if not ln.startswith("LOADED=")]
    assert "a\\nb\\rc" in line


def test_deeply_nested_cap_args_are_one_error_line(tmp_path: Path) -> None:
    # Issue 13 item 9: CAP_ARGS nested ~1000 deep gave a traceback.
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "n.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "loopback"}]}'
    )
    argv = ["net", "del", "--cap-args", "[" * 1000, "n", "/proc/self/ns/net"]
    done, _ = probe(argv, tmp_path, CNI_PATH=str(tmp_path / "no-plugins"))
    assert done.returncode == 125
    [line] = [ln for ln in done.stderr.splitlines() if not ln.startswith("LOADED=")]
    assert line.startswith("cnirun: error: capability args (--cap-args / CAP_ARGS) are not valid")

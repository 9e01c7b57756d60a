"""Help, usage errors and first words (issue 14, items 1 and 2): `cnirun run --help` and
`--help` anywhere among a run's options print the run usage; usage errors point at the
subcommand's own help; metavars read like Docker's; examples are never wrapped; a first word
that is no command and not clearly an image is refused before anything runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from cnirun.cli import app as cli_app
from cnirun.cli import run as cli_run
from cnirun.docker.runtime import Docker

OWN_OPTIONS = (
    "--network", "--netconf-dir", "--cni-path", "--infra-image", "--cni-args",
    "--cni-timeout", "--debug",
)  # fmt: skip


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNIRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NETCONFPATH", str(tmp_path / "net.d"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


class Runs:
    """Records the runs main() would have started, instead of starting them."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str], settings: Any) -> int:
        self.argvs.append(argv)
        return 0


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Runs:
    recorder = Runs()
    monkeypatch.setattr(cli_run, "run", recorder)
    return recorder


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_app.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--help"],
        ["--rm", "--help", "busybox"],
        ["-d", "--help", "busybox"],
        ["run", "--rm", "--help"],
        ["help", "run"],
        ["--debug", "run", "--help"],
    ],
)
def test_run_help_anywhere_among_the_options(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = main(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.startswith("Usage: cnirun [run] [OPTIONS] IMAGE [COMMAND] [ARG...]")
    for option in OWN_OPTIONS:
        assert re.search(rf"^  {option}\b.* \S", out, re.M), option  # with an explanation
    assert "and every `docker run` flag" in out


def test_help_after_the_image_belongs_to_the_command(runs: Runs, monkeypatch: Any) -> None:
    monkeypatch.setattr(Docker, "image_exists", lambda self, ref: True)
    assert cli_app.main(["busybox", "--help"]) == 0
    assert runs.argvs == [["busybox", "--help"]]


def all_commands() -> list[tuple[list[str], Any]]:
    """(path, click command) of every typer command and group, the root included."""
    found = []

    def walk(path: list[str], command: Any) -> None:
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk([*path, name], sub)

    walk([], cli_app.build_command())
    return found


TYPED = [path for path, _ in all_commands() if path and not cli_app.COMMANDS[path[0]].raw]


@pytest.mark.parametrize("path", TYPED, ids=" ".join)
def test_help_reads_like_dockers(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = main(capsys, *path, "--help")
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: cnirun {' '.join(path)} ")
    for raw in ("<str>", "<int>", "<float>", "<list["):
        assert raw not in out, f"{raw!r} in:\n{out}"
    assert not re.search(r"(?<!{){[a-z_]+}(?!})", out), out  # click's `{refs}...`


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=" ".join)
def test_examples_are_never_wrapped(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    command = {tuple(p): c for p, c in all_commands()}[tuple(path)]
    doc = inspect.cleandoc(command.help or "")
    examples = re.findall(r"^ *((?:sudo )?cnirun .*|ip netns .*)$", doc, re.M)
    code, out, _ = main(capsys, *path, "--help")
    lines = [line.strip() for line in out.splitlines()]
    for example in examples:
        assert example.strip() in lines, f"{example!r} wrapped in:\n{out}"


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (["network", "ls", "--bogus"], "cnirun network ls"),
        (["ps", "--format"], "cnirun ps"),
        (["net", "add"], "cnirun net add"),
        (["--bogus-root", "busybox"], "cnirun run"),
        (["run", "-p", "x:y", "busybox"], "cnirun run"),
    ],
)
def test_usage_errors_point_at_the_subcommands_help(
    argv: list[str], where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = main(capsys, *argv)
    assert code == 125
    assert err.startswith("cnirun: error: ")
    assert err.rstrip().endswith(f"See '{where} --help'."), err


def test_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = main(capsys, "help")
    for word in cli_app.COMMANDS:
        assert re.search(rf"^  {word} ", out, re.M), word
    assert main(capsys, "help", "ps")[1].startswith("Usage: cnirun ps ")


# -- first words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "close"),
    [("netwrok", "network"), ("logz", "logs"), ("verison", "version"), ("hlep", "help")],
)
def test_a_typo_is_refused_with_a_suggestion(
    word: str, close: str, runs: Runs, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(Docker, "image_exists", lambda self, ref: asked.append(ref) or False)
    code, out, err = main(capsys, word, "ls")
    assert code == 125 and out == ""
    first, second = err.splitlines()
    assert first.startswith(f"cnirun: '{word}' is not a cnirun command"), err
    assert second == f"Did you mean '{close}'?"
    assert runs.argvs == [] and asked == [word]


def test_an_unknown_word_without_a_close_command(
    runs: Runs, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Docker, "image_exists", lambda self, ref: False)
    code, _, err = main(capsys, "zzzqqq")
    assert code == 125 and err.splitlines()[-1] == "See 'cnirun --help'."
    assert runs.argvs == []


@pytest.mark.parametrize(
    "argv",
    [["busybox:latest", "true"], ["library/busybox"], ["busybox@sha256:" + "0" * 64],
     ["run", "netwrok"], ["--rm", "netwrok"]],
)  # fmt: skip
def test_clear_images_run_without_asking(argv: list[str], runs: Runs, monkeypatch: Any) -> None:
    def never(self: Docker, ref: str) -> bool:
        raise AssertionError(f"asked the engine about {ref}")

    monkeypatch.setattr(Docker, "image_exists", never)
    assert cli_app.main(argv) == 0
    assert runs.argvs == [argv[1:] if argv[0] == "run" else argv]


def test_a_local_image_runs(runs: Runs, monkeypatch: Any) -> None:
    monkeypatch.setattr(Docker, "image_exists", lambda self, ref: ref == "busybox")
    assert cli_app.main(["busybox", "true"]) == 0
    assert runs.argvs == [["busybox", "true"]]


def test_no_daemon_to_ask_is_one_line(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = main(capsys, "busybox")
    assert code == 125 and runs.argvs == []
    assert err.startswith("cnirun: error: Cannot connect to the Docker daemon at unix://")
    assert err.rstrip().endswith("Is the docker daemon running?") and len(err.splitlines()) == 1


def test_version_loads_no_typer(tmp_path: Path) -> None:
    from tests.unit.cli.test_app import probe

    done, loaded = probe(["--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("cnirun version ")
    assert "typer" not in loaded


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("cnirun network rm ", ["alpha", "beta"]),
        ("cnirun net add a", ["alpha"]),
        ("cnirun ps --format j", ["json"]),
    ],
)
def test_completion_of_networks_and_formats(
    words: str, expected: list[str], tmp_path: Path
) -> None:
    from tests.unit.cli.test_app import probe

    netconf = tmp_path / "net.d"
    netconf.mkdir()
    for index, name in enumerate(("alpha", "beta")):
        conf = f'{{"cniVersion": "1.0.0", "name": "{name}", "plugins": [{{"type": "bridge"}}]}}'
        (netconf / f"{index}.conflist").write_text(conf)
    done, _ = probe([], tmp_path, _CNIRUN_COMPLETE="complete_bash", COMP_WORDS=words,
                    COMP_CWORD=str(len(words.split(" ")) - 1))  # fmt: skip
    assert done.returncode == 0, done.stderr
    for word in expected:
        assert word in done.stdout.splitlines(), done.stdout


def test_typer_commands_get_the_settings_main_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cnirun --debug doctor`: the command's Settings are main()'s (typer 0.29 vendors click,
    so plain click's context never held them)."""
    from cnirun import doctor

    seen: list[Any] = []
    monkeypatch.setattr(doctor, "doctor", lambda settings, emit: seen.append(settings) or 0)
    assert cli_app.main(["--debug", "doctor"]) == 0
    [settings] = seen
    assert settings.debug is True

"""cnirun.cli.direct: the command lines main() runs without typer take exactly what typer
would give the same function, and anything else is left to typer."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

from cnirun.cli import app as cli_app
from cnirun.cli import direct
from cnirun.cli.direct import DIRECT, Option


def typer_command(words: tuple[str, ...]) -> Any:
    command = cli_app.build_command()
    for word in words:
        command = command.commands[word]
    return command


def kind(param: Any) -> str:
    if param.is_flag:
        return "flag"
    if param.multiple:
        return "multiple"
    return "seconds" if param.name == "timeout" else "value"


@pytest.mark.parametrize("words", list(DIRECT))
def test_the_options_are_the_typer_commands_own(words: tuple[str, ...]) -> None:
    command = typer_command(words)
    spec = DIRECT[words]
    options = {
        opt: Option(param.name, kind(param))
        for param in command.params
        if param.param_type_name == "option"
        for opt in (*param.opts, *param.secondary_opts)
    }
    arguments = tuple(p.name for p in command.params if p.param_type_name == "argument")
    assert dict(spec.options) == options
    assert spec.arguments == arguments


@pytest.mark.parametrize("words", list(DIRECT))
def test_the_defaults_are_the_typer_commands_own(words: tuple[str, ...]) -> None:
    """An option left out gets the function's default, which must be typer's."""
    spec = DIRECT[words]
    function = getattr(importlib.import_module(spec.module), spec.attribute)
    if words[0] == "net":
        function = importlib.import_module(spec.module).on_netns  # add/check/del pass through
    defaults = {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for param in typer_command(words).params:
        if param.param_type_name == "option":
            typer_default = None if param.multiple and not param.default else param.default
            assert defaults[param.name] == typer_default, param.name


PS = DIRECT[("ps",)].options
NET = DIRECT[("net", "add")]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([], {}),
        (["-a"], {"all_states": True}),
        (["-aq"], {"all_states": True, "quiet": True}),
        (["--all", "--no-trunc"], {"all_states": True, "no_trunc": True}),
        (["--format", "json"], {"output": "json"}),
        (["--format=json", "--format", "table"], {"output": "table"}),
        (["-f", "name=a", "--filter=status=up"], {"filters": ["name=a", "status=up"]}),
    ],
)
def test_plain_ps_lines_are_parsed(tokens: list[str], expected: dict[str, Any]) -> None:
    assert direct.parse(PS, tokens) == expected


@pytest.mark.parametrize(
    "tokens",
    [
        ["--help"],
        ["--bogus"],
        ["-x"],
        ["-af", "name=a"],  # a value option among combined flags: typer's grammar
        ["--format"],
        ["--format", "-q"],
        ["--all=yes"],
        ["extra"],
        ["--"],
        ["-"],
    ],
)
def test_anything_else_is_left_to_typer(tokens: list[str]) -> None:
    assert direct.parse(PS, tokens) is None


def test_net_lines_take_their_arguments_anywhere() -> None:
    tokens = ["--ifname", "eth1", "mynet", "--timeout", "7.5", "/run/netns/x", "--args", "A=1"]
    assert direct.parse(NET.options, tokens, NET.arguments) == {
        "ifname": "eth1",
        "timeout": 7.5,
        "network": "mynet",
        "netns": "/run/netns/x",
        "args": ["A=1"],
    }
    assert direct.parse(NET.options, ["mynet"], NET.arguments) is None
    assert direct.parse(NET.options, ["a", "b", "c"], NET.arguments) is None
    assert direct.parse(NET.options, ["a", "b", "--timeout", "1e3"], NET.arguments) is None


def test_only_the_listed_command_words_are_direct() -> None:
    assert direct.command(["ps", "--help"]) is None
    assert direct.command(["network", "rm", "x"]) is None
    assert direct.command(["net", "gc", "x"]) is None
    assert direct.command(["--debug", "ps", "-q"]) is not None


class FakeSandbox:
    def __init__(self, name: str | None, sandbox_id: str) -> None:
        self._names = [name] if name else []
        self.record = type("Record", (), {"id": sandbox_id})()

    def names(self) -> list[str]:
        return self._names


@pytest.mark.parametrize(
    ("words", "cword"),
    [
        ("cnirun logs ", "2"),
        ("cnirun logs we", "2"),
        ("cnirun exec web ", "3"),
        ("cnirun kill x", "2"),
        ("cnirun top nomatch", "2"),
    ],
)
def test_completion_is_what_typer_completes(
    words: str,
    cword: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from cnirun.sandbox import registry
    from cnirun.settings import Settings

    found = [FakeSandbox("web", "a" * 64), FakeSandbox(None, "b" * 64), FakeSandbox("db", "c" * 64)]
    monkeypatch.setattr(registry, "opened", lambda settings: (None, None))
    monkeypatch.setattr(registry, "load_all", lambda docker, store: (found, []))
    monkeypatch.setenv("CNIRUN_STATE_DIR", str(tmp_path / "state"))
    environ = {"_CNIRUN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    settings = Settings.load()

    assert cli_app._direct([], settings) == 0
    ours = capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli_app._typer([], settings)
    theirs = capsys.readouterr().out
    assert exited.value.code == 0
    assert ours == theirs


@pytest.mark.parametrize(
    "environ",
    [
        {"_CNIRUN_COMPLETE": "complete_zsh", "COMP_WORDS": "cnirun logs ", "COMP_CWORD": "2"},
        {"_CNIRUN_COMPLETE": "complete_bash", "COMP_WORDS": "cnirun inspect ", "COMP_CWORD": "2"},
        {"_CNIRUN_COMPLETE": "complete_bash", "COMP_WORDS": "cnirun logs -", "COMP_CWORD": "2"},
        {"_CNIRUN_COMPLETE": "complete_bash", "COMP_WORDS": "cnirun logs -f ", "COMP_CWORD": "3"},
        {"_CNIRUN_COMPLETE": "complete_bash", "COMP_WORDS": "cnirun 'logs' ", "COMP_CWORD": "2"},
        {"_CNIRUN_COMPLETE": "complete_bash", "COMP_WORDS": "cnirun lo", "COMP_CWORD": "1"},
        {"_CNIRUN_COMPLETE": "source_bash"},
        {},
    ],
)
def test_other_completion_requests_are_typers(environ: dict[str, str]) -> None:
    assert direct.completion(environ) is None

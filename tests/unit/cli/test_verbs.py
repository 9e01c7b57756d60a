"""The Docker verbs on a sandbox (cnirun.cli.verbs): the sandbox arguments are found among
docker's own flags, resolved to the workload, and the docker CLI is exec'd with the
endpoint's environment; `port` answers from the CNI port mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cnirun.cli import app as cli_app
from cnirun.cli import verbs
from cnirun.docker import workload
from cnirun.errors import UsageError
from cnirun.sandbox import registry
from cnirun.sandbox.records import SandboxRecord

WORKLOAD_ID = "f" * 64


@pytest.mark.parametrize(
    ("verb", "argv", "refs"),
    [
        ("logs", ["web"], [0]),
        ("logs", ["-f", "--tail", "10", "web"], [3]),
        ("logs", ["-n5", "-t", "web", "--since=1m"], [2]),
        ("logs", ["web", "-f"], [0]),
        ("exec", ["-it", "web", "sh", "-c", "echo -f"], [1]),
        ("exec", ["-e", "A=1", "-u", "0", "web", "id"], [4]),
        ("exec", ["--", "web", "ls"], [1]),
        ("top", ["web", "-ef"], [0]),
        ("wait", ["a", "b"], [0, 1]),
        ("kill", ["-s", "HUP", "a", "b"], [2, 3]),
        ("kill", ["a", "--signal=TERM", "b"], [0, 2]),
        ("port", ["web", "80/tcp"], [0]),
    ],
)
def test_sandboxes_are_found_among_flags(verb: str, argv: list[str], refs: list[int]) -> None:
    parsed = verbs.parse(verb, argv)
    assert parsed is not None and parsed.refs == refs and parsed.tokens == argv


@pytest.mark.parametrize(
    ("verb", "argv", "message"),
    [
        ("logs", [], "requires at least 1 argument: SANDBOX"),
        ("logs", ["--bogus", "web"], "unknown flag: --bogus"),
        ("logs", ["-x", "web"], "unknown shorthand flag: 'x'"),
        ("logs", ["web", "--tail"], "flag needs an argument: --tail"),
        ("kill", ["web", "-s"], "flag needs an argument: 's'"),
    ],
)
def test_bad_arguments_point_at_the_verbs_help(verb: str, argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        verbs.parse(verb, argv)
    assert message in str(info.value)
    assert info.value.hint == f"See 'cnirun {verb} --help'."  # on a line of its own


@pytest.mark.parametrize("verb", sorted(verbs.VERBS))
def test_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert verbs.parse(verb, ["--help"]) is None
    assert cli_app.main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: cnirun {verb} ")
    for flag in verbs.VERBS[verb].flags:
        assert f"--{flag}" in out


def test_every_verb_is_in_the_command_table() -> None:
    for verb in verbs.VERBS:
        entry = cli_app.COMMANDS[verb]
        assert entry.raw and entry.module == "cnirun.cli.verbs"


def record(ports: list[dict[str, Any]] | None = None) -> SandboxRecord:
    return SandboxRecord(
        id="a" * 32, infra_name="cnirun-infra-x", netns_name="cnirun-x", cache_dir="/c",
        plugin_dirs=[], cni_timeout=1.0, ports=ports or [],
    )  # fmt: skip


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """`web` is a sandbox whose workload is WORKLOAD_ID; returns the docker CLIs exec'd."""
    monkeypatch.setenv("CNIRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/elsewhere.sock")
    found = registry.Sandbox(
        record([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "::1"}]),
        str(tmp_path), workload={"Id": WORKLOAD_ID, "Names": ["/web"]},
    )  # fmt: skip

    def find(docker: Any, store: Any, ref: str) -> registry.Sandbox:
        if ref != "web":
            raise UsageError(f"no such sandbox: {ref}")
        return found

    execs: list[list[str]] = []

    def exec_cli(args: list[str], environ: dict[str, str]) -> None:
        assert environ["DOCKER_HOST"] == "unix:///run/elsewhere.sock"
        execs.append(list(args))

    monkeypatch.setattr(registry, "find", find)
    monkeypatch.setattr(registry, "reconcile_quietly", lambda settings: pytest.fail("reconciled"))
    monkeypatch.setattr(workload, "exec_cli", exec_cli)
    return execs


@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "-f", "--tail", "3", "web"],
        ["exec", "-it", "web", "sh", "-c", "web"],
        ["top", "web", "aux"],
        ["wait", "web"],
        ["kill", "-s", "HUP", "web"],
    ],
)
def test_the_docker_cli_runs_on_the_workload(argv: list[str], sandbox: list[list[str]]) -> None:
    cli_app.main(argv)
    expected = [WORKLOAD_ID if i == argv.index("web") else a for i, a in enumerate(argv)]
    assert sandbox == [expected]


def test_port_lists_the_cni_port_mappings(
    sandbox: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_app.main(["port", "web"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "80/tcp -> 0.0.0.0:8080",
        "53/udp -> [::1]:5353",
    ]
    assert cli_app.main(["port", "web", "53/udp"]) == 0
    assert capsys.readouterr().out == "53/udp -> [::1]:5353\n"
    assert cli_app.main(["port", "web", "81"]) == 125
    assert "no public port '81'" in capsys.readouterr().err
    assert sandbox == []


def test_an_unknown_sandbox_is_one_line(
    sandbox: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_app.main(["logs", "db"]) == 125
    assert capsys.readouterr().err == "cnirun: error: no such sandbox: db\n"
    assert sandbox == []

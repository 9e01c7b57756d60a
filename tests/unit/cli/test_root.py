"""Without root (issue 14, item 3): one line, "cnirun needs root: run it with sudo", exit
125, before anything is done; permission errors say the same. The real unprivileged user is
tests/e2e/test_unprivileged.py; here geteuid() is faked."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cnirun.cli import app as cli_app
from cnirun.cli import output
from cnirun.cli import run as cli_run
from cnirun.errors import NeedsRootError
from cnirun.sandbox import registry
from cnirun.settings import Settings

NEEDS_ROOT = "cnirun: error: cnirun needs root: run it with sudo"


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CNIRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NETCONFPATH", str(tmp_path / "net.d"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setattr(registry, "reconcile_quietly", lambda s: None)


@pytest.mark.parametrize(
    "argv",
    [
        ["--rm", "busybox:latest", "true"],
        ["run", "-d", "busybox", "true"],
        ["priv-net-run", "true"],
        ["gc"],
        ["stop", "web"],
        ["start", "web"],
        ["restart", "-t", "1", "web"],
        ["rm", "-f", "web"],
        ["net", "add", "mynet", "/run/netns/x"],
        ["net", "del", "mynet", "/run/netns/x"],
        ["net", "gc", "mynet", "--all"],
        ["network", "connect", "mynet", "web"],
        ["network", "disconnect", "-f", "mynet", "web"],
    ],
)
def test_refused_up_front(
    argv: list[str], not_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_app.main(argv) == 125
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(NEEDS_ROOT) and len(err.splitlines()) == 1, err


class Execd(Exception):
    """plain_docker would have replaced the process here."""


def test_help_and_plain_docker_need_no_root(
    not_root: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["gc", "--help"], ["--rm", "--help", "busybox"], ["net", "add", "--help"]):
        assert cli_app.main(argv) == 0, argv
    from cnirun.sandbox import session

    def plain_docker(args: object, environ: object) -> None:
        raise Execd

    monkeypatch.setattr(session, "plain_docker", plain_docker)
    with pytest.raises(Execd):
        cli_run.run(["--network", "none", "busybox"], Settings.load())


def test_a_permission_error_of_a_user_says_sudo(not_root: None) -> None:
    error = PermissionError(errno.EACCES, "Permission denied", "/var/lib/cnirun/sandboxes")
    mapped = output.system_error(error)
    assert isinstance(mapped, NeedsRootError)
    assert str(mapped) == (
        "cnirun needs root: run it with sudo (Permission denied: /var/lib/cnirun/sandboxes)"
    )


def test_root_gets_the_plain_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    error = PermissionError(errno.EACCES, "Permission denied", "/x")
    assert str(output.system_error(error)) == "Permission denied: /x"
    output.require_root()  # no error

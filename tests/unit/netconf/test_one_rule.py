"""One lookup rule and one default rule, shared by every command: a broken unrelated file is a
warning naming it, and never blocks a lookup by name or the default choice.

Before, with `{ broken` in 00-x.conflist and a good 10-good.conflist, `network ls` marked good
as DEFAULT and a plain run used it, but `--network good` and `net version good` failed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cnirun import cli, dockerargs, privnet
from cnirun.cni.api import CNIConfig
from cnirun.errors import ConfigError
from cnirun.netconf.select import Configs
from cnirun.sandbox.plan import make_plan
from cnirun.settings import Settings

VERSION = json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]})


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    netconf, plugins = tmp_path / "net.d", tmp_path / "bin"
    netconf.mkdir()
    plugins.mkdir()
    (netconf / "00-x.conflist").write_text("{ broken")
    good = {"cniVersion": "1.0.0", "name": "good", "plugins": [{"type": "noop"}]}
    (netconf / "10-good.conflist").write_text(json.dumps(good))
    noop = plugins / "noop"
    noop.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{VERSION}'\n")
    noop.chmod(0o755)
    return netconf, plugins


def settings(netconf: Path, plugins: Path) -> Settings:
    return Settings.load({}, netconf_dir=str(netconf), cni_path=str(plugins))


class NoDocker:
    def network_subnets(self) -> list[str]:
        raise AssertionError("the default network is a user's: nothing is generated")


def test_run_uses_good_by_default_and_by_name(dirs: tuple[Path, Path]) -> None:
    netconf, plugins = dirs
    for argv in (["busybox"], ["--network", "good", "busybox"]):
        args = dockerargs.parse_run_args(argv)
        plan = make_plan(args, settings(netconf, plugins), NoDocker())  # type: ignore[arg-type]
        assert [n.net.name for n in plan.networks] == ["good"]


def test_priv_net_run_uses_good_by_default_and_by_name(dirs: tuple[Path, Path]) -> None:
    netconf, plugins = dirs
    for names in ((), ("good",)):
        plan = privnet.make_plan(settings(netconf, plugins), names)
        assert [a.net.name for a in plan.attachments] == ["good"]


def test_the_broken_file_is_a_warning_naming_it(dirs: tuple[Path, Path]) -> None:
    netconf, plugins = dirs
    configs = Configs(str(netconf), CNIConfig([str(plugins)], str(netconf.parent / "cache")))
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("cnirun")  # the CLI's own handler may stop propagation
    logger.addHandler(handler)
    try:
        assert configs.find("good").name == "good"
    finally:
        logger.removeHandler(handler)
    assert any(str(netconf / "00-x.conflist") in r.getMessage() for r in seen)


def test_net_version_and_network_ls_agree(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    netconf, plugins = dirs
    common = ["--netconf-dir", str(netconf)]
    code = cli.main(["net", "version", "good", *common, "--cni-path", str(plugins)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines() == ["network good (cniVersion 1.0.0)", "noop: 0.4.0, 1.0.0"]
    assert "00-x.conflist" in err and err.startswith("cnirun: warning: ")
    assert cli.main(["network", "ls", "--format", "json", *common]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["name"], r["default"]) for r in rows] == [("good", True)]
    assert "00-x.conflist" in err


def test_a_name_only_in_a_broken_file_says_so(dirs: tuple[Path, Path]) -> None:
    netconf, plugins = dirs
    configs = Configs(str(netconf), CNIConfig([str(plugins)], str(netconf.parent / "cache")))
    with pytest.raises(ConfigError, match="00-x.conflist"):
        configs.find("x")  # not found while a file does not load: that file's error

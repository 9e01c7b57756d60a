"""cnirun.netconf.select: which network is the default one, and the default name's lookup."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from cnirun.errors import ConfigError, NetworkNotFoundError, NoConfigsFoundError
from cnirun.netconf import builtin, select
from cnirun.netconf.select import is_builtin_default
from tests.unit.conftest import CniEnv
from tests.unit.netconf.lab import Lab, lab_on, user_net


@pytest.fixture
def lab(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    with lab_on(cni_env, monkeypatch) as lab:
        yield lab


def test_default_generates_the_builtin_only_for_an_empty_dir(lab: Lab) -> None:
    got = lab.configs().default()
    assert is_builtin_default(got)
    # A user's network added afterwards wins, even though it sorts after cnirun's file.
    lab.write("zzz-mine.conflist", user_net("mine"))
    assert lab.configs().default().name == "mine"
    os.unlink(lab.netconf / "zzz-mine.conflist")
    again = lab.configs().default()
    assert again.bytes == got.bytes


def test_default_takes_the_first_loadable_user_network(lab: Lab) -> None:
    lab.write("05-loopback.conf", {"cniVersion": "1.0.0", "type": "loopback"})  # no name
    lab.write("10-b.conflist", user_net("b"))
    lab.write("20-a.conflist", user_net("a"))
    assert lab.configs().default().name == "b"
    assert not (lab.netconf / builtin.DEFAULT_FILE).exists()


def test_default_refuses_to_replace_a_broken_config_by_the_builtin(lab: Lab) -> None:
    path = lab.write("10-typo.conflist", '{"name": "x", "plugins": [')
    with pytest.raises(ConfigError, match=f"no usable network in {lab.netconf}: {path}"):
        lab.configs().default()
    assert not (lab.netconf / builtin.DEFAULT_FILE).exists()


def test_the_default_name_works_before_the_file_exists(lab: Lab) -> None:
    got = lab.configs().find("cnirun")
    assert is_builtin_default(got)
    missing = re.escape(f'no net configuration with name "other" in {lab.netconf}')
    with pytest.raises(NetworkNotFoundError, match=missing):
        lab.configs().find("other")
    empty = lab.netconf / "empty"
    empty.mkdir()
    with pytest.raises(NoConfigsFoundError):
        lab.configs(directory=empty).find("other")


def test_the_scans_default_choice_is_what_default_resolves_to(lab: Lab) -> None:
    assert select.scan(str(lab.netconf)).default_choice() is None
    generated = builtin.ensure(lab.configs())
    choice = select.scan(str(lab.netconf)).default_choice()
    assert choice is not None and choice.name == generated.name
    lab.write("zzzz.conflist", {"cniVersion": "1.0.0", "name": "late", "plugins": [{"type": "x"}]})
    choice = select.scan(str(lab.netconf)).default_choice()
    assert choice is not None and choice.name == "late"
    assert lab.configs().default().name == "late"


def test_a_network_with_an_invalid_name_is_named_when_passed_over(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 13 item 9: it was skipped silently, and the built-in default generated instead.
    warned: list[str] = []
    monkeypatch.setattr(select.log, "warning", lambda text, *args: warned.append(text % args))
    monkeypatch.setattr(select, "_warned", set())
    path = lab.write("10-bad.conflist", user_net("bad name"))
    lab.write("05-loopback.conf", {"cniVersion": "1.0.0", "type": "loopback"})  # no name
    assert is_builtin_default(lab.configs().default())
    assert warned == [
        f"not the default network: {path}: network name 'bad name' is not valid "
        "(letters, digits, _ . - only)"
    ]

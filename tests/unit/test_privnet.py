"""priv-net-run's plan (cnirun.privnet.make_plan): networks, args and flags are checked before
anything is created; no namespace is created here, so no root is needed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnirun import privnet
from cnirun.cni.api import CNIConfig
from cnirun.errors import NetworkNotFoundError, UsageError
from cnirun.settings import DEFAULT_CNI_TIMEOUT, Settings
from tests.unit.conftest import CniEnv
from tests.unit.netconf.lab import Lab, in_process, lab_on, user_net


@pytest.fixture
def lab(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setattr(privnet, "CNIConfig", in_process(CNIConfig))
    with lab_on(cni_env, monkeypatch) as lab:
        yield lab


def settings(lab: Lab, **flags: Any) -> Settings:
    return Settings.load(
        {},
        netconf_dir=str(lab.netconf),
        cni_path=str(lab.bin),
        cache_dir=str(lab.cache),
        **flags,
    )


def make_plan(
    lab: Lab, networks: tuple[str, ...] = (), cni_args: tuple[str, ...] = (), **flags: Any
) -> privnet.Plan:
    return privnet.make_plan(settings(lab, **flags), networks, cni_args)


def test_plan_uses_the_default_network_and_a_unique_valid_id(lab: Lab) -> None:
    first = make_plan(lab)
    second = make_plan(lab)
    assert [a.net.name for a in first.attachments] == ["cnirun"]
    assert first.name.startswith("cnirun-privnet-") and first.name != second.name
    assert first.cni.timeout == DEFAULT_CNI_TIMEOUT


def test_plan_loads_named_networks_in_order(lab: Lab) -> None:
    lab.write("10-a.conflist", user_net("a"))
    lab.write("20-b.conflist", user_net("b", "10.6.0.0/24"))
    plan = make_plan(lab, ("b", "a"), ("K=V",), cni_timeout=5.0)
    assert [a.net.name for a in plan.attachments] == ["b", "a"]
    assert [a.rt.ifname for a in plan.attachments] == ["eth0", "eth1"]
    assert {a.rt.cni_args for a in plan.attachments} == {(("K", "V"),)}
    assert plan.cni.timeout == 5.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"networks": ("a", "a")}, UsageError, "network a is given twice"),
        ({"cni_args": ("novalue",)}, UsageError, 'invalid CNI_ARGS pair "novalue"'),
        ({"cni_timeout": 0.0}, UsageError, "--cni-timeout must be positive"),
        ({"networks": ("nope",)}, NetworkNotFoundError, 'no net configuration with name "nope"'),
        ({"networks": ("ghost",)}, Exception, 'network ghost .*failed to find plugin "ghost"'),
    ],
)
def test_plan_errors_name_what_is_wrong(
    lab: Lab, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    lab.write("10-a.conflist", user_net("a"))
    ghost = {"cniVersion": "1.0.0", "name": "ghost", "plugins": [{"type": "ghost"}]}
    lab.write("20-ghost.conflist", ghost)
    with pytest.raises(error, match=message):
        make_plan(lab, **kwargs)


def test_priv_net_run_needs_a_command(lab: Lab) -> None:
    with pytest.raises(UsageError, match="needs a command"):
        privnet.priv_net_run([], make_plan(lab))


def test_the_session_lock_dir_is_private_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 13 item 3: lock dirs came out 0777 under root's umask 000.
    monkeypatch.setattr(privnet, "LOCK_DIR", str(tmp_path / "run" / "cnirun" / "privnet"))
    old = os.umask(0)
    try:
        fd = privnet._take_lock("cnirun-privnet-0123456789abcdef")
    finally:
        os.umask(old)
    try:
        assert privnet.is_live("cnirun-privnet-0123456789abcdef")
    finally:
        privnet._drop_lock("cnirun-privnet-0123456789abcdef", fd)
    for directory in ("run", "run/cnirun", "run/cnirun/privnet"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o700

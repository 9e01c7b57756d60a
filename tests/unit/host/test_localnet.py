"""The localhost guard (cnirun.host.localnet, issue 13 item 8): installed once, before a chain
with portmap is attached, never twice, and a failure stops the attachment. iptables is faked
here (the e2e test checks the real rule blocks the demo)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cnirun.attach import Attachment, add_all
from cnirun.errors import CnirunError
from cnirun.host import localnet
from cnirun.host.signals import SignalGuard
from tests.unit.conftest import CniEnv


class FakeIptables:
    def __init__(self, present: bool = False, fail: bool = False) -> None:
        self.present, self.fail = present, fail
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[0] == "-C":
            return subprocess.CompletedProcess(args, 0 if self.present else 1, "", "")
        if self.fail:
            return subprocess.CompletedProcess(args, 4, "", "iptables: Permission denied.\n")
        self.present = True
        return subprocess.CompletedProcess(args, 0, "", "")


@pytest.fixture
def iptables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeIptables:
    fake = FakeIptables()
    monkeypatch.setattr(localnet, "_iptables", fake)
    monkeypatch.setattr(localnet, "LOCK", str(tmp_path / "run" / "localnet.lock"))
    return fake


def test_the_rule_is_kube_proxys_and_installed_once(iptables: FakeIptables) -> None:
    localnet.ensure()
    localnet.ensure()
    inserted = [c for c in iptables.calls if c[0] == "-I"]
    assert inserted == [
        (
            "-I", "INPUT", "1", "-d", "127.0.0.0/8", "!", "-i", "lo",
            "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT",
            "-m", "comment", "--comment", localnet.COMMENT, "-j", "DROP",
        )
    ]  # fmt: skip
    assert localnet.present()


def test_a_rule_that_cannot_be_installed_is_one_error(iptables: FakeIptables) -> None:
    iptables.fail = True
    with pytest.raises(CnirunError, match="localhost guard: cannot install .*Permission denied"):
        localnet.ensure()


def test_only_chains_with_portmap_get_the_guard(
    cni_env: CniEnv, iptables: FakeIptables, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = cni_env.network(name="plain")
    cni_env.plugin("portmap")
    portmapped = cni_env.network([{"type": "fake"}, {"type": "portmap"}], name="pm")
    cni = cni_env.cni()
    guard: Any = SignalGuard()
    add_all(cni, [Attachment(plain, cni_env.rt())], guard)
    assert iptables.calls == []
    add_all(cni, [Attachment(portmapped, cni_env.rt(cid="c2"))], guard)
    assert [c[0] for c in iptables.calls] == ["-C", "-C", "-I"]
    iptables.present, iptables.fail = False, True
    with pytest.raises(CnirunError, match="localhost guard"):
        add_all(cni, [Attachment(portmapped, cni_env.rt(cid="c3"))], guard)
    assert [c["env"]["CNI_CONTAINERID"] for c in cni_env.calls()].count("c3") == 0

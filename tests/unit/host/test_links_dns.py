"""cnirun.host.links.drop_dns_rule: the rule dnsname inserts for its dnsmasq, removed for good."""

from __future__ import annotations

import subprocess

import pytest

from cnirun.errors import CnirunError
from cnirun.host import links, localnet

RULE = ["INPUT", "-i", "br9", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"]


def test_every_copy_of_the_rule_is_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    copies = [2]

    def fake(*args: str, what: str = "") -> subprocess.CompletedProcess[str]:
        seen.append(list(args))
        copies[0] -= 1
        return subprocess.CompletedProcess(list(args), 0 if copies[0] >= 0 else 1, "", "")

    monkeypatch.setattr(localnet, "iptables", fake)
    links.drop_dns_rule("br9")
    assert seen == [["-D", *RULE]] * 3  # two copies deleted, then "no such rule"


def test_a_failure_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    warned: list[str] = []
    monkeypatch.setattr(links.log, "warning", lambda fmt, *a: warned.append(fmt % a))

    def broken(*args: str, what: str = "") -> subprocess.CompletedProcess[str]:
        raise CnirunError(f"{what}: cannot run iptables: gone")

    monkeypatch.setattr(localnet, "iptables", broken)
    links.drop_dns_rule("br9")
    assert warned == ["dnsname's DNS rule: cannot run iptables: gone"]

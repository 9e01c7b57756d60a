"""cnirun.sandbox.dnsname at the Exec seam: a chain with the dnsname plugin gets the container
name in CNI_ARGS (K8S_POD_NAME, with IgnoreUnknown=1, merged with --cni-args) and the aliases
through the `aliases` capability, as podman gives them; other chains get nothing new."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnirun.cni.config import NetworkConfigList
from cnirun.dockerargs import parse_run_args
from cnirun.sandbox import dnsname, plan
from tests.unit.conftest import CniEnv
from tests.unit.sandbox.test_plan import NOOP_VERSION, FakeDocker

DNSNAME = {"type": "dnsname", "domainName": "dns.cnirun", "capabilities": {"aliases": True}}


def dns_net(cni_env: CniEnv, name: str = "ci") -> NetworkConfigList:
    cni_env.plugin("dnsname")
    return cni_env.network([{"type": "fake"}, DNSNAME], name=name)


def add(cni_env: CniEnv, net: NetworkConfigList, user: tuple[tuple[str, str], ...],
        name: str, aliases: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """ADD `net` with what the session gives its plugins; the calls the plugins saw."""
    rt = cni_env.rt(
        args=dnsname.cni_args(net, user, name), caps=dnsname.capability_args(net, aliases)
    )
    cni_env.cni().add_network_list(net, rt)
    return cni_env.calls()


def test_a_dnsname_chain_gets_the_pod_name_and_the_aliases(cni_env: CniEnv) -> None:
    net = dns_net(cni_env)
    calls = add(cni_env, net, (("FOO", "bar"),), "db", ["cache", "cache", "store"])
    assert [c["argv0"].rsplit("/", 1)[-1] for c in calls] == ["fake", "dnsname"]
    for call in calls:  # CNI_ARGS go to every plugin of the chain: hence IgnoreUnknown
        assert call["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=db;FOO=bar"
    assert calls[1]["stdin"]["runtimeConfig"] == {"aliases": {"ci": ["cache", "store"]}}
    assert "runtimeConfig" not in calls[0]["stdin"]  # fake declares no such capability


def test_the_users_own_keys_are_not_given_twice(cni_env: CniEnv) -> None:
    net = dns_net(cni_env)
    user = (("IgnoreUnknown", "true"), ("K8S_POD_NAME", "mine"))
    calls = add(cni_env, net, user, "db", [])
    assert {c["env"]["CNI_ARGS"] for c in calls} == {"IgnoreUnknown=true;K8S_POD_NAME=mine"}
    assert "runtimeConfig" not in calls[1]["stdin"]  # no alias: no capability args


def test_other_chains_get_nothing_new(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake", "capabilities": {"aliases": True}}], name="plain")
    calls = add(cni_env, net, (("FOO", "bar"),), "db", ["cache"])
    assert [c["env"]["CNI_ARGS"] for c in calls] == ["FOO=bar"]
    assert "runtimeConfig" not in calls[0]["stdin"]
    assert dnsname.cni_args(net, (), "db") == ()


def test_the_plan_gives_the_aliases_to_the_dnsname_network_only(tmp_path: Path) -> None:
    from cnirun.settings import Settings

    netconf, plugins = tmp_path / "net.d", tmp_path / "bin"
    netconf.mkdir()
    plugins.mkdir()
    for name in ("noop", "dnsname"):
        exe = plugins / name
        exe.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{NOOP_VERSION}'\n")
        exe.chmod(0o755)
    chains = {"plain": [{"type": "noop"}], "ci": [{"type": "noop"}, DNSNAME]}
    for name, chain in chains.items():
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": chain}
        (netconf / f"10-{name}.conflist").write_text(json.dumps(conf))
    settings = Settings.load({}, netconf_dir=str(netconf), cni_path=str(plugins))
    argv = ["--network", "plain", "--network", "ci", "--network-alias", "db", "busybox"]
    made = plan.make_plan(parse_run_args(argv), settings, FakeDocker({}, set()))  # type: ignore[arg-type]
    assert [n.capability_args for n in made.networks] == [{}, {"aliases": {"ci": ["db"]}}]

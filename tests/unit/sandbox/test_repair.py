"""cnirun.sandbox.repair: after Docker restarted an infra in a new netns, the ADD again asks
for the recorded addresses, where the chain takes the `ips` capability (issue 11)."""

from __future__ import annotations

import json

import pytest

from cnirun.attach import Attachment
from cnirun.cni.config import list_from_bytes
from cnirun.cni.types import RuntimeConf
from cnirun.sandbox import repair
from cnirun.sandbox.records import SandboxRecord

SANDBOX = "d" * 32


def attachment(capabilities: dict[str, bool], args: dict[str, object]) -> Attachment:
    conf = {
        "cniVersion": "1.0.0",
        "name": "net",
        "plugins": [{"type": "bridge", "capabilities": capabilities}, {"type": "portmap"}],
    }
    net = list_from_bytes(json.dumps(conf).encode(), "net.conflist")
    rt = RuntimeConf(container_id="c", netns="/n", ifname="eth0", capability_args=args)
    return Attachment(net, rt)


def record() -> SandboxRecord:
    result = {"ips": [{"address": "10.1.2.3/24"}, {"address": "fd00::3/64"}]}
    return SandboxRecord(
        id=SANDBOX, infra_name="i", netns_name="n", cache_dir="/c", plugin_dirs=[],
        cni_timeout=1.0, results={"net": result},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("capabilities", "args", "ips"),
    [
        ({"ips": True}, {}, ["10.1.2.3", "fd00::3"]),
        ({}, {}, None),  # the chain cannot be asked: the plugins choose
        ({"ips": True}, {"ips": ["10.1.2.9"]}, ["10.1.2.9"]),  # the run's own --ip wins
    ],
)
def test_the_old_addresses_are_asked_for_where_the_chain_takes_them(
    capabilities: dict[str, bool], args: dict[str, object], ips: list[str] | None
) -> None:
    asked = repair._asking_for_old_addresses(record(), attachment(capabilities, args))
    assert (asked.rt.capability_args or {}).get("ips") == ips

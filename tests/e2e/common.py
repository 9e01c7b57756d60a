"""Helpers several e2e test files share: a clean environment for cnirun subprocesses, the
split of cnirun's stderr into what a user sees and its debug output, and the CNI README's
example network on a test's own bridge and subnet."""

from __future__ import annotations

import os
from typing import Any

# Variables of the caller's environment that must not reach a test's cnirun.
SCRUBBED_ENV = (
    "NETCONFPATH",
    "CNI_PATH",
    "CNI_ARGS",
    "CAP_ARGS",
    "CNI_IFNAME",
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNIRUN_CACHE_DIR",
    "CNIRUN_STATE_DIR",
    "CNIRUN_DEBUG",
    "CNIRUN_STOP_TIMEOUT",
)
DEBUG_PREFIX = "cnirun: DEBUG: "
TRACEBACK_PREFIX = "cnirun: ERROR: traceback"


def clean_environ() -> dict[str, str]:
    """This process's environment without anything that would steer cnirun."""
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}


def split_stderr(stderr: str) -> tuple[str, str]:
    """(what a user sees, the DEBUG lines and the traceback --debug adds to an error)."""
    user, debug = [], []
    in_traceback = False
    for line in stderr.splitlines(keepends=True):
        if line.startswith((DEBUG_PREFIX, TRACEBACK_PREFIX)):
            in_traceback = line.startswith(TRACEBACK_PREFIX)
            debug.append(line)
        elif in_traceback and not line.startswith("cnirun: "):
            debug.append(line)
        else:
            in_traceback = False
            user.append(line)
    return "".join(user), "".join(debug)


def seed_bridge(network: str, bridge: str, subnet: str, version: str = "0.2.0") -> dict[str, Any]:
    """The CNI README's `10-mynet.conf`, with this test's network name, bridge and subnet."""
    return {
        "cniVersion": version,
        "name": network,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": subnet, "routes": [{"dst": "0.0.0.0/0"}]},
    }

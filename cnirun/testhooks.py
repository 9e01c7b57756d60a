"""The hooks cnirun's own tests and benchmark use, all in one place. Not for users.

- `CNIRUN_TEST_KILL_AT=<point>`: cnirun SIGKILLs itself at that fault point (see
  `fault_point`), exactly as an outside `kill -9` at that moment would; the crash-safety
  tests use it to prove that `cnirun gc` reclaims whatever is left. `cnirun update` has
  `update-recorded` (its intent saved, no plugin called), `update-deleted` (right after a
  re-applied plugin's DEL, before its ADD) and `update-applied` (every ADD, cache write and
  CHECK done, the record not yet committed). `network connect` and `disconnect` have `join`
  (the attachment marked in the record, before its ADD or DEL).
- `CNIRUN_RUSAGE_FILE=<path>`: at exit, write this process's own CPU seconds there (the
  benchmark's probe, which cannot otherwise tell cnirun's CPU from the docker CLI's).
- `CNIRUN_DEFAULT_NETWORK`, `CNIRUN_DEFAULT_BRIDGE`, `CNIRUN_DEFAULT_SUBNET`: the name,
  bridge and subnet the built-in default network is generated with, so tests can make one
  of their own without touching the host's `cnirun0` (also an escape hatch on odd hosts).
"""

from __future__ import annotations

import os
import signal

ENV_KILL_AT = "CNIRUN_TEST_KILL_AT"
ENV_RUSAGE_FILE = "CNIRUN_RUSAGE_FILE"
ENV_DEFAULT_NAME = "CNIRUN_DEFAULT_NETWORK"
ENV_DEFAULT_BRIDGE = "CNIRUN_DEFAULT_BRIDGE"
ENV_DEFAULT_SUBNET = "CNIRUN_DEFAULT_SUBNET"


def fault_point(name: str) -> None:
    """Die here by SIGKILL when the crash-safety tests ask for it."""
    if os.environ.get(ENV_KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def write_rusage() -> None:
    """Report this process's CPU seconds to the benchmark, when it asks."""
    path = os.environ.get(ENV_RUSAGE_FILE)
    if not path:
        return
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(path, "w") as handle:
        handle.write(f"{usage.ru_utime + usage.ru_stime}\n")


def default_network_overrides() -> tuple[str, str, str]:
    """(name, bridge, subnet) for the built-in default network; "" where not overridden."""
    return (
        os.environ.get(ENV_DEFAULT_NAME, ""),
        os.environ.get(ENV_DEFAULT_BRIDGE, ""),
        os.environ.get(ENV_DEFAULT_SUBNET, ""),
    )

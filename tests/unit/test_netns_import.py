"""cnirun.netns must stay cheap to import: pyroute2 is loaded only by the functions that use it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cnirun.netns import NETNS_DIR, netns_path

from cnirun.errors import NetnsError


def test_importing_netns_does_not_load_pyroute2() -> None:
    code = (
        "import sys, cnirun.netns\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'docker'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_netns_path_is_under_run_netns() -> None:
    assert NETNS_DIR == "/run/netns"
    assert netns_path("cnirun-abc") == "/run/netns/cnirun-abc"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../etc", "a\0b"])
def test_netns_path_rejects_names_that_escape_the_directory(name: str) -> None:
    with pytest.raises(NetnsError, match="invalid netns name"):
        netns_path(name)

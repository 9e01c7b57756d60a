"""A CI-style job on one CNI network: a database server sandbox, then client sandboxes that
write and read data over the network, reaching the server by its container name (and an
alias) as a Docker user-defined network lets them. Names come from the hosts files cnirun
writes (cnirun.sandbox.names): the network has no DNS plugin.

The image is Debian bookworm with redis-server and redis-tools, built offline by
scripts/make-debian-image.sh (debootstrap from the Debian mirror, the .debs cached): about
40 s the first time, then reused under the same name (a hash of its inputs), never removed
here. Everything the job ran is, and the test asserts that nothing is left.
"""

from __future__ import annotations

import secrets

import pytest

from tests.e2e.harness import REPO, Harness, Result, sh, wait_for

pytestmark = pytest.mark.e2e

MAKE_IMAGE = REPO / "scripts" / "make-debian-image.sh"
PACKAGES = ("redis-server", "redis-tools")


@pytest.fixture(scope="module")
def db_image() -> str:
    """The database image (made once, then reused across runs)."""
    made = sh("bash", str(MAKE_IMAGE), "cnirun-test-redis", *PACKAGES, timeout=900)
    name = made.stdout.strip().splitlines()[-1]
    assert sh("docker", "image", "inspect", name, check=False).returncode == 0, made.stderr
    return name


def test_a_client_writes_and_reads_a_database_by_name(rig: Harness, db_image: str) -> None:
    net = rig.network()
    db = rig.name()
    server = rig.run("-d", "--name", db, "--network", net.name, "--network-alias", "db",
                     *rig.label, db_image, "redis-server", "--protected-mode", "no")  # fmt: skip
    assert server.returncode == 0, server.explain()
    sandbox = rig.workload_sandbox(db)

    def client(*command: str) -> Result:
        return rig.run("--rm", "--network", net.name, *rig.label, db_image,
                       "redis-cli", *command)  # fmt: skip

    wait_for(lambda: client("-h", db, "ping").stdout == "PONG\n", 60, "redis to answer")
    value = secrets.token_hex(8)
    wrote = client("-h", db, "set", "k", value)
    assert (wrote.returncode, wrote.stdout) == (0, "OK\n"), wrote.explain()
    read = client("-h", db, "get", "k")  # another sandbox, the same data
    assert (read.returncode, read.stdout) == (0, f"{value}\n"), read.explain()
    by_alias = client("-h", "db", "get", "k")
    assert (by_alias.returncode, by_alias.stdout) == (0, f"{value}\n"), by_alias.explain()
    # Without names there is no answer: a name no sandbox has does not resolve.
    unknown = client("-h", f"nodb{rig.tag}", "ping")
    assert unknown.returncode != 0 and "PONG" not in unknown.stdout, unknown.explain()

    removed = rig.run("rm", "-f", db)
    assert removed.returncode == 0, removed.explain()
    rig.assert_clean([sandbox])

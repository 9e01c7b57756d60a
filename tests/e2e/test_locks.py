"""The CNI lock is per network, and no plugin outlives its cnirun (issue 12, item 4).

One hung plugin used to wedge every cnirun on the host: the lock was one per cache dir and
held across plugin execution, and a plugin left behind by a killed cnirun kept it for ever.
"""

from __future__ import annotations

from cnirun.sandbox.records import process_runs
from tests.e2e.harness import Harness, wait_for


def test_a_hung_del_on_one_network_stops_neither_another_network_nor_gc(rig: Harness) -> None:
    cni_path = rig.fake_plugin()
    hang = rig.tmp / "del-hangs"
    hang.touch()
    hung_net = rig.network(extra=[{"type": "fake", "fake": {"DEL": {"sleep_while": str(hang)}}}])
    other_net = rig.network()
    env = rig.env(CNI_PATH=cni_path)
    first = rig.start("--rm", "--network", hung_net.name, *rig.label, "busybox", "true", env=env)
    wait_for(lambda: any(c["cmd"] == "DEL" for c in rig.fake_calls()), 60, "the hanging DEL")
    [hung] = [c for c in rig.fake_calls() if c["cmd"] == "DEL"]
    [sandbox] = rig.records()

    other = rig.run("--rm", "--network", other_net.name, *rig.label, "busybox", "true", env=env)
    assert other.returncode == 0, other.explain()
    assert first.poll() is None and process_runs(hung["pid"])  # the DEL still hangs meanwhile

    first.kill()  # kill -9: the plugin goes with it (the lock it never had goes too)
    killed = rig.finish(first)
    assert killed.returncode == -9, killed.explain()
    wait_for(lambda: not process_runs(hung["pid"]), 30, "the plugin to die with its cnirun")

    hang.unlink()  # the next DEL does not hang
    gc = rig.run("gc", env=env)
    assert gc.returncode == 0, gc.explain()
    assert f"sandbox {sandbox}" in gc.stdout, gc.explain()
    rig.assert_clean([sandbox, *other.sandbox_ids])

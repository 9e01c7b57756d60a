"""cnirun.docker.workload.run_argv: cnirun's labels come last, so none of the user's wins."""

from __future__ import annotations

import pytest

from cnirun.docker import workload


def test_cnirun_labels_follow_the_users_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workload, "docker_cli", lambda: "/usr/bin/docker")
    argv = workload.run_argv(
        infra_id="i" * 64,
        sandbox_id="a" * 32,
        files={},
        read_only=False,
        flags=["--label-file", "/tmp/labels", "-l", "app=1"],
        image="busybox",
        command=["true"],
    )
    # docker applies --label-file first, then every --label in order: the last one wins.
    assert argv == [
        "/usr/bin/docker", "run", f"--network=container:{'i' * 64}",
        "--label-file", "/tmp/labels", "-l", "app=1",
        "--label", f"io.cnirun.sandbox={'a' * 32}", "--label", "io.cnirun.role=workload",
        "busybox", "true",
    ]  # fmt: skip

"""cnirun.sandbox.plan.check_workload: what Docker would refuse the workload for is found
before anything exists (issue 14, item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from cnirun.dockerargs import parse_run_args
from cnirun.errors import UsageError
from cnirun.sandbox import plan


class FakeDocker:
    def __init__(self, containers: dict[str, str], images: set[str]) -> None:
        self.containers = containers
        self.images = images
        self.asked: list[str] = []

    def container_id(self, name: str) -> str | None:
        self.asked.append(f"container {name}")
        return self.containers.get(name)

    def image_exists(self, ref: str) -> bool:
        self.asked.append(f"image {ref}")
        return ref in self.images


def check(argv: list[str], docker: FakeDocker) -> None:
    plan.check_workload(parse_run_args(argv), docker)  # type: ignore[arg-type]


def test_a_name_in_use_is_dockers_conflict() -> None:
    docker = FakeDocker({"web": "c0ffee"}, {"busybox"})
    with pytest.raises(UsageError) as info:
        check(["--name", "web", "busybox"], docker)
    assert str(info.value).startswith(
        'Conflict. The container name "/web" is already in use by container "c0ffee".'
    )
    check(["--name", "db", "busybox"], docker)


@pytest.mark.parametrize("pull", ["--pull=never", "--pull=missing", "--pull=always", None])
def test_a_missing_image_is_refused_only_when_it_may_not_be_pulled(pull: Any) -> None:
    docker = FakeDocker({}, {"busybox"})
    argv = [pull] if pull else []
    if pull == "--pull=never":
        with pytest.raises(UsageError, match=r"^No such image: nope:1 \(and --pull=never"):
            check([*argv, "nope:1"], docker)
    else:
        check([*argv, "nope:1"], docker)  # docker run pulls it, with its own display
    check([*argv, "busybox"], docker)


def test_nothing_is_asked_without_a_name_or_pull_never() -> None:
    docker = FakeDocker({}, set())
    check(["--rm", "busybox", "true"], docker)
    assert docker.asked == []

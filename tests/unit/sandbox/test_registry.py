"""cnirun.sandbox.registry.find: by name, workload ID prefix or sandbox ID; a miss lists what
exists and the closest name (issue 14, item 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cnirun.errors import UsageError
from cnirun.sandbox import registry
from cnirun.sandbox.records import RecordStore, SandboxRecord

IDS = {"web": ("a" * 32, "1" * 64), "db": ("b" * 32, "2" * 64)}


class FakeDocker:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def containers(self) -> list[dict[str, Any]]:
        return self.rows


@pytest.fixture
def world(tmp_path: Path) -> tuple[Any, RecordStore]:
    store = RecordStore(str(tmp_path / "state"))
    rows = []
    for name, (sandbox_id, workload_id) in IDS.items():
        store.save(SandboxRecord(
            id=sandbox_id, infra_name=f"cnirun-infra-{sandbox_id}",
            netns_name=f"cnirun-{sandbox_id}", cache_dir="/c", plugin_dirs=[], cni_timeout=1.0,
            detach=True,
        ))  # fmt: skip
        rows.append({
            "Id": workload_id, "Names": [f"/{name}"], "State": "running",
            "Labels": {"io.cnirun.sandbox": sandbox_id, "io.cnirun.role": "workload"},
        })  # fmt: skip
    return FakeDocker(rows), store


@pytest.mark.parametrize("ref", ["web", "1111", "aaaa", "a" * 32])
def test_found_by_name_or_id_prefix(world: tuple[Any, RecordStore], ref: str) -> None:
    assert registry.find(*world, ref).names() == ["web"]


def test_a_miss_lists_the_sandboxes_and_the_closest(world: tuple[Any, RecordStore]) -> None:
    with pytest.raises(UsageError) as info:
        registry.find(*world, "wbe")
    assert str(info.value) == 'no such sandbox: wbe (did you mean "web"? sandboxes: db, web)'
    with pytest.raises(UsageError) as info:
        registry.find(*world, "zzz")
    assert str(info.value) == "no such sandbox: zzz (sandboxes: db, web)"


def test_a_miss_with_no_sandboxes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^no such sandbox: x \(there are no sandboxes\)$"):
        registry.find(FakeDocker([]), RecordStore(str(tmp_path)), "x")  # type: ignore[arg-type]

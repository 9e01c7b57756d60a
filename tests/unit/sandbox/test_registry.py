"""cnirun.sandbox.registry.find: by name, workload ID prefix or sandbox ID; a miss lists what
exists and the closest name (issue 14, item 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cnirun.errors import UsageError
from cnirun.sandbox import lifecycle, registry
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


class Engine:
    """An engine with one sandbox's workload (or none), which records what it is asked."""

    def __init__(self, state: str | None, engine_id: str = "A", stop_timeout: int | None = None):
        self.state, self.id, self.stop_timeout = state, engine_id, stop_timeout
        self.calls: list[tuple[str, Any]] = []

    def containers(self) -> list[dict[str, Any]]:
        if self.state is None:
            return []
        labels = {"io.cnirun.sandbox": SANDBOX, "io.cnirun.role": "workload"}
        return [{"Id": "9" * 64, "Names": ["/web"], "State": self.state, "Labels": labels}]

    def engine_id(self) -> str:
        return self.id

    def inspect(self, container: str) -> dict[str, Any]:
        return {"Config": {"StopTimeout": self.stop_timeout}}

    def stop(self, container: str, timeout: int | None) -> None:
        self.calls.append(("stop", timeout))

    def remove(self, container: str) -> None:
        self.calls.append(("remove", container))


SANDBOX = "c" * 32


def one_sandbox(tmp_path: Path, engine_id: str = "A", detach: bool = True) -> RecordStore:
    store = RecordStore(str(tmp_path / "state"))
    store.save(SandboxRecord(
        id=SANDBOX, infra_name=f"cnirun-infra-{SANDBOX}", netns_name=f"cnirun-{SANDBOX}",
        cache_dir="/c", plugin_dirs=[], cni_timeout=1.0, detach=detach, owner_pid=1,
        owner_start="0", engine_id=engine_id,
    ))  # fmt: skip
    return store


def loaded(engine: Engine, store: RecordStore) -> registry.Sandbox:
    [sandbox], _ = registry.load_all(engine, store)  # type: ignore[arg-type]
    return sandbox


@pytest.mark.parametrize(
    ("state", "up"),
    [("running", True), ("paused", True), ("restarting", True), ("exited", False),
     ("created", False), ("dead", False)],
)  # fmt: skip
def test_a_detached_sandbox_lives_while_its_workload_exists(
    tmp_path: Path, state: str, up: bool
) -> None:
    sandbox = loaded(Engine(state), one_sandbox(tmp_path))
    assert (sandbox.state, sandbox.live, sandbox.up) == (state, True, up)


def test_without_its_workload_a_sandbox_is_orphaned(tmp_path: Path) -> None:
    sandbox = loaded(Engine(None), one_sandbox(tmp_path))
    assert (sandbox.state, sandbox.live) == ("orphaned", False)


def test_a_foreground_run_whose_cnirun_died_is_orphaned_even_if_its_workload_runs(
    tmp_path: Path,
) -> None:
    sandbox = loaded(Engine("running"), one_sandbox(tmp_path, detach=False))
    assert (sandbox.state, sandbox.live) == ("orphaned", False)


def test_another_engines_sandbox_is_never_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = one_sandbox(tmp_path, engine_id="B")
    sandbox = loaded(Engine(None, engine_id="A"), store)
    assert (sandbox.state, sandbox.live, sandbox.elsewhere) == ("elsewhere", True, True)
    torn: list[str] = []
    monkeypatch.setattr(registry, "teardown", lambda record, *a, **k: torn.append(record.id) or [])
    registry.reconcile(Engine(None, engine_id="A"), store)  # type: ignore[arg-type]
    assert torn == [] and store.ids() == [SANDBOX]
    with pytest.raises(UsageError, match="is on another Docker engine \\(ID B\\)"):
        lifecycle.remove(Engine(None), store, sandbox, force=True)  # type: ignore[arg-type]
    # Its own engine judges it: there its workload is gone.
    registry.reconcile(Engine(None, engine_id="B"), store)  # type: ignore[arg-type]
    assert torn == [SANDBOX]


@pytest.mark.parametrize(
    ("given", "own", "sent"), [(3, None, 3), (None, 30, None), (None, None, 7), (0, 30, 0)]
)
def test_stop_waits_for_t_else_the_workloads_stop_timeout_else_the_default(
    tmp_path: Path, given: int | None, own: int | None, sent: int | None
) -> None:
    store = one_sandbox(tmp_path)
    engine = Engine("running", stop_timeout=own)
    lifecycle.stop(engine, store, loaded(engine, store), given, 7.0)  # type: ignore[arg-type]
    assert engine.calls == [("stop", sent)]  # None: Docker applies the workload's own
    assert store.ids() == [SANDBOX]  # the sandbox stays, for start or rm


@pytest.mark.parametrize("state", ["running", "paused", "restarting"])
def test_rm_refuses_an_up_sandbox_and_rm_f_kills_without_stopping(
    tmp_path: Path, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "teardown", lambda *a, **k: [])
    store = one_sandbox(tmp_path)
    engine = Engine(state)
    with pytest.raises(UsageError, match=f"is {state}: stop it first or use rm -f"):
        lifecycle.remove(engine, store, loaded(engine, store), force=False)  # type: ignore[arg-type]
    lifecycle.remove(engine, store, loaded(engine, store), force=True)  # type: ignore[arg-type]
    assert engine.calls == [("remove", "9" * 64)]

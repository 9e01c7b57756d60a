"""Fixtures shared by the unit tests: a CNI sandbox with the fake plugin installed.

`cni_env` gives temporary netconf, plugin (`a`, `b`) and cache directories, points
$FAKE_LOG at a fresh log, and offers helpers to write configs, build a CNIConfig and read
back what the fake plugin saw. Everything lives under pytest's tmp_path.

`cni_env.cni()` runs plugins in-process through `tests.unit.fakes.FakePluginExec`, which
behaves like the executable fake and writes the same log; `cni_env.cni(real_exec=True)`
runs them as real processes through RawExec, for the tests about process execution itself.
Both log to $FAKE_LOG, so `calls()` and `trace()` see every call, whoever made it.
CNI-only helpers (R1, RESULTS_DATA, assert_no_leftover_cache) are in tests/unit/cni/conftest.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni import invoke
from cnirun.cni.api import CNIConfig
from cnirun.cni.config import NetworkConfigList, load_network
from cnirun.cni.types import RuntimeConf
from tests.unit.fakes import FAKE, FakePluginExec


@dataclass
class CniEnv:
    """The sandbox: directories plus helpers used by most CNI tests."""

    root: Path
    netconf: Path
    bin_a: Path
    bin_b: Path
    cache: Path
    log_path: Path

    # -- plugins and configs ------------------------------------------------------------

    def plugin(self, name: str = "fake", directory: Path | None = None, copy: bool = False) -> Path:
        """Install the fake plugin as `name` (a symlink, or a private copy)."""
        target = (directory or self.bin_a) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copy(FAKE, target)
            target.chmod(0o755)
        else:
            target.symlink_to(FAKE)
        return target

    def sidecar(self, name: str, fake: dict[str, Any], directory: Path | None = None) -> None:
        """Behaviour for plugin `name` when its stdin has no "fake" key (VERSION)."""
        ((directory or self.bin_a) / f"{name}.fake.json").write_text(json.dumps(fake))

    def write(self, filename: str, content: Any, directory: Path | None = None) -> Path:
        """Write a config file: dicts as JSON, str/bytes verbatim."""
        path = (directory or self.netconf) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content))
        return path

    def network(
        self,
        plugins: list[dict[str, Any]] | None = None,
        name: str = "net",
        version: str | None = "1.0.0",
        filename: str | None = None,
        **top: Any,
    ) -> NetworkConfigList:
        """Write `<filename or 50-name>.conflist` and load it back by name."""
        body: dict[str, Any] = {"name": name}
        if version is not None:
            body["cniVersion"] = version
        body["plugins"] = plugins if plugins is not None else [{"type": "fake"}]
        body.update(top)
        self.write(filename or f"50-{name}.conflist", body)
        return load_network(str(self.netconf), name)

    def chain(
        self, n: int = 3, version: str = "1.0.0", name: str = "net", **per: Any
    ) -> NetworkConfigList:
        """A list of plugins P1..Pn (installed on demand); `per` maps "P2" to extra config."""
        plugins = []
        for i in range(1, n + 1):
            pname = f"P{i}"
            if not (self.bin_a / pname).exists():
                self.plugin(pname)
            plugins.append({"type": pname, **per.get(pname, {})})
        return self.network(plugins, name=name, version=version)

    def load(self, name: str) -> NetworkConfigList:
        return load_network(str(self.netconf), name)

    def cni(
        self, timeout: float | None = 20.0, real_exec: bool = False, **kwargs: Any
    ) -> CNIConfig:
        """A CNIConfig on the sandbox; plugins run in-process unless `real_exec` is set
        (then RawExec starts them as processes) or an `exec` is passed."""
        kwargs.setdefault("plugin_dirs", [str(self.bin_a), str(self.bin_b)])
        if real_exec:
            assert "exec" not in kwargs, "real_exec=True and exec= exclude each other"
        else:
            kwargs.setdefault("exec", FakePluginExec())
        return CNIConfig(cache_dir=str(self.cache), timeout=timeout, **kwargs)

    @staticmethod
    def rt(
        cid: str = "c1",
        ifname: str = "eth0",
        netns: str = "/tmp/ns",
        args: tuple[tuple[str, str], ...] = (),
        caps: Mapping[str, Any] | None = None,
    ) -> RuntimeConf:
        return RuntimeConf(
            container_id=cid,
            netns=netns,
            ifname=ifname,
            cni_args=args,
            capability_args=dict(caps) if caps is not None else None,
        )

    # -- what the plugins saw ------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        """Every fake-plugin call so far, in order."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def trace(self) -> list[tuple[str, str]]:
        """(argv0, CNI_COMMAND) of every call so far."""
        return [(c["argv0"], c["env"]["CNI_COMMAND"]) for c in self.calls()]

    def clear(self) -> None:
        if self.log_path.exists():
            self.log_path.unlink()

    def cache_file(self, net: str = "net", cid: str = "c1", ifname: str = "eth0") -> Path:
        return self.cache / "results" / f"{net}-{cid}-{ifname}"


@pytest.fixture
def cni_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CniEnv]:
    env = CniEnv(
        root=tmp_path,
        netconf=tmp_path / "net.d",
        bin_a=tmp_path / "a",
        bin_b=tmp_path / "b",
        cache=tmp_path / "cache",
        log_path=tmp_path / "fake.log",
    )
    for directory in (env.netconf, env.bin_a, env.bin_b):
        directory.mkdir()
    env.plugin("fake")
    monkeypatch.setenv("FAKE_LOG", str(env.log_path))
    monkeypatch.delenv("FOO", raising=False)
    for name in invoke.CNI_VARS:
        monkeypatch.delenv(name, raising=False)
    yield env


@pytest.fixture(autouse=True)
def _fast_busy_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep "text file busy" retries short in every test."""
    monkeypatch.setattr(invoke.RawExec, "busy_delay", 0.05)

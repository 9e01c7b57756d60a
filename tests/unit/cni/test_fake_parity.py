"""The in-process fake (tests.unit.fakes) behaves like the executable fake plugin.

Every case runs once through RawExec (a real process) and once through FakePluginExec, and
both must give the same stdout or the same error (type, code and text), forward the same
stderr, and log the same entry (pid and time aside). This is what lets most CNI tests run
in-process without changing their meaning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni.invoke import Args, Exec, RawExec
from cnirun.errors import CNIError, PluginTimeoutError
from tests.unit.conftest import CniEnv
from tests.unit.fakes import FakeExecUnsupported, FakePluginExec

R040 = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.3/24"}]}


def _conf(**fake: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "net", "type": "fake", "fake": fake}


# (stdin, command, sidecar, extra environment)
CASES: dict[str, tuple[Any, str, dict[str, Any] | None, dict[str, str]]] = {
    "add-default": ({"cniVersion": "1.0.0", "name": "net", "type": "fake"}, "ADD", None, {}),
    "add-passthrough": ({**_conf(ADD={"result": "passthrough"}), "prevResult": R040},
                        "ADD", None, {}),
    "add-result": (_conf(ADD={"result": R040}), "ADD", None, {}),
    "add-inject-dns": ({**_conf(ADD={"result": "inject-dns", "dns": ["9.9.9.9"]}),
                        "prevResult": R040}, "ADD", None, {}),
    "add-inject-dns-default": (_conf(ADD={"result": "inject-dns"}), "ADD", None, {}),
    "add-echo-cid": (_conf(ADD={"result": "echo-cid"}), "ADD", None, {}),
    "add-empty-stdin": (b"", "ADD", None, {}),
    "del-not-json": (b"not json", "DEL", None, {}),
    "del-default": (_conf(), "DEL", None, {"FOO": "bar"}),
    "gc-result": (_conf(GC={"result": {"x": 1}}), "GC", None, {}),
    "check-exit-stderr": (_conf(CHECK={"exit": 1, "stderr": "boom"}), "CHECK", None, {}),
    "add-exit-quoted-stderr": (_conf(ADD={"exit": 3, "stderr": 'a "b"\n\tc\x01é'}),
                               "ADD", None, {}),
    "add-silent-exit": (_conf(ADD={"exit": 1}), "ADD", None, {}),
    "add-exit-256-is-success": (_conf(ADD={"exit": 256}), "ADD", None, {}),
    "add-exit-minus-one": (_conf(ADD={"exit": -1}), "ADD", None, {}),
    "add-error-json": (_conf(ADD={"exit": 1, "stdout": '{"code":7,"msg":"m","details":"d"}',
                                  "stderr": "noise"}), "ADD", None, {}),
    "add-unparsable-stdout": (_conf(ADD={"exit": 1, "stdout": "oops"}), "ADD", None, {}),
    "del-error-shaped-stdout-exit-0": (_conf(DEL={"stdout": '{"code":7,"msg":"no"}'}),
                                       "DEL", None, {}),
    "add-raw-utf8-stdout": (_conf(ADD={"stdout": "é"}), "ADD", None, {}),
    "add-stderr-on-success": (_conf(ADD={"stderr": "warning: é\n"}), "ADD", None, {}),
    "add-short-sleep": (_conf(ADD={"sleep": 0.01}), "ADD", None, {}),
    "version-default": ({"cniVersion": "1.1.0"}, "VERSION", None, {}),
    "version-sidecar": ({"cniVersion": "1.1.0"}, "VERSION",
                        {"VERSION": {"result": {"cniVersion": "0.2.0"}}}, {}),
    "version-sidecar-error": ({"cniVersion": "1.1.0"}, "VERSION",
                              {"VERSION": {"exit": 1, "stdout":
                                           '{"code":4,"msg":"unknown CNI_COMMAND: VERSION"}'}},
                              {}),
    "fake-key-beats-sidecar": (_conf(DEL={"exit": 2}), "DEL", {"DEL": {"exit": 5}}, {}),
}


def _outcome(
    exec: Exec, path: Path, stdin: bytes, env: dict[str, str], timeout: float | None
) -> tuple[Any, ...]:
    try:
        return ("ok", exec.exec_plugin(str(path), stdin, env, timeout))
    except CNIError as e:
        return (type(e).__name__, e.code, str(e))


def _environ(env: CniEnv, command: str, extra: dict[str, str]) -> dict[str, str]:
    environ = dict(os.environ)
    environ.update(Args(command, "c1", "/tmp/ns", "eth0", (("K", "V"),),
                        (str(env.bin_a),)).environ())
    environ.update(extra)
    return environ


def _without_process(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("pid", "time", "sleeper_pid")}


@pytest.mark.parametrize("case", list(CASES))
def test_the_in_process_fake_matches_the_real_one(
    cni_env: CniEnv, capfd: pytest.CaptureFixture[str], case: str
) -> None:
    stdin, command, sidecar, extra = CASES[case]
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    if sidecar is not None:
        cni_env.sidecar("fake", sidecar)
    path = cni_env.bin_a / "fake"
    env = _environ(cni_env, command, extra)

    real = _outcome(RawExec(), path, data, env, 20)
    real_err = capfd.readouterr().err
    real_log = cni_env.calls()
    cni_env.clear()
    fake = FakePluginExec()
    simulated = _outcome(fake, path, data, env, 20)
    fake_err = capfd.readouterr().err
    fake_log = cni_env.calls()

    assert simulated == real
    assert fake_err == real_err
    assert [_without_process(e) for e in fake_log] == [_without_process(e) for e in real_log]
    assert len(real_log) == 1
    assert fake.calls == fake_log


def test_a_sleep_beyond_the_timeout_is_the_same_timeout_error(cni_env: CniEnv) -> None:
    path = cni_env.bin_a / "fake"
    data = json.dumps(_conf(ADD={"sleep": 30})).encode()
    env = _environ(cni_env, "ADD", {})
    real = _outcome(RawExec(), path, data, env, 0.5)
    fake = _outcome(FakePluginExec(), path, data, env, 0.5)
    assert fake == real == (
        PluginTimeoutError.__name__, 0, "netplugin fake timed out after 0.5s and was killed"
    )


def test_a_plugin_that_cannot_be_executed_fails_alike(cni_env: CniEnv) -> None:
    noexec = cni_env.plugin("noexec", copy=True)
    noexec.chmod(0o644)
    data = json.dumps(_conf()).encode()
    env = _environ(cni_env, "ADD", {})
    real = _outcome(RawExec(), noexec, data, env, 20)
    assert _outcome(FakePluginExec(), noexec, data, env, 20) == real
    assert real == (
        "CNIError", 0, f"netplugin failed with no error message: fork/exec {noexec}: "
        "permission denied",
    )
    assert cni_env.calls() == []


def test_a_copy_of_the_fake_is_the_fake(cni_env: CniEnv) -> None:
    cni_env.plugin("copied", copy=True)
    cni_env.sidecar("copied", {"VERSION": {"result": {"cniVersion": "0.2.0"}}})
    out = FakePluginExec().exec_plugin(str(cni_env.bin_a / "copied"), b"{}",
                                       _environ(cni_env, "VERSION", {}), 20)
    assert json.loads(out) == {"cniVersion": "0.2.0"}
    assert cni_env.trace() == [("copied", "VERSION")]


def test_what_needs_a_real_process_is_refused(cni_env: CniEnv) -> None:
    script = cni_env.bin_a / "script"
    script.write_text("#!/bin/sh\necho '{}'\n")
    script.chmod(0o755)
    env = _environ(cni_env, "ADD", {})
    with pytest.raises(FakeExecUnsupported, match="real_exec=True"):
        FakePluginExec().exec_plugin(str(script), b"{}", env, 20)
    sleeper = json.dumps(_conf(ADD={"spawn_sleeper": True})).encode()
    with pytest.raises(FakeExecUnsupported, match="real_exec=True"):
        FakePluginExec().exec_plugin(str(cni_env.bin_a / "fake"), sleeper, env, 20)


def test_cni_env_uses_the_in_process_fake_unless_asked(cni_env: CniEnv) -> None:
    assert isinstance(cni_env.cni().exec, FakePluginExec)
    assert isinstance(cni_env.cni(real_exec=True).exec, RawExec)
    net = cni_env.network()
    cni_env.cni().add_network_list(net, cni_env.rt())
    cni_env.cni(real_exec=True).del_network_list(net, cni_env.rt())
    calls = cni_env.calls()
    assert cni_env.trace() == [("fake", "ADD"), ("fake", "DEL")]
    assert calls[0]["pid"] is None and calls[1]["pid"] != os.getpid()

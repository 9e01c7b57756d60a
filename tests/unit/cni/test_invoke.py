"""Plugin lookup and the exec protocol (reference section 2; scenarios 9-12, 15, 16, 18, 19).

The tests about process execution itself (the environment and stdin a plugin gets, exit
statuses and signals, stderr, timeouts, "text file busy", exec errors) run the fake plugin
as a real process through RawExec (`cni_env.cni(real_exec=True)`); lookup tests and the
rest use the in-process fake.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cnirun.cni import invoke
from cnirun.cni.invoke import Args, RawExec, decode_failure, find_in_path, go_quote
from cnirun.errors import CNIError, PluginNotFoundError, PluginTimeoutError
from cnirun.sandbox.records import process_runs
from tests.unit.cni.conftest import assert_no_leftover_cache
from tests.unit.conftest import CniEnv
from tests.unit.fakes import FakePluginExec
from tests.unit.waiting import eventually

# -- scenario 9: FindInPath ------------------------------------------------------------------


def test_first_directory_wins(cni_env: CniEnv) -> None:
    cni_env.plugin("fake", directory=cni_env.bin_b)
    paths = [str(cni_env.bin_a), str(cni_env.bin_b)]
    assert find_in_path("fake", paths) == str(cni_env.bin_a / "fake")


def test_a_directory_named_like_the_plugin_is_skipped(cni_env: CniEnv) -> None:
    (cni_env.bin_a / "other").mkdir()
    cni_env.plugin("other", directory=cni_env.bin_b)
    paths = [str(cni_env.bin_a), str(cni_env.bin_b)]
    assert find_in_path("other", paths) == str(cni_env.bin_b / "other")


def test_symlinks_are_followed(cni_env: CniEnv, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (cni_env.bin_a / "to-dir").symlink_to(tmp_path / "d")
    (cni_env.bin_a / "dangling").symlink_to(tmp_path / "missing")
    paths = [str(cni_env.bin_a)]
    assert find_in_path("fake", paths) == str(cni_env.bin_a / "fake")  # a symlink to a file
    for name in ("to-dir", "dangling"):
        with pytest.raises(PluginNotFoundError):
            find_in_path(name, paths)


@pytest.mark.parametrize(
    ("plugin", "paths", "message"),
    [
        ("sub/fake", ["/a"], "invalid plugin name: sub/fake"),
        ("/bin/true", ["/a"], "invalid plugin name: /bin/true"),
        ("", ["/a"], "no plugin name provided"),
        ("fake", [], "no paths provided"),
        ("fake", ["/nonexistent-a", "/nonexistent-b"],
         'failed to find plugin "fake" in path [/nonexistent-a /nonexistent-b]'),
    ],
)
def test_lookup_errors(plugin: str, paths: list[str], message: str) -> None:
    with pytest.raises(PluginNotFoundError) as exc:
        find_in_path(plugin, paths)
    assert str(exc.value) == message


def test_no_fallback_to_system_path(cni_env: CniEnv) -> None:
    with pytest.raises(PluginNotFoundError):
        find_in_path("true", [str(cni_env.bin_a)])
    with pytest.raises(PluginNotFoundError):
        find_in_path("sh", [str(cni_env.bin_a)])


def test_missing_plugin_fails_add_and_nothing_runs(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake"}, {"type": "nope"}])
    with pytest.raises(PluginNotFoundError) as exc:
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        f'plugin type="nope" failed (add): failed to find plugin "nope" in path '
        f"[{cni_env.bin_a} {cni_env.bin_b}]"
    )


def test_missing_first_plugin_runs_nothing(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "nope"}, {"type": "fake"}])
    with pytest.raises(PluginNotFoundError):
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert cni_env.calls() == []
    assert_no_leftover_cache(cni_env)


def test_invalid_plugin_name_via_add(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "sub/fake"}])
    with pytest.raises(PluginNotFoundError) as exc:
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert str(exc.value) == 'plugin type="sub/fake" failed (add): invalid plugin name: sub/fake'
    assert cni_env.calls() == []


def test_empty_plugin_path_via_add(cni_env: CniEnv) -> None:
    net = cni_env.network()
    with pytest.raises(PluginNotFoundError) as exc:
        cni_env.cni(plugin_dirs=[]).add_network_list(net, cni_env.rt())
    assert str(exc.value) == 'plugin type="fake" failed (add): no paths provided'


# -- scenario 10: a non-executable plugin is found, then fails to run ------------------------


def test_non_executable_plugin_is_an_exec_error(cni_env: CniEnv) -> None:
    plugin = cni_env.plugin("noexec", copy=True)
    plugin.chmod(0o644)
    net = cni_env.network([{"type": "noexec"}])
    with pytest.raises(CNIError) as exc:
        cni_env.cni(real_exec=True).add_network_list(net, cni_env.rt())
    assert not isinstance(exc.value, PluginNotFoundError)
    assert str(exc.value) == (
        f'plugin type="noexec" failed (add): netplugin failed with no error message: '
        f"fork/exec {plugin}: permission denied"
    )


# -- CNI_PATH ------------------------------------------------------------------------------


def test_args_environ_always_sets_all_six() -> None:
    assert Args("GC", path=("/a", "/b")).environ() == {
        "CNI_COMMAND": "GC",
        "CNI_CONTAINERID": "",
        "CNI_NETNS": "",
        "CNI_ARGS": "",
        "CNI_IFNAME": "",
        "CNI_PATH": "/a:/b",
    }
    args = Args("ADD", "c1", "/tmp/ns", "eth0", (("K1", "V1"), ("K2", "V2")), ("/a",))
    assert args.environ()["CNI_ARGS"] == "K1=V1;K2=V2"


# -- scenarios 11 and 12: the environment each command sees ----------------------------------


def test_add_env_is_exactly_the_six_vars_plus_the_callers(
    cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNI_IFNAME", "bogus")
    monkeypatch.setenv("CNI_COMMAND", "bogus")
    monkeypatch.setenv("CNI_ARGS", "X=Y")
    monkeypatch.setenv("FOO", "bar")
    net = cni_env.network()
    rt = cni_env.rt(args=(("K1", "V1"), ("K2", "V2")))
    cni_env.cni(real_exec=True).add_network_list(net, rt)
    (call,) = cni_env.calls()
    assert call["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/tmp/ns",
        "CNI_ARGS": "K1=V1;K2=V2",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{cni_env.bin_a}:{cni_env.bin_b}",
        "FOO": "bar",
    }


def test_empty_values_are_still_set(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNI_NETNS", "bogus")
    monkeypatch.setenv("CNI_ARGS", "bogus=1")
    net = cni_env.network()
    cni_env.cni(real_exec=True).del_network_list(net, cni_env.rt(netns=""))
    env = cni_env.calls()[0]["env"]
    assert (env["CNI_COMMAND"], env["CNI_NETNS"], env["CNI_ARGS"]) == ("DEL", "", "")


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_env(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.setenv("CNI_IFNAME", "bogus")
    net = cni_env.network(version="1.1.0")
    cni = cni_env.cni(real_exec=True)
    if command == "GC":
        cni.gc_network_list(net, [])
    else:
        cni.status_network_list(net)
    (call,) = cni_env.calls()
    assert call["env"] == {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "",
        "CNI_NETNS": "",
        "CNI_ARGS": "",
        "CNI_IFNAME": "",
        "CNI_PATH": f"{cni_env.bin_a}:{cni_env.bin_b}",
        "FOO": None,
    }


def test_version_env_and_stdin(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNI_CONTAINERID", "bogus")
    monkeypatch.setenv("FOO", "bar")
    info = cni_env.cni(real_exec=True).version_info("fake")
    assert info.supported_versions[-1] == "1.1.0"
    (call,) = cni_env.calls()
    assert call["env"] == {
        "CNI_COMMAND": "VERSION",
        "CNI_CONTAINERID": "",
        "CNI_NETNS": "dummy",
        "CNI_ARGS": "",
        "CNI_IFNAME": "dummy",
        "CNI_PATH": "dummy",
        "FOO": "bar",
    }
    assert call["stdin"] == {"cniVersion": "1.1.0"}


def test_version_stdin_bytes_are_exact(cni_env: CniEnv) -> None:
    seen: list[bytes] = []

    class Recorder(FakePluginExec):
        def exec_plugin(
            self, path: str, stdin: bytes, env: Any, timeout: float | None
        ) -> bytes:
            seen.append(stdin)
            return super().exec_plugin(path, stdin, env, timeout)

    cni_env.cni(exec=Recorder()).version_info("fake")
    assert seen == [b'{"cniVersion":"1.1.0"}']


# -- scenario 15: failures without a JSON error ----------------------------------------------


def _add_error(env: CniEnv, add: dict[str, Any], name: str | None = None) -> CNIError:
    plugin: dict[str, Any] = {"type": "fake", "fake": {"ADD": add}}
    if name:
        plugin["name"] = name
    net = env.network([plugin])
    with pytest.raises(CNIError) as exc:
        env.cni(real_exec=True).add_network_list(net, env.rt())
    return exc.value


def test_stderr_only(cni_env: CniEnv) -> None:
    err = _add_error(cni_env, {"exit": 1, "stderr": "boom"})
    assert str(err) == 'plugin type="fake" failed (add): netplugin failed: "boom": exit status 1'


def test_stderr_is_go_quoted(cni_env: CniEnv) -> None:
    err = _add_error(cni_env, {"exit": 3, "stderr": 'a "b"\n\tc\x01é'})
    assert str(err).endswith('netplugin failed: "a \\"b\\"\\n\\tc\\x01é": exit status 3')


def test_silent_failure(cni_env: CniEnv) -> None:
    err = _add_error(cni_env, {"exit": 1})
    assert str(err) == (
        'plugin type="fake" failed (add): netplugin failed with no error message: exit status 1'
    )
    assert err.code == 0


def test_unparsable_stdout(cni_env: CniEnv) -> None:
    err = _add_error(cni_env, {"exit": 1, "stdout": "oops"})
    assert str(err) == (
        'plugin type="fake" failed (add): netplugin failed but error parsing its diagnostic '
        "message \"oops\": invalid character 'o' looking for beginning of value"
    )


def test_error_json_drops_stderr(cni_env: CniEnv) -> None:
    stdout = '{"code":7,"msg":"Invalid Configuration","details":"too small"}'
    err = _add_error(cni_env, {"exit": 1, "stdout": stdout, "stderr": "noise"})
    assert err.code == 7
    assert "noise" not in str(err)
    assert str(err) == 'plugin type="fake" failed (add): Invalid Configuration; too small'


def test_killed_by_a_signal(cni_env: CniEnv) -> None:
    script = cni_env.bin_a / "suicide"
    script.write_text("#!/bin/sh\nkill -KILL $$\n")
    script.chmod(0o755)
    net = cni_env.network([{"type": "suicide"}])
    with pytest.raises(CNIError) as exc:
        cni_env.cni(real_exec=True).add_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'plugin type="suicide" failed (add): netplugin failed with no error message: signal: killed'
    )


@pytest.mark.parametrize(
    ("stdout", "code", "text"),
    [
        (b'{"code":7,"msg":"m","details":"d","extra":[1]}', 7, "m; d"),
        (b'{"cniVersion":"1.1.0","code":50,"msg":"not ready"}', 50, "not ready"),
        (b"{}", 0, ""),
        (b"null", 0, ""),
        (b'{"code":null,"msg":null}', 0, ""),
        (b'{"Code":11,"MSG":"later"}', 11, "later"),
        (b'{"code":123,"msg":"x","details":""}', 123, "x"),
    ],
)
def test_decode_failure_error_objects(stdout: bytes, code: int, text: str) -> None:
    err = decode_failure(stdout, b"ignored stderr", "exit status 1")
    assert (err.code, str(err)) == (code, text)


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        (b'{"code":"7"}',
         "json: cannot unmarshal string into Go struct field Error.code of type uint"),
        (b'{"code":-1}',
         "json: cannot unmarshal number into Go struct field Error.code of type uint"),
        (b'{"code":7.5}',
         "json: cannot unmarshal number into Go struct field Error.code of type uint"),
        (b'{"code":true}',
         "json: cannot unmarshal bool into Go struct field Error.code of type uint"),
        (b'{"msg":5}',
         "json: cannot unmarshal number into Go struct field Error.msg of type string"),
        (b"[1]", "json: cannot unmarshal array into Go value of type types.Error"),
        (b'"x"', "json: cannot unmarshal string into Go value of type types.Error"),
        (b"\n", "unexpected end of JSON input"),
        (b"{", "unexpected end of JSON input"),
        (b"{} x", "invalid character 'x' after top-level value"),
    ],
)
def test_decode_failure_undecodable_stdout(stdout: bytes, reason: str) -> None:
    err = decode_failure(stdout, b"", "exit status 1")
    quoted = go_quote(stdout.decode())
    assert str(err) == (
        f"netplugin failed but error parsing its diagnostic message {quoted}: {reason}"
    )
    assert err.code == 0


def test_decode_failure_without_output() -> None:
    assert str(decode_failure(b"", b"", "exit status 2")) == (
        "netplugin failed with no error message: exit status 2"
    )
    assert str(decode_failure(b"", b"\xffbad\n", "exit status 1")) == (
        'netplugin failed: "\\xffbad\\n": exit status 1'
    )


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ('q"b\\', '"q\\"b\\\\"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
        ("é€😀", '"é€😀"'),
        ("\u00a0\u200b", '"\\u00a0\\u200b"'),
        ("\U000e0001", '"\\U000e0001"'),
        (b"\xff\xfe".decode(errors="surrogateescape"), '"\\xff\\xfe"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


# -- scenario 16: exit status decides; stderr of a success is forwarded ----------------------


def test_exit_zero_wins_over_an_error_shaped_stdout(cni_env: CniEnv) -> None:
    net = cni_env.network(
        [{"type": "fake", "fake": {"DEL": {"stdout": '{"code":7,"msg":"not really"}'}}}]
    )
    cni_env.cni(real_exec=True).del_network_list(net, cni_env.rt())
    assert cni_env.trace() == [("fake", "DEL")]


def test_stderr_of_a_successful_plugin_is_forwarded(
    cni_env: CniEnv, capfd: pytest.CaptureFixture[str]
) -> None:
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"stderr": "warning: hello\n"}}}])
    result = cni_env.cni(real_exec=True).add_network_list(net, cni_env.rt())
    assert result.cni_version == "1.0.0"
    captured = capfd.readouterr()
    assert "warning: hello" in captured.err
    assert captured.out == ""


def test_stderr_of_a_failed_plugin_is_not_forwarded(
    cni_env: CniEnv, capfd: pytest.CaptureFixture[str]
) -> None:
    _add_error(cni_env, {"exit": 1, "stderr": "only in the error"})
    assert "only in the error" not in capfd.readouterr().err


# -- scenario 18: timeouts kill the whole process group --------------------------------------


def _group_members(pgid: int) -> list[int]:
    """The processes of process group `pgid` that still run."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def test_timeout_kills_the_group_and_then_dels(cni_env: CniEnv) -> None:
    net = cni_env.chain(
        2, P2={"fake": {"ADD": {"sleep": 30, "spawn_sleeper": True}}}
    )
    cni = cni_env.cni(timeout=2, real_exec=True)
    with pytest.raises(PluginTimeoutError) as exc:
        cni.add_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        'plugin type="P2" failed (add): netplugin P2 timed out after 2s and was killed'
    )
    calls = cni_env.calls()
    assert cni_env.trace() == [("P1", "ADD"), ("P2", "ADD"), ("P2", "DEL"), ("P1", "DEL")]
    sleeper = calls[1]
    # The plugin led its own process group; that group, the sleeper it spawned (which
    # would have run for 60s) included, is gone.
    assert eventually(lambda: _group_members(sleeper["pid"]) == [])
    assert eventually(lambda: not process_runs(sleeper["sleeper_pid"]))
    assert not process_runs(sleeper["pid"])
    # The cleanup DEL is told what P1 set up (P1's result, as P2 received it).
    assert all(c["stdin"]["prevResult"] == calls[1]["stdin"]["prevResult"] for c in calls[2:])
    assert_no_leftover_cache(cni_env)


def test_no_timeout_waits(cni_env: CniEnv) -> None:
    net = cni_env.network([{"type": "fake", "fake": {"ADD": {"sleep": 0.3}}}])
    cni_env.cni(timeout=None, real_exec=True).add_network_list(net, cni_env.rt())
    assert cni_env.trace() == [("fake", "ADD")]


# -- scenario 19: "text file busy" -----------------------------------------------------------


class _CountingPopen:
    """Wraps subprocess.Popen to count start attempts; `on_failure` runs after a failed one."""

    def __init__(self, on_failure: Callable[[], None] | None = None) -> None:
        self.calls = 0
        self.failures: list[OSError] = []
        self.real = subprocess.Popen
        self.on_failure = on_failure

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        try:
            return self.real(*args, **kwargs)
        except OSError as e:
            self.failures.append(e)
            if self.on_failure is not None:
                self.on_failure()
            raise


def test_text_file_busy_is_retried(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = cni_env.plugin("busy", copy=True)
    net = cni_env.network([{"type": "busy"}])
    writer = open(plugin, "ab")  # noqa: SIM115 - closed once the first start has failed
    counter = _CountingPopen(on_failure=writer.close)
    monkeypatch.setattr(subprocess, "Popen", counter)  # what invoke uses
    monkeypatch.setattr(RawExec, "busy_tries", 40)
    monkeypatch.setattr(RawExec, "busy_delay", 0.05)
    try:
        result = cni_env.cni(real_exec=True).add_network_list(net, cni_env.rt())
    finally:
        writer.close()
    assert result.cni_version == "1.0.0"
    assert counter.calls == 2  # the first attempt met ETXTBSY, the retry after it worked
    assert [e.errno for e in counter.failures] == [errno.ETXTBSY]
    assert cni_env.trace() == [("busy", "ADD")]


def test_text_file_busy_that_never_clears_is_an_error(
    cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = cni_env.plugin("busy", copy=True)
    net = cni_env.network([{"type": "busy"}])
    counter = _CountingPopen()
    monkeypatch.setattr(subprocess, "Popen", counter)
    monkeypatch.setattr(RawExec, "busy_tries", 3)
    monkeypatch.setattr(RawExec, "busy_delay", 0.01)
    with open(plugin, "ab"):
        with pytest.raises(CNIError) as exc:
            cni_env.cni(real_exec=True).add_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        f'plugin type="busy" failed (add): netplugin failed with no error message: '
        f"fork/exec {plugin}: text file busy (still busy after 3 tries)"
    )
    assert counter.calls == 6  # 3 for the ADD, 3 for the DEL that follows it
    assert cni_env.calls() == []
    assert_no_leftover_cache(cni_env)


def test_raw_exec_returns_stdout_on_success(cni_env: CniEnv) -> None:
    env = dict(os.environ)
    env.update(Args("VERSION").environ())
    out = RawExec().exec_plugin(str(cni_env.bin_a / "fake"), b"{}", env, 60)
    assert b"supportedVersions" in out


def test_empty_directory_entries_never_mean_the_current_directory(
    cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cni_env.bin_a)  # ./fake exists here
    with pytest.raises(PluginNotFoundError) as exc:
        find_in_path("fake", ["", str(cni_env.bin_b)])
    assert str(exc.value) == f'failed to find plugin "fake" in path [ {cni_env.bin_b}]'
    cni = cni_env.cni(plugin_dirs=["", str(cni_env.bin_a), ""])
    assert cni.plugin_dirs == (str(cni_env.bin_a),)
    cni.add_network_list(cni_env.network(), cni_env.rt())
    assert cni_env.calls()[0]["env"]["CNI_PATH"] == str(cni_env.bin_a)


# -- bounds (issue 13 item 7) ----------------------------------------------------------------


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_plugin_flooding_a_stream_is_killed_and_fails_clearly(
    cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    # 100 MB on stderr took 1.2 GB and 45-98 s under the host-wide lock, then a 100 MB error.
    monkeypatch.setattr(invoke, "MAX_OUTPUT_BYTES", 1 << 20)
    script = cni_env.bin_a / "flood"
    redirect = ">&2" if stream == "stderr" else ""
    script.write_text(f"#!/bin/sh\nexec yes {redirect}\n")
    script.chmod(0o755)
    net = cni_env.network([{"type": "flood"}])
    started = time.monotonic()
    with pytest.raises(CNIError) as exc:
        cni_env.cni(timeout=30, real_exec=True).add_network_list(net, cni_env.rt())
    assert time.monotonic() - started < 10
    assert str(exc.value) == (
        f'plugin type="flood" failed (add): netplugin flood wrote more than 1 MiB to {stream} '
        "and was killed"
    )


def test_a_long_error_output_is_quoted_only_in_part() -> None:
    err = invoke.decode_failure(b"", b"x" * 100_000, "exit status 1")
    assert str(err) == f'netplugin failed: "{"x" * 300}"... (100000 bytes): exit status 1'
    err = invoke.decode_failure(b"y" * 5000, b"", "exit status 1")
    quoted = f'"{"y" * 300}"... (5000 bytes)'
    assert f"error parsing its diagnostic message {quoted}: " in str(err)


def test_large_stdin_and_output_within_the_cap_pass_through(cni_env: CniEnv) -> None:
    script = cni_env.bin_a / "echo"
    script.write_text("#!/bin/sh\nexec cat\n")  # both pipes full at once: no deadlock
    script.chmod(0o755)
    env = dict(os.environ, **Args("ADD").environ())
    stdin = b"{" + b" " * 5_000_000 + b"}"
    assert RawExec().exec_plugin(str(script), stdin, env, 30) == stdin


# -- plugins others could replace (issue 13 item 4) ------------------------------------------


@pytest.mark.parametrize("what", ["binary", "directory", "symlink target"])
def test_a_plugin_others_can_write_is_refused(cni_env: CniEnv, tmp_path: Path, what: str) -> None:
    (cni_env.bin_a / "fake").unlink(missing_ok=True)  # the fixture's symlink to the fake
    if what == "symlink target":
        target = tmp_path / "elsewhere" / "fake"
        target.parent.mkdir()
        target.write_bytes(cni_env.plugin("tmp", copy=True).read_bytes())
        target.chmod(0o777)
        (cni_env.bin_a / "fake").symlink_to(target)
        unsafe = cni_env.bin_a / "fake"
        mode = "0777"
        shown = target
    else:
        plugin = cni_env.plugin(copy=True)
        unsafe = plugin if what == "binary" else cni_env.bin_a
        unsafe.chmod(0o775 if what == "binary" else 0o757)
        mode = "0775" if what == "binary" else "0757"
        shown = unsafe
    net = cni_env.network()
    with pytest.raises(PluginNotFoundError) as exc:
        cni_env.cni().add_network_list(net, cni_env.rt())
    assert str(exc.value) == (
        f'plugin type="fake" failed (add): refusing plugin {cni_env.bin_a / "fake"}: '
        f"{shown} is writable by group or others (mode {mode}): `chmod go-w {shown}`"
    )
    assert cni_env.calls() == []  # nothing ran
    assert unsafe.exists()


def test_a_100_mb_plugin_output_keeps_memory_bounded(tmp_path: Path) -> None:
    # Issue 13 item 7: 100 MB of stderr took 1.2 GB of RSS; the bound is the 16 MiB cap.
    script = tmp_path / "flood"
    script.write_text("#!/bin/sh\nhead -c 100000000 /dev/zero | tr '\\0' x >&2\nexit 1\n")
    script.chmod(0o755)
    probe = (
        "import os, sys\n"
        "from cnirun.cni.invoke import Args, RawExec\n"
        "from cnirun.errors import CNIError\n"
        "env = dict(os.environ, **Args('ADD').environ())\n"
        "try:\n"
        "    RawExec().exec_plugin(sys.argv[1], b'{}', env, 60)\n"
        "except CNIError as e:\n"
        # VmHWM, not ru_maxrss: getrusage keeps the forked parent's high-water mark over exec.
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "    print(len(str(e)), int(hwm.split()[1]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(script)], capture_output=True, text=True, timeout=60
    )
    length, peak_kib = map(int, done.stdout.split())
    assert length < 200
    assert peak_kib < 200 * 1024

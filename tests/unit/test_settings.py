"""Settings: flags over the environment over the defaults, validated once, one line on error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cnirun.errors import SettingsError
from cnirun.settings import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CNI_DEL_TIMEOUT,
    DEFAULT_CNI_TIMEOUT,
    DEFAULT_NETCONF_DIR,
    DEFAULT_PLUGIN_DIRS,
    DEFAULT_STATE_DIR,
    DEFAULT_STOP_TIMEOUT,
    Settings,
)


def test_defaults_with_an_empty_environment() -> None:
    s = Settings.load({})
    assert (s.netconf_dir, s.cache_dir, s.state_dir) == (
        DEFAULT_NETCONF_DIR,
        DEFAULT_CACHE_DIR,
        DEFAULT_STATE_DIR,
    )
    assert s.plugin_dirs == DEFAULT_PLUGIN_DIRS
    assert s.stop_timeout == DEFAULT_STOP_TIMEOUT
    assert s.debug is False


def test_del_gets_a_shorter_default_timeout_and_the_flag_sets_both() -> None:
    s = Settings.load({})
    assert (s.cni_timeout, s.cni_del_timeout) == (DEFAULT_CNI_TIMEOUT, DEFAULT_CNI_DEL_TIMEOUT)
    assert s.cni_del_timeout < s.cni_timeout
    env = {"CNIRUN_CNI_DEL_TIMEOUT": "5"}
    assert Settings.load(env).cni_del_timeout == 5
    assert (Settings.load(env, cni_timeout=300).cni_del_timeout) == 300  # the flag wins
    flagged = Settings.load({}).with_flags(cni_timeout=200)
    assert (flagged.cni_timeout, flagged.cni_del_timeout) == (200, 200)
    other = Settings.load(env).with_flags(netconf_dir="/x")  # another flag: timeouts stay
    assert (other.cni_timeout, other.cni_del_timeout) == (DEFAULT_CNI_TIMEOUT, 5)
    with pytest.raises(SettingsError) as exc:
        Settings.load({"CNIRUN_CNI_DEL_TIMEOUT": "0"})
    assert "CNIRUN_CNI_DEL_TIMEOUT" in str(exc.value)


def test_environment_then_flags_win() -> None:
    env = {
        "NETCONFPATH": "/env/net.d",
        "CNI_PATH": "/env/a::/env/b",
        "CNIRUN_CACHE_DIR": "/env/cache",
        "CNIRUN_STATE_DIR": "/env/state",
        "CNIRUN_STOP_TIMEOUT": "2.5",
        "CNIRUN_DEBUG": "1",
    }
    s = Settings.load(env)
    assert s.netconf_dir == "/env/net.d" and s.plugin_dirs == ("/env/a", "/env/b")
    assert (s.cache_dir, s.state_dir, s.stop_timeout, s.debug) == (
        "/env/cache",
        "/env/state",
        2.5,
        True,
    )
    f = s.with_flags(netconf_dir="/flag/net.d", cni_path="/flag/p", cni_timeout=7)
    assert (f.netconf_dir, f.plugin_dirs, f.cni_timeout) == ("/flag/net.d", ("/flag/p",), 7)
    assert f.state_dir == "/env/state"  # what no flag sets stays


def test_relative_plugin_dirs_become_absolute(tmp_path: pytest.TempPathFactory) -> None:
    s = Settings.load({"CNI_PATH": "plugins:/abs"})
    assert s.plugin_dirs[0].startswith("/") and s.plugin_dirs[0].endswith("/plugins")


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
def test_a_bad_stop_timeout_is_one_clear_error(value: str) -> None:
    if value == "":
        assert Settings.load({"CNIRUN_STOP_TIMEOUT": value}).stop_timeout == DEFAULT_STOP_TIMEOUT
        return
    with pytest.raises(SettingsError, match=f"CNIRUN_STOP_TIMEOUT: '{value}' is not"):
        Settings.load({"CNIRUN_STOP_TIMEOUT": value})


def test_a_non_positive_cni_timeout_is_refused() -> None:
    with pytest.raises(SettingsError, match="--cni-timeout must be positive"):
        Settings.load({}, cni_timeout=0)


@pytest.mark.parametrize(
    "argv", [["--rm", "busybox", "true"], ["ps"], ["net", "version", "x"], ["doctor"]]
)
def test_the_cli_reports_a_bad_variable_in_one_line_with_exit_125(argv: list[str]) -> None:
    """Once read at import time, `CNIRUN_STOP_TIMEOUT=abc` killed every run with a traceback.
    Now every command gets the settings resolved once, before anything else happens."""
    proc = subprocess.run(
        [sys.executable, "-m", "cnirun", *argv],
        env={"PATH": "/usr/bin:/bin", "CNIRUN_STOP_TIMEOUT": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 125
    assert proc.stderr == (
        "cnirun: error: CNIRUN_STOP_TIMEOUT: 'abc' is not a non-negative number of seconds\n"
    )


def test_dirs_given_relative_to_a_detached_run_are_recorded_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 13 item 4: `cnirun -d --cni-path ./plugins ...` was recorded relative, and a later
    # root `cnirun ps` elsewhere ran that directory's plugins/bridge.
    from cnirun.dockerargs import parse_run_args

    monkeypatch.chdir(tmp_path)
    args = parse_run_args(["-d", "--cni-path", "./plugins:other/", "busybox"])
    env = {"CNIRUN_CACHE_DIR": "cache", "CNIRUN_STATE_DIR": "./state"}
    settings = Settings.load(env).with_flags(cni_path=args.cni_path)
    assert settings.plugin_dirs == (str(tmp_path / "plugins"), str(tmp_path / "other"))
    assert (settings.cache_dir, settings.state_dir) == (
        str(tmp_path / "cache"),
        str(tmp_path / "state"),
    )

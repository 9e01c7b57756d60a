"""`doctor`'s permission checks (issue 13): plugins others could replace, and state and cache
dirs that are not root's alone, are failures, with the same rule the commands enforce."""

from __future__ import annotations

import os

import pytest

from cnirun.doctor import FAIL, OK, WARN, Doctor
from cnirun.settings import Settings
from tests.unit.conftest import CniEnv


def doctor_for(cni_env: CniEnv) -> Doctor:
    settings = Settings.load(
        {
            "CNI_PATH": str(cni_env.bin_a),
            "CNIRUN_CACHE_DIR": str(cni_env.cache),
            "CNIRUN_STATE_DIR": str(cni_env.root / "state"),
        }
    )
    return Doctor(settings, cni_env.cni())


def test_a_plugin_others_can_write_fails(cni_env: CniEnv) -> None:
    cni_env.plugin("good", copy=True)
    bad = cni_env.plugin("bad", copy=True)
    bad.chmod(0o777)
    doctor = doctor_for(cni_env)
    doctor.check_plugins()
    verdicts = {c.subject: (c.verdict, c.detail) for c in doctor.checks}
    assert verdicts["plugin good"][0] == OK
    assert verdicts["plugin bad"] == (
        FAIL,
        f"refusing plugin {bad}: {bad} is writable by group or others (mode 0777): "
        f"`chmod go-w {bad}`",
    )


def test_state_and_cache_dirs_must_be_roots_alone(cni_env: CniEnv) -> None:
    cni_env.cache.mkdir(exist_ok=True)
    os.chmod(cni_env.cache, 0o777)
    doctor = doctor_for(cni_env)
    doctor.check_state_dirs()
    state = cni_env.root / "state"
    assert [(c.verdict, c.subject, c.detail) for c in doctor.checks] == [
        (OK, "state dir", f"{state} (created 0700 on first use)"),
        (
            FAIL,
            "cache dir",
            f"{cni_env.cache} is writable by group or others (mode 0777): "
            f"`chmod go-w {cni_env.cache}`",
        ),
    ]
    os.chmod(cni_env.cache, 0o700)
    doctor = doctor_for(cni_env)
    doctor.check_state_dirs()
    assert doctor.checks[1].verdict == OK


def test_the_kernel_line_for_bandwidth(cni_env: CniEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnirun.host import kernel

    doctor = doctor_for(cni_env)
    found = dict.fromkeys(kernel.BANDWIDTH_FEATURES, kernel.BUILT_IN)
    monkeypatch.setattr(kernel, "features", lambda wanted: dict(found))
    doctor.check_bandwidth_kernel()
    found.update(ifb=kernel.MISSING, mirred=kernel.MODULE)
    doctor.check_bandwidth_kernel()
    found.update(ifb=kernel.UNKNOWN)
    doctor.check_bandwidth_kernel()
    assert [(c.subject, c.verdict, c.detail) for c in doctor.checks] == [
        ("kernel for --bandwidth", OK,
         "ifb built in, tbf built in, ingress qdisc built in, u32 built in, mirred built in"),
        ("kernel for --bandwidth", WARN,
         "missing ifb (CONFIG_IFB): the bandwidth plugin fails here"),
        ("kernel for --bandwidth", WARN,
         "cannot tell whether it has ifb (no kernel config in /proc/config.gz or /boot,"
         " no module lists in /lib/modules)"),
    ]  # fmt: skip

"""cnirun.host.kernel: what the bandwidth plugin needs of the kernel, judged from files alone
(doctor's line for `--bandwidth`, issue 16)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from cnirun.host import kernel

RELEASE = os.uname().release
WANTED = kernel.BANDWIDTH_FEATURES


def test_the_kernel_config_decides_built_in_module_or_missing(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    config = "CONFIG_IFB=m\nCONFIG_NET_SCH_TBF=y\n# CONFIG_NET_CLS_U32 is not set\n"
    config += "CONFIG_NET_SCH_INGRESS=y\nCONFIG_NET_ACT_MIRRED=m\n"
    with gzip.open(tmp_path / "proc" / "config.gz", "wt") as handle:
        handle.write(config)
    (tmp_path / "proc" / "modules").write_text("act_mirred 28672 1 - Live 0x0\n")
    assert kernel.features(WANTED, str(tmp_path)) == {
        "ifb": kernel.MODULE,
        "tbf": kernel.BUILT_IN,
        "ingress qdisc": kernel.BUILT_IN,
        "u32": kernel.MISSING,
        "mirred": kernel.LOADED,
    }


def test_module_lists_stand_in_for_a_config_and_nothing_means_unknown(tmp_path: Path) -> None:
    assert set(kernel.features(WANTED, str(tmp_path)).values()) == {kernel.UNKNOWN}
    modules = tmp_path / "lib" / "modules" / RELEASE
    modules.mkdir(parents=True)
    (modules / "modules.builtin").write_text("kernel/net/sched/sch_tbf.ko\n")
    (modules / "modules.dep").write_text(
        "kernel/drivers/net/ifb.ko.xz:\nkernel/net/sched/cls_u32.ko.zst: kernel/net/x.ko\n"
    )
    (tmp_path / "sys" / "module" / "sch_ingress").mkdir(parents=True)
    assert kernel.features(WANTED, str(tmp_path)) == {
        "ifb": kernel.MODULE,
        "tbf": kernel.BUILT_IN,
        "ingress qdisc": kernel.LOADED,
        "u32": kernel.MODULE,
        "mirred": kernel.MISSING,
    }


def test_a_boot_config_is_read_when_proc_has_none(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    options = [option for option, _ in WANTED.values()]
    (tmp_path / "boot" / f"config-{RELEASE}").write_text("".join(f"{o}=y\n" for o in options))
    assert set(kernel.features(WANTED, str(tmp_path)).values()) == {kernel.BUILT_IN}

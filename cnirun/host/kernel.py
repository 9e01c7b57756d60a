"""What the running kernel offers, judged from files alone: no module is loaded, nothing changes.

A feature is there when its module is loaded (`/proc/modules`, `/sys/module`), when the kernel's
config says it is built in or a module (`/proc/config.gz`, else `/boot/config-RELEASE`), or when
the module lists of `/lib/modules/RELEASE` name it (`modules.builtin`, `modules.dep`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# What the bandwidth plugin programs -> (kernel config option, module name). It puts a tbf
# qdisc on the host veth for ingress; for egress it redirects the veth's ingress (an ingress
# qdisc, a u32 filter, a mirred action) to an ifb device with a tbf qdisc of its own.
BANDWIDTH_FEATURES: dict[str, tuple[str, str]] = {
    "ifb": ("CONFIG_IFB", "ifb"),
    "tbf": ("CONFIG_NET_SCH_TBF", "sch_tbf"),
    "ingress qdisc": ("CONFIG_NET_SCH_INGRESS", "sch_ingress"),
    "u32": ("CONFIG_NET_CLS_U32", "cls_u32"),
    "mirred": ("CONFIG_NET_ACT_MIRRED", "act_mirred"),
}

LOADED, BUILT_IN, MODULE, MISSING, UNKNOWN = "loaded", "built in", "module", "missing", "unknown"


def _read(path: str) -> str | None:
    try:
        if path.endswith(".gz"):
            import gzip

            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
                return handle.read()
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (OSError, EOFError, ValueError):
        return None


def kernel_config(root: str, release: str) -> dict[str, str] | None:
    """The running kernel's config options (`CONFIG_X` -> y/m), None when no file has it."""
    for path in ("proc/config.gz", f"boot/config-{release}"):
        text = _read(os.path.join(root, path))
        if text is not None:
            options = {}
            for line in text.splitlines():
                key, sep, value = line.partition("=")
                if sep and key.startswith("CONFIG_"):
                    options[key] = value
            return options
    return None


def _module_names(text: str | None) -> set[str] | None:
    """Module names from a list whose lines start with a name or a path to a `.ko` file."""
    if text is None:
        return None
    names = set()
    for line in text.splitlines():
        word = line.split(":", 1)[0].split(" ", 1)[0]
        name = os.path.basename(word).split(".ko", 1)[0]
        if name:
            names.add(name.replace("-", "_"))
    return names


def features(wanted: Mapping[str, tuple[str, str]], root: str = "/") -> dict[str, str]:
    """Each wanted feature (name -> (config option, module)) as LOADED, BUILT_IN, MODULE,
    MISSING or UNKNOWN (no config and no module list to tell by)."""
    release = os.uname().release
    loaded = _module_names(_read(os.path.join(root, "proc/modules"))) or set()
    sys_module = os.path.join(root, "sys/module")
    config = kernel_config(root, release)
    modules_dir = os.path.join(root, "lib/modules", release)
    built_in = _module_names(_read(os.path.join(modules_dir, "modules.builtin")))
    loadable = _module_names(_read(os.path.join(modules_dir, "modules.dep")))
    found = {}
    for name, (option, module) in wanted.items():
        if module in loaded or os.path.isdir(os.path.join(sys_module, module)):
            found[name] = LOADED
        elif config is not None and config.get(option) in ("y", "m"):
            found[name] = BUILT_IN if config[option] == "y" else MODULE
        elif built_in is not None and module in built_in:
            found[name] = BUILT_IN
        elif loadable is not None and module in loadable:
            found[name] = MODULE
        elif config is not None or (built_in is not None and loadable is not None):
            found[name] = MISSING
        else:
            found[name] = UNKNOWN
    return found

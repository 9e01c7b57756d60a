"""The CNI core stays pure: no Docker, no pyroute2, no netns or Docker runtime code.

Checked twice: dynamically (importing every module in a fresh interpreter) and statically
(no such import anywhere in the source, even inside functions).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cnirun.cni

CNI_DIR = Path(cnirun.cni.__file__).resolve().parent
MODULES = sorted(f"cnirun.cni.{p.stem}" for p in CNI_DIR.glob("*.py") if p.stem != "__init__")
FORBIDDEN = ("docker", "pyroute2", "cnirun.netns", "cnirun.docker_runtime")


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def test_every_expected_module_is_checked() -> None:
    expected = {"api", "cache", "config", "invoke", "types", "validate", "version"}
    assert expected <= {m.rsplit(".", 1)[1] for m in MODULES}


def test_importing_the_core_loads_neither_docker_nor_pyroute2() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'pyroute2')\n"
        "             or m in ('cnirun.netns', 'cnirun.docker_runtime'))\n"
        "print(len([m for m in sys.modules if m.startswith('cnirun.cni.')]))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(MODULES)


def test_no_module_imports_forbidden_packages_anywhere() -> None:
    offenders = []
    for path in sorted(CNI_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                func = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                if func in ("import_module", "__import__") and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        names = [arg.value]
            line = getattr(node, "lineno", 0)
            offenders += [f"{path.name}:{line}: {n}" for n in names if _forbidden(n)]
    assert offenders == []


def test_the_static_check_would_catch_an_import() -> None:
    assert _forbidden("docker") and _forbidden("pyroute2.netlink")
    assert _forbidden("cnirun.netns") and _forbidden("cnirun.docker_runtime")
    assert not _forbidden("dockerargs") and not _forbidden("cnirun.cni.api")

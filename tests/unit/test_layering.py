"""The layering of README's architecture section, enforced: every import of every module
(top-level or inside a function) is checked against what its layer may import, and only
`cli/` may print or touch stdout/stderr. Checked statically on the source, and dynamically
for the import-time promises (the core loads no Docker, pyroute2 or typer)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cnirun

PACKAGE = Path(cnirun.__file__).resolve().parent

# Layer -> the cnirun layers it may import (besides itself). A layer is a package (`cli`,
# `cni`, ...) or a top-level module (`errors`, `settings`, ...).
LEAVES = {"errors", "files", "testhooks"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "files": set(),
    "testhooks": set(),
    "settings": {"errors"},
    "bandwidth": {"errors"},
    "dockerargs": {"errors", "bandwidth"},
    "cni": {"errors", "files"},
    "host": LEAVES | {"settings"},
    "docker": LEAVES | {"settings", "__init__"},
    "netconf": LEAVES | {"settings", "cni", "host", "__init__"},
    "attach": LEAVES | {"cni", "host"},
    "privnet": LEAVES | {"settings", "cni", "host", "netconf", "attach"},
    "sandbox": LEAVES
    | {"settings", "cni", "host", "netconf", "attach", "docker", "dockerargs", "privnet"}
    | {"bandwidth"}
    | {"__init__"},
    "doctor": LEAVES | {"settings", "cni", "host", "netconf", "docker", "sandbox"},
    "cli": set(LEAVES)
    | {"settings", "dockerargs", "cni", "host", "docker", "netconf", "attach", "privnet"}
    | {"sandbox", "doctor", "bandwidth", "__init__"},
    "__main__": {"cli", "testhooks"},
    "__init__": set(),
}
# Third-party packages -> the layers that may import them.
THIRD_PARTY = {"typer": {"cli"}, "click": {"cli"}, "docker": {"docker"}, "pyroute2": {"host"}}
# Where writing to stdout/stderr is not cnirun talking to its user.
OUTPUT_EXEMPT = {
    "cni/invoke.py": "passes a plugin's own stderr through, as libcni does",
    "__main__.py": "flushes both streams before its fast exit",
}
# The modules that read the environment: everyone else gets Settings (or an environ) passed in.
ENVIRON_READERS = {
    "settings.py": "resolves every setting once",
    "testhooks.py": "the test hooks, documented there",
    "cni/api.py": "plugins inherit cnirun's environment, as libcni's do",
}


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import, including those inside functions and import_module."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                found.append((node.lineno, str(arg.value)))
    return found


def target_layer(module: str) -> str | None:
    """The cnirun layer a dotted import names (None for anything outside cnirun)."""
    parts = module.split(".")
    if parts[0] != "cnirun":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    name = parts[1]
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").exists() else None


def violations(path: Path, source: str) -> list[str]:
    """Every import or output of `source` (a module at `path`) that its layer may not have."""
    layer = layer_of(path)
    rel = path.relative_to(PACKAGE).as_posix()
    tree = ast.parse(source, filename=rel)
    problems = []
    for line, module in imported_names(tree):
        target = target_layer(module)
        top = module.split(".")[0]
        if target is not None and target != layer and target not in ALLOWED[layer]:
            problems.append(f"{rel}:{line}: layer {layer} imports {module}")
        if top in THIRD_PARTY and layer not in THIRD_PARTY[top]:
            problems.append(f"{rel}:{line}: layer {layer} imports {top}")
    if layer != "cli" and rel not in OUTPUT_EXEMPT:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                problems.append(f"{rel}:{node.lineno}: print() outside cli/")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("stdout", "stderr")
                and getattr(node.value, "id", "") == "sys"
            ):
                problems.append(f"{rel}:{node.lineno}: sys.{node.attr} outside cli/")
    return problems


def environ_reads(path: Path, source: str) -> list[str]:
    rel = path.relative_to(PACKAGE).as_posix()
    if rel in ENVIRON_READERS:
        return []
    return [
        f"{rel}:{node.lineno}: os.{node.attr}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv", "environb")
        and getattr(node.value, "id", "") == "os"
    ]


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_known_layer() -> None:
    assert sorted({layer_of(p) for p in all_modules()} - set(ALLOWED)) == []


def test_no_module_breaks_the_layering() -> None:
    problems = [v for path in all_modules() for v in violations(path, path.read_text())]
    assert problems == []


def test_only_settings_reads_the_environment() -> None:
    assert [v for path in all_modules() for v in environ_reads(path, path.read_text())] == []
    assert environ_reads(PACKAGE / "sandbox/session.py", "import os\nos.environ.get('X')\n")


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("cni/api.py", "from cnirun.docker import runtime\n"),
        ("cni/api.py", "def f():\n    from cnirun.settings import Settings\n"),
        ("cni/api.py", "import importlib\nimportlib.import_module('cnirun.host.netns')\n"),
        ("docker/runtime.py", "from cnirun.cni.api import CNIConfig\n"),
        ("host/netns.py", "import cnirun.sandbox.records\n"),
        ("sandbox/session.py", "from cnirun.cli.output import report\n"),
        ("netconf/select.py", "import typer\n"),
        ("netconf/select.py", "from cnirun.docker.runtime import Docker\n"),
        ("sandbox/session.py", "import sys\nprint('hi', file=sys.stderr)\n"),
        ("doctor.py", "import sys\nsys.stdout.write('x')\n"),
        ("privnet.py", "from cnirun.docker import workload\n"),
    ],
)
def test_a_forbidden_import_or_output_is_caught(module: str, source: str) -> None:
    assert violations(PACKAGE / module, source) != []


def test_allowed_imports_pass() -> None:
    assert violations(PACKAGE / "sandbox/session.py", "from cnirun.docker import runtime\n") == []
    assert violations(PACKAGE / "cli/app.py", "import typer\nprint(1)\n") == []
    assert violations(PACKAGE / "cni/api.py", "from cnirun.errors import CNIError\n") == []


def test_importing_the_core_loads_neither_docker_nor_pyroute2_nor_typer() -> None:
    modules = sorted(f"cnirun.cni.{p.stem}" for p in (PACKAGE / "cni").glob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "top = ('docker', 'pyroute2', 'typer')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in top\n"
        "             or (m.startswith('cnirun.') and m.split('.')[1] not in\n"
        "                 ('cni', 'errors', 'files')))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_a_run_does_not_import_typer_or_the_sdk() -> None:
    """`cnirun IMAGE` parses Docker's grammar itself: typer (~60 ms) and the Docker SDK
    (~150 ms) stay unloaded on the hot path."""
    code = (
        "import sys\n"
        "from cnirun.cli import app\n"
        "import cnirun.cli.run, cnirun.sandbox.session, cnirun.sandbox.plan\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click', 'docker'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr

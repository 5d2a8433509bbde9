"""The layers of DESIGN.md: the core (`promoter/*.py`, `promoter/qrs/`, `promoter/store/`) imports no
Prefect and nothing above it, and `tasks/` and `flows/` import nothing from `deployments/`,
`webhook/` or the CLI above them.

`promoter/prefect_api.py` is the one module of `promoter/` that talks to Prefect (inside its
functions, so importing it loads no Prefect): below the tasks and flows, above the rest of the core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "promoter"


def modules(folder: Path, prefix: str) -> list[str]:
    return [f"{prefix}.{path.stem}" for path in sorted(folder.glob("*.py")) if path.stem != "__init__"]


def test_the_core_imports_no_prefect() -> None:
    """Importing every core module, in a fresh interpreter, leaves Prefect unloaded."""
    core = [
        *modules(PACKAGE, "promoter"),
        *modules(PACKAGE / "qrs", "promoter.qrs"),
        *modules(PACKAGE / "store", "promoter.store"),
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'prefect' in sys.modules:\n"
        "        sys.exit(name + ' loads prefect')\n"
    )

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)

    assert len(core) > 15
    assert (done.returncode, done.stderr[-500:]) == (0, "")


def imported_names(path: Path) -> list[str]:
    """Every module name ``path`` imports, at any depth (inside functions too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
    return names


def test_the_core_imports_nothing_above_it() -> None:
    """No core module imports the flows, tasks, deployments, webhook, CLI or sandbox."""
    above = (
        "promoter.flows",
        "promoter.tasks",
        "promoter.services",
        "promoter.webhook",
        "promoter.cli",
        "promoter.sandbox",
    )
    folders = (PACKAGE, PACKAGE / "qrs", PACKAGE / "store")
    upward = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for folder in folders
        for path in folder.glob("*.py")
        for name in imported_names(path)
        if name.startswith(above)
    ]

    assert upward == []


def test_tasks_and_flows_import_only_downwards() -> None:
    """No task or flow module imports the deployments, the webhook, the CLI or the sandbox."""
    above = ("promoter.services", "promoter.webhook", "promoter.cli", "promoter.sandbox")
    upward = []
    for folder in (PACKAGE / "tasks", PACKAGE / "flows"):
        for path in folder.glob("*.py"):
            upward += [f"{path.name}: {name}" for name in imported_names(path) if name.startswith(above)]

    assert upward == []


def test_the_prefect_api_module_sits_between_the_core_and_the_tasks() -> None:
    """promoter/prefect_api.py (deployment names, starting runs) imports only the core and Prefect,
    and no other core module imports it: tasks, flows and everything above may."""
    above = ("promoter.tasks", "promoter.flows", "promoter.services", "promoter.webhook", "promoter.cli")
    above += ("promoter.sandbox",)
    upward = [name for name in imported_names(PACKAGE / "prefect_api.py") if name.startswith(above)]
    core = [*PACKAGE.glob("*.py"), *(PACKAGE / "qrs").glob("*.py"), *(PACKAGE / "store").glob("*.py")]
    downward = [
        path.name
        for path in core
        if path.stem != "prefect_api" and "promoter.prefect_api" in imported_names(path)
    ]

    assert (upward, downward) == ([], [])

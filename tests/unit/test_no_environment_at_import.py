"""No module of ours reads the environment when it is imported: a value read then is fixed for the
life of the process (a test, the executor, the webhook), whatever is set later, and an import
order decides behaviour. Settings come from ``current_settings()``; retry delays from the test
mode (``retries.set_testing``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "promoter"
READS = {"environ", "getenv", "environb", "getenvb"}


def reads_at_import(tree: ast.Module) -> list[int]:
    """Lines outside every function (run at import) that touch ``os.environ`` or ``os.getenv``."""
    found: list[int] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return  # runs when called, not when imported
        if isinstance(node, ast.Attribute) and node.attr in READS:
            found.append(node.lineno)
        if isinstance(node, ast.Name) and node.id in READS:
            found.append(node.lineno)  # from os import environ
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_module_reads_the_environment_when_imported() -> None:
    offending = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in reads_at_import(ast.parse(path.read_text(encoding="utf-8")))
    ]

    assert offending == []


def test_the_check_sees_a_read_at_import_and_ignores_one_in_a_function() -> None:
    sample = ast.parse(
        "import os\n"
        "DELAYS = os.environ.get('X', '1')\n"
        "class C:\n"
        "    home = os.getenv('HOME')\n"
        "def later():\n"
        "    return os.environ['Y']\n"
    )

    assert reads_at_import(sample) == [2, 4]

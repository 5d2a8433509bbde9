"""No coroutine of ours calls the database itself: a store call may wait on a lock (SQLite's
busy_timeout, a PostgreSQL row lock), and on the event loop that wait would stall every flow run
of the executor. Coroutines hand store work to a thread (``asyncio.to_thread``, ``in_ledger``).

Read from the source (ast), so the rule covers code paths no end-to-end test happens to take.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import promoter.store
from promoter.store.database import Store

PACKAGE = Path(promoter.store.__file__).resolve().parents[1]


def store_classes() -> set[str]:
    """The names of Store and every store built on it (Ledger, ReconcileRecord, SubscriptionStore...)."""
    for module in pkgutil.iter_modules(promoter.store.__path__, "promoter.store."):
        importlib.import_module(module.name)
    found, todo = {Store.__name__}, [Store]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub.__name__)
            todo.append(sub)
    return found


def _name(node: ast.expr | None) -> str | None:
    """``Ledger`` for ``Ledger``, ``"Ledger"`` or ``store.Ledger``; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit(".", 1)[-1]
    return None


def own_nodes(function: ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The nodes a coroutine runs itself: nested functions and lambdas (run in a thread) left out."""
    nested = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    todo: list[ast.AST] = [node for node in function.body if not isinstance(node, nested)]
    while todo:
        node = todo.pop()
        yield node
        todo += [child for child in ast.iter_child_nodes(node) if not isinstance(child, nested)]


def typed_arguments(function: ast.FunctionDef | ast.AsyncFunctionDef, stores: set[str]) -> set[str]:
    """The arguments annotated as a store (``ledger: Ledger``)."""
    arguments = function.args.args + function.args.kwonlyargs
    return {a.arg for a in arguments if _name(a.annotation) in stores}


def opened_names(node: ast.AST, opening: set[str]) -> set[str]:
    """The names ``with Ledger(...) as ledger`` or ``record = _record()`` binds to a store."""
    if isinstance(node, ast.With | ast.AsyncWith):
        return {
            item.optional_vars.id
            for item in node.items
            if isinstance(item.context_expr, ast.Call)
            and _name(item.context_expr.func) in opening
            and isinstance(item.optional_vars, ast.Name)
        }
    if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
        return set()
    if _name(node.value.func) not in opening:
        return set()
    return {t.id for t in node.targets if isinstance(t, ast.Name)}


def blocking_store_calls(source: str, stores: set[str]) -> list[str]:
    """``function line N: call`` for every store opened or called directly inside an ``async def``."""
    tree = ast.parse(source)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    # Functions that hand back a store (``def _ledger() -> Ledger``) open one when called.
    opening = stores | {f.name for f in functions if _name(f.returns) in stores}
    # Attributes that hold a store (``self.store = store`` where ``store: SubscriptionStore``).
    held: set[str] = set()
    for function in functions:
        typed = typed_arguments(function, stores)
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and _name(node.value) in typed:
                held |= {t.attr for t in node.targets if isinstance(t, ast.Attribute)}
    found: list[tuple[int, str]] = []
    for function in (f for f in functions if isinstance(f, ast.AsyncFunctionDef)):
        nodes = list(own_nodes(function))
        in_hand = typed_arguments(function, stores).union(*(opened_names(n, opening) for n in nodes))
        for node in nodes:
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            receiver = func.value if isinstance(func, ast.Attribute) else None
            opens = isinstance(func, ast.Name) and func.id in opening
            on_store = (isinstance(receiver, ast.Name) and receiver.id in in_hand) or (
                isinstance(receiver, ast.Attribute) and receiver.attr in held
            )
            if opens or on_store:
                found.append((node.lineno, f"{function.name} line {node.lineno}: {ast.unparse(node)}"))
    return [call for _, call in sorted(found)]


def test_no_coroutine_calls_a_store_on_the_event_loop() -> None:
    """Every ``async def`` in promoter/ reaches Ledger, ReconcileRecord and SubscriptionStore
    through a thread: none opens a store or calls one of its methods itself."""
    stores = store_classes()
    found = [
        f"{path.relative_to(PACKAGE)}: {call}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for call in blocking_store_calls(path.read_text(encoding="utf-8"), stores)
    ]

    assert {"Ledger", "ReconcileRecord", "SubscriptionStore"} <= stores
    assert found == []


def test_the_rule_sees_each_way_a_coroutine_reaches_a_store() -> None:
    """The check above can fail: it finds a store opened, held or handed in, and a store factory;
    work passed to a thread (a lambda, a nested function, a reference) is not a call on the loop."""
    source = """
class Keeper:
    def __init__(self, store: SubscriptionStore) -> None:
        self.store = store

    async def renew(self) -> None:
        self.store.forget(1)
        await asyncio.to_thread(self.store.forget, 2)

def _ledger() -> "Ledger":
    return Ledger("sqlite://")

async def send(key: str, ledger: Ledger) -> None:
    ledger.claim_email(key, "approval")
    with Ledger("sqlite://") as opened:
        opened.release_email(key, "approval")
    record = ReconcileRecord("sqlite://")
    with _ledger() as made:
        made.emails(key)
    await in_ledger(lambda ledger: ledger.emails(key))

    def in_thread() -> None:
        with Ledger("sqlite://") as fine:
            fine.emails(key)

    await asyncio.to_thread(in_thread)
"""

    found = blocking_store_calls(source, store_classes())

    assert found == [
        "renew line 7: self.store.forget(1)",
        "send line 14: ledger.claim_email(key, 'approval')",
        "send line 15: Ledger('sqlite://')",
        "send line 16: opened.release_email(key, 'approval')",
        "send line 17: ReconcileRecord('sqlite://')",
        "send line 18: _ledger()",
        "send line 19: made.emails(key)",
    ]

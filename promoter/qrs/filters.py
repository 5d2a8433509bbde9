"""QRS filter expressions and query strings, built so that any app or stream name is safe.

QRS escapes a quote inside a string literal with a backslash (``name eq 'Q1\\'25'``); doubling
it is rejected. The whole expression is then percent-encoded, spaces as %20 (QRS's handling of
``+`` is not documented), so ``& # % ? /`` in a name can never cut the query short.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote
from uuid import UUID

Scalar = str | int | bool | UUID


def literal(value: Scalar) -> str:
    """One value as QRS filter syntax: strings quoted and escaped, GUIDs/numbers/booleans bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, UUID | int):
        return str(value)
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def eq(field: str, value: Scalar) -> str:
    return f"{field} eq {literal(value)}"


def ne(field: str, value: Scalar) -> str:
    return f"{field} ne {literal(value)}"


def all_of(*terms: str) -> str:
    """Terms joined with ``and``, each in parentheses so ``or`` inside cannot leak out."""
    return " and ".join(f"({t})" for t in terms if t)


def any_of(*terms: str) -> str:
    return " or ".join(f"({t})" for t in terms if t)


def query_string(params: Mapping[str, Scalar | None]) -> str:
    """Encode query parameters the way QRS reads them: every reserved character percent-encoded."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        parts.append(f"{quote(key, safe='')}={quote(text, safe='')}")
    return "&".join(parts)

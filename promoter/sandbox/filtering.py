"""QRS filter expressions (``name eq 'x' and stream.name sw 'Fin'``): parsed and evaluated like QRS.

Grammar, as QRS accepts it: comparisons ``path op value`` joined by ``and``/``or`` (``and`` binds
tighter), with parentheses. Strings are single-quoted with backslash escapes; GUIDs, numbers,
booleans and enum names are bare. String comparisons and property names are case-insensitive. A
dotted path walks into references and collections; a collection matches if any element does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

OPERATORS = frozenset({"eq", "ne", "sw", "ew", "so", "gt", "ge", "lt", "le"})
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class FilterError(ValueError):
    """The filter is not valid; ``str()`` is the text QRS answers with status 400."""


@dataclass(frozen=True, slots=True)
class Value:
    kind: str  # string | guid | number | bool | null | word
    text: str


@dataclass(frozen=True, slots=True)
class Comparison:
    path: tuple[str, ...]
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class Junction:
    op: str  # and | or
    terms: tuple[Node, ...]


Node = Comparison | Junction


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ( ) string bare
    text: str
    at: int


def _tokens(text: str) -> Iterator[_Token]:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            yield _Token(c, c, i)
            i += 1
        elif c == "'":
            start, i, chars = i, i + 1, []
            while True:
                if i >= n:
                    raise FilterError(f"Cannot parse the expression: unterminated string at {start}")
                if text[i] == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    chars.append(text[i])
                    i += 1
            yield _Token("string", "".join(chars), start)
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in "()'":
                i += 1
            yield _Token("bare", text[start:i], start)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(_tokens(text))
        self.pos = 0

    def fail(self, why: str) -> FilterError:
        return FilterError(f"Cannot parse the expression: {why}")

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end of expression")
        self.pos += 1
        return token

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "bare" and token.text.lower() in words:
            self.pos += 1
            return token.text.lower()
        return None

    def expression(self) -> Node:
        terms = [self.conjunction()]
        while self.keyword("or"):
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else Junction("or", tuple(terms))

    def conjunction(self) -> Node:
        terms = [self.primary()]
        while self.keyword("and"):
            terms.append(self.primary())
        return terms[0] if len(terms) == 1 else Junction("and", tuple(terms))

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "(":
            nxt = self.peek()
            if nxt is not None and nxt.kind == ")":
                raise FilterError("Invalid expression")
            node = self.expression()
            if self.take().kind != ")":
                raise self.fail(f"expected ')' at {token.at}")
            return node
        if token.kind != "bare" or not _PATH.match(token.text):
            raise self.fail(f"expected a property name at {token.at}")
        op = self.take()
        if op.kind != "bare" or op.text.lower() not in OPERATORS:
            raise self.fail(f"unknown operator {op.text!r} at {op.at}")
        return Comparison(tuple(token.text.split(".")), op.text.lower(), self.value())

    def value(self) -> Value:
        token = self.take()
        if token.kind == "string":
            return Value("string", token.text)
        if token.kind != "bare":
            raise self.fail(f"expected a value at {token.at}")
        word = token.text
        if _GUID.match(word):
            return Value("guid", word.lower())
        if word.lower() in ("true", "false"):
            return Value("bool", word.lower())
        if word.lower() == "null":
            return Value("null", "")
        if _NUMBER.match(word):
            return Value("number", word)
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", word):
            return Value("word", word)
        raise self.fail(f"unexpected {word!r} at {token.at}")


def parse_filter(text: str | None) -> Node | None:
    """The parsed filter, or None for an absent or blank one; FilterError on bad input."""
    if text is None or not text.strip():
        return None
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek() is not None:
        extra = parser.peek()
        assert extra is not None
        raise parser.fail(f"unexpected {extra.text!r} at {extra.at}")
    return node


def matches(node: Node | None, entity: Mapping[str, Any]) -> bool:
    """Whether one entity (its full JSON form) satisfies the filter."""
    if node is None:
        return True
    if isinstance(node, Junction):
        results = (matches(term, entity) for term in node.terms)
        return all(results) if node.op == "and" else any(results)
    leaves = list(_resolve(entity, node.path))
    return any(_compare(leaf, node.op, node.value) for leaf in leaves)


def _resolve(entity: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[Any]:
    current: list[Any] = [entity]
    for name in path:
        found: list[Any] = []
        wanted = name.lower()
        for item in current:
            if item is None:
                found.append(None)
                continue
            if not isinstance(item, Mapping):
                raise FilterError(f"Cannot parse the expression: {name!r} is not a property of a value")
            key = next((k for k in item if k.lower() == wanted), None)
            if key is None:
                raise FilterError(f"Cannot parse the expression: unknown property {'.'.join(path)!r}")
            value = item[key]
            if isinstance(value, list):
                found.extend(value)
            else:
                found.append(value)
        current = found
    yield from current


def _as_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _compare(leaf: Any, op: str, value: Value) -> bool:
    if value.kind == "null" or leaf is None:
        equal = leaf is None and value.kind == "null"
        return equal if op == "eq" else (not equal if op == "ne" else False)
    if isinstance(leaf, bool):
        equal = str(leaf).lower() == value.text.lower()
        return {"eq": equal, "ne": not equal}.get(op, False)
    if isinstance(leaf, int | float):
        try:
            number = float(value.text)
        except ValueError:
            number = None
        if number is None:
            equal = str(leaf) == value.text
            return {"eq": equal, "ne": not equal}.get(op, False)
        return _ordered(float(leaf), op, number)
    text = str(leaf)
    if op in ("sw", "ew", "so"):
        left, right = text.casefold(), value.text.casefold()
        return left.startswith(right) if op == "sw" else left.endswith(right) if op == "ew" else right in left
    if value.kind == "string":
        left_time, right_time = _as_time(text), _as_time(value.text)
        if left_time is not None and right_time is not None and ("T" in text or op not in ("eq", "ne")):
            return _ordered(left_time, op, right_time)
    return _ordered(text.casefold(), op, value.text.casefold())


def _ordered(left: Any, op: str, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if op == "gt":
        return bool(left > right)
    if op == "ge":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    if op == "le":
        return bool(left <= right)
    return False

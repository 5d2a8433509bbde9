"""Email addresses from user attributes and settings: parsed strictly, several per attribute.

An email attribute or approver list is user input: it may hold several addresses, or none, or
text meant to break a header. Only a plain ASCII "local@domain" becomes a ``MailAddress``; every
other part is rejected, quoted on one line for a warning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from promoter.mail_headers import LINE_BREAKS, clip

# An address is ASCII "local@domain" and nothing fancier: a dot-atom local part without "?" (so no
# "=?" can start an encoded word), "!" or "%" (old relay routing), and a host name.
_ATOM = r"[A-Za-z0-9#$&'*+/=^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>{_LABEL}(?:\.{_LABEL})*)", re.ASCII)
_ADDR_SPEC_LIMIT = 254  # RFC 5321: the longest path a server must accept, less the brackets
_LOCAL_PART_LIMIT = 64
# "Name <address>", the name quoted (then it may hold anything) or not; nothing may follow the ">".
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_NAMED_ADDRESS = re.compile(rf"(?P<name>{_QUOTED}|[^<>\"]*?)\s*<(?P<addr>[^<>]*)>", re.DOTALL)
# Where one address ends and the next begins in an email attribute or an approver list.
_SEPARATORS = ",;" + LINE_BREAKS
# A display name is cut like an app name in a Subject (mail_messages.SUBJECT_NAME_LIMIT): the
# header stays short.
_DISPLAY_NAME_LIMIT = 100
_SHOWN_LIMIT = 100  # rejected input quoted in a warning


@dataclass(frozen=True, slots=True)
class MailAddress:
    """One recipient or sender: a checked ASCII address, and a display name (any text, or "").

    Checked when made, so no MailAddress can carry what a header must not: ValueError for an
    address that is not plain "local@domain"; the display name is cleaned to one line and clipped.
    """

    addr_spec: str
    display_name: str = ""

    def __post_init__(self) -> None:
        if not _is_addr_spec(self.addr_spec):
            raise ValueError(f"not an email address: {_shown(self.addr_spec)!r}")
        object.__setattr__(self, "display_name", clip(self.display_name, _DISPLAY_NAME_LIMIT))

    def __str__(self) -> str:  # for logs; a header is written by mail_headers.AddressField, never from this
        return f"{self.display_name} <{self.addr_spec}>" if self.display_name else self.addr_spec


class ParsedAddresses(NamedTuple):
    """What an email attribute or approver list holds: the usable addresses, and the parts that are not."""

    found: tuple[MailAddress, ...]
    rejected: tuple[str, ...]  # each one line, at most 100 characters, for a warning


def is_valid_address(text: str) -> bool:
    """True when ``text`` is one address ("a@b.example" or "Name <a@b.example>") safe for a header."""
    try:
        parse_address(text)
    except ValueError:
        return False
    return True


def parse_address(text: str) -> MailAddress:
    """Exactly one address: "a@b.example", "<a@b.example>", "Name <a@b.example>", '"Doe, Pat" <a@b.example>'.

    Raises ValueError for anything else: a list, no address, an address with spaces, non-ASCII
    characters or an encoded word in it. The display name may be any text; it is cleaned to one line.
    """
    text = text.strip()
    named = _NAMED_ADDRESS.fullmatch(text)
    name, spec = (named["name"].strip(), named["addr"].strip()) if named else ("", text)
    if name.startswith('"'):
        name = re.sub(r"\\(.)", r"\1", name[1:-1], flags=re.DOTALL)
    if not _is_addr_spec(spec):
        raise ValueError(f"not an email address: {_shown(text)!r}")
    return MailAddress(spec, name)


def parse_addresses(text: str | None) -> ParsedAddresses:
    """Every address in an email attribute or approver entry: separated by ";", "," or line breaks.

    A separator inside a quoted display name does not count. Empty parts are ignored; parts that
    are not one address are returned in ``rejected`` so that the caller can warn about them.
    """
    found: list[MailAddress] = []
    rejected: list[str] = []
    for part in _split_addresses(text or ""):
        try:
            found.append(parse_address(part))
        except ValueError:
            rejected.append(_shown(part))
    return ParsedAddresses(tuple(found), tuple(rejected))


def gather_addresses(sources: Sequence[tuple[str, str | None]]) -> tuple[list[MailAddress], list[str]]:
    """The addresses in several texts, each once, and a warning for each part or text that gives none.

    ``sources`` pairs where a text came from, in an admin's words ("owner ACME\\pat (user attribute
    'email')"), with the text. A warning names the source and quotes the rejected part.
    """
    found: dict[str, MailAddress] = {}
    warnings: list[str] = []
    for source, text in sources:
        parsed = parse_addresses(text)
        warnings += [f"{source}: {part!r} is not an email address; skipped" for part in parsed.rejected]
        if not parsed.found and not parsed.rejected:
            warnings.append(f"{source}: no email address; nobody is emailed there")
        for address in parsed.found:
            found.setdefault(address.addr_spec.lower(), address)
    return list(found.values()), warnings


def _shown(text: str) -> str:
    """Rejected input as a warning may quote it: one line, at most 100 characters."""
    return clip(text, _SHOWN_LIMIT)


def _is_addr_spec(spec: str) -> bool:
    match = _ADDR_SPEC.fullmatch(spec)
    return bool(match) and len(spec) <= _ADDR_SPEC_LIMIT and len(match["local"]) <= _LOCAL_PART_LIMIT


def _split_addresses(text: str) -> list[str]:
    """``text`` cut at each separator that is not inside a quoted display name; empty parts dropped."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch in _SEPARATORS:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]

"""Email headers that no user text can break out of: names kept on one line, headers encoded by us.

App, stream and user names are user input. They reach a header only as RFC 2047 encoded words
that we write ourselves (``EncodedText``, ``AddressField``), never as text that the email package
parses, because its header parser decodes encoded words in a name back into line breaks that
start a header of their own. ``one_line`` keeps a name on one line wherever else it is shown.
"""

from __future__ import annotations

import base64
import unicodedata
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # promoter.addresses imports this module: the type is only named here
    from promoter.addresses import MailAddress

# Characters that end a line for some reader (str.splitlines, mail clients) or reorder text on
# screen (bidi overrides could make "evil.exe" read as "exe.live"): never shown as they are.
LINE_BREAKS = "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"

# RFC 2047: an encoded word is at most 75 characters, a line that holds one at most 76.
_ENCODED_WORD_LIMIT = 75
_LINE_LIMIT = 76
_WORD_START, _WORD_END = "=?utf-8?q?", "?="
_WORD_TEXT_LIMIT = _ENCODED_WORD_LIMIT - len(_WORD_START) - len(_WORD_END)
# Characters an encoded word may carry as they are, in a Subject and in a display name alike
# (RFC 2047 section 5 (3)); everything else is written as =XX bytes of its UTF-8 form.
_Q_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def one_line(text: str) -> str:
    """``text`` with line breaks, control and bidi characters replaced, whitespace collapsed.

    A lone surrogate (JSON can carry one, UTF-8 cannot) becomes U+FFFD, so the text can be written.
    """
    cleaned = "".join(
        " " if ch in LINE_BREAKS or unicodedata.category(ch) == "Cc" else _writable(ch)
        for ch in text
        if ch not in _BIDI_CONTROLS
    )
    return " ".join(cleaned.split())


def clip(text: str, limit: int) -> str:
    """``text`` on one line, cut to at most ``limit`` characters (the last one an ellipsis)."""
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def recipients(message: EmailMessage) -> list[str]:
    """The addresses (addr-spec only) in a message's To and Cc headers: its SMTP envelope, and what
    the ledger records as sent."""
    fields = [*message.get_all("To", []), *message.get_all("Cc", [])]
    found: list[str] = []
    for field in fields:
        if isinstance(field, AddressField):
            found += [a.addr_spec for a in field.mail_addresses]
        else:  # a message built elsewhere: its header was parsed by the email package
            found += [address for _, address in getaddresses([str(field)]) if address]
    return found


# -- headers that the email package writes but never parses -----------------------------------
#
# EmailPolicy keeps a header value that has a ``name`` matching its header as it is, and writes
# it by calling ``value.fold(policy=...)``. These two classes are such values: str() is the text
# a reader of the message object sees, fold() the encoded form, so no user text is ever read by
# the header parser (which would decode "=?utf-8?q?=0D=0ABcc:...?=" into a line break).


class EncodedText(str):
    """An unstructured header (Subject) written entirely as RFC 2047 encoded words."""

    name: str

    def __new__(cls, name: str, text: str) -> EncodedText:
        field = super().__new__(cls, text)
        field.name = name
        return field

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, str(self)))

    def fold(self, *, policy: Policy) -> str:
        lines = _Lines(self.name)
        lines.add_text(str(self))
        return lines.render(policy)


class AddressField(str):
    """From or To: checked ASCII addresses; each display name one encoded word.

    str() is the bare addresses, comma-separated, so that smtplib (which reads the envelope
    recipients from this text) and getaddresses find exactly these addresses and nothing else.
    """

    name: str
    mail_addresses: tuple[MailAddress, ...]

    def __new__(cls, name: str, addresses: tuple[MailAddress, ...]) -> AddressField:
        field = super().__new__(cls, ", ".join(a.addr_spec for a in addresses))
        field.name = name
        field.mail_addresses = addresses
        return field

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.mail_addresses))

    @property
    def addresses(self) -> tuple[Address, ...]:
        """The addresses as the email package's own address headers offer them."""
        return tuple(Address(a.display_name, addr_spec=a.addr_spec) for a in self.mail_addresses)

    def fold(self, *, policy: Policy) -> str:
        lines = _Lines(self.name)
        for number, address in enumerate(self.mail_addresses, start=1):
            comma = "," if number < len(self.mail_addresses) else ""
            if address.display_name:
                # One word per name: Python's own parser would put a space between two of them.
                lines.add(_encoded_word(address.display_name))
                lines.add(f"<{address.addr_spec}>{comma}")
            else:
                lines.add(address.addr_spec + comma)
        return lines.render(policy)


class _Lines:
    """A header's lines as they are written: "Name: token", then " token" continuation lines."""

    def __init__(self, name: str) -> None:
        self._lines = [f"{name}:"]

    def add(self, token: str) -> None:
        """Add a token, on a new line when it would make this one too long (and this one has any)."""
        if self._lines[-1] and len(self._lines[-1]) + 1 + len(token) > _LINE_LIMIT:
            self._lines.append("")
        self._lines[-1] += " " + token

    def add_text(self, text: str) -> None:
        """Add ``text`` as encoded words that fill the lines; a character is never split between two."""
        pieces = [_q_encoded(ch) for ch in text]
        while pieces:
            room = min(_LINE_LIMIT - len(self._lines[-1]) - 1, _ENCODED_WORD_LIMIT)
            room -= len(_WORD_START) + len(_WORD_END)
            taken, used = 0, 0
            while taken < len(pieces) and used + len(pieces[taken]) <= room:
                used += len(pieces[taken])
                taken += 1
            if not taken:
                self._lines.append("")
                continue
            self._lines[-1] += f" {_WORD_START}{''.join(pieces[:taken])}{_WORD_END}"
            del pieces[:taken]

    def render(self, policy: Policy) -> str:
        return policy.linesep.join(self._lines) + policy.linesep


def _q_encoded(ch: str) -> str:
    """One character in the "Q" encoding: as it is when harmless, "_" for a space, else =XX bytes."""
    if ch in _Q_PLAIN:
        return ch
    if ch == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in _writable(ch).encode("utf-8"))


def _encoded_word(text: str) -> str:
    """``text`` as one encoded word: "Q" when that fits, else "B" (denser for punctuation and non-Latin
    names), cut with an ellipsis where even that would grow too long."""
    quoted = "".join(_q_encoded(ch) for ch in text)
    if len(quoted) <= _WORD_TEXT_LIMIT:
        return f"{_WORD_START}{quoted}{_WORD_END}"
    room = _WORD_TEXT_LIMIT // 4 * 3  # base64: 4 characters for every 3 bytes
    data = _writable_text(text).encode("utf-8")
    if len(data) > room:
        ellipsis = "…".encode()
        data = data[: room - len(ellipsis)].decode("utf-8", errors="ignore").encode("utf-8") + ellipsis
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}{_WORD_END}"


def _writable(ch: str) -> str:
    return "\ufffd" if "\ud800" <= ch <= "\udfff" else ch


def _writable_text(text: str) -> str:
    return "".join(map(_writable, text))

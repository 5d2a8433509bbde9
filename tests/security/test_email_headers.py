"""Email headers from names: no app, stream, user or owner name can add a header or a recipient.

An RFC 2047 encoded word in a name ("=?utf-8?q?=0D=0ABcc:...?=") decodes to a line break when the
email package parses the header text, so removing real line breaks is not enough. Each check renders
every email kind, writes it as smtplib does, parses it back as a mail client would (email_wire.py),
and compares with the email we meant to send: on this Python, and on every other 3.11+ found here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promoter.addresses import MailAddress, parse_addresses
from promoter.mail_messages import AppSummary, render_approval
from tests.security import email_wire

pytestmark = pytest.mark.security

REPO = Path(__file__).resolve().parents[2]
WIRE = Path(email_wire.__file__)
LINE_BREAKS = ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\v", "\f", "\x1c"]
INJECTIONS = [
    "\r\nBcc: rep@evil.example\r\n",
    "\r\nReply-To: rep@evil.example",
    "\nX-Injected: 1",
    "\r\n\r\n<b>body</b>",
    "\r\n To: extra@evil.example",
]


def q_word(text: str) -> str:
    """``text`` as a "Q" encoded word, as an attacker would write it into a name."""
    return "=?utf-8?q?" + "".join(f"={b:02X}" for b in text.encode("utf-8", "surrogatepass")) + "?="


def b_word(text: str) -> str:
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8", "surrogatepass")).decode() + "?="


encoded_words = st.builds(
    lambda encode, text: encode(text),
    st.sampled_from([q_word, b_word]),
    st.sampled_from(INJECTIONS) | st.text(max_size=20),
)
name_pieces = st.one_of(
    encoded_words,
    st.sampled_from(LINE_BREAKS),
    st.sampled_from(INJECTIONS),
    st.sampled_from(['"', "<", ">", ",", ";", "\\", "=?", "?=", "_", " ", "\t", "=0D=0A"]),
    st.text(max_size=30),
)
short_names = st.lists(name_pieces, max_size=12).map("".join)
# Longer than QRS stores (255), to fold over many lines and be clipped in the Subject.
long_names = st.lists(name_pieces, min_size=1, max_size=6).map(lambda parts: ("".join(parts) or "x") * 80)
names = short_names | long_names.map(lambda text: text[:2000])


@pytest.mark.parametrize("kind", email_wire.KINDS)
@settings(max_examples=60, deadline=None)
@given(name=names)
def test_no_name_adds_a_header_or_a_recipient(kind: str, name: str) -> None:
    """Property: whatever the app, stream, owner and approver are called, and whatever display name the
    owner's address has, the received email has exactly our headers (no Bcc, no Reply-To), From and To
    are exactly our addresses, and the Subject shows the name on one line, clipped as always."""
    assert email_wire.problems(kind, name) == []


def test_the_reported_app_name_arrives_as_text() -> None:
    """The app name from the report: its encoded words are shown as the text they are, in one Subject."""
    name = email_wire.HOSTILE_NAMES[0]
    app = AppSummary(email_wire.APP_ID, name, "Bob", "Sales", "https://qlik.example.com/")
    message = render_approval(app, approver="Mary", sender=email_wire.SENDER, to=[email_wire.OWNER])

    received = message_from_bytes(email_wire.as_smtplib_writes_it(message), policy=policy.default)

    assert str(received["Subject"]) == f'[qs-promoter] Approved: "{name}"'
    assert (received.get_all("Bcc"), received.get_all("Reply-To")) == (None, None)


# -- every Python on this machine ------------------------------------------------------------


def interpreters() -> list[str]:
    """This Python and every other python3.x on the PATH or under pyenv (not its shims), each once."""
    found = {os.path.realpath(sys.executable): sys.executable}
    folders = [d for d in os.get_exec_path() if "shims" not in Path(d).parts]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python3.{minor}", path=os.pathsep.join(folders)) for minor in range(11, 20)]
    candidates += [str(p) for p in sorted(pyenv.glob("3.*/bin/python3")) if _named_3_11_or_later(p)]
    for candidate in filter(None, candidates):
        found.setdefault(os.path.realpath(candidate), candidate)
    return list(found.values())


def _named_3_11_or_later(python: Path) -> bool:
    # pyenv names its folders after the version: .../versions/3.12.1/bin/python3
    minor = python.parts[-3].split(".")[1]
    return minor.isdigit() and int(minor) >= 11


def version_of(python: str) -> tuple[int, int]:
    out = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=60
    )
    major, minor = out.stdout.split()
    return int(major), int(minor)


@pytest.mark.parametrize("python", interpreters())
def test_headers_are_safe_on_every_python_here(python: str) -> None:
    """The same checks under each Python 3.11+ found on this machine: older patch levels write a
    decoded line break as it is, newer ones refuse to write it (HeaderWriteError, a failed promotion);
    neither may happen to any name."""
    if version_of(python) < (3, 11):
        pytest.skip(f"{python} is older than the 3.11 qs-promoter needs")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}

    out = subprocess.run(
        [python, "-s", str(WIRE)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )

    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["problems"] == []


# -- addresses from email attributes ---------------------------------------------------------

local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s
)
addresses = st.builds(
    lambda local, host: f"{local}@{host}.example", local_parts, st.from_regex(r"[a-z]{1,10}", fullmatch=True)
)
display_names = st.text(max_size=40)


def written(name: str, address: str) -> str:
    """How an attribute holds a named address: the name quoted, its quotes and backslashes escaped."""
    if not name:
        return address
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(st.tuples(display_names, addresses), max_size=5),
    separators=st.lists(
        st.sampled_from([";", ",", "; ", " , ", "\r\n", "\n", ";\u2028"]), min_size=5, max_size=5
    ),
)
def test_every_address_in_an_attribute_is_found(
    entries: list[tuple[str, str]], separators: list[str]
) -> None:
    """Property: addresses joined by ";", "," or line breaks, with display names holding any text
    (separators, quotes, brackets, line breaks), are all found, in order, and nothing is rejected."""
    text = "".join(
        written(name, address) + sep for (name, address), sep in zip(entries, separators, strict=False)
    )

    parsed = parse_addresses(text)

    assert [a.addr_spec for a in parsed.found] == [address for _, address in entries]
    assert parsed.rejected == ()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300) | names)
def test_whatever_an_attribute_holds_only_plain_addresses_come_out(text: str) -> None:
    """Property: parse_addresses never raises, and every address it finds is plain ASCII local@domain
    with a one-line display name: nothing a header could be built from to say something else."""
    parsed = parse_addresses(text)

    for address in parsed.found:
        assert re.fullmatch(r"[A-Za-z0-9#$&'*+/=^_`{|}~.-]+@[A-Za-z0-9.-]+", address.addr_spec)
        assert "=?" not in address.addr_spec
        assert address.display_name == " ".join(address.display_name.split())
        assert MailAddress(address.addr_spec, address.display_name) == address
    assert all("\n" not in part and "\r" not in part for part in parsed.rejected)

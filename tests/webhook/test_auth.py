"""Who may post: the secret in the callback URL, the allowed networks, and what the logs may show."""

from __future__ import annotations

import logging
from ipaddress import ip_network
from pathlib import Path

import pytest
from pydantic import SecretStr

from promoter.errors import SettingsError
from promoter.notifications import KINDS, callback_url
from promoter.settings import WebhookSettings
from promoter.webhook.auth import (
    MaskSecretInAccessLog,
    mask_secret,
    require_secret,
    secret_matches,
    source_allowed,
)
from tests.webhook.support import SECRET, make_settings


def test_callback_urls_carry_the_secret_as_a_path_segment(tmp_path: Path) -> None:
    """Each kind of change has its own URL under public_base_url, with the secret as a path segment."""
    settings = make_settings(tmp_path, public_base_url="http://promoter.example:8787/")

    urls = [callback_url(settings, kind) for kind in KINDS]

    assert [
        f"http://promoter.example:8787/qrs/{SECRET}/app-updated",
        f"http://promoter.example:8787/qrs/{SECRET}/app-reloaded",
        f"http://promoter.example:8787/qrs/{SECRET}/app-published",
    ] == urls


def test_callback_url_refuses_an_unknown_kind(tmp_path: Path) -> None:
    """A typo in the kind is an error, not a URL nobody serves."""
    with pytest.raises(ValueError, match="deleted"):
        callback_url(make_settings(tmp_path), "deleted")  # type: ignore[arg-type]


def test_a_missing_secret_refuses_to_start() -> None:
    """No secret (the settings refuse a short one, tests/unit/test_settings.py): SettingsError that says
    how to generate one."""
    with pytest.raises(SettingsError, match="at least 32 characters") as caught:
        require_secret(WebhookSettings(secret=SecretStr("")))

    assert "token_urlsafe" in str(caught.value)


@pytest.mark.parametrize("weak", ["a" * 40, "ab" * 20, "0123456789abcdef"])
def test_a_weak_secret_set_past_the_settings_check_refuses_to_start(weak: str) -> None:
    """A secret put in without validation (model_copy) meets the same rule as one read from a file."""
    webhook = WebhookSettings().model_copy(update={"secret": SecretStr(weak)})

    with pytest.raises(SettingsError, match="token_urlsafe"):
        require_secret(webhook)


def test_a_secret_that_needs_url_encoding_is_refused() -> None:
    """The secret is a path segment: a slash or a space in it would break the callback URL."""
    with pytest.raises(SettingsError, match="may only contain"):
        require_secret(WebhookSettings(secret=SecretStr("thirty-two/chars and more 0123456789")))


def test_secret_comparison() -> None:
    """Exactly the configured secret matches; a prefix, a longer string or non-ASCII text does not."""
    assert (
        secret_matches(SECRET, SECRET),
        secret_matches(SECRET[:-1], SECRET),
        secret_matches(SECRET + "x", SECRET),
        secret_matches("ünïcödé", SECRET),
    ) == (True, False, False, False)


def test_allowed_networks() -> None:
    """No networks allows everyone; otherwise the peer must be in one (IPv4-mapped IPv6 counts as IPv4)."""
    networks = [ip_network("10.1.0.0/16"), ip_network("fd00::/8")]

    assert (
        source_allowed("192.0.2.1", []),
        source_allowed("10.1.2.3", networks),
        source_allowed("10.2.0.1", networks),
        source_allowed("::ffff:10.1.9.9", networks),
        source_allowed("fd12::1", networks),
        source_allowed("not-an-address", networks),
        source_allowed(None, networks),
    ) == (True, True, False, True, True, False, False)


def test_logged_paths_hide_the_secret() -> None:
    """Whatever follows /qrs/ (the right secret or a wrong guess) is masked; other paths are untouched."""
    assert [
        mask_secret(f"/qrs/{SECRET}/app-updated"),
        mask_secret("/qrs/a-wrong-guess"),
        mask_secret("/qrs/guess?x=1"),
        mask_secret("/healthz"),
    ] == [
        "/qrs/***/app-updated",
        "/qrs/***",
        "/qrs/***?x=1",
        "/healthz",
    ]


def test_uvicorn_access_log_line_is_masked() -> None:
    """The access-log filter rewrites the path argument of uvicorn's access record."""
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/qrs/{SECRET}/app-reloaded", "1.1", 200), None,
    )  # fmt: skip

    MaskSecretInAccessLog().filter(record)

    assert SECRET not in record.getMessage()
    assert '"POST /qrs/***/app-reloaded HTTP/1.1" 200' in record.getMessage()

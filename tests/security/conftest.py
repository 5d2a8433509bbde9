"""Security suite fixtures: one sandbox Qlik site for the module, and what an attacker must never see."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from promoter.qrs.client import QrsClient
from promoter.qrs.retry import RetryPolicy
from promoter.sandbox.server import Sandbox, SandboxSite
from promoter.settings import SiteSettings

# The end-to-end world (sandbox sites, SMTP, S3, Prefect) of tests/e2e, for the secrets test.
from tests.e2e.conftest import stage  # noqa: F401


@pytest.fixture(scope="module")
def dev_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxSite]:
    """One sandbox site ("dev") on a free loopback port, shared by a module's tests."""
    root = tmp_path_factory.mktemp("security-sandbox")
    with Sandbox({"dev": ("127.0.0.1", 0)}, root / "certs", root / "data") as sandbox:
        yield sandbox.sites["dev"]


def site_client(site: SandboxSite, name: str = "source", **overrides: object) -> QrsClient:
    """A client of the sandbox site with its own certificates and instant retries; ``overrides``
    change its SiteSettings (another X-Qlik-User, another port)."""
    settings = SiteSettings(host=site.host, port=site.port).model_copy(update=overrides)
    return QrsClient(settings, site.cert_dir, name=name, retry=RetryPolicy.immediate())


def pem_body_lines(pem: Path) -> list[str]:
    """The base64 lines of a PEM file (its key material), without the BEGIN/END armour."""
    return [line for line in pem.read_text(encoding="ascii").splitlines() if line and "-----" not in line]


def secret_forms(secret: str) -> set[str]:
    """A secret as it may leak: in clear, and base64 as HTTP Basic or SMTP AUTH would carry it."""
    return {secret, base64.b64encode(secret.encode()).decode()}


def leaks(text: str | bytes, secrets: Iterable[str]) -> list[str]:
    """Which of ``secrets`` occur in ``text`` (shortened, so a failing assertion does not print them)."""
    haystack = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
    return [f"{s[:4]}…({len(s)} chars)" for s in secrets if s and s in haystack]

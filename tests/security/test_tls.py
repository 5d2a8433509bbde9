"""Mutual TLS to a site: a broken certificate is refused with a QrsError that says why, never the key.

Covered elsewhere (tests/qrs/test_client_sandbox.py): a server not signed by root.pem (wrong CA),
another site's client certificate, and that a client without a certificate gets no answer.
Also here: a client key exported with a password, and one that other users of the machine can read.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme
import uvicorn
from cryptography.hazmat.primitives import serialization

from promoter.cli.doctor import check_certificates
from promoter.errors import QrsError, QrsNotFound, QrsUntrusted, SettingsError
from promoter.qrs.client import QrsClient
from promoter.qrs.retry import RetryPolicy
from promoter.qrs.tls import site_tls
from promoter.sandbox.certs import CLIENT_CERT, CLIENT_KEY, ROOT_CERT, ROOT_KEY
from promoter.sandbox.server import SandboxSite
from promoter.sandbox.serving import serve_in_thread
from promoter.settings import Settings, SiteSettings
from tests.security.conftest import leaks, pem_body_lines

pytestmark = [pytest.mark.security, pytest.mark.e2e]

YESTERDAY = datetime.now(UTC) - timedelta(days=1)
LAST_MONTH = YESTERDAY - timedelta(days=30)


def client(site: SiteSettings, cert_dir: Path, **kw: object) -> QrsClient:
    return QrsClient(site, cert_dir, name="source", retry=RetryPolicy.immediate(), **kw)  # type: ignore[arg-type]


async def refusal(site: SiteSettings, cert_dir: Path, **kw: object) -> QrsError:
    """The QrsError that reading /qrs/about ends with."""
    async with client(site, cert_dir, **kw) as qrs:
        with pytest.raises(QrsError) as caught:
            await qrs.about()
    return caught.value


def assert_no_key_material(error: QrsError, *key_files: Path) -> None:
    """Neither the message, the repr nor a logged traceback holds a line of any private key."""
    printed = "".join(traceback.format_exception(error)) + repr(error)
    secrets = [line for pem in key_files for line in pem_body_lines(pem)]
    assert leaks(printed, secrets) == []
    assert "PRIVATE KEY" not in printed


def write_leaf(leaf: trustme.LeafCert, folder: Path, cert: str, key: str) -> None:
    leaf.cert_chain_pems[0].write_to_path(str(folder / cert))
    leaf.private_key_pem.write_to_path(str(folder / key))
    (folder / key).chmod(0o600)  # as a service account keeps it (a readable key is warned about)


@pytest.fixture(scope="module")
def site_ca(dev_site: SandboxSite) -> trustme.CA:
    """The dev site's own CA (the sandbox keeps its key), to issue certificates the site trusts."""
    return trustme.CA.from_pem(
        (dev_site.cert_dir / ROOT_CERT).read_bytes(), (dev_site.cert_dir / ROOT_KEY).read_bytes()
    )


def dev_site_settings(site: SandboxSite) -> SiteSettings:
    return SiteSettings(host=site.host, port=site.port)


def qmc_export(tmp_path: Path, site: SandboxSite) -> Path:
    """A copy of the site's certificate folder, as exported from its QMC (no CA key)."""
    folder = tmp_path / "export"
    folder.mkdir()
    for name in (ROOT_CERT, CLIENT_CERT, CLIENT_KEY):
        shutil.copy(site.cert_dir / name, folder / name)
    return folder


# -- the client's certificate ----------------------------------------------------------------


async def test_an_expired_client_certificate_is_refused_and_the_error_names_the_expiry(
    dev_site: SandboxSite, site_ca: trustme.CA, tmp_path: Path
) -> None:
    """client.pem issued by the site's CA but expired yesterday: the site refuses it, and the QrsError
    (no status, as for every TLS failure) says TLS, names client.pem and its expiry date."""
    export = qmc_export(tmp_path, dev_site)
    write_leaf(site_ca.issue_cert("qlikclient", not_before=LAST_MONTH, not_after=YESTERDAY), export,
               CLIENT_CERT, CLIENT_KEY)  # fmt: skip

    error = await refusal(dev_site_settings(dev_site), export)

    assert error.status is None
    assert "TLS" in str(error) and f"client.pem expired on {YESTERDAY:%Y-%m-%d}" in str(error)
    assert_no_key_material(error, export / CLIENT_KEY, dev_site.cert_dir / ROOT_KEY)


@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_no_client_certificate_is_refused_with_a_hint_at_client_pem(
    dev_site: SandboxSite, tmp_path: Path, tls_version: ssl.TLSVersion
) -> None:
    """A client that trusts the site but presents no certificate: the site closes the connection, which
    TLS 1.2 shows as an empty ConnectError and TLS 1.3 as "Server disconnected"; either way the
    QrsError says TLS and points at client.pem instead of saying nothing."""
    export = qmc_export(tmp_path, dev_site)
    trusting = ssl.create_default_context(cafile=str(export / ROOT_CERT))
    trusting.maximum_version = tls_version

    error = await refusal(
        dev_site_settings(dev_site), export, transport=httpx.AsyncHTTPTransport(verify=trusting)
    )

    assert error.status is None
    assert "TLS" in str(error) and "client.pem" in str(error)
    assert_no_key_material(error, export / CLIENT_KEY)


# -- the site's certificate ------------------------------------------------------------------


async def answer_404(scope: dict[str, object], receive: object, send: object) -> None:
    """A bare ASGI app: every request gets 404, which proves the TLS handshake succeeded."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"not here"})  # type: ignore[operator]


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA(organization_name="Another Qlik site")


@pytest.fixture(scope="module")
def other_export(other_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A QMC-style export for a site whose CA is ``other_ca``: root.pem and a valid client certificate."""
    folder = tmp_path_factory.mktemp("other-export")
    other_ca.cert_pem.write_to_path(str(folder / ROOT_CERT))
    write_leaf(other_ca.issue_cert("qlikclient"), folder, CLIENT_CERT, CLIENT_KEY)
    return folder


def site_serving(leaf: trustme.LeafCert, folder: Path) -> Iterator[SiteSettings]:
    """A small HTTPS server on loopback presenting ``leaf``; yields settings for host 127.0.0.1."""
    write_leaf(leaf, folder, "server.pem", "server_key.pem")
    config = uvicorn.Config(
        answer_404,
        ssl_certfile=str(folder / "server.pem"),
        ssl_keyfile=str(folder / "server_key.pem"),
        log_level="critical",  # the refused handshakes are what the tests are about
        lifespan="off",
    )
    with serve_in_thread(config) as url:
        yield SiteSettings(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))


@pytest.fixture
def expired_server(other_ca: trustme.CA, tmp_path: Path) -> Iterator[SiteSettings]:
    yield from site_serving(
        other_ca.issue_cert("127.0.0.1", not_before=LAST_MONTH, not_after=YESTERDAY), tmp_path
    )


@pytest.fixture
def misnamed_server(other_ca: trustme.CA, tmp_path: Path) -> Iterator[SiteSettings]:
    """A server whose certificate is for another host name only (not 127.0.0.1, not localhost)."""
    yield from site_serving(other_ca.issue_cert("qlik-prod.example"), tmp_path)


async def test_an_expired_server_certificate_is_refused(
    expired_server: SiteSettings, other_export: Path
) -> None:
    """The site's certificate is signed by root.pem but expired: refused before any request is sent."""
    error = await refusal(expired_server, other_export)

    assert (type(error), error.status, error.transient) == (QrsUntrusted, None, False)  # not repeated
    assert "CERTIFICATE_VERIFY_FAILED" in str(error) and "expired" in str(error)
    assert_no_key_material(error, other_export / CLIENT_KEY)


async def test_a_server_certificate_for_another_host_is_refused(
    misnamed_server: SiteSettings, other_export: Path
) -> None:
    """Connecting to 127.0.0.1 while the certificate names only qlik-prod.example: a hostname mismatch,
    even though root.pem signed it."""
    error = await refusal(misnamed_server, other_export)

    assert (type(error), error.status, error.transient) == (QrsUntrusted, None, False)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error) and "mismatch" in str(error)
    assert_no_key_material(error, other_export / CLIENT_KEY)


async def test_verification_is_on_by_default_and_switching_it_off_is_logged(
    misnamed_server: SiteSettings, other_export: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """verify_tls defaults to true; verify_tls = false connects to the misnamed server (the 404 is its
    answer) and logs a warning naming the site."""
    unverified = misnamed_server.model_copy(update={"verify_tls": False})

    with caplog.at_level(logging.WARNING, logger="promoter.qrs.tls"):
        async with client(unverified, other_export) as qrs:
            with pytest.raises(QrsNotFound):
                await qrs.about()

    assert SiteSettings(host="qlik.example").verify_tls is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["source: TLS verification of the QRS server certificate is OFF"]


# -- the client's key ------------------------------------------------------------------------


def with_password(folder: Path) -> Path:
    """The export in ``folder`` with client_key.pem encrypted, as the QMC writes it with a password."""
    key = serialization.load_pem_private_key((folder / CLIENT_KEY).read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"qmc-export-password"),
    )
    (folder / CLIENT_KEY).write_bytes(encrypted)
    return folder


def copy_of(export: Path, tmp_path: Path, key_mode: int) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(export, folder)
    (folder / CLIENT_KEY).chmod(key_mode)
    return folder


def source_settings(cert_dir: Path) -> Settings:
    return Settings(source_site=SiteSettings(host="qlik-dev", cert_dir=cert_dir))


def test_a_client_key_with_a_password_is_refused_without_asking_for_it(
    other_export: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """client_key.pem exported with a password: the error says to export it without one (not "[Errno 22]
    Invalid argument"), and OpenSSL never prompts "Enter PEM pass phrase" (a service would hang there)."""
    folder = with_password(copy_of(other_export, tmp_path, 0o600))

    with pytest.raises(SettingsError) as caught:
        site_tls(folder, site="source")

    message = str(caught.value)
    assert "client_key.pem is protected by a password" in message and "leave the password empty" in message
    assert "Errno" not in message
    assert "pass phrase" not in capfd.readouterr().err


def test_doctor_fails_a_client_key_with_a_password(other_export: Path, tmp_path: Path) -> None:
    """`doctor` loads the key as a connection would: a password-protected one fails the certificate check
    with the export hint, instead of passing it (or hanging at a prompt in the QRS check)."""
    folder = with_password(copy_of(other_export, tmp_path, 0o600))

    check = check_certificates(source_settings(folder), "source")

    assert not check.ok
    assert "protected by a password" in check.detail and "no password" in check.hint


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX; Windows keys are protected by ACLs")
def test_a_client_key_other_users_can_read_is_warned_about_once(
    other_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key file readable by the group or everyone (0644) grants QRS admin rights to every local user:
    setting up the site's TLS logs one warning with the fix, however many clients are made; a key only
    its owner can read (0600) logs none."""
    shared = copy_of(other_export, tmp_path / "shared", 0o644)
    private = copy_of(other_export, tmp_path / "private", 0o600)

    with caplog.at_level(logging.WARNING, logger="promoter.qrs.tls"):
        for folder in (shared, shared, private):
            site_tls(folder, site="source")

    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"source: {shared / CLIENT_KEY} can be read by other users")
    assert "mode 0644" in warning and f"chmod 600 {shared / CLIENT_KEY}" in warning


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX; Windows keys are protected by ACLs")
def test_doctor_warns_about_a_client_key_other_users_can_read(other_export: Path, tmp_path: Path) -> None:
    """`doctor` shows a group-readable key as a WARN line with the fix; the check still passes."""
    folder = copy_of(other_export, tmp_path, 0o640)

    check = check_certificates(source_settings(folder), "source")

    assert (check.ok, check.warning) == (True, True)
    assert check.line().startswith("WARN  source certificates:") and "mode 0640" in check.line()
    assert f"fix: chmod 600 {folder / CLIENT_KEY}" in check.line()

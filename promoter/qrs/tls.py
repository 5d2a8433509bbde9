"""TLS for one Qlik site from its QMC certificate export (client.pem, client_key.pem, root.pem)."""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from promoter.errors import SettingsError

CLIENT_CERT = "client.pem"
CLIENT_KEY = "client_key.pem"
ROOT_CERT = "root.pem"

log = logging.getLogger(__name__)


def site_tls(cert_dir: Path, *, verify: bool = True, site: str = "") -> ssl.SSLContext:
    """Trust the site's root.pem and present its client certificate.

    Verification is on by default; switching it off is a setting and says so in the log,
    because a QRS certificate grants full administrator rights.
    """
    missing = [name for name in (CLIENT_CERT, CLIENT_KEY, ROOT_CERT) if not (cert_dir / name).is_file()]
    if missing:
        raise SettingsError(
            f"{site or cert_dir}: certificate folder {cert_dir} lacks {', '.join(missing)}"
            " (export the certificates from the QMC in PEM format, without a password)"
        )
    if verify:
        tls = ssl.create_default_context(cafile=str(cert_dir / ROOT_CERT))
    else:
        log.warning("%s: TLS verification of the QRS server certificate is OFF", site or cert_dir)
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    try:
        tls.load_cert_chain(str(cert_dir / CLIENT_CERT), str(cert_dir / CLIENT_KEY))
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"{site or cert_dir}: cannot load client.pem/client_key.pem: {exc}") from None
    return tls


def closed_connection_hint(cert_dir: Path | None) -> str:
    """Why a site most likely closed the TLS connection without an answer, for an error message.

    A site refuses a client certificate that is missing, expired or issued by another site's CA
    by closing the connection, and the client then sees no reason at all. client.pem's expiry
    date is checked here so the message can name it (never any of the key material).
    """
    expired = _expired_on(cert_dir / CLIENT_CERT) if cert_dir is not None else None
    if expired is not None:
        return (
            f"TLS refused: client.pem expired on {expired:%Y-%m-%d %H:%M} UTC; export a new one from the QMC"
        )
    return "TLS closed by the site: is client.pem this site's certificate, present and not expired?"


def _expired_on(client_pem: Path) -> datetime | None:
    try:
        not_after = x509.load_pem_x509_certificate(client_pem.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None
    return not_after if not_after < datetime.now(UTC) else None

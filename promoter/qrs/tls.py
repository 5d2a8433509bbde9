"""TLS for one Qlik site from its QMC certificate export (client.pem, client_key.pem, root.pem)."""

from __future__ import annotations

import logging
import os
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from cryptography import x509

from promoter.errors import SettingsError
from promoter.tls_contexts import reused

CLIENT_CERT = "client.pem"
CLIENT_KEY = "client_key.pem"
ROOT_CERT = "root.pem"

log = logging.getLogger(__name__)
# Key files whose loose permissions were already reported by this process (every QRS client would
# otherwise repeat the warning).
_reported_keys: set[Path] = set()


class _KeyHasPassword(Exception):
    """Raised from the password callback: OpenSSL asks for one only when the key is encrypted."""


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
    exposed = unreported_key_exposure(cert_dir)
    if exposed:
        log.warning("%s: %s; fix: chmod 600 %s", site or cert_dir, exposed, cert_dir / CLIENT_KEY)
    if not verify:
        log.warning("%s: TLS verification of the QRS server certificate is OFF", site or cert_dir)
    files = [cert_dir / name for name in (CLIENT_CERT, CLIENT_KEY, ROOT_CERT)]
    return reused(files, ("qrs", verify), lambda: _new_site_tls(cert_dir, verify, site))


def _new_site_tls(cert_dir: Path, verify: bool, site: str) -> ssl.SSLContext:
    if verify:
        tls = ssl.create_default_context(cafile=str(cert_dir / ROOT_CERT))
    else:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    load_client_certificate(tls, cert_dir, site)
    return tls


def load_client_certificate(tls: ssl.SSLContext, cert_dir: Path, site: str = "") -> None:
    """Present client.pem with client_key.pem; a key protected by a password is refused, never prompted for.

    Without a password callback OpenSSL asks "Enter PEM pass phrase" on the terminal (a service
    hangs there) or fails with "[Errno 22] Invalid argument" when there is none.
    """

    def refuse_password() -> NoReturn:
        raise _KeyHasPassword

    try:
        tls.load_cert_chain(str(cert_dir / CLIENT_CERT), str(cert_dir / CLIENT_KEY), password=refuse_password)
    except _KeyHasPassword:
        raise SettingsError(
            f"{site or cert_dir}: {cert_dir / CLIENT_KEY} is protected by a password; export the "
            "certificates from the QMC again and leave the password empty (qs-promoter never asks for one)"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"{site or cert_dir}: cannot load client.pem/client_key.pem: {exc}") from None


def try_client_certificate(cert_dir: Path, site: str = "") -> None:
    """Load client.pem with client_key.pem as a connection would; SettingsError when they cannot be used."""
    load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_dir, site)


def key_exposure(cert_dir: Path) -> str | None:
    """What is wrong with who may read client_key.pem, or None; not checked on Windows (no POSIX modes).

    The key grants full QRS administrator rights on its site: only the service account may read it.
    """
    key = cert_dir / CLIENT_KEY
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(key.stat().st_mode)
    except OSError:
        return None  # a missing key is reported where it is loaded
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return None
    return (
        f"{key} can be read by other users of this machine (mode {mode:04o}); it grants full QRS admin rights"
    )


def unreported_key_exposure(cert_dir: Path) -> str | None:
    """key_exposure(), but only the first time this process asks about that key file."""
    key = (cert_dir / CLIENT_KEY).absolute()
    if key in _reported_keys:
        return None
    exposed = key_exposure(cert_dir)
    if exposed:
        _reported_keys.add(key)
    return exposed


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

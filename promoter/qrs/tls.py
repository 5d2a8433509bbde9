"""TLS for one Qlik site from its QMC certificate export (client.pem, client_key.pem, root.pem)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

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

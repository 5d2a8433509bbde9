"""Per-site certificates for the sandbox, laid out like a QMC export: one CA per Qlik site."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import trustme

ROOT_CERT = "root.pem"
CLIENT_CERT = "client.pem"
CLIENT_KEY = "client_key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server_key.pem"
# Not part of a QMC export (Qlik keeps its CA key to itself); the sandbox needs it to issue
# a server certificate for whatever address a site is bound to.
ROOT_KEY = "root_key.pem"

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SiteCertificates:
    """Where one site's certificate files are."""

    folder: Path

    @property
    def root(self) -> Path:
        return self.folder / ROOT_CERT

    @property
    def client(self) -> Path:
        return self.folder / CLIENT_CERT

    @property
    def client_key(self) -> Path:
        return self.folder / CLIENT_KEY

    @property
    def server(self) -> Path:
        return self.folder / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.folder / SERVER_KEY


def server_identities(host: str, site: str) -> list[str]:
    """Names the server certificate answers to: the bound address, localhost, and the site name."""
    names = [host, "localhost"]
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is reached through loopback
        names.append("127.0.0.1")
    if _DNS_LABEL.match(site.lower()):
        names.append(site.lower())
    return list(dict.fromkeys(names))


def ensure_site_certificates(folder: Path, site: str, host: str) -> SiteCertificates:
    """Create the site's CA and client certificate unless present; issue a server certificate for host.

    An existing folder without the CA key (real certificates from a QMC) is used as it is.
    """
    folder.mkdir(parents=True, exist_ok=True)
    certs = SiteCertificates(folder)
    root_key = folder / ROOT_KEY
    if not certs.root.is_file():
        ca = trustme.CA(organization_name=f"Qlik sandbox {site}", organization_unit_name="QRS sandbox")
        ca.cert_pem.write_to_path(str(certs.root))
        ca.private_key_pem.write_to_path(str(root_key))
        for stale in (certs.client, certs.client_key, certs.server, certs.server_key):
            stale.unlink(missing_ok=True)
    elif root_key.is_file():
        ca = trustme.CA.from_pem(certs.root.read_bytes(), root_key.read_bytes())
    else:
        return certs
    if not (certs.client.is_file() and certs.client_key.is_file()):
        # QMC exports the client certificate as CN=QlikClient; trustme wants a DNS-style identity.
        client = ca.issue_cert("qlikclient", common_name="QlikClient")
        client.cert_chain_pems[0].write_to_path(str(certs.client))
        client.private_key_pem.write_to_path(str(certs.client_key))
    certs.client_key.chmod(0o600)  # for the service account alone, like a real key (qs-promoter warns)
    # Cheap (ECDSA) and always current for the address the site binds this time.
    server = ca.issue_cert(*server_identities(host, site), common_name=site)
    server.cert_chain_pems[0].write_to_path(str(certs.server))
    server.private_key_pem.write_to_path(str(certs.server_key))
    return certs

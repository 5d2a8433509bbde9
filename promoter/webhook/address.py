"""Where the webhook is reached and how its certificate is checked: one answer for `up`, `doctor` and tests.

`up` checks the webhook it started on this machine (a wildcard bind is reached on loopback);
`doctor` checks the public URL that QRS calls. An HTTPS webhook is verified as the Qlik server
verifies it: against ``webhook.tls_ca`` (the system's CAs when unset), for the host name in
``public_base_url``. Never without verification: a check that accepts any certificate would pass
where QRS refuses to deliver.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from promoter.errors import SettingsError
from promoter.settings import WebhookSettings

HEALTH_PATH = "/healthz"
# A webhook bound to every address is reached from this machine on loopback.
_WILDCARD_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


@dataclass(frozen=True, slots=True)
class WebhookAddress:
    """A base URL of the webhook and, for HTTPS, the trust its certificate is verified with."""

    base_url: str  # scheme://host:port, no trailing slash
    tls: ssl.SSLContext | None = None  # set exactly when base_url is https
    # The name the certificate must carry when base_url reaches it by another one (loopback).
    server_name: str | None = None

    @property
    def health_url(self) -> str:
        return self.base_url + HEALTH_PATH

    def get(self, path: str, *, timeout: float) -> httpx.Response:
        """GET base_url + path; httpx.HTTPError when nothing answers or the certificate is not trusted."""
        extensions = {"sni_hostname": self.server_name} if self.server_name else {}
        verify = self.tls if self.tls is not None else True
        with httpx.Client(verify=verify, timeout=timeout, trust_env=False) as client:
            return client.get(self.base_url + path, extensions=extensions)

    def health(self, *, timeout: float) -> httpx.Response:
        return self.get(HEALTH_PATH, timeout=timeout)


def untrusted_certificate(exc: httpx.HTTPError) -> bool:
    """The webhook answered with a certificate that the CA does not sign or that names another host."""
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def unreachable_reason(exc: httpx.HTTPError) -> str:
    """Why a check got no answer, in a few words: an untrusted certificate is named as such."""
    text = str(exc)
    if untrusted_certificate(exc):  # "... certificate verify failed: <why> (_ssl.c:1000)"
        why = text.split("certificate verify failed:", 1)[-1].split("(_ssl")[0].strip()
        return f"certificate not trusted: {why}"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "it answers plain HTTP, not HTTPS"
    return type(exc).__name__


def webhook_trust(webhook: WebhookSettings) -> ssl.SSLContext:
    """Verify the webhook's certificate against webhook.tls_ca, or the system's CAs when it is unset."""
    if webhook.tls_ca is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(webhook.tls_ca))
    except OSError as exc:  # ssl.SSLError too: not a PEM certificate
        reason = exc.strerror or str(exc)
        raise SettingsError(
            f"webhook.tls_ca {webhook.tls_ca}: not a readable PEM certificate ({reason})"
        ) from None


def require_tls_files(webhook: WebhookSettings) -> None:
    """SettingsError unless tls_cert and tls_key, when set, are files and tls_ca, when set, is a PEM CA."""
    for name, path in (("tls_cert", webhook.tls_cert), ("tls_key", webhook.tls_key)):
        if path is not None and not path.is_file():
            raise SettingsError(f"webhook.{name} {path}: file not found")
    if webhook.tls_ca is not None:
        webhook_trust(webhook)


def local_address(webhook: WebhookSettings) -> WebhookAddress:
    """Where this machine reaches the webhook it serves: HTTPS when tls_cert is set, checked for the
    public host name (the certificate names that, not loopback)."""
    host = _WILDCARD_LOOPBACK.get(webhook.host, webhook.host)
    host = f"[{host}]" if ":" in host else host
    if webhook.tls_cert is None:
        return WebhookAddress(f"http://{host}:{webhook.port}")
    public_host = urlsplit(webhook.public_base_url).hostname
    return WebhookAddress(f"https://{host}:{webhook.port}", webhook_trust(webhook), public_host)


def public_address(webhook: WebhookSettings) -> WebhookAddress:
    """The address QRS calls (public_base_url), verified as QRS verifies it when it is HTTPS."""
    base = webhook.public_base_url.rstrip("/")
    if urlsplit(base).scheme.lower() == "https":
        return WebhookAddress(base, webhook_trust(webhook))
    return WebhookAddress(base)

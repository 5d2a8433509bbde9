"""Prefect's API clients in a long-lived process: one TLS context for all of them.

Prefect 3.9.1 builds a new ``ssl.SSLContext`` from its CA bundle (certifi's, or
``PREFECT_API_SSL_CERT_FILE``) for every API client it makes, ~14 ms of CPU each, even when the
API is plain HTTP on loopback. The engine makes clients of its own that no setting shares: two per
flow run to read the server's default result storage, one per concurrency lease (its renewal
thread), one per service start. In the executor that was ~8 contexts per promotion, the largest
part of its CPU after the promotion's own work.

``share_tls_context()`` makes Prefect's client module take its verified contexts from
``promoter.tls_contexts`` (one per CA file version). It changes nothing else: the same CA file,
the same checks. The context built when ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY`` is set is
changed after it is built, so it is never shared. If a Prefect upgrade no longer builds its
contexts this way, nothing breaks (each client builds its own again) and
tests/unit/test_tls_contexts.py says so.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import prefect.client.orchestration as prefect_clients

from promoter.tls_contexts import reused


def share_tls_context() -> None:
    """From now on, Prefect's API clients in this process share their verified TLS context."""
    if not isinstance(prefect_clients.ssl, _SharedVerifiedContexts):
        prefect_clients.ssl = _SharedVerifiedContexts()  # type: ignore[assignment]


class _SharedVerifiedContexts:
    """The ``ssl`` module as Prefect's client module sees it: the same, but for create_default_context."""

    def __getattr__(self, name: str) -> object:
        return getattr(ssl, name)

    @staticmethod
    def create_default_context(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
    ) -> ssl.SSLContext:
        def build() -> ssl.SSLContext:
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)

        if cafile is None or capath is not None or cadata is not None:
            return build()  # the insecure context (changed by the caller afterwards), or unusual arguments
        return reused([Path(cafile)], ("prefect-api", purpose), build)

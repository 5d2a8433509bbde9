"""Run sandbox Qlik sites: one HTTPS QRS per site, each with its own CA.

``Sandbox`` is what tests, benchmarks and the demo use::

    with Sandbox({"dev": ("127.0.0.1", 0)}, cert_root, data_dir) as sandbox:
        site = sandbox.sites["dev"]      # site.base_url, site.cert_dir, site.repository

Several sites each run in a process of their own (``SiteProcess``), as separate machines do, so
one site's transfer does not slow another's; one site runs in this process, in its own thread
(``SandboxSite``), unless asked otherwise. Both offer the same controls and repository calls.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from promoter.sandbox.certs import SiteCertificates, ensure_site_certificates
from promoter.sandbox.controls import FaultRule, SiteControls
from promoter.sandbox.notifications import Notifier
from promoter.sandbox.qrs_api import create_app
from promoter.sandbox.repository import Repository
from promoter.sandbox.serving import ServerThread, tcp_listener
from promoter.sandbox.site_process import SiteProcess


def _tracking_protocol(controls: SiteControls) -> type[H11Protocol]:
    """uvicorn's h11 protocol that registers each connection's transport, so faults can reset it."""

    class TrackedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.client is not None:
                controls.connections[self.client] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client is not None:
                controls.connections.pop(self.client, None)
            super().connection_lost(exc)

    return TrackedH11Protocol


class SandboxSite:
    """One running sandbox Qlik site."""

    def __init__(self, name: str, host: str, port: int, cert_dir: Path, data_dir: Path) -> None:
        self.name = name
        self.host = host
        self.cert_dir = cert_dir
        self.certificates: SiteCertificates = ensure_site_certificates(cert_dir, name, host)
        self.repository = Repository(name, data_dir)
        self.notifier = Notifier(self.repository)
        self.controls = SiteControls(on_restart=self._on_restart)
        self._socket = tcp_listener(host, port)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.repository, self.controls),
            ssl_certfile=str(self.certificates.server),
            ssl_keyfile=str(self.certificates.server_key),
            ssl_ca_certs=str(self.certificates.root),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            http=_tracking_protocol(self.controls),
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self._server = ServerThread(config, self._socket, name=f"sandbox-{name}")

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self) -> None:
        self.notifier.start()
        self._server.start()

    def wait_started(self) -> None:
        self._server.wait_started()

    def request_stop(self) -> None:
        self._server.request_stop()

    def stop(self) -> None:
        self._server.stop()
        self.notifier.stop()

    def trust_ca(self, ca_file: Path) -> None:
        """Deliver notifications to HTTPS callbacks whose certificate this CA (PEM) signed, as a Qlik
        server does once the CA is in its Windows certificate store."""
        self.notifier.trust_ca(ca_file)

    # ---- test controls, the in-process mirror of /sandbox/... ----------------------------------

    def _on_restart(self) -> None:
        self.repository.restart()
        self.notifier.drop_pending()

    def restart(self, downtime: float = 0.0, mode: str = "503") -> None:
        """A repository restart: subscriptions dropped; /qrs down for ``downtime`` s (503 or 'reset')."""
        self.controls.restart(downtime, mode)

    def add_fault(self, action: str, **options: Any) -> FaultRule:
        """Inject a fault: action status|latency|reset|abort; method, path (regex), status, body,
        seconds, after_bytes, probability, count."""
        return self.controls.add_fault(action, **options)

    def clear_faults(self, rule_id: int | None = None) -> None:
        self.controls.clear_faults(rule_id)

    def set_bandwidth(self, bytes_per_second: int | None) -> None:
        """Limit every upload and download to ``bytes_per_second`` (None: unlimited)."""
        self.controls.set_bandwidth(bytes_per_second)

    def traffic(self) -> dict[str, int]:
        """Bodies received/sent ("bytes in", "bytes out") and requests per "METHOD /path" so far."""
        with self.controls._lock:
            return dict(self.controls.traffic)

    def notifications(self) -> list[dict[str, Any]]:
        """The log of notification POSTs: url, body (the change list), status, error, time."""
        with self.repository.lock:
            return [dict(entry) for entry in self.repository.deliveries]

    def wait_for_notifications(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return self.repository.changes.wait_for_deliveries(count, timeout)


class Sandbox:
    """Several sandbox sites, started together and always stopped together.

    ``processes``: each site in a process of its own (True), all in this process (False), or
    processes when there is more than one site (None, the default).
    """

    def __init__(
        self,
        sites: Mapping[str, tuple[str, int]],
        cert_root: Path,
        data_dir: Path,
        *,
        processes: bool | None = None,
    ) -> None:
        self.cert_root = cert_root
        self.data_dir = data_dir
        self._wanted = dict(sites)
        self.processes = len(self._wanted) > 1 if processes is None else processes
        self.sites: dict[str, Site] = {}

    def start(self) -> Sandbox:
        kind = SiteProcess if self.processes else SandboxSite
        try:
            for name, (host, port) in self._wanted.items():
                self.sites[name] = kind(name, host, port, self.cert_root / name, self.data_dir / name)
            for site in self.sites.values():
                site.start()
            for site in self.sites.values():
                site.wait_started()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for site in self.sites.values():  # all at once: each needs a moment to notice
            site.request_stop()
        for site in self.sites.values():
            site.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# A running site, in this process or in its own: the same attributes and controls.
Site = SandboxSite | SiteProcess

"""Delivery of change notifications: POST a JSON array of ExternalChangeInfo to each subscribed URL.

Sending happens on a background thread, so the QRS request that caused a change never waits for
a callback. Changes that arrive within a short burst are batched into one POST per URL, as QRS
does. A failed delivery is logged and recorded, never retried (QRS does not queue them either).
An HTTPS callback is delivered only if its certificate verifies against what the site trusts: the
system's CAs and the CAs given to ``trust_ca`` (a Qlik server trusts its Windows certificate
store, and does not deliver to a callback whose certificate it does not trust).
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from promoter.qrs.models import format_qrs_time, qrs_now
from promoter.sandbox.repository import Repository

log = logging.getLogger(__name__)

BATCH_WINDOW = 0.05
_STOP = object()


class Notifier:
    """The sender of one site's notifications; ``repository.notify`` feeds it."""

    def __init__(self, repository: Repository, *, timeout: float = 5.0) -> None:
        self.repository = repository
        self._queue: queue.Queue[Any] = queue.Queue()
        self._timeout = timeout
        self._trusted = ssl.create_default_context()
        self._thread = threading.Thread(
            target=self._run, name=f"sandbox-notify-{repository.site}", daemon=True
        )
        repository.changes.notify = self.enqueue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def trust_ca(self, ca_file: Path) -> None:
        """Verify HTTPS callbacks against this CA (PEM) too, as if imported into the server's store."""
        self._trusted.load_verify_locations(cafile=str(ca_file))

    def enqueue(self, url: str, change: dict[str, Any]) -> None:
        self._queue.put((url, dict(change)))

    def drop_pending(self) -> None:
        """Forget undelivered changes (a restarting repository loses them)."""
        try:
            while True:
                item = self._queue.get_nowait()
                if item is _STOP:
                    self._queue.put(_STOP)
                    return
        except queue.Empty:
            return

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout, verify=self._trusted) as client:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                batch = [item]
                deadline = time.monotonic() + BATCH_WINDOW
                stop = False
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        more = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    batch.append(more)
                by_url: dict[str, list[dict[str, Any]]] = {}
                for url, change in batch:
                    by_url.setdefault(url, []).append(change)
                for url, changes in by_url.items():
                    self._deliver(client, url, changes)
                if stop:
                    return

    def _deliver(self, client: httpx.Client, url: str, changes: list[dict[str, Any]]) -> None:
        body = json.dumps(changes).encode()
        entry: dict[str, Any] = {"url": url, "body": changes, "status": None, "error": None}
        try:
            answer = client.post(url, content=body, headers={"Content-Type": "application/json"})
            entry["status"] = answer.status_code
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("%s: notification to %s failed: %s", self.repository.site, url, entry["error"])
        entry["time"] = format_qrs_time(qrs_now())
        self.repository.changes.record_delivery(entry)

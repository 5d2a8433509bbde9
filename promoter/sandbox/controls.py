"""Test controls of a sandbox site: faults, bandwidth, a simulated repository restart (``/sandbox/...``).

The controls wrap the QRS app as ASGI middleware, so a fault hits the same code path a real
network or QRS problem would: a status answer, latency, a TCP reset, or a transfer cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

ACTIONS = ("status", "latency", "reset", "abort", "lose_answer")
_ids = itertools.count(1)


class TransferAborted(Exception):
    """Raised into the app when an 'abort' fault has cut its response; the middleware swallows it."""


@dataclass(slots=True)
class FaultRule:
    """One injected fault: which requests (method, path regex) and what happens to them."""

    action: str
    method: str = "*"
    path: str = ".*"
    status: int = 503
    body: str = "Service Unavailable"
    seconds: float = 0.0
    after_bytes: int = 0
    probability: float = 1.0
    count: int | None = None  # times left; None = every time
    id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        re.compile(self.path)

    def applies(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method) and re.search(
            self.path, path
        ) is not None


class SiteControls:
    """Faults, bandwidth and downtime of one site; changed from tests directly or over /sandbox."""

    def __init__(self, on_restart: Callable[[], None]) -> None:
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self.faults: list[FaultRule] = []
        self.bandwidth: int | None = None
        self.down_until = 0.0
        self.down_mode = "503"
        # Open connections by client address, registered by the server's protocol class, so a
        # fault can reset the very TCP connection of a request.
        self.connections: dict[tuple[str, int], asyncio.Transport] = {}
        # What crossed the wire: "bytes in"/"bytes out" of request and response bodies, and one
        # count per "METHOD /path", so tests and benchmarks can count uploads and bytes honestly.
        self.traffic: Counter[str] = Counter()

    # ---- changing the controls ----------------------------------------------------------------

    def add_fault(self, action: str, **options: Any) -> FaultRule:
        rule = FaultRule(action=action, **options)
        with self._lock:
            self.faults.append(rule)
        return rule

    def clear_faults(self, rule_id: int | None = None) -> list[FaultRule]:
        """Remove one rule (or all); returns the rules removed, as they were last."""
        with self._lock:
            removed = [r for r in self.faults if rule_id is None or r.id == rule_id]
            self.faults = [r for r in self.faults if r not in removed]
        return removed

    def set_bandwidth(self, bytes_per_second: int | None) -> None:
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self.bandwidth = bytes_per_second

    def restart(self, downtime: float = 0.0, mode: str = "503") -> None:
        """A repository restart: every subscription is gone; /qrs is unavailable for ``downtime`` s."""
        if mode not in ("503", "reset"):
            raise ValueError("mode must be '503' or 'reset'")
        self.down_mode = mode
        self.down_until = time.monotonic() + max(downtime, 0.0)
        self._on_restart()

    def _pick_fault(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self.faults:
                if not rule.applies(method, path):
                    continue
                if rule.probability < 1.0 and random.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    if rule.count <= 0:
                        continue
                    rule.count -= 1
                return rule
        return None

    # ---- the connection-level tools -----------------------------------------------------------

    def reset_connection(self, scope: Scope) -> None:
        """Drop the request's TCP connection with a reset (RST), as a crashing server or firewall does."""
        client = scope.get("client")
        transport = self.connections.get(tuple(client)) if client else None  # type: ignore[arg-type]
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    # ---- the middleware -----------------------------------------------------------------------

    def wrap(self, app: ASGIApp) -> ASGIApp:
        controls = self

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"].startswith("/sandbox/"):
                await app(scope, receive, send)
                return
            if time.monotonic() < controls.down_until:
                if controls.down_mode == "reset":
                    controls.reset_connection(scope)
                    return
                await PlainTextResponse("Service Unavailable", status_code=503)(scope, receive, send)
                return
            with controls._lock:
                controls.traffic[f"{scope['method']} {scope['path']}"] += 1
            rule = controls._pick_fault(scope["method"], scope["path"])
            if rule is not None:
                log.info("sandbox fault %s on %s %s", rule.action, scope["method"], scope["path"])
                if rule.action == "status":
                    await PlainTextResponse(rule.body, status_code=rule.status)(scope, receive, send)
                    return
                if rule.action == "latency":
                    await asyncio.sleep(rule.seconds)
                elif rule.action == "reset":
                    controls.reset_connection(scope)
                    return
            if rule is not None and rule.action == "lose_answer":
                # The request is carried out, then the connection dies before the answer: the
                # caller cannot tell whether it happened (a lost 201 after an upload, say).
                async def swallow(message: Message) -> None:
                    return

                await app(scope, receive, swallow)
                controls.reset_connection(scope)
                return
            receive, send = controls._throttled(scope, receive, send, rule)
            with contextlib.suppress(TransferAborted):
                await app(scope, receive, send)

        return middleware

    def _throttled(
        self, scope: Scope, receive: Receive, send: Send, rule: FaultRule | None
    ) -> tuple[Receive, Send]:
        """Request and response bodies limited to the bandwidth, and cut after N bytes for 'abort'."""
        limit = rule.after_bytes if rule is not None and rule.action == "abort" else None
        controls = self
        counts = {"in": 0, "out": 0}
        started = time.monotonic()

        async def pace(direction: str, size: int) -> None:
            counts[direction] += size
            with controls._lock:
                controls.traffic[f"bytes {direction}"] += size
            rate = controls.bandwidth
            if rate:
                due = started + counts[direction] / rate - time.monotonic()
                if due > 0:
                    await asyncio.sleep(due)

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if limit is not None and counts["in"] + len(body) > limit:
                    controls.reset_connection(scope)
                    return {"type": "http.disconnect"}
                await pace("in", len(body))
            return message

        async def limited_send(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            step = max(4096, (controls.bandwidth or 0) // 20) if controls.bandwidth else len(body) or 1
            for offset in range(0, max(len(body), 1), step):
                piece = body[offset : offset + step]
                more = message.get("more_body", False) or offset + step < len(body)
                if limit is not None and counts["out"] + len(piece) > limit:
                    cut = piece[: max(limit - counts["out"], 0)]
                    if cut:
                        await send({"type": "http.response.body", "body": cut, "more_body": True})
                    await asyncio.sleep(0.05)  # let the cut bytes leave before the reset
                    controls.reset_connection(scope)
                    raise TransferAborted
                await send({"type": "http.response.body", "body": piece, "more_body": more})
                await pace("out", len(piece))

        return limited_receive, limited_send

    # ---- /sandbox routes ----------------------------------------------------------------------

    def routes(self, deliveries: Callable[[], list[dict[str, Any]]]) -> list[Route]:
        controls = self

        async def restart(request: Request) -> Response:
            options = await _json_object(request)
            controls.restart(float(options.get("downtime", 0.0)), str(options.get("mode", "503")))
            return Response(status_code=204)

        async def add_fault(request: Request) -> Response:
            options = await _json_object(request)
            try:
                rule = controls.add_fault(**options)
            except (TypeError, ValueError, re.error) as exc:
                return PlainTextResponse(f"Invalid fault rule: {exc}", status_code=400)
            return JSONResponse(asdict(rule), status_code=201)

        async def list_faults(request: Request) -> Response:
            with controls._lock:
                return JSONResponse([asdict(r) for r in controls.faults])

        async def clear_faults(request: Request) -> Response:
            rule_id = request.query_params.get("id")
            controls.clear_faults(int(rule_id) if rule_id else None)
            return Response(status_code=204)

        async def bandwidth(request: Request) -> Response:
            options = await _json_object(request)
            value = options.get("bytesPerSecond")
            try:
                controls.set_bandwidth(None if value is None else int(value))
            except ValueError as exc:
                return PlainTextResponse(str(exc), status_code=400)
            return JSONResponse({"bytesPerSecond": controls.bandwidth})

        async def notifications(request: Request) -> Response:
            return JSONResponse(deliveries())

        async def traffic(request: Request) -> Response:
            with controls._lock:
                return JSONResponse(dict(controls.traffic))

        return [
            Route("/sandbox/restart", restart, methods=["POST"]),
            Route("/sandbox/faults", add_fault, methods=["POST"]),
            Route("/sandbox/faults", list_faults, methods=["GET"]),
            Route("/sandbox/faults", clear_faults, methods=["DELETE"]),
            Route("/sandbox/bandwidth", bandwidth, methods=["PUT"]),
            Route("/sandbox/notifications", notifications, methods=["GET"]),
            Route("/sandbox/traffic", traffic, methods=["GET"]),
        ]


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"invalid": "body is not a JSON object"}

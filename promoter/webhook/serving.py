"""How the webhook is served: uvicorn's settings, and a guard against slow and noisy senders.

uvicorn alone keeps a connection open for as long as its sender takes to send the request line
and headers (it has no timeout before the first request, only between requests), accepts as
many connections as the process has files, and reads a request before the app can refuse its
source. So a few hundred connections that never finish their headers starve QRS of an answer,
and the accept loop logs "Too many open files" every second. The guard here:

- refuses a source outside allowed_networks and monitoring_networks at accept time, before a
  byte is read (on selector event loops; on others, as soon as the connection is set up);
- keeps at most ``max_connections`` open, never more than half the process's file limit; at the
  limit, the connection that has waited longest for its request is closed to make room, so a
  real sender, which sends its request at once, always gets in; when room is coming but cannot be
  made yet (``ConnectionGuard.must_wait``), further connections wait in the kernel's queue
  instead of being refused; only when nothing can be freed is a connection refused;
- closes a connection whose request (headers and body) is not complete within
  ``request_timeout_seconds`` of its start (of the connection, or of the previous answer);
- sums the refusals up in one log line per interval (``RefusalLog``).

With HTTPS the TLS handshake comes before the request: asyncio closes a handshake that takes
longer than 60 s, and such connections count towards the limit meanwhile; they are not waited
for either, so a flood of connections queued at once can still crowd a real sender out.

``serve()`` is what `qs-promoter webhook serve` (and so `qs-promoter up`) runs; ``prepare()`` is
the same configuration for a server run elsewhere (the tests run it in a thread).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from promoter.settings import WebhookSettings
from promoter.webhook.auth import monitoring_allowed
from promoter.webhook.refusals import RefusalLog

if TYPE_CHECKING:
    from fastapi import FastAPI

try:
    import resource
except ImportError:  # Windows: no per-process file limit to stay under
    resource = None  # type: ignore[assignment]

log = logging.getLogger("promoter.webhook")

# Pending connections the kernel queues, and connections asyncio accepts per loop iteration.
BACKLOG = 2048
# Request line and headers larger than this are refused with 400 (h11's default; QRS sends < 1 KiB).
MAX_HEADER_BYTES = 16 * 1024
# Connections closed to make room but not yet gone: each still holds its file until the next
# loop iteration, so a flood may not push the count of open files past the limit by more.
MAX_CLOSING_TO_MAKE_ROOM = 16


def connection_limit(configured: int) -> int:
    """``webhook.max_connections``, lowered to half the process's file limit (POSIX).

    The other half is for the outbox, the Prefect and QRS clients, logs, and the connections
    accepted only to be closed at once.
    """
    if resource is None:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // 2))


def _host(address: Any) -> str | None:
    """The IP address of a peer address tuple (IPv4 or IPv6), or None for anything else."""
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        return address[0]
    return None


class ConnectionGuard:
    """Which connections the webhook keeps; shared by its listening sockets and its connections."""

    def __init__(
        self, webhook: WebhookSettings, refusals: RefusalLog, limit: int, *, tls: bool = False
    ) -> None:
        self.webhook = webhook
        self.refusals = refusals
        self.limit = limit
        self.request_timeout = webhook.request_timeout_seconds
        # Without TLS a connection is set up two loop iterations after it is accepted; with TLS
        # only once its handshake is done, which a silent sender can stretch to 60 s.
        self._prompt_setup = not tls
        # Every socket our listener accepted and kept: weak, so one asyncio dropped is never counted.
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        # Dicts for their order: of connections that started waiting at the same clock tick, the
        # first set up is the first closed to make room.
        self._connections: dict[GuardedH11Protocol, None] = {}
        self._closing: dict[GuardedH11Protocol, None] = {}
        self._checked_at_accept = False

    def must_wait(self) -> bool:
        """Before accept: True to leave the next connection in the kernel's queue for a later loop
        iteration, because room is not free yet but will be within a few iterations.

        asyncio's selector loop accepts a whole queue of connections in one iteration; it sets up
        the ones it accepted (our protocol, which may be closed to make room) one or two iterations
        later, and a connection closed to make room frees its file at the next. Refusing what
        arrives meanwhile would reset a real sender queued behind a flood although room was on
        its way. Room is certain to come when a connection closed to make room is not gone yet,
        or (without TLS) one accepted is not set up yet: it then owes its request, so room can be
        made, or has sent it. Nothing else makes us wait: the listening socket stays readable
        while connections are queued, so a wait with no certain end would spin the loop.
        """
        if self.open_connections() < self.limit or self._room_now() is not None:
            return False
        setting_up = self.open_connections() - len(self._connections)
        return bool(self._closing) or (self._prompt_setup and setting_up > 0)

    def accepted(self, sock: socket.socket, address: Any) -> bool:
        """At accept time: keep this socket (True), or the caller closes it at once (False)."""
        self._checked_at_accept = True
        if not self._admit(_host(address)):
            return False
        self._sockets.add(sock)
        return True

    def connected(self, connection: GuardedH11Protocol) -> bool:
        """When the connection is set up: keep it (True) or abort it (False)."""
        # An event loop that accepts without our listener (Windows' proactor loop, uvloop): check here.
        admitted = self._checked_at_accept or self._admit(connection.peer)
        self._connections[connection] = None  # until connection_lost, admitted or not: it holds a file
        return admitted

    def disconnected(self, connection: GuardedH11Protocol) -> None:
        self._connections.pop(connection, None)
        self._closing.pop(connection, None)

    def open_connections(self) -> int:
        """Connections holding a file now, whatever their state (a TLS handshake, a request, an answer)."""
        if self._checked_at_accept:
            return sum(1 for sock in self._sockets if sock.fileno() != -1)
        return len(self._connections)

    def _admit(self, host: str | None) -> bool:
        if not monitoring_allowed(host, self.webhook):
            self.refusals.refused("connection from outside allowed_networks and monitoring_networks", host)
            return False
        if self.open_connections() >= self.limit and not self._make_room():
            self.refusals.refused(f"connection over the limit of {self.limit} open at once", host)
            return False
        return True

    def _room_now(self) -> GuardedH11Protocol | None:
        """The connection that has waited longest for its request, if one may be closed now."""
        if len(self._closing) >= MAX_CLOSING_TO_MAKE_ROOM:
            return None
        waiting = [c for c in self._connections if c.awaiting_request and not c.transport.is_closing()]
        return min(waiting, key=lambda c: c.waiting_since, default=None)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for its request; False if none may be closed now."""
        oldest = self._room_now()
        if oldest is None:
            return False
        self._closing[oldest] = None
        self.refusals.refused(
            f"connection closed to make room (over {self.limit} open, no request yet)", oldest.peer
        )
        oldest.transport.abort()
        return True


class GuardedListener(socket.socket):
    """A listening socket whose accept() refuses, before reading anything, what the guard does not admit.

    asyncio's selector event loops call accept() on the listening socket itself; a refused
    connection is closed there and then, so it never gets a transport or a protocol (only a count
    in the refusal summary). asyncio calls it until BlockingIOError ("nothing else is waiting"),
    which is also how a connection is left in the kernel's queue for a later loop iteration.
    """

    guard: ConnectionGuard

    def accept(self) -> tuple[socket.socket, Any]:
        while True:  # BlockingIOError from super().accept() ends it: nothing else is waiting
            if self.guard.must_wait():  # before accepting: an accepted connection cannot be put back
                raise BlockingIOError(errno.EAGAIN, "the webhook waits for room to be made")
            conn, address = super().accept()
            if self.guard.accepted(conn, address):
                return conn, address
            conn.close()


def listen(host: str, port: int, guard: ConnectionGuard) -> list[GuardedListener]:
    """Bound and listening sockets for host:port (every address a host name resolves to)."""
    sockets: list[GuardedListener] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets' connections.
            sock = GuardedListener(family, kind, proto or socket.IPPROTO_TCP)
            sockets.append(sock)
            if os.name != "nt":  # as uvicorn does; on Windows SO_REUSEADDR would share a used port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds "::"
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.guard = guard
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a clock on each request and the guard's say on each connection."""

    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else None
        self.waiting_since = self.loop.time()
        self._clock: asyncio.TimerHandle | None = None
        self._answered = False  # an answer went out on this connection...
        self._heard_since_answer = False  # ...and a byte came in since
        if not self.guard.connected(self):
            transport.abort()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        self._heard_since_answer = True
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        self._answered = True
        self._heard_since_answer = False
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        self.guard.disconnected(self)
        super().connection_lost(exc)

    def _should_upgrade(self) -> bool:
        # The webhook has no WebSocket: a request asking to switch protocols is answered as plain
        # HTTP, so the connection stays this protocol's (and the guard's) to the end.
        return False

    @property
    def awaiting_request(self) -> bool:
        """No request line and headers yet (a new or a kept-alive connection)."""
        return self.conn.their_state is h11.IDLE

    def _watch(self) -> None:
        """Run the clock while the sender owes us a request or the rest of one; stop it once it is in."""
        receiving = self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing()
        if receiving and self._clock is None:
            self.waiting_since = self.loop.time()
            self._clock = self.loop.call_later(self.guard.request_timeout, self._too_slow)
        elif not receiving:
            self._stop_clock()

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def _too_slow(self) -> None:
        self._clock = None
        if self.transport.is_closing():
            return
        # A kept-alive connection that sent nothing after its answer is just idle, not slow.
        if not (self._answered and not self._heard_since_answer):
            self.guard.refusals.refused(
                f"request not complete within {self.guard.request_timeout:g} s", self.peer
            )
        self.transport.abort()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to this guard."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})


@dataclass(frozen=True, slots=True)
class Prepared:
    """A uvicorn configuration and the listening sockets to run it on."""

    config: uvicorn.Config
    sockets: list[GuardedListener]
    guard: ConnectionGuard

    @property
    def base_url(self) -> str:
        """scheme://host:port of the first socket (the port the system chose when 0 was asked for)."""
        host, port = self.sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.config.ssl_certfile else 'http'}://{host}:{port}"


def prepare(
    app: FastAPI,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Prepared:
    """Listen for ``app`` (made by create_app) on webhook.host:port, or the host and port given.

    Raises OSError when the address cannot be bound.
    """
    webhook: WebhookSettings = app.state.webhook
    guard = ConnectionGuard(
        webhook, app.state.refusals, connection_limit(webhook.max_connections), tls=tls_cert is not None
    )
    sockets = listen(webhook.host if host is None else host, webhook.port if port is None else port, guard)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(guard),
        # The selector loop calls our listener's accept(); uvloop would accept in C, past the guard.
        loop="asyncio",
        ws="none",
        lifespan="on",
        log_level=log_level.lower(),
        backlog=BACKLOG,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        # uvicorn's limit_concurrency answers 503 only after reading a request: the guard's limit
        # closes connections before that, so it is not used.
        # QRS calls us directly; trusting X-Forwarded-For would let a local process pose as an
        # allowed network.
        proxy_headers=False,
        server_header=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
    return Prepared(config, sockets, guard)


def serve(app: FastAPI, **options: Any) -> None:
    """Serve ``app`` until interrupted (Ctrl-C or SIGTERM), as `qs-promoter webhook serve` does."""
    prepared = prepare(app, **options)
    # uvicorn's own logger: its handler is the one `serve` configures, and it says nothing itself
    # when given sockets.
    logging.getLogger("uvicorn.error").info(
        "webhook listening on %s; at most %d connections at once, %g s for each request",
        prepared.base_url,
        prepared.guard.limit,
        prepared.guard.request_timeout,
    )
    uvicorn.Server(prepared.config).run(sockets=list(prepared.sockets))

"""Serving an ASGI app from a background thread on a socket we bound ourselves (idiom 11).

Binding first means the port is known and held before uvicorn starts, so nothing can take it
in between; the thread's server installs no signal handlers, the main thread keeps SIGINT.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

STARTUP_TIMEOUT = 10.0


def tcp_listener(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket whose connections get TCP_NODELAY from asyncio.

    socket.create_server() makes a socket with proto 0, and asyncio sets TCP_NODELAY only on
    sockets whose proto is IPPROTO_TCP: each keep-alive response whose headers and body are
    written separately then waits ~40 ms for a delayed ACK (Nagle's algorithm).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    return sock


class ThreadedServer(uvicorn.Server):
    """uvicorn without signal handlers, for a server in a thread."""

    def install_signal_handlers(self) -> None:
        return


class ServerThread:
    """A uvicorn server running in a daemon thread on a given socket; wait_started() after start()."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, name: str) -> None:
        self.server = ThreadedServer(config)
        self.socket = sock
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except BaseException as exc:  # reported by start(), never lost in the thread
            self._failure = exc

    def start(self) -> None:
        self._thread.start()

    def wait_started(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name} did not start: {self._failure!r}")
            time.sleep(0.005)

    def request_stop(self) -> None:
        self.server.should_exit = True

    def stop(self) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout=5)
        self.socket.close()


@contextmanager
def serve_in_thread(config: uvicorn.Config, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``config``'s app on host:port (0 = any free port) until the block ends; yields the base URL."""
    sock = tcp_listener(host, port)
    thread = ServerThread(config, sock, name=f"uvicorn-{sock.getsockname()[1]}")
    thread.start()
    thread.wait_started()
    try:
        scheme = "https" if config.ssl_certfile else "http"
        yield f"{scheme}://{host}:{sock.getsockname()[1]}"
    finally:
        thread.stop()

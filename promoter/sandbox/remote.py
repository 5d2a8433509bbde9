"""Reaching a sandbox site that runs in another process: its repository, its locks and its faults.

A site in its own process answers control calls on a loopback line authenticated with a key only
its parent knows (``multiprocessing.connection``). The parent's stand-ins here offer what tests
use of an in-process site: ``RemoteRepository`` forwards method calls and attribute reads,
``with repository.lock:`` holds the site's own lock across the calls made inside the block, and a
``RemoteFaultRule`` reads its fields (``count`` left, say) live from the site.

Each calling thread gets its own connection, served by its own thread in the site, so a test that
waits for notifications never blocks another thread's call, and a lock held by one test thread is
held for exactly that thread.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from multiprocessing.connection import Client, Connection
from types import TracebackType
from typing import Any, TypeVar

Address = tuple[str, int]


class ControlLine:
    """Calls into one site process: a connection per calling thread, all closed by ``close()``."""

    def __init__(self, address: Address, authkey: bytes) -> None:
        self.address = address
        self._authkey = authkey
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def connect(self) -> Connection:
        """A new authenticated connection (the caller owns it)."""
        connection = Client(self.address, authkey=self._authkey)
        with self._lock:
            if self._closed:
                connection.close()
                raise RuntimeError("the sandbox site has been stopped")
            self._opened.append(connection)
        return connection

    def call(self, *request: Any) -> Any:
        """Send one request and return its answer; an error in the site is raised here."""
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._local.connection = self.connect()
        connection.send(request)
        outcome, value = connection.recv()
        if outcome == "error":
            raise value
        return value

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


class RemoteLock:
    """The site's repository lock, held by the site's thread that serves this calling thread."""

    def __init__(self, line: ControlLine) -> None:
        self._line = line

    def acquire(self) -> bool:
        return bool(self._line.call("lock", "acquire"))

    def release(self) -> None:
        self._line.call("lock", "release")

    def __enter__(self) -> RemoteLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class RemoteRepository:
    """The repository of a site in another process: methods run there, attributes are read there.

    Which names are methods is read from the Repository class itself, so a property such as
    ``subscriptions`` or ``apps`` costs one round trip and a method call one more.
    """

    def __init__(self, line: ControlLine, repository_class: type) -> None:
        self._line = line
        self._class = repository_class
        self.lock = RemoteLock(line)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if inspect.isfunction(inspect.getattr_static(self._class, name, None)):

            def method(*args: Any, **kwargs: Any) -> Any:
                return self._line.call("call", name, args, kwargs)

            return method
        return self._line.call("get", name)

    def apply(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(repository, *args, **kwargs)`` run in the site (a module-level function)."""
        return self._line.call("apply", function, args, kwargs)


F = TypeVar("F", bound=Callable[..., Any])


def on_site(function: F) -> F:
    """Make a function of a repository run in the site's own process when given a RemoteRepository.

    For helpers that hold the repository's lock and touch its internals over several steps (the
    seeding helpers): one call into the site, the steps done there as in an in-process site.
    """

    @functools.wraps(function)
    def wrapper(repository: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(repository, RemoteRepository):
            return repository.apply(wrapper, *args, **kwargs)
        return function(repository, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class RemoteFaultRule:
    """A fault injected into a site in another process; its fields are read from the site, live."""

    def __init__(self, line: ControlLine, rule: Any) -> None:
        self._line = line
        self.last = rule  # the fields as last read from the site
        self.id: int = rule.id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        current = self._line.call("fault", self.id)
        if current is not None:  # a cleared rule keeps the fields it had last
            self.last = current
        return getattr(self.last, name)

    def __repr__(self) -> str:
        return f"RemoteFaultRule({self.last!r})"

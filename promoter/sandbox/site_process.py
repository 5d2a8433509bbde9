"""A sandbox Qlik site in a process of its own, as a real site is a machine of its own.

Sites in one Python process share one interpreter lock, so three uploads at once ran at the speed
of one process (~175 MB/s together); a site per process makes each transfer independent of the
others, up to the number of cores. ``SiteProcess`` is the parent's handle and offers what an
in-process ``SandboxSite`` does (address, certificates, faults, bandwidth, restart, traffic,
notifications, the repository), over a loopback control line (``remote.py``).

The child is started with promoter/child_processes.py: its own process group, and on Linux it
dies with the thread that started it. It also stops when its parent's lifeline connection closes,
which covers a parent that dies on any platform. Run as ``python -m promoter.sandbox.site_process``
with its settings in ``QSP_SANDBOX_SITE``; it writes one ready (or failed) line to its log.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import pickle
import secrets
import signal
import sys
import threading
import time
import weakref
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promoter.child_processes import Child, python_command, start_child
from promoter.sandbox.remote import ControlLine, RemoteFaultRule, RemoteRepository
from promoter.sandbox.repository import Repository

if TYPE_CHECKING:
    from promoter.sandbox.server import SandboxSite

log = logging.getLogger(__name__)

SITE_CONFIG = "QSP_SANDBOX_SITE"
READY = "sandbox site ready: "
FAILED = "sandbox site failed: "
STARTUP_TIMEOUT = 60.0  # a cold start on a busy 2-core machine imports for a few seconds
STOP_TIMEOUT = 10.0
# The controls of SandboxSite a parent may call; anything else is refused.
SITE_CONTROLS = frozenset(
    {
        "restart",
        "add_fault",
        "clear_faults",
        "set_bandwidth",
        "traffic",
        "notifications",
        "wait_for_notifications",
        "trust_ca",
    }
)


class SiteProcess:
    """One sandbox Qlik site running in its own process; start(), wait_started(), stop()."""

    def __init__(self, name: str, host: str, port: int, cert_dir: Path, data_dir: Path) -> None:
        self.name = name
        self.host = host
        self.port = port  # the port asked for until the site listens, then the one it got
        self.cert_dir = cert_dir
        self.data_dir = data_dir
        self.log_file = data_dir / "site.log"
        self._authkey = secrets.token_bytes(32)
        self._child: Child | None = None
        self._line: ControlLine | None = None
        self._lifeline: Connection | None = None
        self._log_offset = 0
        self._rules: weakref.WeakValueDictionary[int, RemoteFaultRule] = weakref.WeakValueDictionary()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    # ---- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the site's process (from a thread that outlives the site: see child_processes.py)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        config = {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "cert_dir": str(self.cert_dir.resolve()),
            "data_dir": str(self.data_dir.resolve()),
            "authkey": self._authkey.hex(),
        }
        self._child = start_child(
            f"sandbox-{self.name}",
            python_command("-m", "promoter.sandbox.site_process"),
            env={**os.environ, SITE_CONFIG: json.dumps(config), "PYTHONUTF8": "1"},
            cwd=Path.cwd(),
            log_file=self.log_file,
        )

    def wait_started(self) -> None:
        """Wait for the site's ready line; OSError as the site reported it if it could not listen."""
        child = self._require_child()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (status := self._status()) is None:
            if not child.alive():
                raise RuntimeError(f"sandbox site {self.name} ended before it listened:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sandbox site {self.name} did not listen within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.01)
        if "errno" in status:
            child.process.wait(STOP_TIMEOUT)
            raise OSError(status["errno"], status["message"])
        self.port = int(status["port"])
        self._line = ControlLine(("127.0.0.1", int(status["control"])), self._authkey)
        self._lifeline = self._line.connect()
        self._lifeline.send(("lifeline",))
        self.repository = RemoteRepository(self._line, Repository)

    def _status(self) -> dict[str, Any] | None:
        """The ready or failed line this start of the site wrote, if it has written one yet."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        for line in text.split("\n")[:-1]:  # whole lines only: the last may still be in writing
            for marker in (READY, FAILED):
                if line.startswith(marker):
                    found: dict[str, Any] = json.loads(line[len(marker) :])
                    return found
        return None

    def request_stop(self) -> None:
        """Ask the site to stop (it closes its server and exits); stop() waits for it."""
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None

    def stop(self) -> None:
        self.request_stop()
        if self._line is not None:
            self._line.close()
        if self._child is None:
            return
        with contextlib.suppress(Exception):
            self._child.process.wait(STOP_TIMEOUT)
        self._child.stop(grace_seconds=2)  # only if it did not end by itself; then its group

    def _require_child(self) -> Child:
        if self._child is None:
            raise RuntimeError(f"sandbox site {self.name} was not started")
        return self._child

    def _require_line(self) -> ControlLine:
        if self._line is None:
            raise RuntimeError(f"sandbox site {self.name} is not running")
        return self._line

    # ---- test controls, as SandboxSite offers them ---------------------------------------------

    def _control(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._require_line().call("site", name, args, kwargs)

    def restart(self, downtime: float = 0.0, mode: str = "503") -> None:
        """A repository restart: subscriptions dropped; /qrs down for ``downtime`` s (503 or 'reset')."""
        self._control("restart", downtime, mode)

    def add_fault(self, action: str, **options: Any) -> RemoteFaultRule:
        """Inject a fault (see SandboxSite.add_fault); the rule's fields read live from the site."""
        rule = RemoteFaultRule(self._require_line(), self._control("add_fault", action, **options))
        self._rules[rule.id] = rule
        return rule

    def clear_faults(self, rule_id: int | None = None) -> None:
        removed = self._require_line().call("clear_faults", rule_id)
        for rule in removed:  # a rule handed out keeps the fields it had when it was removed
            handed_out = self._rules.get(rule.id)
            if handed_out is not None:
                handed_out.last = rule

    def set_bandwidth(self, bytes_per_second: int | None) -> None:
        """Limit every upload and download to ``bytes_per_second`` (None: unlimited)."""
        self._control("set_bandwidth", bytes_per_second)

    def traffic(self) -> dict[str, int]:
        """Bodies received/sent ("bytes in", "bytes out") and requests per "METHOD /path" so far."""
        found: dict[str, int] = self._control("traffic")
        return found

    def notifications(self) -> list[dict[str, Any]]:
        """The log of notification POSTs the site made: url, body (the change list), status, error, time."""
        found: list[dict[str, Any]] = self._control("notifications")
        return found

    def wait_for_notifications(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._control("wait_for_notifications", count, timeout)
        return found

    def trust_ca(self, ca_file: Path) -> None:
        """Deliver notifications to HTTPS callbacks whose certificate this CA (PEM) signed."""
        self._control("trust_ca", ca_file)


# ---- the child ---------------------------------------------------------------------------------


def _carry_out(site: SandboxSite, request: tuple[Any, ...]) -> Any:
    """One control request, done in the site: the repository's methods and attributes, a function
    of the repository (seeding), its lock, or one of the site's test controls."""
    kind, repository = request[0], site.repository
    if kind == "call":
        name, args, kwargs = request[1:]
        return getattr(repository, _public(name))(*args, **kwargs)
    if kind == "get":
        with repository.lock:  # a copy taken under the lock, so it is not changed while sent
            return copy.deepcopy(getattr(repository, _public(request[1])))
    if kind == "apply":
        function, args, kwargs = request[1:]
        return function(repository, *args, **kwargs)
    if kind == "lock":
        return repository.lock.acquire() if request[1] == "acquire" else repository.lock.release()
    if kind == "site":
        name, args, kwargs = request[1:]
        if name not in SITE_CONTROLS:
            raise AttributeError(f"not a site control: {name}")
        return getattr(site, name)(*args, **kwargs)
    if kind == "clear_faults":
        return [copy.copy(rule) for rule in site.controls.clear_faults(request[1])]
    if kind == "fault":
        with site.controls._lock:
            return next((copy.copy(rule) for rule in site.controls.faults if rule.id == request[1]), None)
    raise ValueError(f"unknown control request: {kind!r}")


def _public(name: str) -> str:
    if not isinstance(name, str) or name.startswith("_"):
        raise AttributeError(f"not a public repository attribute: {name!r}")
    return name


def _portable(exc: Exception) -> Exception:
    """The error itself if the parent can rebuild it from its pickle, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - bytes we have just made ourselves
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _answer(site: SandboxSite, connection: Connection, stop: threading.Event) -> None:
    """Serve one parent thread's requests until it hangs up; a lifeline's end stops the site."""
    held = 0  # lock acquisitions this parent thread still holds, released if it hangs up
    try:
        while True:
            try:
                request = connection.recv()
            except (EOFError, OSError):
                return
            if request == ("lifeline",):
                with contextlib.suppress(EOFError, OSError):
                    connection.recv()  # nothing comes: this returns when the parent closes or dies
                stop.set()
                return
            try:
                reply: tuple[str, Any] = ("ok", _carry_out(site, request))
                if request[0] == "lock":
                    held += 1 if request[1] == "acquire" else -1
            except Exception as exc:
                reply = ("error", _portable(exc))
            try:
                connection.send(reply)
            except (OSError, EOFError):
                return
            except Exception as exc:  # an answer that cannot be pickled: the parent gets why
                connection.send(("error", RuntimeError(f"answer not transferable: {exc}")))
    finally:
        for _ in range(held):
            site.repository.lock.release()
        connection.close()


def _serve_controls(site: SandboxSite, listener: Listener, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            connection = listener.accept()
        except (AuthenticationError, EOFError, ConnectionError) as refused:
            log.warning("%s: control connection refused: %r", site.name, refused)
            continue
        except OSError:  # the listener was closed: the site is stopping
            return
        threading.Thread(target=_answer, args=(site, connection, stop), daemon=True).start()


def main() -> int:
    from promoter.sandbox.server import SandboxSite  # uvicorn and friends only in the site's process

    config = json.loads(os.environ.pop(SITE_CONFIG))
    stop = threading.Event()
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):  # SIGTERM: also the parent-death signal
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: stop.set())
    try:
        site = SandboxSite(
            config["name"], config["host"], config["port"], Path(config["cert_dir"]), Path(config["data_dir"])
        )
    except OSError as exc:
        print(FAILED + json.dumps({"errno": exc.errno, "message": exc.strerror or str(exc)}), flush=True)
        return 1
    listener = Listener(("127.0.0.1", 0), authkey=bytes.fromhex(config["authkey"]))
    try:
        site.start()
        site.wait_started()
        threading.Thread(target=_serve_controls, args=(site, listener, stop), daemon=True).start()
        control_port = listener.address[1]
        print(READY + json.dumps({"port": site.port, "control": control_port}), flush=True)
        while not stop.wait(0.5):  # a timed wait stays interruptible on Windows
            pass
    finally:
        listener.close()
        site.request_stop()
        site.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

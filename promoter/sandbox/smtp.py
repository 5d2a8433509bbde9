"""A local SMTP server (aiosmtpd) on a free loopback port that keeps every message, for tests and `demo`.

It behaves like a company relay: STARTTLS with a certificate from its own CA (``ca_file``),
or implicit TLS, and AUTH LOGIN/PLAIN with one user, offered only over TLS. Messages are
kept in memory as parsed ``EmailMessage`` objects with their envelope.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from promoter.settings import EmailSettings

Security = Literal["none", "starttls", "tls"]
CA_FILE = "smtp-ca.pem"
SERVER_NAME = "qs-promoter-sandbox"
START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message as the server received it: envelope, parsed message, raw bytes, how it came."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    user: str | None  # who logged in (AUTH), None without AUTH
    tls: bool  # the conversation was encrypted (STARTTLS or implicit TLS)


class SmtpSandbox:
    """An aiosmtpd server in a thread; a context manager; ``settings()`` points qs-promoter at it."""

    def __init__(
        self,
        *,
        security: Security = "starttls",
        username: str | None = "promoter",
        password: str | None = "sandbox-password",  # noqa: S107 - the sandbox's own test account
        host: str = "127.0.0.1",
        port: int = 0,
        folder: Path | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.security = security
        self.username = username
        self._password = password
        self.host = host
        self._requested_port = port
        self.port = 0
        self._own_folder = folder is None
        self._folder = folder
        self._received: list[ReceivedMail] = []
        self._arrived = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._protocols: set[SMTP] = set()
        self._starttls: ssl.SSLContext | None = None
        self._implicit: ssl.SSLContext | None = None

    @property
    def ca_file(self) -> Path:
        """The PEM file of the CA that signed the server certificate (EmailSettings.ca_file)."""
        if self._folder is None:
            raise RuntimeError("the SMTP sandbox has not been started")
        return self._folder / CA_FILE

    def start(self) -> SmtpSandbox:
        """Bind, start serving in a thread and return self once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the SMTP sandbox is already running")
        _quiet_aiosmtpd()
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="qsp-smtp-"))
        self._folder.mkdir(parents=True, exist_ok=True)
        tls = _server_context(self._folder, self.host) if self.security != "none" else None
        self._starttls = tls if self.security == "starttls" else None
        self._implicit = tls if self.security == "tls" else None
        # We bind the socket ourselves and hand it over, so the port cannot be taken in between.
        sock = socket.create_server((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(loop, sock, ready, failure), name="smtp-sandbox", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT) or failure:
            self.stop()
            raise RuntimeError("the SMTP sandbox did not start") from (failure[0] if failure else None)
        return self

    def stop(self) -> None:
        """Close every connection, stop the thread and remove the certificate folder it made."""
        loop, thread = self._loop, self._thread
        self._loop, self._thread = None, None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT)
        if self._own_folder and self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> SmtpSandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def settings(self, **overrides: Any) -> EmailSettings:
        """EmailSettings that send through this server (enabled, trusting its CA)."""
        values: dict[str, Any] = {
            "enabled": True,
            "smtp_host": self.host,
            "smtp_port": self.port,
            "security": self.security,
            "username": self.username,
            "password": SecretStr(self._password) if self._password is not None else None,
            "sender": "qs-promoter@sandbox.test",
            "ca_file": self.ca_file if self.security != "none" else None,
            "timeout_seconds": 10.0,
        }
        return EmailSettings(**{**values, **overrides})

    @property
    def messages(self) -> list[ReceivedMail]:
        """Every message received so far, oldest first (a copy)."""
        with self._arrived:
            return list(self._received)

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; TimeoutError after ``timeout`` seconds."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(f"{len(self._received)} of {count} message(s) arrived in {timeout} s")
            return list(self._received)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._arrived:
            self._received.clear()

    # -- inside the server thread ------------------------------------------------------------

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                loop.create_server(self._connection, sock=sock, ssl=self._implicit)
            )
        except BaseException as exc:  # reported to start(), which raises it in the caller's thread
            failure.append(exc)
            sock.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for protocol in list(self._protocols):
                if protocol.transport is not None:
                    protocol.transport.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(server.wait_closed())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _connection(self) -> SMTP:
        assert self._loop is not None
        protocol = _TrackedSMTP(
            self,
            _Handler(self),
            hostname=SERVER_NAME,
            tls_context=self._starttls,
            require_starttls=self._starttls is not None,
            # Over implicit TLS the whole conversation is encrypted, but aiosmtpd only counts
            # STARTTLS as TLS; AUTH is still never offered on a plain connection.
            auth_require_tls=self.security != "tls",
            authenticator=self._authenticate if self.username else None,
            enable_SMTPUTF8=True,
            loop=self._loop,
        )
        self._protocols.add(protocol)
        return protocol

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.username is None or self._password is None:
            return AuthResult(success=False, handled=False)
        good = hmac.compare_digest(auth_data.login, self.username.encode()) & hmac.compare_digest(
            auth_data.password, self._password.encode()
        )
        return AuthResult(success=bool(good), handled=False, auth_data=auth_data if good else None)

    def _keep(self, envelope: Envelope, session: Session) -> None:
        raw = envelope.original_content or b""
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        auth = session.auth_data
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message,
            raw=raw,
            user=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            tls=self.security == "tls" or session.ssl is not None,
        )
        with self._arrived:
            self._received.append(mail)
            self._arrived.notify_all()


class _TrackedSMTP(SMTP):
    """aiosmtpd's SMTP, remembered by the sandbox so that stop() can close open connections."""

    def __init__(self, sandbox: SmtpSandbox, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sandbox = sandbox

    def connection_lost(self, error: Exception | None) -> None:
        self._sandbox._protocols.discard(self)
        super().connection_lost(error)


class _Handler:
    """aiosmtpd hooks: refuse mail before AUTH (as relays do), keep what arrives."""

    def __init__(self, sandbox: SmtpSandbox) -> None:
        self._sandbox = sandbox

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self._sandbox.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._sandbox._keep(envelope, session)
        return "250 Message accepted for delivery"


class _DropLoginDataNotice(logging.Filter):
    # aiosmtpd 1.4 logs a deprecation WARNING about its own Session.login_data on every AUTH.
    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


def _quiet_aiosmtpd() -> None:
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, _DropLoginDataNotice) for f in logger.filters):
        logger.addFilter(_DropLoginDataNotice())


def _server_context(folder: Path, host: str) -> ssl.SSLContext:
    """A server certificate for ``host`` (and localhost) from a fresh CA written to ``folder``."""
    ca = trustme.CA(organization_name="qs-promoter sandbox SMTP")
    ca.cert_pem.write_to_path(str(folder / CA_FILE))
    names = dict.fromkeys([host, "localhost", "127.0.0.1", "::1", SERVER_NAME])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context
